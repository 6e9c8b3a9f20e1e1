"""Determinism: recorded histories replay through the current workflow code.

``histories/*.json`` were recorded from real runs of the code of their day, and are kept:
a change that alters the commands an existing history expects fails here, before it can
break refunds that are in flight. Each generation has its prefix: none for the first
workflow, ``lane_`` for the per-payment lane, ``v2_`` for the money-safe workflow
(patch ``money-safe-v2``) and its account lane, ``v3_`` for the indexed provider refund id
(patch ``index-provider-refund-id``), outcome events and the lanes' details, ``v4_`` for
search attributes written only when they change (patch ``lean-upserts``), ``v5_`` for the
lean run (patch ``lean-run-v5``: one marker for all of them, no lane for Paynow, provider
calls on their budget queue), ``v6_`` for Mews status reads through the status batch of the
budget queue (patch ``mews-status-batch``; ``v6_mews_batched_pending_then_succeeded`` with
the real RefundStatusBatchWorkflow, on the dev server), ``v7_`` for Paynow reads as local
activities when no budget counts them (patch ``local-provider-reads``; Mews at its default
budget, unchanged), ``v8_`` for Mews lane messages as local activities (patch
``local-lane-messages``) and the status batch workflow itself
(``v8_status_batch_pending_then_succeeded``, recorded from the code before ``v9_``), ``v9_``
for the status batch telling a refund only what changed (patch ``status-batch-on-change``)
and for Mews refunds deciding on batched status reads in their first activation (patch
``mews-status-batch-at-start``), ``v10_`` for one patch marker at a run's start where there
were two to four (patch ``lean-start-v10``).
``python -m tests.workflows.test_replay
PREFIX`` records the scenarios of today's code under a new prefix (never over old files).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.failures import OUTCOME_UNKNOWN
from activities.lane_activities import LaneActivities
from core.models import (
    ProviderRefund,
    ProviderRefundStatus,
    RefundOptions,
    RefundRequest,
    RefundStatus,
)
from tests.workflows.conftest import venv_binary
from tests.workflows.fakes import FakeProvider, final_error, no_budget_route, refund
from tests.workflows.test_refund_workflow import mews_request, paynow_request, worker_for
from workflows.events import RefundEventWorkflow
from workflows.models import CancelRequest, RefundWorkflowInput, lane_id_for
from workflows.names import signal_name
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import EVENT_WORKFLOW_PREFIX, RefundWorkflow
from workflows.status_batch import RefundStatusBatchWorkflow, status_batch_id

HISTORIES = Path(__file__).parent / "histories"
PENDING, SUCCEEDED = ProviderRefundStatus.PENDING, ProviderRefundStatus.SUCCEEDED


def _scenarios() -> dict[str, tuple[FakeProvider, RefundWorkflowInput, bool]]:
    options = RefundOptions(poll_initial_s=10, poll_max_s=40, checks_per_run=10)

    def lost_once(n: int, _: object) -> None:
        if n == 1:
            raise final_error("mews: no answer", OUTCOME_UNKNOWN)

    def lost_thrice(n: int, _: object) -> None:
        if n <= 3:
            raise final_error("mews: no answer", OUTCOME_UNKNOWN)

    def unavailable_once(n: int, _: object) -> ProviderRefund:
        if n == 1:
            raise ApplicationError("paynow HTTP 503", type="ProviderUnavailableError")
        return refund(PENDING if n < 3 else SUCCEEDED)

    # Paynow refunds route as Paynow does without REFUNDS_PAYNOW_BUDGET: reads run locally
    # (patch local-provider-reads; Mews keeps its default budget, every call an activity).
    return {
        "paynow_pending_then_succeeded": (
            FakeProvider(
                poll_step=lambda n, _: refund(PENDING if n < 4 else SUCCEEDED),
                route_step=no_budget_route,
            ),
            RefundWorkflowInput(request=paynow_request("replay-1"), options=options),
            False,
        ),
        "paynow_canceled_before_submit": (
            FakeProvider(route_step=no_budget_route),
            RefundWorkflowInput(request=paynow_request("replay-2"), options=options),
            True,
        ),
        "mews_rejected": (
            FakeProvider(validate_step=lambda n, _: (_ for _ in ()).throw(final_error("no"))),
            RefundWorkflowInput(request=mews_request(), options=options),
            False,
        ),
        "mews_lost_answer_resent": (
            FakeProvider(submit_step=lost_once, find_step=lambda n, _: []),
            RefundWorkflowInput(request=mews_request(), options=options),
            False,
        ),
        "paynow_continued_as_new": (
            FakeProvider(
                poll_step=lambda n, _: refund(PENDING if n <= 12 else SUCCEEDED),
                route_step=no_budget_route,
            ),
            RefundWorkflowInput(request=paynow_request("replay-5"), options=options),
            False,
        ),
        "mews_pending_then_succeeded": (
            FakeProvider(poll_step=lambda n, _: refund(PENDING if n < 3 else SUCCEEDED)),
            RefundWorkflowInput(request=mews_request(), options=options),
            False,
        ),
        "paynow_local_read_fell_back": (
            FakeProvider(poll_step=unavailable_once, route_step=no_budget_route),
            RefundWorkflowInput(request=paynow_request("replay-6"), options=options),
            False,
        ),
        "mews_lost_answers_ridden_out": (
            FakeProvider(submit_step=lost_thrice, find_step=lambda n, _: []),
            RefundWorkflowInput(request=mews_request(), options=options),
            False,
        ),
    }


async def _record(env: WorkflowEnvironment) -> dict[str, WorkflowHistory]:
    recorded: dict[str, WorkflowHistory] = {}
    for name, (fake, params, cancel_first) in _scenarios().items():
        queue = f"replay-{uuid.uuid4().hex}"
        workflow_id = f"{params.request.workflow_id}-{uuid.uuid4().hex[:6]}"
        async with worker_for(env, queue, fake.all):
            handle = await env.client.start_workflow(
                RefundWorkflow.run,
                params,
                id=workflow_id,
                task_queue=queue,
                start_signal=signal_name(RefundWorkflow.cancel) if cancel_first else None,
                start_signal_args=[CancelRequest(reason="test")] if cancel_first else [],
            )
            await handle.result()
            # Replay the last run (after any continue-as-new).
            latest = env.client.get_workflow_handle(workflow_id)
            recorded[name] = await latest.fetch_history()
    return recorded


def _replayer() -> Replayer:
    return Replayer(
        workflows=[
            RefundWorkflow,
            RefundLaneWorkflow,
            RefundEventWorkflow,
            RefundStatusBatchWorkflow,
        ],
        data_converter=pydantic_data_converter,
    )


RECORDED = {path.stem: path.read_text() for path in sorted(HISTORIES.glob("*.json"))}


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_recorded_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    result = await _replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"


def test_recorded_histories_exist() -> None:
    assert len(RECORDED) >= 5


async def test_fresh_histories_replay(env: WorkflowEnvironment) -> None:
    recorded = await _record(env)
    for name, history in recorded.items():
        result = await _replayer().replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{name}: {result.replay_failure}"


async def _record_lane(env: WorkflowEnvironment) -> WorkflowHistory:
    """The account lane with its real activities (on the dev server): two refunds of one
    account admitted in turn, the first one's provider refund kept claimed."""
    queue = f"replay-{uuid.uuid4().hex}"
    lanes = LaneActivities(env.client)
    fake = FakeProvider()
    first, second = mews_request(), mews_request(2500)
    lane_id = lane_id_for(first, queue)
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RefundWorkflow, RefundLaneWorkflow],
        activities=[*fake.all, *lanes.all],
    ):
        options = RefundOptions(poll_initial_s=1, poll_max_s=2)
        for request in (first, second):
            handle = await env.client.start_workflow(
                RefundWorkflow.run,
                RefundWorkflowInput(request=request, options=options),
                id=request.workflow_id,
                task_queue=queue,
            )
            await handle.result()
        lane = env.client.get_workflow_handle(lane_id)
        for _ in range(200):
            status = await lane.query(RefundLaneWorkflow.lane)
            if status.holder is None and len(status.claims) >= 2:
                break
            await asyncio.sleep(0.05)
        history = await lane.fetch_history()
        await lane.terminate("recorded")
    return history


