"""One span per provider HTTP request, and the hook that lets activities count those requests.

:class:`TracedTransport` wraps the transport of every provider client (``build_client``). Its
span ``HTTP <METHOD>`` (kind CLIENT) carries only ``http.request.method``, ``url.path``,
``server.address``, ``http.response.status_code`` (or ``error.type`` when no answer came),
and which provider and operation made the request. It never records headers (``Api-Key``,
``Signature``), query values or bodies (Mews sends its tokens in the body): what a span holds
is chosen field by field, never copied from the request.

The provider and operation come from :func:`provider_operation`, entered around each request
by ``providers.http.translate_transport_errors``, so adapters need no tracing code. Activities
count requests through :func:`observe_provider_calls`; this module knows nothing of Temporal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

TRACER_NAME = "refund-orchestrator.http"

log = logging.getLogger("refunds.telemetry")


@dataclass(frozen=True)
class ProviderCall:
    """One finished request: ``status`` is the HTTP status code, or the class name of the
    transport error when no answer came (``ConnectError``, ``ReadTimeout``, ...)."""

    provider: str | None
    operation: str | None
    status: str


CallObserver = Callable[[ProviderCall], None]

_operation: ContextVar[tuple[str, str] | None] = ContextVar("refunds_provider_op", default=None)
_observer: ContextVar[CallObserver | None] = ContextVar("refunds_call_observer", default=None)


@contextmanager
def provider_operation(provider: str, operation: str) -> Iterator[None]:
    """Label the requests made inside the block with the provider and its operation."""
    token = _operation.set((provider, operation))
    try:
        yield
    finally:
        _operation.reset(token)


@contextmanager
def observe_provider_calls(observer: CallObserver) -> Iterator[None]:
    """Call ``observer`` after each provider request made inside the block."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


class TracedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: a span per request and a report to the current observer."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    @property
    def inner(self) -> httpx.AsyncBaseTransport:
        return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        labels = _operation.get()
        attributes: dict[str, AttributeValue] = {
            "http.request.method": request.method,
            "url.path": request.url.path,
            "server.address": request.url.host,
        }
        if labels is not None:
            attributes["refunds.provider"], attributes["refunds.operation"] = labels
        with trace.get_tracer(TRACER_NAME).start_as_current_span(
            f"HTTP {request.method}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await self._inner.handle_async_request(request)
            except Exception as exc:
                # The class only: transport messages can quote the URL.
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                _report(labels, type(exc).__name__)
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(StatusCode.ERROR)
            _report(labels, str(response.status_code))
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _report(labels: tuple[str, str] | None, status: str) -> None:
    observer = _observer.get()
    if observer is None:
        return
    provider, operation = labels if labels is not None else (None, None)
    try:
        observer(ProviderCall(provider=provider, operation=operation, status=status))
    except Exception:
        # Counting a call must never fail the call itself.
        log.warning("provider call observer failed", exc_info=True)
