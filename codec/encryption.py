"""AES-256-GCM payload encryption, so Temporal stores refunds it cannot read.

An encrypted payload::

    metadata  encoding           = binary/encrypted
              encryption-key-id  = <key id>
    data      nonce (12 random bytes) || AES-GCM ciphertext of the inner Payload || tag (16)

The whole serialized inner Payload is encrypted, its metadata (encoding, message type)
included. Only the key id shows, so the right key can be found.

Keys come from ``REFUNDS_ENCRYPTION_KEYS`` (``id1:base64key,id2:base64key``, 32-byte keys).
The key named by ``REFUNDS_ENCRYPTION_KEY_ID`` encrypts; every listed key decrypts. That is
rotation: add a new key, make it the active one, and keep the old ones for as long as the
namespace retains histories written with them.

Payloads without the encrypted encoding pass through decoding unchanged, so encryption can be
switched on for a namespace that already holds plain histories.

Errors (no message ever holds key material)::

    ValueError
    ├── EncryptionSettingsError   the settings are wrong; the message names the variable
    └── PayloadDecryptionError    a payload cannot be decrypted (altered, or wrong key)
        └── UnknownKeyError       its key id is not among the configured keys
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.settings import Settings

KEYS_ENV = "REFUNDS_ENCRYPTION_KEYS"
KEY_ID_ENV = "REFUNDS_ENCRYPTION_KEY_ID"

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

# Key ids travel in clear in every payload's metadata: short, plain, unambiguous in the list.
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class EncryptionSettingsError(ValueError):
    """``REFUNDS_ENCRYPTION_KEYS`` / ``REFUNDS_ENCRYPTION_KEY_ID`` are missing or malformed."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload could not be decrypted."""


class UnknownKeyError(PayloadDecryptionError):
    """The payload names a key id this process has no key for."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"payload is encrypted with key id {key_id!r}, which is not in {KEYS_ENV}: "
            f"add that key (keep retired keys listed while histories still use them)"
        )
        self.key_id = key_id


class Keyring:
    """The configured keys by id, and which one encrypts. Its repr shows ids only."""

    def __init__(self, keys: Mapping[str, bytes], active_id: str) -> None:
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise EncryptionSettingsError(
                    f"{KEYS_ENV}: the key for id {key_id!r} is {len(key)} bytes; AES-256 "
                    f"needs {KEY_BYTES} (docs/encryption.md shows how to generate one)"
                )
        if active_id not in keys:
            raise EncryptionSettingsError(
                f"{KEY_ID_ENV} is {active_id!r}, but {KEYS_ENV} has no key with that id "
                f"(it has: {', '.join(sorted(keys)) or 'none'})"
            )
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_id = active_id

    @classmethod
    def parse(cls, keys: str, active_id: str) -> Keyring:
        """Read ``id1:base64key,id2:base64key``; errors name the variable, never a key."""
        parsed: dict[str, bytes] = {}
        for position, entry in enumerate(keys.split(","), start=1):
            key_id, colon, encoded = (part.strip() for part in entry.partition(":"))
            if not colon or not key_id or not encoded:
                raise EncryptionSettingsError(
                    f"{KEYS_ENV}: entry {position} is not in the form id:base64key "
                    f"(expected id1:base64key,id2:base64key)"
                )
            if not _KEY_ID.match(key_id):
                raise EncryptionSettingsError(
                    f"{KEYS_ENV}: entry {position} has an invalid key id: use 1-64 of "
                    f"[A-Za-z0-9._-]"
                )
            if key_id in parsed:
                raise EncryptionSettingsError(f"{KEYS_ENV}: key id {key_id!r} appears twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise EncryptionSettingsError(
                    f"{KEYS_ENV}: the key for id {key_id!r} is not valid base64"
                ) from None
            parsed[key_id] = key
        return cls(parsed, active_id.strip())

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring | None:
        """The keyring the settings describe, or None when encryption is off (neither set)."""
        secret = settings.refunds_encryption_keys
        keys = secret.get_secret_value().strip() if secret is not None else ""
        active_id = (settings.refunds_encryption_key_id or "").strip()
        if not keys and not active_id:
            return None
        if not keys:
            raise EncryptionSettingsError(
                f"{KEYS_ENV} is not set, but {KEY_ID_ENV} is: set {KEYS_ENV} to "
                f"id:base64key,... or unset {KEY_ID_ENV} to turn encryption off"
            )
        if not active_id:
            raise EncryptionSettingsError(
                f"{KEY_ID_ENV} is not set, but {KEYS_ENV} is: set it to the id of the key "
                f"new payloads are encrypted with"
            )
        return cls.parse(keys, active_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._ciphers))

    def cipher(self, key_id: str) -> AESGCM:
        try:
            return self._ciphers[key_id]
        except KeyError:
            raise UnknownKeyError(key_id) from None

    def __repr__(self) -> str:
        return f"Keyring(active_id={self.active_id!r}, ids={self.ids!r})"


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload with the active key; decrypts with the key its id names."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keyring.active_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keyring.cipher(key_id).encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if raw_id is None:
            raise PayloadDecryptionError(
                f"encrypted payload has no {KEY_ID_METADATA} metadata: cannot pick a key"
            )
        key_id = raw_id.decode("utf-8", errors="replace")[:64]
        cipher = self.keyring.cipher(key_id)
        if len(payload.data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError(
                f"encrypted payload (key id {key_id!r}) is too short to hold a nonce and a tag"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"encrypted payload (key id {key_id!r}) failed authentication: it was "
                f"altered, or {KEYS_ENV} holds a different key under that id"
            ) from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise PayloadDecryptionError(
                f"encrypted payload (key id {key_id!r}) does not hold a Temporal payload"
            ) from None
