"""The worker process is SIGKILLed in the middle of a refund and a new one is started: each
refund still finishes, and the provider made exactly one refund for it.

"During validate" and "during submit" mean the provider call is in flight when the worker
dies: a simulator fault holds the request (validate: ``latency`` on the first payment read;
submit: ``process_then_hang``, so the refund is already made when the worker dies, the case
where re-sending would refund twice) and the test kills as soon as the journal shows it,
well inside the worker's 1 s HTTP timeout. The history then proves it: the activity's
finishing attempt is a retry whose previous attempt timed out (the server noticed the dead
worker after the 3 s call timeout), not an HTTP error. A read run as a local activity (Paynow
without a budget) dies with the workflow task it runs in: that task times out instead.

A kill costs about 10 s more than the call timeout: the workflow task scheduled right after
it goes to the dead worker's sticky queue and reaches the new worker only when that times
out (the SDK's ``sticky_queue_schedule_to_start_timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from temporalio.api.enums.v1 import EventType

from benchmarks.refund_throughput import local_activity_types
from core.models import ProviderName, RefundState
from tests.faults.conftest import (
    MEWS_GET_ALL,
    MEWS_REFUND,
    PAYNOW_PAYMENT_STATUS,
    PAYNOW_SUBMIT,
    FaultStack,
    Journal,
)
from tests.support.refunds import wait_for_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PROVIDERS = [ProviderName.MEWS, ProviderName.PAYNOW]
# Longer than the worker's HTTP timeout: the request stays in flight until the kill.
HOLD_S = 5.0


def refund_made_for(payment_id: str) -> Callable[[Journal], bool]:
    return lambda journal: payment_id in journal["refunds_per_payment"]


def validate_target(provider: ProviderName, payment_id: str) -> tuple[str, str]:
    """(path fragment, method) of the first provider call `validate` makes."""
    if provider is ProviderName.PAYNOW:
        return f"/v3/payments/{payment_id}{PAYNOW_PAYMENT_STATUS}", "GET"
    return MEWS_GET_ALL, "POST"


def submit_target(provider: ProviderName, payment_id: str) -> tuple[str, str]:
    if provider is ProviderName.PAYNOW:
        return f"/v3/payments/{payment_id}{PAYNOW_SUBMIT}", "POST"
    return MEWS_REFUND, "POST"


async def test_worker_killed_during_validate(faults: FaultStack) -> None:
    """Both providers' first validation read is held when the worker dies."""
    requests = [
        faults.request(p, await faults.new_payment(p, "succeeds"), label=f"kill-validate-{p.value}")
        for p in PROVIDERS
    ]
    targets = [validate_target(r.provider, r.payment_id) for r in requests]
    for request, (path, method) in zip(requests, targets, strict=True):
        await faults.inject(
            request.provider,
            {"kind": "latency", "seconds": HOLD_S, "path_contains": path, "method": method},
        )
    await asyncio.gather(*(faults.client.start(r) for r in requests))
    await asyncio.gather(
        *(
            faults.wait_in_flight(r.provider, path, method, "latency")
            for r, (path, method) in zip(requests, targets, strict=True)
        )
    )
    await faults.kill_and_restart_worker()

    finals = await asyncio.gather(*(faults.wait_final(r.idempotency_key) for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert final.state is RefundState.SUCCEEDED, final
        validate = await faults.activity_runs(request.idempotency_key, "validate_refund")
        history = await faults.client.handle(request.idempotency_key).fetch_history()
        if request.provider is ProviderName.MEWS:
            # An activity on the Mews budget queue: its retry followed a timed-out attempt.
            assert len(validate) == 1
            assert validate[0].timed_out_before, validate[0]
        else:
            # No Paynow budget here: validate is a local read (patch local-provider-reads),
            # run inside the dead worker's workflow task. That task timed out and the new
            # worker ran it again, read included; one read recorded, no activity.
            assert validate == []
            assert local_activity_types(history).count("validate_refund") == 1
            timed_out = EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
            assert any(e.event_type == timed_out for e in history.events)
        assert await faults.refunds_made(request) == 1


async def test_worker_killed_during_submit_after_the_provider_made_the_refund(
    faults: FaultStack,
) -> None:
    """The refund exists at the provider, the worker that asked for it is dead: the next
    attempt must not refund again. Paynow: re-sent with the same Idempotency-Key, answered
    from the provider's idempotency store. Mews: not re-sent; reconciled and adopted."""
    requests = [
        faults.request(p, await faults.new_payment(p, "succeeds"), label=f"kill-submit-{p.value}")
        for p in PROVIDERS
    ]
    for request in requests:
        path, method = submit_target(request.provider, request.payment_id)
        await faults.inject(
            request.provider,
            {
                "kind": "process_then_hang",
                "seconds": HOLD_S,
                "path_contains": path,
                "method": method,
            },
        )
    await asyncio.gather(*(faults.client.start(r) for r in requests))
    await asyncio.gather(
        *(
            faults.wait_for_journal(
                r.provider,
                refund_made_for(r.payment_id),
                f"the refund made at {r.provider.value}",
            )
            for r in requests
        )
    )
    await faults.kill_and_restart_worker()

    finals = await asyncio.gather(*(faults.wait_final(r.idempotency_key) for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert await faults.refunds_made(request) == 1
        assert final.state is RefundState.SUCCEEDED, final
        assert final.provider_refund_id in await faults.provider_refund_ids(request)
        submit = await faults.activity_runs(request.idempotency_key, "submit_refund")
        assert submit[0].timed_out_before, submit[0]
        if request.provider is ProviderName.PAYNOW:
            # Re-sent under the same key and answered from Paynow's idempotency store.
            path, _ = submit_target(request.provider, request.payment_id)
            journal = await faults.journal(request.provider)
            sent = [r for r in journal["requests"] if r["path"].endswith(path)]
            assert len(sent) >= 2
            assert {r["idempotency_key"] for r in sent} == {request.idempotency_key}
        else:
            # Not re-sent: the retry said "outcome unknown" and the workflow looked it up.
            assert submit[0].result == "failed"
            found = await faults.activity_runs(request.idempotency_key, "find_submitted_refunds")
            assert found, "the lost refund was adopted without reconciling"


async def test_worker_killed_during_a_pending_wait(faults: FaultStack) -> None:
    """Accepted refunds wait on durable timers between status checks; the worker dies and
    stays down a second; the new one carries on checking until the provider says done."""
    requests = [
        await faults.new_refund(provider, "slow", label=f"kill-pending-{provider.value}")
        for provider in PROVIDERS
    ]
    for request in requests:
        await wait_for_state(faults.client, request.idempotency_key, RefundState.PENDING)
    await faults.kill_and_restart_worker(down_s=1.0)

    finals = await asyncio.gather(*(faults.wait_final(r.idempotency_key) for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert final.state is RefundState.SUCCEEDED, final
        assert await faults.refunds_made(request) == 1
        assert final.provider_refund_id in await faults.provider_refund_ids(request)
