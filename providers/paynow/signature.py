"""Paynow v3 signatures: the request signature we send and the notification one we check.

Request signature (every v3 call). The message is the compact JSON (no spaces, ``/`` not
escaped, non-ASCII kept as is) of an object with exactly these keys, in this order::

    {"headers":{"Api-Key":K,"Idempotency-Key":I},"parameters":P,"body":B}

``P`` maps each query parameter name to the list of its values, sorted by name, and is an
empty **object** ``{}`` when there are none (``[]`` gives a different, wrong signature). ``B``
is the exact body string sent, ``""`` when there is none. The header value is
``base64(HMAC-SHA256(Signature-Key, message))``.

:class:`PaynowSignatureAuth` signs inside httpx's auth flow, from the request's own headers,
query parameters and content, so what is signed is byte for byte what is sent.

Notifications Paynow sends us carry ``base64(HMAC-SHA256(Signature-Key, raw body))``, over the
raw bytes only; :func:`verify_notification` compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Generator, Mapping, Sequence

import httpx
from pydantic import SecretStr

from providers.credentials import Credential, as_credential

API_KEY_HEADER = "Api-Key"
SIGNATURE_HEADER = "Signature"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


def _reveal(value: SecretStr | str) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _hmac_b64(key: str, message: bytes) -> str:
    digest = hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_message(
    *,
    api_key: str,
    idempotency_key: str,
    body: str | bytes = "",
    parameters: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The exact text that is HMAC'd for a v3 request (see the module docstring)."""
    body_text = body.decode("utf-8") if isinstance(body, bytes) else body
    # A dict comprehension over sorted names keeps "{}" for no parameters, never "[]".
    given = parameters or {}
    sorted_parameters = {name: list(given[name]) for name in sorted(given)}
    envelope = {
        "headers": {API_KEY_HEADER: api_key, IDEMPOTENCY_KEY_HEADER: idempotency_key},
        "parameters": sorted_parameters,
        "body": body_text,
    }
    # json.dumps never escapes "/", and ensure_ascii=False keeps UTF-8 text as sent.
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def sign_request(
    *,
    api_key: str,
    idempotency_key: str,
    signature_key: SecretStr | str,
    body: str | bytes = "",
    parameters: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The ``Signature`` header value of a v3 request."""
    message = signature_message(
        api_key=api_key, idempotency_key=idempotency_key, body=body, parameters=parameters
    )
    return _hmac_b64(_reveal(signature_key), message.encode("utf-8"))


def query_parameters(url: httpx.URL) -> dict[str, list[str]]:
    """A URL's query as ``{name: [values in order]}``, as the signature wants it."""
    grouped: dict[str, list[str]] = {}
    for name, value in url.params.multi_items():
        grouped.setdefault(name, []).append(value)
    return grouped


class PaynowSignatureAuth(httpx.Auth):
    """Sets ``Api-Key`` and ``Signature`` on each request from what the request carries.

    The request must already carry its ``Idempotency-Key``: choosing that key is the caller's
    job (it decides what counts as "the same request"), never the signer's.
    """

    requires_request_body = True

    def __init__(
        self, *, api_key: SecretStr | Credential, signature_key: SecretStr | Credential
    ) -> None:
        # Asked for on every request: a secret read from a file may have been rotated.
        self._api_key = as_credential(api_key)
        self._signature_key = as_credential(signature_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_key=**********, signature_key=**********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        idempotency_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if not idempotency_key:
            raise ValueError("a Paynow v3 request needs an Idempotency-Key header to be signed")
        request.headers[API_KEY_HEADER] = self._api_key.current().get_secret_value()
        request.headers[SIGNATURE_HEADER] = sign_request(
            api_key=request.headers[API_KEY_HEADER],
            idempotency_key=idempotency_key,
            signature_key=self._signature_key.current(),
            body=request.content,
            parameters=query_parameters(request.url),
        )
        yield request


def verify_notification(raw_body: bytes, signature: str, signature_key: SecretStr | str) -> bool:
    """True when ``signature`` is Paynow's signature of ``raw_body`` (constant-time compare)."""
    expected = _hmac_b64(_reveal(signature_key), raw_body)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8"))
