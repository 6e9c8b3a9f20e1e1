"""A pending Mews refund's fallbacks when the status batch does not read it (patch
mews-status-batch): a registration that fails for a whole call budget, and a batch that
declines the refund (full). Either way the refund reads its status on its own
(``poll_refund_status``) and still ends. On the time-skipping server, with the fake's
``watch_refund_status`` (``watch_step``) standing in for the batch."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from core.models import (
    ProviderRefund,
    ProviderRefundStatus,
    RefundOptions,
    RefundState,
    RefundStatus,
)
from tests.workflows.fakes import FakeProvider, Step, refund
from tests.workflows.test_cost_patch import patch_markers, scheduled
from tests.workflows.test_refund_workflow import harness, mews_request
from workflows.policies import CALL_BUDGET
from workflows.refund import (
    LEAN_START_PATCH,
)
from workflows.status_batch import ProviderStatus, StatusOutcome

OPTIONS = RefundOptions(poll_initial_s=60, poll_max_s=240)
# Real seconds a run may take on the time-skipping server (a broken fallback may never end).
RESULT_TIMEOUT_S = 60


def pending_until(third: int) -> Step:
    """``poll_step``: pending until the ``third``-th read, which says succeeded."""

    def step(n: int, _: activity.Info) -> ProviderRefund:
        done = n >= third
        return refund(ProviderRefundStatus.SUCCEEDED if done else ProviderRefundStatus.PENDING)

    return step


def unavailable() -> ApplicationError:
    # Retryable: the server retries it until the registration's call budget is spent.
    return ApplicationError("status batch unavailable", type="Unavailable")


async def outcome(handle: WorkflowHandle[Any, RefundStatus]) -> RefundStatus:
    """The run's result, or a failed test (and the run terminated) if it does not end."""
    try:
        return await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
    except TimeoutError:
        await handle.terminate(reason="test: the refund did not end")
        raise AssertionError("the refund did not end") from None


async def run_to_the_end(
    env: WorkflowEnvironment, fake: FakeProvider
) -> tuple[RefundStatus, WorkflowHistory]:
    """A Mews refund run to its end against ``fake``: its result and its history."""
    async with harness(env, fake) as h:
        handle = await h.start(mews_request(), OPTIONS)
        final = await outcome(handle)
        return final, await handle.fetch_history()


def after_submit(names: list[str]) -> list[str]:
    return names[names.index("submit_refund") + 1 :]


async def test_failed_registrations_fall_back_to_own_status_checks(
    env: WorkflowEnvironment,
) -> None:
    def watch(n: int, _: activity.Info) -> None:
        raise unavailable()

    fake = FakeProvider(poll_step=pending_until(3), watch_step=watch)
    final, history = await run_to_the_end(env, fake)
    assert final.state is RefundState.SUCCEEDED
    assert patch_markers(history) == [LEAN_START_PATCH]
    # Each round: a registration that never succeeds, then a read of its own; it tries to
    # register again every round.
    rounds = after_submit(scheduled(history))
    assert rounds == ["watch_refund_status", "poll_refund_status"] * 3, rounds
    # All three reads were its own (none through a registration).
    assert fake.count("poll") == 3
    calls = fake.calls[fake.calls.index(next(c for c in fake.calls if c.name == "watch")) :]
    reads = [i for i, c in enumerate(calls) if c.name == "poll"]
    # Each round's registration was retried (attempts 1, 2, ...) for most of its call budget
    # before the refund read on its own; the time-skipping server ends the budget early,
    # when the next backoff (2 minutes by then) would take it to or near its end.
    starts = [0] + [i + 1 for i in reads[:-1]]
    for start, read in zip(starts, reads, strict=True):
        attempts = calls[start:read]
        assert [c.attempt for c in attempts] == list(range(1, len(attempts) + 1))
        assert len(attempts) > 5
        spent = calls[read].scheduled - attempts[0].scheduled
        assert CALL_BUDGET / 2 <= spent <= CALL_BUDGET, spent
    # Between rounds it waited its own delay (60 s, then 120 s) before registering again.
    for read, delay_s in zip(reads[:2], (60, 120), strict=True):
        waited = calls[read + 1].scheduled - calls[read].scheduled
        assert timedelta(seconds=delay_s) <= waited < timedelta(seconds=delay_s + 10), waited


async def test_registration_recovering_goes_back_to_the_batch(env: WorkflowEnvironment) -> None:
    """The first registration fails for its whole budget: one read of its own, then the
    next round registers again and the batch (the stand-in) reads it to the end."""
    first_call: list[str] = []

    def watch(n: int, info: activity.Info) -> None:
        # Every attempt of the first registration call fails; later calls succeed.
        if not first_call:
            first_call.append(info.activity_id)
        if info.activity_id == first_call[0]:
            raise unavailable()

    fake = FakeProvider(poll_step=pending_until(3), watch_step=watch)
    final, history = await run_to_the_end(env, fake)
    assert final.state is RefundState.SUCCEEDED
    # Failed registration, its own read, then registered again: the stand-in's read (still
    # pending) and, at the watchdog, a registration whose read says succeeded.
    assert after_submit(scheduled(history)) == [
        "watch_refund_status",
        "poll_refund_status",
        "watch_refund_status",
        "watch_refund_status",
    ]
    assert fake.count("poll") == 3
    assert [c.attempt for c in fake.calls if c.name == "watch"][-2:] == [1, 1]


async def test_a_declined_refund_reads_on_its_own_for_the_rest_of_the_run(
    env: WorkflowEnvironment,
) -> None:
    def watch(n: int, _: activity.Info) -> ProviderStatus | None:
        # The first registration is declined (the batch is full); any later one would be
        # read by the stand-in.
        if n == 1:
            return ProviderStatus(
                refund_id="R-1", outcome=StatusOutcome.DECLINED, message="status batch is full"
            )
        return None

    fake = FakeProvider(poll_step=pending_until(3), watch_step=watch)
    final, history = await run_to_the_end(env, fake)
    assert final.state is RefundState.SUCCEEDED
    assert patch_markers(history) == [LEAN_START_PATCH]
    # One registration (declined), then only reads of its own, pending ones included.
    assert after_submit(scheduled(history)) == [
        "watch_refund_status",
        "poll_refund_status",
        "poll_refund_status",
        "poll_refund_status",
    ]
    assert fake.count("watch") == 1
    assert fake.count("poll") == 3
    # Read at once after the decline, then at its own delays (60 s, then 120 s).
    watched, *reads = (c.scheduled for c in fake.calls if c.name in ("watch", "poll"))
    gaps = [b - a for a, b in zip([watched, *reads], reads, strict=False)]
    assert gaps[0] < timedelta(seconds=10), gaps
    for gap, delay_s in zip(gaps[1:], (60, 120), strict=True):
        assert timedelta(seconds=delay_s) <= gap < timedelta(seconds=delay_s + 10), gaps
