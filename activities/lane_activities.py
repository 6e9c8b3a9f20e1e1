"""Activities of the per-payment lane: they need the Temporal client, not the providers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.models import EnterLaneInput, WorkflowRef
from workflows.models import LaneEntry, LaneGrant, LaneInput, ReleaseLaneInput
from workflows.names import signal_name

# How long `take` waits for a running lane's answer before this attempt fails.
LANE_QUERY_TIMEOUT = timedelta(seconds=10)


class LaneActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="enter_refund_lane")
    async def enter(self, params: EnterLaneInput) -> None:
        """Signal-with-start: queue in the payment's lane, starting the lane if it is idle."""
        # Imported here: the lane workflow calls this class's `is_open` (a cycle otherwise).
        from workflows.payment_lane import RefundLaneWorkflow

        await self._client.start_workflow(
            RefundLaneWorkflow.run,
            LaneInput(),
            id=params.lane_id,
            task_queue=activity.info().task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            start_signal=signal_name(RefundLaneWorkflow.enqueue),
            start_signal_args=[LaneEntry(workflow_id=params.workflow_id)],
            static_summary=_summary(params),
        )

    @activity.defn(name="take_refund_lane")
    async def take(self, params: EnterLaneInput) -> LaneGrant | None:
        """Enter the lane, run by a refund as a local activity (patch local-lane-messages).

        An idle scope (no lane running) gets a lane started with this refund as its holder:
        the grant comes back at once, with no claims (a lane ends only once none of its
        claims can matter). Otherwise the refund queues (``enter``) and None says to wait for
        the lane's ``admitted`` signal, unless the lane already names it its holder: this
        was sent again after a worker died before the answer was recorded, and the lane,
        which never admits its holder twice, has the grant given here again."""
        from workflows.payment_lane import RefundLaneWorkflow

        try:
            await self._client.start_workflow(
                RefundLaneWorkflow.run,
                LaneInput(holder=params.workflow_id),
                id=params.lane_id,
                task_queue=activity.info().task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary=_summary(params),
            )
            return LaneGrant(lane_id=params.lane_id)
        except WorkflowAlreadyStartedError:
            pass
        handle = self._client.get_workflow_handle_for(RefundLaneWorkflow.run, params.lane_id)
        try:
            # Bounded: a lane's query needs a workflow task slot of a worker, which refunds
            # waiting here hold; a query that does not come back soon fails this attempt,
            # freeing the slot, and the local activity's retry asks again.
            held = await handle.query(RefundLaneWorkflow.lane, rpc_timeout=LANE_QUERY_TIMEOUT)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # It ended meanwhile: queueing starts a fresh one, which admits by signal.
            held = None
        if held is not None and held.holder == params.workflow_id:
            return LaneGrant(
                lane_id=params.lane_id,
                claimed_refund_ids=tuple(held.claimed_refund_ids),
                claims=tuple(held.claims),
            )
        await self.enter(params)
        return None

    @activity.defn(name="release_refund_lane")
    async def release(self, params: ReleaseLaneInput) -> bool:
        """Send the lane its ``release`` signal (run by a refund as a local activity: no
        activity task, and no workflow task waiting for the signal to land). False when the
        lane is gone (ended, or terminated by an operator): nothing is left to release.

        Sent again after a crash, it changes nothing: the lane drops a release of a refund
        that is neither its holder nor queued, and keeps each claimed refund id once."""
        from workflows.payment_lane import RefundLaneWorkflow

        handle = self._client.get_workflow_handle_for(RefundLaneWorkflow.run, params.lane_id)
        try:
            await handle.signal(RefundLaneWorkflow.release, params.exit)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    @activity.defn(name="refund_is_open")
    async def is_open(self, params: WorkflowRef) -> bool:
        """Whether a lane holder still runs (a terminated one never releases)."""
        try:
            description = await self._client.get_workflow_handle(params.workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING

    @property
    def all(self) -> list[Callable[..., Any]]:
        return [self.enter, self.take, self.release, self.is_open]


def _summary(params: EnterLaneInput) -> str:
    """The lane's summary in the Temporal UI's workflow list."""
    if params.scope:
        return f"admits refunds of {params.scope} in turn"
    return f"admits refunds of payment {params.lane_id.rsplit(':', 1)[-1]} in turn"
