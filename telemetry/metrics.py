"""Metrics: the SDK's worker metrics and the refund metrics, on one Prometheus endpoint.

The endpoint is served by the Temporal SDK's own runtime (:func:`metrics_runtime`), so the
refund metrics are recorded through the SDK's meters and land next to its ``temporal_*``
worker metrics. Names (no ``_total`` suffix; labels as listed)::

    refunds_started                 counter    provider
    refunds_finished                counter    provider, outcome (SUCCEEDED, FAILED, ...)
    refund_time_to_final_seconds    histogram  provider, outcome (workflow time, whole refund)
    provider_calls                  counter    provider, operation, status (HTTP code or
                                               transport error class)
    provider_call_retries           counter    provider (activity attempts after the first)

The SDK adds ``namespace``, ``task_queue`` and ``workflow_type`` (workflow metrics) or
``activity_type`` (activity metrics), and ``service_name``.

The workflow helpers run inside the workflow sandbox (``workflows/refund.py`` imports this
module through ``imports_passed_through``). They record through ``workflow.metric_meter()``,
which drops values while a history is replayed; they also return early then, so a refund is
counted once however often its history is replayed.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

REFUNDS_STARTED = "refunds_started"
REFUNDS_FINISHED = "refunds_finished"
REFUND_TIME_TO_FINAL = "refund_time_to_final_seconds"
PROVIDER_CALLS = "provider_calls"
PROVIDER_CALL_RETRIES = "provider_call_retries"

# Refunds take seconds (instant providers) to days (bank transfers, operator attention).
TIME_TO_FINAL_BUCKETS = (
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    6 * 3600.0,
    86400.0,
    7 * 86400.0,
)


class MetricsEndpointError(RuntimeError):
    """The Prometheus endpoint could not be served (port taken, bad address)."""


def metrics_runtime(port: int | None, *, host: str = "0.0.0.0") -> Runtime | None:  # noqa: S104
    """A Temporal runtime serving ``/metrics`` on ``host:port``; ``None`` when no port is set.

    Clients (and the workers built on them) must be created with it: see ``starter.connection``.
    """
    if port is None:
        return None
    bind_address = f"{host}:{port}"
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=bind_address,
                    histogram_bucket_overrides={REFUND_TIME_TO_FINAL: TIME_TO_FINAL_BUCKETS},
                )
            )
        )
    except Exception as err:
        raise MetricsEndpointError(
            f"cannot serve metrics on {bind_address} ({err}); "
            "choose another port with REFUNDS_METRICS_PORT"
        ) from err


def record_refund_started(provider: str) -> None:
    """In the workflow: a refund began (call once, not in runs continued-as-new)."""
    if workflow.unsafe.is_replaying():
        return
    workflow.metric_meter().create_counter(REFUNDS_STARTED, "Refunds started").add(
        1, {"provider": provider}
    )


def record_refund_finished(
    provider: str, outcome: str, *, started_at: datetime | None, finished_at: datetime
) -> None:
    """In the workflow: a refund reached its final state ``outcome``."""
    if workflow.unsafe.is_replaying():
        return
    meter = workflow.metric_meter()
    labels = {"provider": provider, "outcome": outcome}
    meter.create_counter(REFUNDS_FINISHED, "Refunds that reached a final state").add(1, labels)
    if started_at is not None:
        seconds = max((finished_at - started_at).total_seconds(), 0.0)
        meter.create_histogram_float(
            REFUND_TIME_TO_FINAL, "Time from a refund's start to its final state", "s"
        ).record(seconds, labels)
