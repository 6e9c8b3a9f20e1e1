"""One connected trace from the starter to the provider's HTTP calls, and nothing secret in it."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from core.models import RefundState
from providers.errors import ProviderConnectError
from providers.http import build_client, translate_transport_errors
from telemetry.http import ProviderCall, TracedTransport, observe_provider_calls
from telemetry.tracing import TracingConfigError, exporter_names, setup_tracing, traced
from tests.telemetry.conftest import refund_stack

# The only attributes an HTTP span may carry: chosen fields, never headers or bodies.
HTTP_ATTRIBUTES = {
    "http.request.method",
    "url.path",
    "server.address",
    "http.response.status_code",
    "error.type",
    "refunds.provider",
    "refunds.operation",
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


def _ancestry(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    """Names from ``span`` up to the root, following parent span ids."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    names = [span.name]
    current = span
    while current.parent is not None and current.parent.span_id in by_id:
        current = by_id[current.parent.span_id]
        names.append(current.name)
    return names


def _texts(span: ReadableSpan) -> list[str]:
    texts = [span.name, span.status.description or ""]
    texts += [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        texts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return texts


async def test_one_trace_from_start_to_provider_calls(
    temporal_address: str, spans: InMemorySpanExporter
) -> None:
    async with refund_stack(temporal_address) as stack:
        request = await stack.paynow_request()
        with trace.get_tracer("tests").start_as_current_span("caller") as caller:
            started = await stack.refunds.start(request)
        final = await stack.refunds.wait(request.idempotency_key)
    assert started.created
    assert final.state is RefundState.SUCCEEDED

    trace_id = caller.get_span_context().trace_id
    finished = spans.get_finished_spans()
    mine = [s for s in finished if s.context is not None and s.context.trace_id == trace_id]
    # Every span Temporal made for this refund is in the caller's trace.
    of_refund = [
        s for s in finished if (s.attributes or {}).get("temporalWorkflowID") == request.workflow_id
    ]
    assert of_refund
    assert all(s in mine for s in of_refund)

    start = _named(mine, "refund.start")
    assert start.attributes == {
        "refunds.key": request.idempotency_key,
        "refunds.provider": "paynow",
        "refunds.created": True,
    }
    assert _ancestry(_named(mine, "RunWorkflow:RefundWorkflow"), mine) == [
        "RunWorkflow:RefundWorkflow",
        "StartWorkflow:RefundWorkflow",
        "refund.start",
        "caller",
    ]
    for method, activity, operation in (
        ("GET", "validate_refund", "check_refundable"),
        ("POST", "submit_refund", "submit"),
    ):
        http = _named(mine, f"HTTP {method}")
        assert _ancestry(http, mine) == [
            f"HTTP {method}",
            f"RunActivity:{activity}",
            f"StartActivity:{activity}",
            "StartWorkflow:RefundWorkflow",
            "refund.start",
            "caller",
        ]
        attributes = dict(http.attributes or {})
        assert http.kind is SpanKind.CLIENT
        assert set(attributes) <= HTTP_ATTRIBUTES
        assert attributes["http.request.method"] == method
        assert attributes["http.response.status_code"] in (200, 201)
        assert attributes["refunds.provider"] == "paynow"
        assert attributes["refunds.operation"] == operation
        path = str(attributes["url.path"])
        assert path.startswith(f"/v3/payments/{request.payment_id}/")
        assert "?" not in path

    # No credential, signing key or signature anywhere in any span of the session.
    assert stack.signatures
    texts = [text for span in finished for text in _texts(span)]
    for secret in stack.secrets:
        assert not [text for text in texts if secret in text], "a secret reached a span"


def test_traceparent_wins_over_the_current_span(spans: InMemorySpanExporter) -> None:
    with (
        trace.get_tracer("tests").start_as_current_span("caller"),
        traced("refund.start", attributes={}, traceparent=TRACEPARENT) as span,
    ):
        context = span.get_span_context()
    assert f"{context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    started = _named(spans.get_finished_spans(), "refund.start")
    assert started.parent is not None
    assert f"{started.parent.span_id:016x}" == "00f067aa0ba902b7"


@pytest.mark.parametrize("traceparent", [None, "", "not-a-traceparent"])
def test_without_a_usable_traceparent_the_caller_span_is_the_parent(
    spans: InMemorySpanExporter, traceparent: str | None
) -> None:
    with (
        trace.get_tracer("tests").start_as_current_span("caller") as caller,
        traced("refund.start", attributes={}, traceparent=traceparent),
    ):
        pass
    started = _named(spans.get_finished_spans(), "refund.start")
    assert started.parent is not None
    assert started.parent.span_id == caller.get_span_context().span_id


def test_a_failure_marks_the_span_with_the_class_only(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="account ACC-1"), traced("refund.start", attributes={}):
        raise ValueError("bad request for account ACC-1")
    span = _named(spans.get_finished_spans(), "refund.start")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ValueError"
    assert "ACC-1" not in " ".join(_texts(span))


# --- provider HTTP spans without Temporal ------------------------------------------------------


async def test_http_span_per_request_with_provider_and_operation(
    spans: InMemorySpanExporter,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429 if request.url.path.endswith("busy") else 200)

    calls: list[ProviderCall] = []
    transport = TracedTransport(httpx.MockTransport(answer))
    async with httpx.AsyncClient(base_url="https://provider.test", transport=transport) as http:
        with observe_provider_calls(calls.append):
            async with translate_transport_errors("mews", "payments/refund"):
                await http.post("/api/refund", params={"token": "t0ken"}, json={"Secret": "x"})
            await http.get("/busy", headers={"Authorization": "Bearer t0ken"})
    assert calls == [
        ProviderCall(provider="mews", operation="payments/refund", status="200"),
        ProviderCall(provider=None, operation=None, status="429"),
    ]
    post, get = spans.get_finished_spans()
    assert dict(post.attributes or {}) == {
        "http.request.method": "POST",
        "url.path": "/api/refund",
        "server.address": "provider.test",
        "http.response.status_code": 200,
        "refunds.provider": "mews",
        "refunds.operation": "payments/refund",
    }
    assert get.status.status_code is StatusCode.ERROR
    assert (get.attributes or {})["error.type"] == "429"
    assert not [t for s in (post, get) for t in _texts(s) if "t0ken" in t or "Secret" in t]


async def test_http_span_for_a_transport_error(spans: InMemorySpanExporter) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused to https://provider.test/?key=k3y")

    calls: list[ProviderCall] = []
    transport = TracedTransport(httpx.MockTransport(refuse))
    async with httpx.AsyncClient(base_url="https://provider.test", transport=transport) as http:
        with observe_provider_calls(calls.append), pytest.raises(ProviderConnectError):
            async with translate_transport_errors("paynow", "submit"):
                await http.post("/v3/payments/P/refunds")
    assert calls == [ProviderCall(provider="paynow", operation="submit", status="ConnectError")]
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ConnectError"
    assert "http.response.status_code" not in (span.attributes or {})
    assert not [t for t in _texts(span) if "k3y" in t]


async def test_build_client_traces_every_request() -> None:
    client = build_client(base_url="https://api.example", timeout_s=1.0, user_agent="ua/1")
    async with client:
        assert isinstance(client._transport, TracedTransport)
        assert isinstance(client._transport.inner, httpx.AsyncHTTPTransport)


# --- configuration from OTEL_* -----------------------------------------------------------------


def test_exporter_names() -> None:
    assert exporter_names(None) == []
    assert exporter_names("none") == []
    assert exporter_names("console") == ["console"]
    assert exporter_names(" OTLP , console,otlp") == ["otlp", "console"]
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        exporter_names("zipkin")


def test_tracing_is_off_by_default_and_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert setup_tracing("refund-worker") is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert setup_tracing("refund-worker") is None


@pytest.mark.parametrize(
    ("service_env", "expected"), [(None, "refund-worker"), ("refunds-eu", "refunds-eu")]
)
def test_setup_tracing_builds_exporters_and_service_name(
    monkeypatch: pytest.MonkeyPatch, service_env: str | None, expected: str
) -> None:
    installed: list[object] = []
    # The global provider can be set once per process (the tests' one is already set).
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    if service_env is None:
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    else:
        monkeypatch.setenv("OTEL_SERVICE_NAME", service_env)
    provider = setup_tracing("refund-worker")
    assert provider is not None
    try:
        assert installed == [provider]
        assert provider.resource.attributes["service.name"] == expected
        processors = provider._active_span_processor._span_processors
        assert [type(p).__name__ for p in processors] == [
            "SimpleSpanProcessor",
            "BatchSpanProcessor",
        ]
    finally:
        provider.shutdown()
