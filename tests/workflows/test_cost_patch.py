"""The lean run (patch ``lean-run-v5``, issue 12; since ``lean-start-v10`` one marker stands for
it and the other patches asked at a run's start): one patch marker instead of four, no
lane for Paynow, whose Idempotency-Key makes a re-sent refund call safe, and provider calls
on the budget queue the worker names for the request's profile (a local activity). Each patch
marker is two history events (the marker and the SDK's ``TemporalChangeVersion`` upsert),
each lane a queueing activity, two signals and a workflow of its own."""

from __future__ import annotations

import json
import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import RefundRoute
from benchmarks.refund_throughput import local_activity_types
from core.models import ProviderRefundStatus, RefundRequest, RefundState
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_refund_workflow import harness, mews_request, paynow_request
from workflows.refund import (
    LEAN_START_PATCH,
)


def patch_markers(history: WorkflowHistory) -> list[str]:
    """The patch ids of the history's patch markers, in order."""
    found = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_patch":
            found.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found


def scheduled(history: WorkflowHistory) -> list[str]:
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def run_one(env: WorkflowEnvironment, request: Any) -> tuple[RefundState, WorkflowHistory]:
    fake = FakeProvider(poll_step=lambda n, _: refund(ProviderRefundStatus.SUCCEEDED))
    async with harness(env, fake) as h:
        handle = await h.start(request)
        final = await handle.result()
        return final.state, await handle.fetch_history()


def change_version_upserts(history: WorkflowHistory) -> int:
    """Upserts of the SDK's ``TemporalChangeVersion`` (one per patch a run records)."""
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        and "TemporalChangeVersion"
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    )


async def test_a_new_run_of_either_provider_records_one_patch_marker(
    env: WorkflowEnvironment,
) -> None:
    """Patch lean-start-v10: one marker and one TemporalChangeVersion upsert (a visibility
    write) where a run recorded two (Paynow) or four (Mews)."""
    for request in (paynow_request(), mews_request()):
        state, history = await run_one(env, request)
        assert state is RefundState.SUCCEEDED
        assert patch_markers(history) == [LEAN_START_PATCH]
        assert change_version_upserts(history) == 1


async def test_a_paynow_refund_records_one_patch_and_queues_in_no_lane(
    env: WorkflowEnvironment,
) -> None:
    state, history = await run_one(env, paynow_request())
    assert state is RefundState.SUCCEEDED
    markers = patch_markers(history)
    # The run's other patch (local reads) is asked at every start, whatever the route says.
    assert markers == [LEAN_START_PATCH]
    assert "enter_refund_lane" not in scheduled(history)
    assert not [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]


async def test_a_mews_refund_still_queues_in_its_accounts_lane(env: WorkflowEnvironment) -> None:
    state, history = await run_one(env, mews_request())
    assert state is RefundState.SUCCEEDED
    markers = patch_markers(history)
    # A pending Mews refund watches through the status batch (its own patch).
    assert markers == [LEAN_START_PATCH]
    # It enters and leaves the lane through local activities (patch local-lane-messages):
    # one marker each, no activity task, no signal the workflow sends and waits on.
    lane_messages = [t for t in local_activity_types(history) if "lane" in t]
    assert lane_messages == ["take_refund_lane", "release_refund_lane"]
    assert "enter_refund_lane" not in scheduled(history)
    # Taken at once (no other refund of its account): no admission signal to wait for.
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert "admitted" not in signals
    assert not [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]


async def test_provider_calls_run_on_the_profiles_budget_queue(env: WorkflowEnvironment) -> None:
    budget_queue = f"budget-{uuid.uuid4().hex}"
    fake = FakeProvider(
        route_step=lambda request: RefundRoute(task_queue=budget_queue),
        poll_step=lambda n, _: refund(ProviderRefundStatus.SUCCEEDED),
    )
    async with harness(env, fake) as h:
        # The budget queue's worker: the provider calls only (as worker.py runs them).
        async with Worker(env.client, task_queue=budget_queue, activities=fake.all):
            handle = await h.start(paynow_request())
            final = await handle.result()
        history = await handle.fetch_history()
    assert final.state is RefundState.SUCCEEDED
    queues = {
        e.activity_task_scheduled_event_attributes.activity_type.name: (
            e.activity_task_scheduled_event_attributes.task_queue.name
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    assert queues == dict.fromkeys(
        ("validate_refund", "submit_refund", "poll_refund_status"), budget_queue
    )


async def test_a_profile_the_worker_refuses_is_rejected_before_any_provider_call(
    env: WorkflowEnvironment,
) -> None:
    def refuse(request: RefundRequest) -> RefundRoute:
        raise ApplicationError(
            "merchant profile 'acme' is not configured for paynow on this worker",
            type="ProviderNotConfigured",
            non_retryable=True,
        )

    fake = FakeProvider(route_step=refuse)
    async with harness(env, fake) as h:
        final = await h.run(paynow_request())
    assert final.state is RefundState.REJECTED
    assert "not configured" in (final.message or "")
    assert fake.calls == []
