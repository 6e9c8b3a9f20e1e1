"""API keys: bearer tokens known only by their SHA-256 digest, each with a name and scopes.

Configured as a JSON list of ``{"name", "sha256", "scopes"}`` in ``REFUNDS_API_KEYS`` or in
the file ``REFUNDS_API_KEYS_FILE`` (both may be set: the keys of both count). The service
never holds a token: a presented token is hashed and the digest compared, in constant time,
with every configured digest. A key's name is what the service records as who started,
cancelled or resolved a refund; the token itself is never logged, traced or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.notify_urls import NotifyUrl
from core.settings import Settings

KEYS_ENV = "REFUNDS_API_KEYS"
KEYS_FILE_ENV = "REFUNDS_API_KEYS_FILE"
INSECURE_ENV = "REFUNDS_API_INSECURE_NO_AUTH"
TOKEN_PREFIX = "rfk_"  # noqa: S105 (a prefix, not a secret)


class Scope(StrEnum):
    READ = "refunds:read"
    WRITE = "refunds:write"
    OPERATE = "refunds:operate"


class ApiKey(BaseModel):
    """One configured key: who it is, the digest of its token, what it may do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    scopes: Annotated[frozenset[Scope], Field(min_length=1)]
    # Where this caller's refunds send their outcome events when a request names no
    # notify_url (docs/events.md); it then becomes part of the request, as if sent.
    notify_url: NotifyUrl | None = None


_KEY_LIST = TypeAdapter(list[ApiKey])


class ApiKeysError(ValueError):
    """The key configuration cannot be used; the message names the setting (never a key)."""


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a key is configured by."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Keyring:
    """The configured keys; :meth:`find` tells which one a token is, in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)
        names = [key.name for key in self.keys]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ApiKeysError(f"API key names must be unique: {', '.join(repeated)}")

    def find(self, token: str) -> ApiKey | None:
        digest = hash_token(token)
        found: ApiKey | None = None
        # Every digest is compared, the match or not, so the time taken tells nothing.
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        keys: list[ApiKey] = []
        if settings.refunds_api_keys is not None and settings.refunds_api_keys.strip():
            keys += _parse(settings.refunds_api_keys, KEYS_ENV)
        if settings.refunds_api_keys_file is not None:
            keys += _parse(_read(settings.refunds_api_keys_file), KEYS_FILE_ENV)
        return cls(keys)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ApiKeysError(f"{KEYS_FILE_ENV}: cannot read {path}: {err.strerror}") from None


def _parse(text: str, source: str) -> list[ApiKey]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiKeysError(f"{source} is not JSON ({err.msg} at line {err.lineno})") from None
    try:
        return _KEY_LIST.validate_python(document)
    except ValidationError as err:
        # Names the entry and the field; the input is left out on purpose.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'list'}: {e['msg']}" for e in err.errors()
        )
        raise ApiKeysError(
            f'{source} must be a JSON list of {{"name", "sha256", "scopes"}}: {problems}'
        ) from None


def dev_key_config(token: str, name: str = "dev") -> str:
    """``REFUNDS_API_KEYS`` for one key with every scope (the embedded dev stack's)."""
    entry = {"name": name, "sha256": hash_token(token), "scopes": [s.value for s in Scope]}
    return json.dumps([entry])
