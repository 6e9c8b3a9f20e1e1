"""What every refund activity reports: provider calls, retries, and a log line per attempt.

Each activity wraps its provider work in :func:`observed`. Inside, every HTTP request the
adapter makes is counted in ``provider_calls`` by provider, the adapter's operation and the
answer's status (or the transport error's class), through the SDK's activity meter, so the
counts reach the worker's Prometheus endpoint. An attempt after the first counts in
``provider_call_retries``. Log lines go through ``activity.logger`` (workflow id, activity
type and attempt ride along) and say only the provider, the step and the outcome class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.models import ProviderName
from telemetry.http import ProviderCall, observe_provider_calls
from telemetry.metrics import PROVIDER_CALL_RETRIES, PROVIDER_CALLS


@contextmanager
def observed(provider: ProviderName, step: str, merchant: str | None = None) -> Iterator[None]:
    """Count and log one activity attempt's provider work (``step``: validate, submit, ...);
    ``merchant``, the request's merchant profile, labels the counters (a name, no secret)."""
    info = activity.info()
    meter = activity.metric_meter()
    calls = meter.create_counter(PROVIDER_CALLS, "Provider HTTP requests by status")
    profile = {"merchant": merchant} if merchant is not None else {}
    if info.attempt > 1:
        meter.create_counter(PROVIDER_CALL_RETRIES, "Activity attempts after the first").add(
            1, {"provider": provider.value, **profile}
        )

    def count(call: ProviderCall) -> None:
        calls.add(
            1,
            {
                "provider": call.provider or provider.value,
                "operation": call.operation or step,
                "status": call.status,
                **profile,
            },
        )

    fields = {"provider": provider.value, "operation": step}
    activity.logger.info("%s at %s: started", step, provider.value, extra=fields)
    try:
        with observe_provider_calls(count):
            yield
    except ApplicationError as err:
        outcome = err.type or type(err).__name__
        activity.logger.info(
            "%s at %s: %s", step, provider.value, outcome, extra={**fields, "outcome": outcome}
        )
        raise
    except Exception as err:
        outcome = type(err).__name__
        activity.logger.warning(
            "%s at %s: %s", step, provider.value, outcome, extra={**fields, "outcome": outcome}
        )
        raise
    activity.logger.info("%s at %s: done", step, provider.value, extra={**fields, "outcome": "ok"})
