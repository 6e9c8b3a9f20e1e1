"""The codec server: decrypts payloads for the Temporal UI and CLI, for authorized operators.

Temporal's remote codec protocol: ``POST .../encode`` and ``POST .../decode`` take and answer
``{"payloads": [...]}``, the proto-JSON form of ``temporal.api.common.v1.Payloads`` (bytes as
base64). Only the last path segment counts, so the server may sit under any prefix, e.g.
``/default/decode``; the ``X-Namespace`` header is accepted and not needed (one keyring).

The browser calls the server directly from the UI's page, so CORS allows the UI's origins
(``REFUNDS_CODEC_UI_ORIGINS``) and answers preflights. When ``REFUNDS_CODEC_AUTH_TOKEN`` is set
every encode/decode needs ``Authorization: Bearer <token>``; preflights never carry it.

Answers: 200 with the payloads; 400 for a body that is not Payloads JSON or a payload that
cannot be decrypted (the message names the key id, never key material); 401 without the
token; 404 for any other path.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Sequence

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from codec.encryption import (
    KEY_ID_ENV,
    KEYS_ENV,
    EncryptionCodec,
    EncryptionSettingsError,
    Keyring,
    PayloadDecryptionError,
)
from core.settings import Settings

log = logging.getLogger("refunds.codec")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8234
ALLOWED_HEADERS = ("X-Namespace", "Content-Type", "Authorization")


def create_app(
    codec: PayloadCodec, *, auth_token: str | None = None, ui_origins: Sequence[str] = ()
) -> Starlette:
    """The codec server's ASGI app around any codec (tests pass their own)."""

    def unauthorized(request: Request) -> bool:
        if not auth_token:
            return False
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), auth_token.encode()
        )
        return not valid

    async def endpoint(request: Request) -> Response:
        action = request.url.path.rstrip("/").rpartition("/")[2]
        if action not in ("encode", "decode"):
            return JSONResponse({"error": "not found: POST .../encode or .../decode"}, 404)
        if unauthorized(request):
            return JSONResponse(
                {"error": "a valid Authorization: Bearer <token> header is required"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"body is not Payloads JSON: {err}"}, 400)
        try:
            if action == "encode":
                await codec.encode_wrapper(payloads)
            else:
                await codec.decode_wrapper(payloads)
        except PayloadDecryptionError as err:
            log.warning(
                "decode refused (namespace %s): %s", request.headers.get("x-namespace"), err
            )
            return JSONResponse({"error": str(err)}, 400)
        # Always a "payloads" list: proto-JSON would leave an empty one out.
        body = json.dumps({"payloads": [json_format.MessageToDict(p) for p in payloads.payloads]})
        return Response(body, status_code=200, media_type="application/json")

    return Starlette(
        routes=[Route("/{path:path}", endpoint, methods=["POST"])],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(ui_origins),
                allow_methods=["POST"],
                allow_headers=list(ALLOWED_HEADERS),
                # The UI may send the operator's credentials along ("include").
                allow_credentials=True,
                max_age=600,
            )
        ],
    )


def codec_app(settings: Settings) -> Starlette:
    """The app for these settings; refuses to start without encryption configured."""
    keyring = Keyring.from_settings(settings)
    if keyring is None:
        raise EncryptionSettingsError(
            f"the codec server needs {KEYS_ENV} and {KEY_ID_ENV}: without keys there is "
            f"nothing to decrypt"
        )
    origins = [o.strip() for o in settings.refunds_codec_ui_origins.split(",") if o.strip()]
    return create_app(
        EncryptionCodec(keyring), auth_token=_auth_token(settings), ui_origins=origins
    )


def serve_codec(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the codec server until interrupted."""
    app = codec_app(settings)
    if _auth_token(settings) is None:
        log.warning("REFUNDS_CODEC_AUTH_TOKEN is not set: anyone who reaches %s can decrypt", host)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _auth_token(settings: Settings) -> str | None:
    token = settings.refunds_codec_auth_token
    value = token.get_secret_value().strip() if token is not None else ""
    return value or None