async def _record_outcome_event(env: WorkflowEnvironment) -> WorkflowHistory:
    """A refund with a notify_url (on the dev server: its outcome event's delivery workflow,
    left without a worker, would hold the time-skipping server's clock for later tests)."""
    fake = FakeProvider(
        poll_step=lambda n, _: refund(PENDING if n < 2 else SUCCEEDED), route_step=no_budget_route
    )
    request = paynow_request(f"replay-7-{uuid.uuid4().hex[:6]}").model_copy(
        update={"notify_url": "https://hooks.example.com/refund-events"}
    )
    final, history = await _run_to_the_end(env, fake, request)
    for number in range(1, len(final.events) + 1):
        with contextlib.suppress(RPCError):
            await env.client.get_workflow_handle(
                f"{EVENT_WORKFLOW_PREFIX}{request.idempotency_key}:{number}"
            ).terminate("recorded")
    return history


async def _record_mews_batched(env: WorkflowEnvironment) -> tuple[WorkflowHistory, WorkflowHistory]:
    """A Mews refund pending at two reads of the real status batch, succeeded at the third
    (on the dev server: worker_for runs RefundStatusBatchWorkflow there): its history and
    its batch's (up to its idle wait, terminated by worker_for as the refund's run ended)."""
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n < 3 else SUCCEEDED))
    queue = f"replay-{uuid.uuid4().hex}"
    _, history = await _run_to_the_end(env, fake, mews_request(), queue=queue)
    batch = await env.client.get_workflow_handle(status_batch_id(queue)).fetch_history()
    return history, batch


