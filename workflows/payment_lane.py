"""`RefundLaneWorkflow`: refunds of one payment are admitted one at a time.

Why: reconciling a Mews refund whose answer was lost means looking for "a refund of this
amount made just now on this account"; a sibling refund of the same payment submitted at the
same moment would look exactly the same. And the over-refund check reads what is still
refundable, which a sibling in flight would change. So a refund holds its payment's lane
from validation until the provider has accepted it (or it ended), then releases it with the
provider refund ids it made, which later siblings may never adopt. Refunds of different
payments use different lanes and stay fully parallel.

Started on demand by signal-with-start (``enter_refund_lane``); it ends after a quiet minute
with nobody queued, and continues-as-new when its history grows. A holder that stops
without releasing (terminated by an operator) is noticed by a lease check and skipped.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.lane_activities import LaneActivities
    from activities.models import WorkflowRef
    from workflows.models import LaneEntry, LaneExit, LaneGrant, LaneInput, LaneStatus

IDLE = timedelta(minutes=1)
LEASE_CHECK = timedelta(minutes=10)
EVENTS_PER_RUN = 2_000


@workflow.defn(name="RefundLaneWorkflow")
class RefundLaneWorkflow:
    @workflow.init
    def __init__(self, params: LaneInput) -> None:
        self._queue: list[str] = list(params.queue)
        self._holder: str | None = params.holder
        self._claimed: list[str] = list(params.claimed_refund_ids)

    @workflow.signal(name="enqueue")
    def enqueue(self, entry: LaneEntry) -> None:
        if entry.workflow_id != self._holder and entry.workflow_id not in self._queue:
            self._queue.append(entry.workflow_id)

    @workflow.signal(name="release")
    def release(self, exit_: LaneExit) -> None:
        self._claimed.extend(i for i in exit_.refund_ids if i not in self._claimed)
        if exit_.workflow_id == self._holder:
            self._holder = None
        elif exit_.workflow_id in self._queue:
            self._queue.remove(exit_.workflow_id)

    @workflow.query(name="lane")
    def lane(self) -> LaneStatus:
        return LaneStatus(
            holder=self._holder, queue=list(self._queue), claimed_refund_ids=list(self._claimed)
        )

    @workflow.run
    async def run(self, params: LaneInput) -> None:
        while True:
            if self._holder is not None:
                await self._wait_for_release(self._holder)
            if not self._queue:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: bool(self._queue), timeout=IDLE, timeout_summary="idle"
                    )
            if not self._queue:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    return
            self._holder = self._queue.pop(0)
            await self._admit(self._holder)
            if workflow.info().get_current_history_length() > EVENTS_PER_RUN:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    LaneInput(
                        queue=tuple(self._queue),
                        holder=self._holder,
                        claimed_refund_ids=tuple(self._claimed),
                    )
                )

    async def _admit(self, workflow_id: str) -> None:
        grant = LaneGrant(
            lane_id=workflow.info().workflow_id, claimed_refund_ids=tuple(self._claimed)
        )
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal("admitted", grant)
        except FailureError:
            # The refund is gone (finished or terminated): the next one's turn.
            self._holder = None

    async def _wait_for_release(self, holder: str) -> None:
        while self._holder == holder:
            try:
                await workflow.wait_condition(
                    lambda: self._holder != holder,
                    timeout=LEASE_CHECK,
                    timeout_summary="lease check",
                )
            except TimeoutError:
                still_open = await workflow.execute_activity_method(
                    LaneActivities.is_open,
                    WorkflowRef(workflow_id=holder),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
                    summary=f"is {holder} still running?",
                )
                if not still_open and self._holder == holder:
                    self._holder = None
