"""Observability: traces, metrics and structured logs (docs/observability.md).

* :mod:`telemetry.tracing`: the OpenTelemetry tracer provider chosen by the ``OTEL_*``
  variables, Temporal's tracing interceptor and the starter's span.
* :mod:`telemetry.http`: one span per provider HTTP request (method, path, status; never
  headers, query values or bodies) and the hook activities count provider calls through.
* :mod:`telemetry.metrics`: the worker's Prometheus endpoint and the refund metrics the
  workflow records through the SDK's replay-safe meter.
* :mod:`telemetry.logging`: JSON-lines logs carrying the refund key and workflow id.

Importing this package or any module in it has no side effects: nothing is configured until
the worker calls the ``setup_*`` functions. :mod:`telemetry.http` and :mod:`telemetry.metrics`
sit low in the import graph (providers and workflows use them), so they import no project
modules above :mod:`core`.
"""
