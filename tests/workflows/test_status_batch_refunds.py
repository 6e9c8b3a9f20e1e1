"""Pending Mews refunds read through the status batch of their budget queue (patch
mews-status-batch): one ``check_refund_statuses`` per round for every refund due, on the
time-skipping server with the real RefundStatusBatchWorkflow and scripted reads."""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio.testing import WorkflowEnvironment

from core.models import ProviderRefund, ProviderRefundStatus, RefundOptions, RefundState
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_cost_patch import patch_markers, scheduled
from tests.workflows.test_refund_workflow import harness, mews_request, paynow_request
from workflows.refund import (
    LEAN_START_PATCH,
)

OPTIONS = RefundOptions(poll_initial_s=60, poll_max_s=240)


async def test_two_pending_mews_refunds_share_one_read_per_round(
    dev_env: WorkflowEnvironment,
) -> None:
    """On the dev server (real time; on the time-skipping server the batch's result signals
    stalled it): both refunds at one delay fall due at the same multiples of it, so after
    their first reads one ``check_refund_statuses`` reads both, round after round, until
    the provider says succeeded."""
    ids = iter(("M-A", "M-B"))
    settled = False

    def submitted(n: int, _: object) -> ProviderRefund:
        return refund(ProviderRefundStatus.PENDING, next(ids))

    def read(refund_id: str, number: int) -> ProviderRefund:
        status = ProviderRefundStatus.SUCCEEDED if settled else ProviderRefundStatus.PENDING
        return refund(status, refund_id)

    fake = FakeProvider(submit_step=submitted, batch_step=read)
    options = RefundOptions(poll_initial_s=2, poll_max_s=2)
    async with harness(dev_env, fake) as h:
        # Both start just after a multiple of the delay since the epoch, so that their first
        # reads (at once) fall before the same next multiple unless starting the second takes
        # almost a whole delay.
        await asyncio.sleep(2 - time.time() % 2 + 0.05)
        first = await h.start(mews_request(), options)
        second = await h.start(mews_request(), options)
        for _ in range(300):
            if sum(1 for b in fake.batch_reads if len(b) == 2) >= 2:
                break
            await asyncio.sleep(0.05)
        settled = True
        results = await asyncio.wait_for(asyncio.gather(first.result(), second.result()), 20)
        histories = [await first.fetch_history(), await second.fetch_history()]
    assert [r.state for r in results] == [RefundState.SUCCEEDED, RefundState.SUCCEEDED]
    assert sorted(r.provider_refund_id or "" for r in results) == ["M-A", "M-B"]
    reads = fake.batch_reads
    # Each refund is read alone at most once (its first check, at once), the first one twice
    # if a multiple of the delay fell between the two first reads (a slow start under load:
    # each is next due at the first multiple after its own read plus the delay); every later
    # round reads both in one call, the last one too (both succeeded in it). CI once saw
    # [A], [B], [A], [A, B], ... without the aligned start above.
    shared_from = next(i for i, b in enumerate(reads) if len(b) == 2)
    assert shared_from <= 3, reads
    assert reads[:shared_from].count(("M-B",)) <= 1, reads
    assert all(set(b) == {"M-A", "M-B"} for b in reads[shared_from:]), reads
    assert len(reads) - shared_from >= 3, reads
    assert fake.count("poll") == sum(len(b) for b in reads)
    for history in histories:
        assert patch_markers(history) == [LEAN_START_PATCH]
        assert "poll_refund_status" not in scheduled(history)
        assert "watch_refund_status" in scheduled(history)


async def test_a_mews_refund_reads_its_status_through_the_batch(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(
        poll_step=lambda n, _: refund(
            ProviderRefundStatus.PENDING if n < 3 else ProviderRefundStatus.SUCCEEDED
        )
    )
    async with harness(env, fake) as h:
        handle = await h.start(mews_request(), OPTIONS)
        final = await handle.result()
        history = await handle.fetch_history()
    assert final.state is RefundState.SUCCEEDED
    # The time-skipping server's stand-in reads at each registration: the first at once,
    # the others when the watchdog found no further result.
    assert fake.count("poll") == 3
    assert scheduled(history).count("watch_refund_status") == 3
    assert "poll_refund_status" not in scheduled(history)


async def test_a_paynow_refund_records_no_batch_marker(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(
        poll_step=lambda n, _: refund(
            ProviderRefundStatus.PENDING if n < 2 else ProviderRefundStatus.SUCCEEDED
        )
    )
    async with harness(env, fake) as h:
        handle = await h.start(paynow_request(f"sb-{uuid.uuid4().hex[:8]}"), OPTIONS)
        final = await handle.result()
        history = await handle.fetch_history()
    assert final.state is RefundState.SUCCEEDED
    assert patch_markers(history) == [LEAN_START_PATCH]
    assert fake.batch_reads == []
    assert "watch_refund_status" not in scheduled(history)
