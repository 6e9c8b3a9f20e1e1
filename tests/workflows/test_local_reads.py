"""Reads as local activities (patch local-provider-reads): when the route says the budget
queue counts nothing, validate and each status check are tried once in the workflow task that
needs them; anything but an answer falls back to the ordinary activity. On the time-skipping
server with the fake provider, whose route says so only when a test asks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory, WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.models import ValidatedRefund, ValidateInput
from benchmarks.refund_throughput import local_activity_types, shape_of
from core.models import (
    ProviderRefund,
    ProviderRefundStatus,
    RefundOptions,
    RefundRequest,
    RefundState,
)
from tests.workflows.fakes import FakeProvider, Step, final_error, no_budget_route, refund
from tests.workflows.test_cost_patch import patch_markers, scheduled
from tests.workflows.test_refund_workflow import (
    Harness,
    harness,
    mews_request,
    paynow_request,
    worker_for,
)
from workflows.refund import (
    LEAN_START_PATCH,
    RefundWorkflow,
)

PENDING, SUCCEEDED = ProviderRefundStatus.PENDING, ProviderRefundStatus.SUCCEEDED


def pending_then_succeeded(n: int, _: activity.Info) -> ProviderRefund:
    return refund(PENDING if n < 2 else SUCCEEDED)


async def run(
    env: WorkflowEnvironment, fake: FakeProvider, request: RefundRequest | None = None
) -> tuple[RefundState, WorkflowHistory]:
    async with harness(env, fake) as h:
        handle = await h.start(request or paynow_request())
        final = await asyncio.wait_for(handle.result(), 60)
        return final.state, await handle.fetch_history()


async def test_reads_run_in_the_workflow_task_when_no_budget_counts_them(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(poll_step=pending_then_succeeded, route_step=no_budget_route)
    state, history = await run(env, fake)
    assert state is RefundState.SUCCEEDED
    assert patch_markers(history) == [LEAN_START_PATCH]
    # Only the refund call is an activity; validate and both checks ran locally.
    assert scheduled(history) == ["submit_refund"]
    assert local_activity_types(history) == [
        "route_refund",
        "validate_refund",
        "poll_refund_status",
        "poll_refund_status",
    ]
    assert [(c.name, c.local) for c in fake.calls] == [
        ("validate", True),
        ("submit", False),
        ("poll", True),
        ("poll", True),
    ]
    # One workflow task to validate and send, one for the refund call's answer and the first
    # check, one for the timer and the second check (as activities: 6).
    assert shape_of(history).tasks == 3


async def test_a_route_with_a_budget_keeps_every_read_an_activity(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(poll_step=pending_then_succeeded)
    state, history = await run(env, fake)
    assert state is RefundState.SUCCEEDED
    assert patch_markers(history) == [LEAN_START_PATCH]
    assert scheduled(history) == [
        "validate_refund",
        "submit_refund",
        "poll_refund_status",
        "poll_refund_status",
    ]
    assert local_activity_types(history) == ["route_refund"]
    assert not any(c.local for c in fake.calls)


def failing_once(error: ApplicationError, then: Step) -> Step:
    def step(n: int, info: activity.Info) -> object:
        if n == 1:
            raise error
        return then(n, info)

    return step


async def test_a_failed_local_read_falls_back_to_the_activity_after_its_first_interval(
    env: WorkflowEnvironment,
) -> None:
    outage = ApplicationError("paynow HTTP 503", type="ProviderUnavailableError")
    fake = FakeProvider(
        poll_step=failing_once(outage, lambda n, _: refund(SUCCEEDED)), route_step=no_budget_route
    )
    state, history = await run(env, fake)
    assert state is RefundState.SUCCEEDED
    polls = [c for c in fake.calls if c.name == "poll"]
    # The local attempt failed once; the activity read (on its first attempt) and answered.
    assert [(c.local, c.attempt) for c in polls] == [(True, 1), (False, 1)]
    assert polls[1].scheduled - polls[0].scheduled >= timedelta(seconds=1)
    assert scheduled(history) == ["submit_refund", "poll_refund_status"]


async def test_retry_after_is_waited_out_before_the_fallback(env: WorkflowEnvironment) -> None:
    limited = ApplicationError(
        "paynow HTTP 429", type="RateLimitedError", next_retry_delay=timedelta(seconds=45)
    )
    fake = FakeProvider(
        validate_step=failing_once(limited, lambda n, _: None), route_step=no_budget_route
    )
    async with harness(env, fake) as h:
        handle = await h.start(paynow_request())
        final = await asyncio.wait_for(handle.result(), 60)
    assert final.state is RefundState.SUCCEEDED
    # Tries of the payment check and the refund call: the failed local one counts too.
    assert final.attempts == 3
    validates = [c for c in fake.calls if c.name == "validate"]
    assert [c.local for c in validates] == [True, False]
    assert validates[1].scheduled - validates[0].scheduled >= timedelta(seconds=45)


async def test_a_refused_local_read_is_asked_once_more_as_an_activity_and_ends_the_same(
    env: WorkflowEnvironment,
) -> None:
    def refuse(n: int, _: activity.Info) -> None:
        raise final_error("paynow HTTP 400: amount exceeds the refundable amount")

    fake = FakeProvider(validate_step=refuse, route_step=no_budget_route)
    state, history = await run(env, fake)
    assert state is RefundState.REJECTED
    assert [(c.name, c.local) for c in fake.calls] == [("validate", True), ("validate", False)]
    assert scheduled(history) == ["validate_refund"]


async def test_a_mews_refund_without_a_budget_validates_locally_and_still_batches_its_checks(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(poll_step=pending_then_succeeded, route_step=no_budget_route)
    state, history = await run(env, fake, mews_request())
    assert state is RefundState.SUCCEEDED
    assert patch_markers(history) == [LEAN_START_PATCH]
    assert local_activity_types(history)[:3] == [
        "route_refund",
        "take_refund_lane",
        "validate_refund",
    ]
    # Its status reads are the batch's (the stand-in's registration), none of its own.
    assert "poll_refund_status" not in scheduled(history)
    assert "poll_refund_status" not in local_activity_types(history)


async def test_a_timed_out_local_read_falls_back_and_its_history_replays(
    env: WorkflowEnvironment,
) -> None:
    """A local read that outlives the call timeout: the activity reads instead. Its marker
    records the timeout unwrapped, which replay raises as a bare TimeoutError; caught only as
    an ActivityError (as when it ran), replay failed with a non-determinism error."""
    fake = FakeProvider(route_step=no_budget_route)
    local_attempts: list[bool] = []

    @activity.defn(name="validate_refund")
    async def slow_local_validate(params: ValidateInput) -> ValidatedRefund:
        if activity.info().is_local:
            local_attempts.append(True)
            await asyncio.sleep(5)  # past call_timeout_s (1 s): the local attempt times out
        return await fake.validate(params)

    activities = [slow_local_validate if a == fake.validate else a for a in fake.all]
    request = paynow_request()
    queue = f"q-{uuid.uuid4().hex}"
    async with worker_for(env, queue, activities):
        handle = await Harness(env, fake, queue).start(request, RefundOptions(call_timeout_s=1))
        final = await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    assert final.state is RefundState.SUCCEEDED
    assert local_attempts == [True]
    assert scheduled(history)[:2] == ["validate_refund", "submit_refund"]
    replayer = Replayer(workflows=[RefundWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def run_evicted_and_queried(
    env: WorkflowEnvironment,
    fake: FakeProvider,
    requests: list[RefundRequest],
    *,
    cached: int,
    timeout_s: float,
) -> list[WorkflowHistory]:
    """Run ``requests`` to the end on a worker caching ``cached`` workflows (worker_for),
    their status queried every 50 ms all along, so that the worker replays them again and
    again; asserts that each SUCCEEDED, that no query met a non-determinism failure and
    that no workflow task failed. Their histories."""
    queue = f"q-{uuid.uuid4().hex}"
    options = RefundOptions(poll_initial_s=1, poll_max_s=1)
    nondeterministic: list[str] = []
    done = asyncio.Event()
    async with worker_for(env, queue, fake.all, max_cached_workflows=cached):
        h = Harness(env, fake, queue)
        handles = [await h.start(request, options) for request in requests]

        async def query() -> None:
            while not done.is_set():
                for handle in handles:
                    try:
                        await handle.query(RefundWorkflow.status)
                    except WorkflowQueryFailedError as err:
                        if "Nondeterminism" in str(err):
                            nondeterministic.append(str(err))
                    except RPCError:
                        pass
                await asyncio.sleep(0.05)

        querying = asyncio.create_task(query())
        try:
            finals = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles)), timeout_s
            )
        finally:
            done.set()
            await querying
            for handle in handles:
                with contextlib.suppress(RPCError):
                    await handle.terminate("test finished")
    assert [f.state for f in finals] == [RefundState.SUCCEEDED] * len(requests)
    assert not nondeterministic, nondeterministic[:1]
    histories = [await handle.fetch_history() for handle in handles]
    failed = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    for history in histories:
        assert not [e for e in history.events if e.event_type == failed]
    return histories


async def test_refunds_with_local_reads_replay_while_evicted_and_queried(
    dev_env: WorkflowEnvironment,
) -> None:
    """Ten refunds on a worker caching three, their status queried all along: each one is
    replayed again and again, local reads included. With the patch asked after the route's
    local activity, its marker failed to replay (TMPRL1100; the refunds never ended)."""
    fake = FakeProvider(
        poll_step=lambda n, _: refund(PENDING if n % 3 else SUCCEEDED), route_step=no_budget_route
    )
    requests = [paynow_request() for _ in range(10)]
    await run_evicted_and_queried(dev_env, fake, requests, cached=3, timeout_s=90)


async def test_mews_refunds_replay_while_evicted_and_queried(dev_env: WorkflowEnvironment) -> None:
    """Eight Mews refunds (lane, status batch) on a worker caching two, their status queried
    all along. With patch mews-status-batch asked where the watch starts, right after the
    lane's release (a local activity), replaying them for a query failed (TMPRL1100) and the
    refunds stalled; patch mews-status-batch-at-start asks it in the run's first activation."""
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n % 3 else SUCCEEDED))
    requests = [mews_request() for _ in range(8)]
    histories = await run_evicted_and_queried(dev_env, fake, requests, cached=2, timeout_s=120)
    for history in histories:
        # Decided in the first activation (since lean-start-v10, by its one marker).
        assert patch_markers(history) == [LEAN_START_PATCH]
        assert "watch_refund_status" in scheduled(history)
