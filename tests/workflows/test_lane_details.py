"""What a refund lane shows in the Temporal UI: operators find lanes in the workflow list
beside the refunds, some still running after their refunds ended, and read its details.

On the dev server (real time): a lane keeps its claims for 15 minutes, so it is still running
when the test reads it, and the test terminates it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.lane_activities import LaneActivities
from core.models import ProviderName, RefundOptions, RefundRequest, RefundState
from starter.client import RefundClient
from tests.workflows.fakes import FakeProvider
from workflows.models import lane_id_for
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import RefundWorkflow


async def lane_details(env: WorkflowEnvironment, lane_id: str) -> str:
    handle = env.client.get_workflow_handle(lane_id)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def test_a_lane_says_it_is_no_refund_and_why_it_still_runs(
    dev_env: WorkflowEnvironment,
) -> None:
    queue = f"lane-details-{uuid.uuid4().hex}"
    # Mews: the provider whose refunds queue in a lane (Paynow's do not).
    request = RefundRequest(
        idempotency_key=f"lane-details-{uuid.uuid4().hex[:8]}",
        provider=ProviderName.MEWS,
        payment_id=str(uuid.uuid4()),
        account_id=str(uuid.uuid4()),
        amount_minor=1250,
        currency="GBP",
        reason="lane details",
    )
    lane_id = lane_id_for(request, queue)
    client = RefundClient(
        dev_env.client, task_queue=queue, options=RefundOptions(poll_initial_s=0.1, poll_max_s=1)
    )
    try:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=[RefundWorkflow, RefundLaneWorkflow],
            activities=[*FakeProvider().all, *LaneActivities(dev_env.client).all],
        ):
            await client.start(request)
            final = await asyncio.wait_for(client.wait(request.idempotency_key), 20)
            assert final.state is RefundState.SUCCEEDED
            details = await lane_details(dev_env, lane_id)
    finally:
        with contextlib.suppress(RPCError):
            await dev_env.client.get_workflow_handle(lane_id).terminate("test finished")

    assert "Refund lane, not a refund" in details
    assert "admitted: none" in details
    # The refund it made is kept claimed: the lane says until when, and why it still runs.
    assert "keeps 1 claimed provider refund id until " in details
    assert "ends a minute after that" in details
    assert 'WorkflowType="RefundWorkflow"' in details
