"""Serving the API with uvicorn: `refunds api`.

The listening socket is bound here, before uvicorn runs, so a busy port is one
:class:`PortInUseError` for the command to report (uvicorn never logs its own line about it).
The keys are checked before that: without keys (and without the insecure flag) nothing starts.
"""

from __future__ import annotations

import logging
import socket

import uvicorn

from api.app import auth_from_settings, create_app
from api.keys import INSECURE_ENV
from api.routes import RefundService
from core.settings import Settings
from starter.client import RefundClient
from starter.connection import resolve_target

log = logging.getLogger("refunds.api")


class PortInUseError(OSError):
    """The API's address could not be bound (usually: something already listens there)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound as uvicorn binds its own (``SO_REUSEADDR``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise PortInUseError(err.errno, err.strerror) from err
    return sock


async def serve_api(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT / SIGTERM (uvicorn handles both). Raises ``ApiKeysError`` for an
    unusable key configuration and :class:`PortInUseError` before serving anything."""
    auth = auth_from_settings(settings)
    # Unusable Temporal connection settings (an unknown profile, an unreadable certificate)
    # fail here, at start; an unreachable server is retried in the background.
    resolve_target(settings)

    async def connect() -> RefundService:
        return await RefundClient.connect(settings)

    app = create_app(settings, connect=connect, auth=auth)
    sock = bind(host, port)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s: %(message)s")
    if auth.insecure_no_auth:
        log.warning(
            "%s is set: every caller may read, start, cancel and resolve refunds", INSECURE_ENV
        )
    else:
        log.info(
            "%d API key(s): %s",
            len(auth.keyring.keys),
            ", ".join(k.name for k in auth.keyring.keys),
        )
    config = uvicorn.Config(app, log_level="info", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
