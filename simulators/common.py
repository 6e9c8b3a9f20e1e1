"""What both simulators share: faults on demand, the request journal and the control routes.

Control routes, under each simulator's root:

* ``POST /_sim/faults`` with a :class:`FaultSpec` (or a list): faults for the next requests.
* ``DELETE /_sim/faults``: clear pending faults.
* ``GET /_sim/journal``: every request seen, and refunds created per payment and per key, so
  tests can prove "exactly one".
* ``POST /_sim/reset``: back to the seeded state (payments, refunds, journal, faults).
* ``GET /_sim/payments``: the seeded payments.

Fault kinds:

* ``status``: answer ``status`` (default 503) with the provider's error body, without processing.
* ``rate_limit``: answer 429 with ``Retry-After: retry_after`` and the provider's error body.
* ``latency``: wait ``seconds``, then process normally.
* ``process_then_hang``: process the request (a refund is really made), then hold the answer
  for ``seconds``, longer than the client's timeout: the client sees an unknown outcome.
* ``drop``: process the request, then close the connection without an answer.
* ``drop_before``: close the connection without an answer *before* the request is processed:
  nothing is made, yet the client sees exactly what ``drop`` shows it (the status line, then a
  broken connection). A client cannot tell the two apart, so it must look before re-sending.

How long a fault lasts:

* ``count`` (default 1): the next ``count`` matching requests, then the fault is gone.
* ``duration_s``: every matching request for ``duration_s`` seconds from when the fault was
  queued, however many there are (e.g. a 3-minute 5xx outage:
  ``{"kind": "status", "status": 503, "duration_s": 180}``). ``count`` and ``duration_s``
  exclude each other; an expired fault is dropped the next time faults are looked at.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL_PREFIX = "/_sim"


class FaultKind(StrEnum):
    STATUS = "status"
    RATE_LIMIT = "rate_limit"
    LATENCY = "latency"
    PROCESS_THEN_HANG = "process_then_hang"
    DROP = "drop"
    DROP_BEFORE = "drop_before"


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    count: int = Field(default=1, ge=1, le=100_000)
    status: int = Field(default=503, ge=400, le=599)
    retry_after: str | None = None
    seconds: float = Field(default=0.0, ge=0, le=3600)
    # Only requests whose path contains this (and, if set, whose method matches) are hit.
    path_contains: str | None = None
    method: str | None = None
    # Instead of a count: every matching request for this many seconds from when it is queued.
    duration_s: float | None = Field(default=None, gt=0, le=86_400)

    @model_validator(mode="after")
    def _count_or_duration(self) -> FaultSpec:
        if self.duration_s is not None and "count" in self.model_fields_set:
            raise ValueError("give either count or duration_s, not both")
        return self

    def matches(self, method: str, path: str) -> bool:
        if path.startswith(CONTROL_PREFIX) or path.startswith(f"/{CONTROL_PREFIX.strip('/')}"):
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path


_FAULTS = TypeAdapter(FaultSpec | list[FaultSpec])


class JournalEntry(BaseModel):
    at: datetime
    method: str
    path: str
    status: int | None
    fault: str | None = None
    idempotency_key: str | None = None
    # The tenant whose credentials the request carried (None: none matched, or a control
    # route), and a short digest of the credential it used: never the secret itself.
    tenant: str | None = None
    credential: str | None = None


class RefundRecord(BaseModel):
    at: datetime
    payment_id: str
    refund_id: str
    amount_minor: int | None
    idempotency_key: str | None = None
    tenant: str | None = None
    credential: str | None = None


# The journal entry of the request being served: the simulator's handlers note on it which
# tenant's credentials the request carried (:func:`note_tenant`).
_CURRENT_ENTRY: ContextVar[JournalEntry | None] = ContextVar("sim_journal_entry", default=None)


def credential_digest(secret: str) -> str:
    """What a journal shows of a credential: 12 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def note_tenant(tenant: str, secret: str) -> None:
    """Record on the current request's journal entry the tenant and credential it used."""
    entry = _CURRENT_ENTRY.get()
    if entry is not None:
        entry.tenant = tenant
        entry.credential = credential_digest(secret)


def current_tenant() -> tuple[str | None, str | None]:
    """(tenant, credential digest) noted for the request being served."""
    entry = _CURRENT_ENTRY.get()
    return (entry.tenant, entry.credential) if entry is not None else (None, None)


@dataclass
class _QueuedFault:
    spec: FaultSpec
    # Counted faults: requests left. Timed faults: None.
    left: int | None
    # Timed faults: when (on the core's clock) the fault stops applying.
    until: float | None


