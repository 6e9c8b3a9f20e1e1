"""`RefundStatusBatchWorkflow` on the time-skipping test server, with a scripted
``check_refund_statuses`` on a budget queue and stand-in refunds receiving ``provider_status``
(tests/status_batch/fakes.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from core.models import ProviderRefund, ProviderRefundStatus
from tests.status_batch.fakes import (
    ContractInput,
    ContractRefund,
    ContractResult,
    FakeReads,
    Heard,
    ListeningRefund,
    Read,
    refund,
)
from tests.workflows.test_cost_patch import patch_markers
from workflows.status_batch import (
    CATCH_UP_PATCH,
    ON_CHANGE_PATCH,
    RefundStatusBatchWorkflow,
    StatusBatchInput,
    StatusOutcome,
    UnwatchRefund,
    WatchRefund,
    poll_delay_s,
    status_batch_id,
)

R = TypeVar("R")
PENDING = ProviderRefundStatus.PENDING
SUCCEEDED = ProviderRefundStatus.SUCCEEDED
FAILED = ProviderRefundStatus.FAILED


@dataclass
class Stack:
    env: WorkflowEnvironment
    queue: str
    budget: str
    fake: FakeReads

    async def start_batch(self, *watches: WatchRefund, **knobs: Any) -> WorkflowHandle[Any, Any]:
        return await self.env.client.start_workflow(
            RefundStatusBatchWorkflow.run,
            StatusBatchInput(task_queue=self.budget, watches=watches, **knobs),
            id=status_batch_id(self.budget),
            task_queue=self.queue,
        )

    async def listen(self, workflow_id: str, limit: int) -> WorkflowHandle[Any, list[Heard]]:
        return await self.env.client.start_workflow(
            ListeningRefund.run, limit, id=workflow_id, task_queue=f"{self.queue}-listeners"
        )


@asynccontextmanager
async def stack(env: WorkflowEnvironment, fake: FakeReads) -> AsyncIterator[Stack]:
    queue = f"refunds-{uuid.uuid4().hex[:8]}"
    budget = f"{queue}.budget.mews.default"
    async with (
        Worker(
            env.client,
            task_queue=queue,
            workflows=[RefundStatusBatchWorkflow, ContractRefund],
        ),
        # Thousands of listeners: outside the sandbox, for speed (they only record).
        Worker(
            env.client,
            task_queue=f"{queue}-listeners",
            workflows=[ListeningRefund],
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=3000,
        ),
        Worker(env.client, task_queue=budget, activities=[fake.check]),
    ):
        yield Stack(env, queue, budget, fake)


def watch(n: int, *, initial: float = 5.0, cap: float = 40.0, checks: int = 0) -> WatchRefund:
    return WatchRefund(
        workflow_id=f"refund:bulk-{n:05d}",
        refund_id=f"r-{n:05d}",
        account_id="a1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01",
        poll_initial_s=initial,
        poll_max_s=cap,
        checks_so_far=checks,
    )


def rounds_of(reads: list[Read]) -> list[list[Read]]:
    """Reads grouped by round: the reads of one round are scheduled at one moment, and rounds
    lie at least a second apart."""
    by_second: dict[int, list[Read]] = defaultdict(list)
    for read in reads:
        by_second[round(read.at.timestamp())].append(read)
    return [by_second[k] for k in sorted(by_second)]


async def done(handle: WorkflowHandle[Any, R]) -> R:
    """A workflow's result, failing the test rather than hanging when it never comes.

    Awaited one at a time: awaiting several at once on the time-skipping server made it time
    workflows out."""
    return await asyncio.wait_for(handle.result(), timeout=240)


def read_times(reads: list[Read]) -> dict[str, list[datetime]]:
    times: dict[str, list[datetime]] = defaultdict(list)
    for read in sorted(reads, key=lambda r: r.at):
        for refund_id in read.ids:
            times[refund_id].append(read.at)
    return times


async def test_2500_refunds_are_read_1000_a_call_each_on_its_own_backoff(
    env: WorkflowEnvironment,
) -> None:
    """2,500 watched refunds: three reads a round (1000, 1000, 500), each refund on its own
    backoff (even ones 5 s doubling to 40 s, odd ones every 5 s), final ones no longer read,
    refunds that ended dropped, and the registry carried through continue-as-new."""

    def script(refund_id: str, n: int) -> ProviderRefund | None:
        kind = int(refund_id[2:]) % 10
        if kind == 0:  # succeeds at its second read
            return refund(refund_id, SUCCEEDED if n >= 2 else PENDING)
        if kind == 1:  # not shown at first, then pending, then failed
            return None if n == 1 else refund(refund_id, FAILED if n >= 3 else PENDING)
        if kind == 2:  # pending for good; its workflow ends after two results
            return refund(refund_id, PENDING)
        return refund(refund_id, SUCCEEDED if n >= 4 else PENDING)

    fake = FakeReads(script)
    count = 2500
    options = {n: (5.0, 40.0) if n % 2 == 0 else (5.0, 5.0) for n in range(count)}
    async with stack(env, fake) as s:
        refunds: list[WorkflowHandle[Any, list[Heard]]] = []
        for start in range(0, count, 250):
            refunds += await asyncio.gather(
                *(
                    s.listen(f"refund:bulk-{n:05d}", 2 if n % 10 == 2 else 10)
                    for n in range(start, min(start + 250, count))
                )
            )
        batch = await s.start_batch(
            *(watch(n, initial=options[n][0], cap=options[n][1]) for n in range(count)),
            events_per_run=2000,
            idle_s=120,
            # Every read told, as before patch status-batch-on-change: this test follows each
            # refund read by read (test_only_a_change_is_told covers the quiet).
            quiet_s=0,
        )
        heard = [await done(h) for h in refunds]
        await done(batch)
        first_run = s.env.client.get_workflow_handle(batch.id, run_id=batch.result_run_id)
        first_history = await first_run.fetch_history()
        # Registered at the first workflow task (the workflow's time then: the task's start).
        registered_at = next(
            e.event_time.ToDatetime(tzinfo=UTC)
            for e in first_history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        )

    assert {r.task_queue for r in fake.reads} == {s.budget}
    assert all(len(r.ids) <= 1000 and r.attempt == 1 for r in fake.reads)
    rounds = rounds_of(fake.reads)
    # The first round reads every refund: three calls.
    assert sorted(len(r.ids) for r in rounds[0]) == [500, 1000, 1000]
    for calls in rounds:
        ids = [i for r in calls for i in r.ids]
        assert len(ids) == len(set(ids))
        assert len(calls) == -(-len(ids) // 1000)
    # Rounds come together: far fewer than one per refund and check.
    assert len(rounds) <= 12

    times = read_times(fake.reads)
    for n in range(count):
        refund_id = f"r-{n:05d}"
        initial, cap = options[n]
        seen = times[refund_id]
        # Final ones are read no more; ended ones (kind 2) once more than they heard (the
        # result that finds them gone), then dropped. (One may hear a third result: it came
        # while its workflow was completing, so the completion waited for it.)
        if n % 10 == 2:
            assert len(seen) == len(heard[n]) + 1, (refund_id, seen)
        else:
            assert len(seen) == {0: 2, 1: 3}.get(n % 10, 4), (refund_id, seen)
        previous = registered_at
        for k, at in enumerate(seen):
            delay = poll_delay_s(initial, cap, k)
            gap = (at - previous).total_seconds()
            # Never earlier than its own backoff asks (the round's one-second window aside).
            # How much later depends on how long the rounds' deliveries take here in real
            # time (the server does not skip time while workers are busy); the bound on that
            # is test_schedule's, on the registry alone.
            # Read times are when the activity ran, not when its round was due: a read that
            # came late in a slow round (a loaded machine) shortens the gap to the next one.
            # The exact bound (delay less the 1 s window, from due times) is test_schedule's;
            # here: never read at less than half its own backoff.
            assert gap >= delay / 2, (refund_id, k, gap)
            previous = at

    for n, results in enumerate(heard):
        refund_id = f"r-{n:05d}"
        statuses = [h.status for h in results]
        assert all(st.refund_id == refund_id for st in statuses)
        assert [st.checks for st in statuses] == list(range(1, len(statuses) + 1))
        # next_check_at names when the next read is due: it comes then, or later when the
        # rounds before it took long (real time passes while the worker is busy).
        for st, at in zip(statuses, times[refund_id][1:], strict=False):
            assert st.next_check_at is not None
            assert at >= st.next_check_at - timedelta(seconds=1)
        kind = n % 10
        if kind == 1:
            assert statuses[0].outcome is StatusOutcome.NOT_FOUND
            assert f"does not know refund {refund_id}" in (statuses[0].message or "")
            assert statuses[0].next_check_at is not None  # still watched
        if kind == 2:
            # Two, and more when results came while its workflow was completing (how many
            # depends on real time under load); that it is then dropped is checked above.
            assert len(statuses) >= 2
            assert statuses[-1].next_check_at is not None
        else:
            last = statuses[-1]
            assert last.outcome is StatusOutcome.FOUND
            assert last.next_check_at is None
            assert last.refund is not None
            assert last.refund.status is (FAILED if kind == 1 else SUCCEEDED)

    # The first run handed over to a new one (its history past 2,000 events after a round),
    # and the registry went with it: reads went on after it.
    last_event = first_history.events[-1]
    assert last_event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    handed_over_at = last_event.event_time.ToDatetime().timestamp()
    assert any(r.at.timestamp() > handed_over_at for r in fake.reads)


async def test_failed_reads_keep_every_refund_and_back_off(env: WorkflowEnvironment) -> None:
    """A refused read (non-retryable) and a read whose call budget runs out: every refund is
    told, stays watched, and is read again after the failure backoff; only the refused read
    counts as a check (as RefundWorkflow counts them)."""

    def fail(info: activity.Info) -> ApplicationError | None:
        # Each read is one activity (ids 1, 2, 3 in turn): the first is refused, the second
        # fails at every attempt until its call budget (ten minutes) is spent.
        if info.activity_id == "1":
            return ApplicationError(
                "Mews refused our credentials", type="AuthenticationError", non_retryable=True
            )
        if info.activity_id == "2":
            return ApplicationError("Mews answered 503", type="ServerError")
        return None

    fake = FakeReads(lambda rid, n: refund(rid, SUCCEEDED), fail=fail)
    async with stack(env, fake) as s:
        refunds = [await s.listen(f"refund:bulk-{n:05d}", 10) for n in range(3)]
        batch = await s.start_batch(
            *(watch(n, initial=5.0, cap=300.0, checks=1) for n in range(3)), idle_s=60
        )
        heard = [await done(h) for h in refunds]
        await done(batch)

    for results in heard:
        statuses = [h.status for h in results]
        assert [st.outcome for st in statuses] == [
            StatusOutcome.FAILED,
            StatusOutcome.FAILED,
            StatusOutcome.FOUND,
        ]
        refused, spent, found = statuses
        assert refused.final_error
        assert "refused our credentials" in (refused.message or "")
        assert not spent.final_error
        assert "call budget" in (spent.message or "")
        assert [st.checks for st in statuses] == [2, 2, 3]
        assert found.refund is not None
        assert found.next_check_at is None
        # After each failure the next read waits at least the failure backoff (and the
        # refund's own delay): 10 s after one, 20 s after two in a row.
        reads = [r.at for r in fake.reads if r.attempt == 1]
        assert reads[1] - results[0].at >= timedelta(seconds=10)
        assert reads[2] - results[1].at >= timedelta(seconds=20)
    # One read (one attempt) for the refusal, the budget's worth of attempts, then one read.
    assert sum(1 for r in fake.reads if r.attempt == 1) == 3


# The attempt at which the late round's first read succeeds (the test server retried about
# once a second).
LATE_ATTEMPT = 8


async def test_a_late_round_reads_every_refund_due_by_its_start(env: WorkflowEnvironment) -> None:
    """Five refunds due two seconds apart (each in a window of its own); the first round's
    read fails its first attempts, so it ends seconds late. The next round reads every
    refund due by the moment it starts in one call (patch status-batch-catch-up), not one
    window of due times a round (before it: five rounds of one refund each, a batch that fell
    behind staying behind)."""

    def fail(info: activity.Info) -> ApplicationError | None:
        if info.activity_id == "1" and info.attempt < LATE_ATTEMPT:
            return ApplicationError("Mews answered 503", type="ServerError")
        return None

    fake = FakeReads(lambda rid, n: refund(rid, SUCCEEDED), fail=fail)
    ids = [f"r-{n:05d}" for n in range(5)]
    async with stack(env, fake) as s:
        refunds = [await s.listen(f"refund:bulk-{n:05d}", 10) for n in range(5)]
        batch = await s.start_batch(
            *(watch(n).model_copy(update={"due_in_s": 2.0 * n}) for n in range(5)), idle_s=60
        )
        heard = [await done(h) for h in refunds]
        await done(batch)
        history = await batch.fetch_history()

    assert all(h[-1].status.outcome is StatusOutcome.FOUND for h in heard)
    succeeded = [r for r in fake.reads if r.attempt == LATE_ATTEMPT or r.ids != ids[:1]]
    assert [r.ids for r in fake.reads[:LATE_ATTEMPT]] == [ids[:1]] * LATE_ATTEMPT
    # The retries take seconds: the refunds due at 2, 4 and 6 s are overdue by then.
    assert succeeded[0].at - fake.reads[0].at >= timedelta(seconds=6), fake.reads
    assert set(ids[1:4]) <= set(succeeded[1].ids), [r.ids for r in fake.reads]
    assert len(succeeded) <= 3, [r.ids for r in fake.reads]
    # The patches' markers: the batch records nothing else.
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert patch_markers(history) == [ON_CHANGE_PATCH, CATCH_UP_PATCH]
    assert len(markers) == 2


async def test_only_a_change_is_told(env: WorkflowEnvironment) -> None:
    """Patch status-batch-on-change: two refunds read every five minutes for over an hour. A
    pending result the refund was told already is not told again before the keep-alive read
    it named as its next check (the last read within an hour of the next one); a change
    (another raw status, still pending) and the final status are told at once."""

    def script(refund_id: str, n: int) -> ProviderRefund:
        if refund_id == "r-00000":
            return refund(refund_id, SUCCEEDED if n >= 16 else PENDING)
        if n == 3:
            return ProviderRefund(
                refund_id=refund_id, status=PENDING, raw_status="Processing", amount_minor=500
            )
        return refund(refund_id, SUCCEEDED if n >= 5 else PENDING)

    fake = FakeReads(script)
    async with stack(env, fake) as s:
        refunds = [await s.listen(f"refund:bulk-{n:05d}", 20) for n in range(2)]
        batch = await s.start_batch(
            *(watch(n, initial=300.0, cap=300.0) for n in range(2)), idle_s=60
        )
        heard = [await done(h) for h in refunds]
        await done(batch)

    times = read_times(fake.reads)
    assert [len(times[f"r-{n:05d}"]) for n in range(2)] == [16, 5]
    long, changing = ([h.status for h in results] for results in heard)
    # Told at its first read, at the keep-alive (read 14, an hour after read 2, the next
    # read then), and at the final read.
    assert [st.checks for st in long] == [1, 14, 16]
    assert [st.refund.status if st.refund else None for st in long] == [
        PENDING,
        PENDING,
        SUCCEEDED,
    ]
    # Each told pending result named its keep-alive read as the next check: read 14, then
    # read 27, an hour after read 15 (the reads ran within a round's window of them).
    assert long[0].next_check_at is not None
    assert long[1].next_check_at is not None
    assert abs(times["r-00000"][13] - long[0].next_check_at) < timedelta(seconds=1)
    assert long[1].next_check_at - long[0].next_check_at == timedelta(minutes=65)
    # Told at its first read, at the change (read 3: Processing), at the change back (read 4:
    # Pending again) and at the final read.
    assert [st.checks for st in changing] == [1, 3, 4, 5]
    assert [st.refund.raw_status if st.refund else None for st in changing] == [
        "Pending",
        "Processing",
        "Pending",
        "Charged",
    ]


async def test_a_full_batch_declines_and_unwatched_refunds_are_read_no_more(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeReads(lambda rid, n: refund(rid, PENDING if n < 3 else SUCCEEDED))
    async with stack(env, fake) as s:
        refunds = [await s.listen(f"refund:bulk-{n:05d}", 1 if n == 2 else 10) for n in range(3)]
        batch = await s.start_batch(
            *(watch(n, initial=10.0, cap=10.0) for n in range(3)), max_watched=2, idle_s=60
        )
        # Before its first round (ten seconds away; time skips only while a result is awaited).
        await batch.signal(
            RefundStatusBatchWorkflow.unwatch, UnwatchRefund(workflow_id="refund:bulk-00001")
        )
        declined = await done(refunds[2])
        assert [h.status.outcome for h in declined] == [StatusOutcome.DECLINED]
        assert declined[0].status.next_check_at is None

        results = [await done(refunds[0])]
        await refunds[1].terminate("test over")
        await done(batch)
    # Read three times; the second read found it pending, as the first had told it: untold.
    assert [h.status.checks for h in results[0]] == [1, 3]
    reads = read_times(fake.reads)
    assert "r-00002" not in reads
    # Read no more once unwatched (the signal came before its first round).
    assert "r-00001" not in reads


async def until_read(fake: FakeReads, refund_id: str) -> None:
    """Until the batch has read ``refund_id`` (real time: the server skips none meanwhile)."""
    for _ in range(300):
        if any(refund_id in r.ids for r in fake.reads):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{refund_id} was never read")


async def contract_refund(
    s: Stack, n: int, *, initial: float = 1.0, cap: float = 2.0
) -> WorkflowHandle[Any, ContractResult]:
    return await s.env.client.start_workflow(
        ContractRefund.run,
        ContractInput(
            watch=watch(n, initial=initial, cap=cap),
            budget_queue=s.budget,
            idle_s=2.0,
            watchdog_slack_s=3.0,
            # Unchanged results are told again after four seconds, not an hour.
            quiet_s=4.0,
        ),
        id=f"refund:contract-{n:05d}",
        task_queue=s.queue,
    )


async def ended(env: WorkflowEnvironment, workflow_id: str) -> None:
    """Until the workflow has ended by itself (real time)."""
    for _ in range(200):
        described = await env.client.get_workflow_handle(workflow_id).describe()
        if described.status == WorkflowExecutionStatus.COMPLETED:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} is still {described.status}")


async def test_the_refund_side_contract_starts_restarts_and_watches_over_the_batch(
    dev_env: WorkflowEnvironment,
) -> None:
    """Refunds following the module's contract: the first one starts the batch (an abandoned
    child), the others join it; the batch ends when idle and the next refund starts a new run;
    a batch that is lost (terminated) is noticed by the refund's watchdog, which registers
    again; a refund that ends otherwise unwatches.

    On the dev server, in real time with second-scale timings: on the time-skipping test
    server, time stops skipping once the refund that started the batch as an abandoned child
    has completed."""
    fake = FakeReads(lambda rid, n: refund(rid, PENDING if n < 3 else SUCCEEDED))
    async with stack(dev_env, fake) as s:
        batch_id = status_batch_id(s.budget)
        first = [await contract_refund(s, n) for n in range(3)]
        results = [await done(h) for h in first]
        assert sum(r.started_batch for r in results) == 1
        assert all(r.final is not None and r.final.status is SUCCEEDED for r in results)
        # The batch ends once idle; a later refund starts a new run of it.
        await ended(s.env, batch_id)
        later = await done(await contract_refund(s, 3))
        assert later.started_batch == 1
        assert later.final is not None
        await ended(s.env, batch_id)

        # Lost batch: the watchdog registers again (and starts the batch anew).
        lost = await contract_refund(s, 4)
        await until_read(fake, "r-00004")
        await s.env.client.get_workflow_handle(batch_id).terminate("lost")
        recovered = await done(lost)
        # Canceled: unwatched, read no more.
        canceled = await contract_refund(s, 5, initial=30.0, cap=30.0)
        await asyncio.sleep(0.5)
        await canceled.signal(ContractRefund.cancel)
        gone = await done(canceled)
        await ended(s.env, batch_id)

    assert recovered.registrations >= 2
    assert recovered.started_batch >= 1
    assert recovered.final is not None
    assert gone.canceled
    assert gone.heard == []
    assert "r-00005" not in read_times(fake.reads)