async def _run_to_the_end(
    env: WorkflowEnvironment, fake: FakeProvider, request: RefundRequest, queue: str | None = None
) -> tuple[RefundStatus, WorkflowHistory]:
    """One refund on its own task queue (``queue``, or a new one) with status checks 1 s (then
    2 s) apart: its final status and its history."""
    queue = queue or f"replay-{uuid.uuid4().hex}"
    async with worker_for(env, queue, fake.all):
        handle = await env.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(
                request=request, options=RefundOptions(poll_initial_s=1, poll_max_s=2)
            ),
            id=request.workflow_id,
            task_queue=queue,
        )
        final = await handle.result()
        return final, await handle.fetch_history()


async def _write_histories(prefix: str) -> None:
    def write(name: str, history: WorkflowHistory) -> None:
        path = HISTORIES / f"{prefix}_{name}.json"
        if path.exists():
            raise SystemExit(f"{path} exists: histories are kept, record under a new prefix")
        path.write_text(history.to_json() + "\n")
        print(f"recorded {path.name}", file=sys.stderr)

    from starter.connection import ensure_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    async with env:
        await ensure_search_attributes(env.client, env.client.namespace)
        for name, history in (await _record(env)).items():
            write(name, history)
    dev = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=venv_binary("temporal"),
        dev_server_extra_args=["--log-level", "error"],
    )
    async with dev:
        await ensure_search_attributes(dev.client, dev.client.namespace)
        write("account_lane_two_refunds", await _record_lane(dev))
        write("paynow_succeeded_with_outcome_event", await _record_outcome_event(dev))
        refund_history, batch_history = await _record_mews_batched(dev)
        write("mews_batched_pending_then_succeeded", refund_history)
        write("status_batch_pending_then_succeeded", batch_history)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isidentifier():
        raise SystemExit("usage: python -m tests.workflows.test_replay PREFIX")
    asyncio.run(_write_histories(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the SDK can abort at interpreter exit (temporalio #300)