class SimulatorCore:
    """Thread-safe faults and journal of one simulator.

    ``clock`` (monotonic seconds) times ``duration_s`` faults; tests may pass a fake one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._faults: list[_QueuedFault] = []
        self.requests: list[JournalEntry] = []
        self.refunds: list[RefundRecord] = []

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.refunds.clear()

    def add_faults(self, specs: list[FaultSpec]) -> None:
        with self._lock:
            now = self._clock()
            for spec in specs:
                timed = spec.duration_s is not None
                self._faults.append(
                    _QueuedFault(
                        spec=spec.model_copy(),
                        left=None if timed else spec.count,
                        until=now + spec.duration_s if spec.duration_s is not None else None,
                    )
                )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, method: str, path: str) -> FaultSpec | None:
        """The first queued fault matching the request, used up by one (counted faults)."""
        with self._lock:
            now = self._clock()
            # A timed fault applies while now < until: the window is [queued, queued + duration).
            self._faults = [f for f in self._faults if f.until is None or now < f.until]
            for index, queued in enumerate(self._faults):
                if not queued.spec.matches(method, path):
                    continue
                spec = queued.spec
                if queued.left is not None:
                    # The spec handed out says how many were left, this one included.
                    spec = spec.model_copy(update={"count": queued.left})
                    queued.left -= 1
                    if queued.left <= 0:
                        del self._faults[index]
                return spec
        return None

    def record_request(self, entry: JournalEntry) -> None:
        with self._lock:
            self.requests.append(entry)

    def record_refund(
        self,
        *,
        payment_id: str,
        refund_id: str,
        amount_minor: int | None,
        idempotency_key: str | None = None,
    ) -> None:
        tenant, credential = current_tenant()
        with self._lock:
            self.refunds.append(
                RefundRecord(
                    at=datetime.now(UTC),
                    payment_id=payment_id,
                    refund_id=refund_id,
                    amount_minor=amount_minor,
                    idempotency_key=idempotency_key,
                    tenant=tenant,
                    credential=credential,
                )
            )

    def journal(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": [e.model_dump(mode="json") for e in self.requests],
                "refunds": [r.model_dump(mode="json") for r in self.refunds],
                "refunds_per_payment": dict(Counter(r.payment_id for r in self.refunds)),
                "refunds_per_key": dict(
                    Counter(r.idempotency_key for r in self.refunds if r.idempotency_key)
                ),
            }


ErrorBody = Callable[[int, str], dict[str, Any]]
"""Builds the provider's error body for a status and message."""


class FaultMiddleware:
    """ASGI middleware: journals every request and applies pending faults."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        core: SimulatorCore,
        error_body: ErrorBody,
        error_headers: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.app = app
        self.core = core
        self.error_body = error_body
        self.error_headers = error_headers or dict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        entry = JournalEntry(
            at=datetime.now(UTC),
            method=method,
            path=path,
            status=None,
            idempotency_key=headers.get("idempotency-key"),
        )
        is_control = path.startswith(CONTROL_PREFIX)
        fault = None if is_control else self.core.take_fault(method, path)
        if not is_control:
            self.core.record_request(entry)
        if fault is not None:
            entry.fault = fault.kind.value

        entry_token = _CURRENT_ENTRY.set(None if is_control else entry)
        try:
            await self._serve(scope, receive, send, entry, fault)
        finally:
            _CURRENT_ENTRY.reset(entry_token)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        entry: JournalEntry,
        fault: FaultSpec | None,
    ) -> None:
        status_holder: list[int] = []

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder.append(int(message["status"]))
                entry.status = int(message["status"])
            await send(message)

        if fault is None:
            await self.app(scope, receive, recording_send)
            return
        if fault.kind in (FaultKind.STATUS, FaultKind.RATE_LIMIT):
            status = 429 if fault.kind is FaultKind.RATE_LIMIT else fault.status
            extra = dict(self.error_headers())
            if fault.kind is FaultKind.RATE_LIMIT and fault.retry_after is not None:
                extra["Retry-After"] = fault.retry_after
            text = "Too many requests." if status == 429 else "Simulated provider failure."
            response = JSONResponse(self.error_body(status, text), status, headers=extra)
            await response(scope, receive, recording_send)
            return
        if fault.kind is FaultKind.LATENCY:
            await asyncio.sleep(fault.seconds)
            await self.app(scope, receive, recording_send)
            return
        if fault.kind is FaultKind.DROP_BEFORE:
            # Nothing is processed. The client sees what ``drop`` shows it: a status line, then
            # a connection closed mid-answer (an exception before any response would make the
            # server answer a clean 500 instead, which a client could read as "not processed").
            start: Message = {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
            await send(start)
            raise ConnectionAbortedError("simulated connection dropped before processing")
        # process_then_hang / drop: run the app for real, hold its answer back.
        held: list[Message] = []

        async def holding_send(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, holding_send)
        if fault.kind is FaultKind.DROP:
            # Failing after the response has started makes the server close the connection
            # mid-answer (failing before it would make the server answer 500 instead).
            for message in held[:1]:
                await send(message)
            raise ConnectionAbortedError("simulated dropped connection")
        await asyncio.sleep(fault.seconds)
        for message in held:
            await recording_send(message)


def control_routes(
    core: SimulatorCore,
    *,
    reset: Callable[[], None],
    payments: Callable[[], list[dict[str, Any]]],
) -> list[Route]:
    """The ``/_sim/*`` routes; ``reset`` restores the provider's own seeded state."""

    async def post_faults(request: Request) -> Response:
        try:
            parsed = _FAULTS.validate_json(await request.body())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        specs = parsed if isinstance(parsed, list) else [parsed]
        core.add_faults(specs)
        return JSONResponse({"queued": len(specs)}, 201)

    async def delete_faults(_: Request) -> Response:
        core.clear_faults()
        return Response(status_code=204)

    async def get_journal(_: Request) -> Response:
        return JSONResponse(core.journal())

    async def post_reset(_: Request) -> Response:
        core.reset()
        reset()
        return Response(status_code=204)

    async def get_payments(_: Request) -> Response:
        return JSONResponse(payments())

    return [
        Route(f"{CONTROL_PREFIX}/faults", post_faults, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/faults", delete_faults, methods=["DELETE"]),
        Route(f"{CONTROL_PREFIX}/journal", get_journal, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}/reset", post_reset, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/payments", get_payments, methods=["GET"]),
    ]
