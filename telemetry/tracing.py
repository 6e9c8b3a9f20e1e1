"""Tracing: one OpenTelemetry trace from the starter to every provider HTTP call.

The span tree of a refund (Temporal's interceptor names its spans ``<Kind>:<name>``)::

    refund.start                         the starter (parent: the caller's span or traceparent)
    └── StartWorkflow:RefundWorkflow     client call, its context travels in a Temporal header
        ├── RunWorkflow:RefundWorkflow
        ├── StartActivity:validate_refund
        │   └── RunActivity:validate_refund
        │       └── HTTP GET             one per provider request (telemetry.http)
        ├── StartActivity:submit_refund ...
        └── CompleteWorkflow:RefundWorkflow

Workflow spans are created by the SDK outside the sandbox and never on replay, so a worker
that replays a history after a restart does not duplicate them.

Exporters follow the standard variables, read once at start-up:

* ``OTEL_TRACES_EXPORTER``: comma-separated ``otlp``, ``console`` or ``none`` (the default
  here is ``none``: nothing is set up and every span is a no-op);
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and the other
  ``OTEL_EXPORTER_OTLP_*`` settings, read by the OTLP gRPC exporter itself;
* ``OTEL_SERVICE_NAME`` (else the caller's default) and ``OTEL_RESOURCE_ATTRIBUTES``;
* ``OTEL_SDK_DISABLED=true`` turns tracing off whatever the exporter says.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from temporalio.contrib.opentelemetry import TracingInterceptor

TRACER_NAME = "refund-orchestrator"
EXPORTERS = frozenset({"otlp", "console", "none"})


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable names something this service cannot set up."""


def exporter_names(value: str | None) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for; empty means tracing is off."""
    names = [part.strip().lower() for part in (value or "none").split(",") if part.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={value!r} names {', '.join(unknown)}: "
            f"use one or more of {', '.join(sorted(EXPORTERS))}"
        )
    return [name for name in dict.fromkeys(names) if name != "none"]


def setup_tracing(service_name_default: str) -> TracerProvider | None:
    """Install the global tracer provider the ``OTEL_*`` variables describe.

    Returns it (call ``shutdown()`` on exit to flush), or ``None`` when tracing is off.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = exporter_names(os.environ.get("OTEL_TRACES_EXPORTER"))
    if not names:
        return None
    service_name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service_name_default
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    for name in names:
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            # Imported only when asked for: it pulls in grpc.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracing_interceptor() -> TracingInterceptor:
    """Temporal's interceptor, for ``Client.connect``: it traces client calls and, on a worker
    built from that client, workflows and activities. It uses the global tracer provider,
    also when that is installed after the interceptor was made."""
    return TracingInterceptor()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def parent_context(traceparent: str | None) -> Context | None:
    """The context a W3C ``traceparent`` names; ``None`` (the current context) when absent or
    unreadable, so a bad header never cuts the span off from the caller's own trace."""
    if not traceparent:
        return None
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


@contextmanager
def traced(
    name: str,
    *,
    attributes: Mapping[str, AttributeValue],
    traceparent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[trace.Span]:
    """A current span under ``traceparent`` or else the caller's current span.

    A failure marks the span with the exception's class only: messages may quote request
    fields that do not belong in traces.
    """
    with tracer().start_as_current_span(
        name,
        context=parent_context(traceparent),
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
