"""The FastAPI application: routes, problem handlers, the body size limit, authentication
settings and the connection to Temporal.

:func:`create_app` takes the service (a ``RefundClient``, or a fake in tests) or a way to
connect: then it connects at start-up and keeps trying in the background while Temporal is
unreachable (``/readyz`` and every `/v1` call answer 503 until it is reached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AuthConfig
from api.keys import INSECURE_ENV, KEYS_ENV, KEYS_FILE_ENV, ApiKeysError, Keyring
from api.problems import Problem, ProblemKind, install_problem_handlers, problem_response
from api.routes import RefundService, health, refunds
from api.webhooks import install_log_filter, openapi_schemas, webhooks
from core.settings import Settings

log = logging.getLogger("refunds.api")

TITLE = "refund-orchestrator API"
VERSION = "1"
RECONNECT_EVERY_S = 2.0
# A refused body is read and dropped up to this much before the answer (then the connection
# closes).
DRAIN_LIMIT_BYTES = 1024 * 1024


def auth_from_settings(settings: Settings) -> AuthConfig:
    """The keys, or a start-up error when there are none and the insecure flag is not set."""
    keyring = Keyring.from_settings(settings)
    insecure = settings.refunds_api_insecure_no_auth
    if not keyring.keys and not insecure:
        raise ApiKeysError(
            f"no API key is configured: set {KEYS_ENV} or {KEYS_FILE_ENV} (see docs/api.md), "
            f"or {INSECURE_ENV}=true to run without authentication (local experiments only)"
        )
    return AuthConfig(keyring=keyring, insecure_no_auth=insecure)


def create_app(
    settings: Settings,
    *,
    service: RefundService | None = None,
    connect: Callable[[], Awaitable[RefundService]] | None = None,
    auth: AuthConfig | None = None,
) -> FastAPI:
    auth = auth or auth_from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if app.state.service is None and connect is not None:
            task = asyncio.create_task(_keep_connecting(app, connect))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=(
            "Start, follow, cancel and resolve payment refunds (Mews, Paynow), each a durable "
            "Temporal workflow. Errors are RFC 9457 problem documents "
            "(application/problem+json) whose `type` names the kind of error."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.auth = auth
    # Provider webhooks in (api/webhooks.py): the token is in the path, so it is masked
    # wherever uvicorn logs a path.
    app.state.mews_webhook_token = settings.mews_webhook_token
    install_log_filter()
    app.include_router(refunds)
    app.include_router(health)
    app.include_router(webhooks)
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.refunds_api_max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem_schema.pop("$defs", {}))
            schemas["Problem"] = problem_schema
            schemas.update(openapi_schemas())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _keep_connecting(app: FastAPI, connect: Callable[[], Awaitable[RefundService]]) -> None:
    while True:
        try:
            app.state.service = await connect()
        except RuntimeError as err:
            log.warning("cannot reach Temporal yet (%s); retrying", err)
            await asyncio.sleep(RECONNECT_EVERY_S)
        else:
            log.info("connected to Temporal")
            return


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, before any handler reads it: by
    its Content-Length, or while it streams in (the body is held, then handed on)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client left; hand on what it said.
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read (and drop) what is still coming, up to a bound, so that the client, still
        # sending, gets the answer rather than a reset connection; past the bound, close.
        drained = 0
        while drained < DRAIN_LIMIT_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response = problem_response(
            ProblemKind.PAYLOAD_TOO_LARGE,
            f"the body is over {self.max_bytes} bytes",
            instance=str(scope.get("path", "")),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
