"""A three-minute outage of both providers' refund calls, with refunds started during it.

Every refund call answers 503 for 180 s (a timed fault). Paynow's refunds are retried under
the same Idempotency-Key with the server's backoff; a Mews 503 leaves the outcome unknown, so
each Mews refund looks the account up, finds nothing, and sends again with backoff (10 s
doubling). Nobody is asked to step in: the refunds stay SUBMITTING through the outage (not
NEEDS_ATTENTION: the attention deadline is days away), and when the providers come back every
refund ends SUCCEEDED with exactly one refund at the provider.

This takes about four real minutes (the outage, then the longest backoff step).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.models import ProviderName, RefundOptions, RefundRequest, RefundState
from starter.client import RefundClient
from tests.faults.conftest import (
    CALL_TIMEOUT_S,
    MEWS_REFUND,
    PAYNOW_SUBMIT,
    POLL_INITIAL_S,
    POLL_MAX_S,
    FaultStack,
)

# wall_clock: it waits out the outage; a parallel run starts it first, beside everything else.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.wall_clock,
    pytest.mark.asyncio(loop_scope="session"),
    # The outage alone is three minutes; the run around it, with CI load, several more.
    pytest.mark.timeout(900),
]

OUTAGE_S = 180.0
# A Mews reconcile is 2 lookups 5 s apart: long enough to see it happen, short next to the
# outage.
OPTIONS = RefundOptions(
    poll_initial_s=POLL_INITIAL_S,
    poll_max_s=POLL_MAX_S,
    call_timeout_s=CALL_TIMEOUT_S,
    reconcile_settle_s=5,
    reconcile_lookups=2,
)
# Refunds started this long into the outage, besides those started at once.
LATE_START_S = 30.0
# Mid-outage, when every refund must still be on its way (SUBMITTING, retrying).
CHECK_AT_S = 90.0
# A hang fails the test instead of blocking the run.
ALL_FINAL_TIMEOUT_S = 480.0


def refund_calls(journal: dict[str, Any], path: str, since: datetime) -> list[dict[str, Any]]:
    return [
        r
        for r in journal["requests"]
        if path in r["path"] and r["method"] == "POST" and datetime.fromisoformat(r["at"]) >= since
    ]


async def test_three_minute_outage_of_both_providers(faults: FaultStack) -> None:
    client = RefundClient(
        faults.client.client, task_queue=faults.client.task_queue, options=OPTIONS
    )
    # Two Mews refunds on different accounts and two Paynow refunds; one of each starts as the
    # outage begins, the other half a minute into it.
    requests: list[RefundRequest] = []
    for provider in (ProviderName.MEWS, ProviderName.PAYNOW):
        for label in ("outage-early", "outage-late"):
            requests.append(await faults.new_refund(provider, "succeeds", label=label, start=False))
    mews = [r for r in requests if r.provider is ProviderName.MEWS]
    assert mews[0].account_id != mews[1].account_id
    early, late = requests[0::2], requests[1::2]

    began = datetime.now(UTC)
    clock = time.monotonic()
    outage = {"kind": "status", "status": 503, "duration_s": OUTAGE_S, "method": "POST"}
    await faults.inject(ProviderName.MEWS, {**outage, "path_contains": MEWS_REFUND})
    await faults.inject(ProviderName.PAYNOW, {**outage, "path_contains": PAYNOW_SUBMIT})

    for request in early:
        assert (await client.start(request)).created
    await asyncio.sleep(LATE_START_S)
    for request in late:
        assert (await client.start(request)).created

    await asyncio.sleep(max(0.0, clock + CHECK_AT_S - time.monotonic()))
    for request in requests:
        during = await client.status(request.idempotency_key)
        where = f"{request.provider.value} {request.idempotency_key}: {during}"
        assert during.state is RefundState.SUBMITTING, where
        assert during.provider_refund_id is None, where
        assert await faults.refunds_made(request) == 0, where
        if request.provider is ProviderName.MEWS:
            # Each lost answer is seen by the workflow (Paynow's retries happen inside one
            # activity call, under its Idempotency-Key: the workflow sees them at the end).
            assert "503" in (during.last_error or ""), where

    finals = await asyncio.wait_for(
        asyncio.gather(*(client.wait(r.idempotency_key) for r in requests)),
        ALL_FINAL_TIMEOUT_S - (time.monotonic() - clock),
    )
    outage_over = began + timedelta(seconds=OUTAGE_S)
    for request, final in zip(requests, finals, strict=True):
        assert final.state is RefundState.SUCCEEDED, final
        assert await faults.refunds_made(request) == 1, request
        assert await faults.provider_refund_ids(request) == [final.provider_refund_id]
        assert final.finished_at is not None
        assert final.finished_at >= outage_over - timedelta(seconds=1), final

    for provider, path in ((ProviderName.MEWS, MEWS_REFUND), (ProviderName.PAYNOW, PAYNOW_SUBMIT)):
        sent = refund_calls(await faults.journal(provider), path, began)
        refused = [r for r in sent if r["fault"] == "status"]
        answered = [r for r in sent if r["fault"] is None]
        # Tried again and again during the outage, with backoff, not in a tight loop; one
        # successful call per refund once it was over.
        assert len(refused) >= 2 * 4, refused
        assert len(refused) < 2 * 30, len(refused)
        assert all(r["status"] == 503 for r in refused)
        assert all(datetime.fromisoformat(r["at"]) < outage_over for r in refused)
        assert len(answered) == 2, answered
        assert all(datetime.fromisoformat(r["at"]) >= outage_over for r in answered)

    for request in mews:
        # Each lost answer was looked up before the refund was sent again.
        submits = await faults.activity_runs(request.idempotency_key, "submit_refund")
        lookups = await faults.activity_runs(request.idempotency_key, "find_submitted_refunds")
        assert len(submits) >= 3, submits
        assert [run.result for run in submits][-1] == "completed"
        assert len(lookups) >= 2 * (len(submits) - 1), lookups
