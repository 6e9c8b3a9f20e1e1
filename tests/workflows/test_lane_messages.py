"""A lane's messages sent by local activities (patch ``local-lane-messages``): a refund enters
and leaves its lane through the worker's client inside a workflow task, so a worker that dies
before the task completes has them sent again. The lane must not mind: a repeated entry never
queues a refund twice, a repeated release never releases the next holder, and a release of a
lane that is gone says so instead of failing.

On the dev server, with the real lane and its real activities; the refunds are stand-ins that
only count their admissions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable

from temporalio import workflow

# The stand-in workflow below is validated in the sandbox, which loads this module.
with workflow.unsafe.imports_passed_through():
    from temporalio.service import RPCError
    from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.lane_activities import LaneActivities
    from activities.models import EnterLaneInput
    from tests.workflows.test_refund_workflow import query_until
    from workflows.models import LaneExit, LaneGrant, LaneStatus, ReleaseLaneInput
    from workflows.payment_lane import RefundLaneWorkflow


@workflow.defn(name="LaneHolderStandIn")
class Holder:
    """Stands in for a refund: counts the lane's admissions, never ends on its own."""

    def __init__(self) -> None:
        self._admissions = 0

    @workflow.signal(name="admitted")
    def admitted(self, grant: LaneGrant) -> None:
        self._admissions += 1

    @workflow.query(name="admissions")
    def admissions(self) -> int:
        return self._admissions

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def lane_until(
    env: WorkflowEnvironment, lane_id: str, ok: Callable[[LaneStatus], bool]
) -> LaneStatus:
    handle = env.client.get_workflow_handle_for(RefundLaneWorkflow.run, lane_id)
    return await query_until(handle, RefundLaneWorkflow.lane, ok, tries=200)


async def test_a_lane_minds_no_repeated_entry_or_release(dev_env: WorkflowEnvironment) -> None:
    queue = f"lane-messages-{uuid.uuid4().hex}"
    lane_id = f"refund-lane:test:{uuid.uuid4().hex}"
    lanes = LaneActivities(dev_env.client)
    run = ActivityEnvironment()
    # take_refund_lane starts the lane on the task queue it runs on.
    run.info = dataclasses.replace(run.info, task_queue=queue)
    a, b = f"holder-a-{uuid.uuid4().hex}", f"holder-b-{uuid.uuid4().hex}"
    a_exit = ReleaseLaneInput(lane_id=lane_id, exit=LaneExit(workflow_id=a, refund_ids=("R-A",)))

    async def admissions(workflow_id: str) -> int:
        return await dev_env.client.get_workflow_handle(workflow_id).query(Holder.admissions)

    async with Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[RefundLaneWorkflow, Holder],
        activities=lanes.all,
    ):
        try:
            for holder in (a, b):
                # By name: passing Holder.run (a run without an argument) here made a fresh
                # mypy run mistype every other workflow's run method in the project.
                await dev_env.client.start_workflow(
                    "LaneHolderStandIn", id=holder, task_queue=queue
                )
            # No lane runs for the scope: A takes it at once, with no signal.
            grant = await run.run(lanes.take, EnterLaneInput(lane_id=lane_id, workflow_id=a))
            assert grant == LaneGrant(lane_id=lane_id)
            await lane_until(dev_env, lane_id, lambda s: s.holder == a)
            # A's entry sent again (its worker died before the answer was recorded): the
            # lane, which holds it already, says so; A is neither queued nor admitted again.
            again = await run.run(lanes.take, EnterLaneInput(lane_id=lane_id, workflow_id=a))
            assert again is not None
            # B finds the lane held: it queues and waits for the lane's signal.
            assert await run.run(lanes.take, EnterLaneInput(lane_id=lane_id, workflow_id=b)) is None
            status = await lane_until(dev_env, lane_id, lambda s: s.queue == [b])
            assert status.holder == a
            assert await admissions(a) == 0
            assert await admissions(b) == 0

            assert await run.run(lanes.release, a_exit) is True
            await lane_until(dev_env, lane_id, lambda s: s.holder == b)
            # A's release sent again: B keeps the lane, A's refund is claimed once.
            assert await run.run(lanes.release, a_exit) is True
            status = await lane_until(dev_env, lane_id, lambda s: s.claimed_refund_ids == ["R-A"])
            assert status.holder == b
            assert status.queue == []
            assert await admissions(b) == 1
            # B entering again while it holds the lane is told so, with A's claim.
            again = await run.run(lanes.take, EnterLaneInput(lane_id=lane_id, workflow_id=b))
            assert again is not None
            assert [c.refund_id for c in again.claims] == ["R-A"]
            assert await admissions(a) == 0
        finally:
            for workflow_id in (lane_id, a, b):
                with contextlib.suppress(RPCError):
                    await dev_env.client.get_workflow_handle(workflow_id).terminate("test done")
        # A lane that is gone (an operator terminated it): nothing to release, no error.
        assert await run.run(lanes.release, a_exit) is False
