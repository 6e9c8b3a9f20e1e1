"""`RefundLaneWorkflow`: refunds of one reconciliation scope are admitted one at a time.

Why: reconciling a Mews refund whose answer was lost means looking for "a refund of this
amount made just now on this account"; any other refund made on the same account at the same
moment would look exactly the same, whichever payment it was for (a Mews refund carries no
link to its payment). So a refund holds its scope's lane (the account where the request names
one, else the payment) from validation until the provider has accepted it (or it ended, or an
operator resolved it), then releases it with the provider refunds it made or may have made.
Those are *claimed*: every later refund admitted while a lookup window can still reach them
gets them with its grant and never adopts them. Different scopes use different lanes and
stay fully parallel.

Started on demand by signal-with-start (``enter_refund_lane``); it ends after a quiet minute
with nobody queued and no claim young enough to matter, and continues-as-new when its history
grows. A holder that stops without releasing (terminated by an operator) is noticed by a
lease check and skipped.
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
    from workflows.models import (
        LaneClaim,
        LaneEntry,
        LaneExit,
        LaneGrant,
        LaneInput,
        LaneStatus,
    )

IDLE = timedelta(minutes=1)
LEASE_CHECK = timedelta(minutes=10)
EVENTS_PER_RUN = 2_000
ROLL_OVER_WHILE_HELD_PATCH = "lane-rolls-over-while-held"
# How long a claim is kept after its release. A lookup of a lost answer reaches back
# RECONCILE_MARGIN (5 min) before its own submit, which comes after its admission; the rest is
# room for the provider's clock being behind ours.
CLAIM_KEEP = timedelta(minutes=15)
# Versioning: lanes recorded before claims were kept (and timed) replay without it.
KEEP_CLAIMS_PATCH = "lane-keeps-claims"


@workflow.defn(name="RefundLaneWorkflow")
class RefundLaneWorkflow:
    @workflow.init
    def __init__(self, params: LaneInput) -> None:
        self._queue: list[str] = list(params.queue)
        self._holder: str | None = params.holder
        self._claims: list[LaneClaim] = list(params.claims)
        known = {c.refund_id for c in self._claims}
        self._claims.extend(
            LaneClaim(refund_id=i) for i in params.claimed_refund_ids if i not in known
        )

    @workflow.signal(name="enqueue")
    def enqueue(self, entry: LaneEntry) -> None:
        if entry.workflow_id != self._holder and entry.workflow_id not in self._queue:
            self._queue.append(entry.workflow_id)
        self._show()

    @workflow.signal(name="release")
    def release(self, exit_: LaneExit) -> None:
        now = workflow.now()
        known = {c.refund_id for c in self._claims}
        for claim in exit_.claims:
            if claim.refund_id not in known:
                self._claims.append(claim.model_copy(update={"claimed_at": now}))
                known.add(claim.refund_id)
        for refund_id in exit_.refund_ids:
            if refund_id not in known:
                self._claims.append(LaneClaim(refund_id=refund_id, claimed_at=now))
                known.add(refund_id)
        if exit_.workflow_id == self._holder:
            self._holder = None
        elif exit_.workflow_id in self._queue:
            self._queue.remove(exit_.workflow_id)
        self._show()

    @workflow.query(name="lane")
    def lane(self) -> LaneStatus:
        return LaneStatus(
            holder=self._holder,
            queue=list(self._queue),
            claimed_refund_ids=[c.refund_id for c in self._claims],
            claims=list(self._claims),
        )

    @workflow.run
    async def run(self, params: LaneInput) -> None:
        keep_claims = workflow.patched(KEEP_CLAIMS_PATCH)
        while True:
            self._show()
            if self._holder is not None:
                await self._wait_for_release(self._holder)
                self._show()
            if not self._queue:
                idle = max(IDLE, self._claims_kept_for()) if keep_claims else IDLE
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: bool(self._queue), timeout=idle, timeout_summary="idle"
                    )
            if not self._queue:
                if keep_claims and self._claims_kept_for() > timedelta(0):
                    continue
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    return
            self._holder = self._queue.pop(0)
            self._show()
            await self._admit(self._holder, keep_claims)
            if workflow.info().get_current_history_length() > EVENTS_PER_RUN:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    LaneInput(
                        queue=tuple(self._queue), holder=self._holder, claims=tuple(self._claims)
                    )
                )

    def _show(self) -> None:
        """The lane's current details in the Temporal UI (not recorded in the history).

        Operators see lanes beside the refunds in the workflow list, some still running after
        every refund of theirs ended: the details say why, and how to list refunds only.
        """
        lines = ["**Refund lane, not a refund**: admits one refund of its scope at a time."]
        lines.append(f"admitted: {self._holder}" if self._holder else "admitted: none")
        if self._queue:
            lines.append(f"queued: {', '.join(self._queue)}")
        kept = self._claims_kept_for()
        if kept > timedelta(0):
            until = (workflow.now() + kept).isoformat(timespec="seconds")
            count = len(self._claims)
            noun = "refund id" if count == 1 else "refund ids"
            lines.append(
                f"keeps {count} claimed provider {noun} until {until}, so that looking up a "
                "refund whose answer was lost never takes another refund's money for it; "
                "it ends a minute after that if nothing is queued"
            )
        lines.append('Refunds only: list with the query `WorkflowType="RefundWorkflow"`.')
        workflow.set_current_details("\n\n".join(lines))

    def _claims_kept_for(self) -> timedelta:
        """How much longer the youngest claim must be kept (zero when none must)."""
        stamps = [c.claimed_at for c in self._claims if c.claimed_at is not None]
        if not stamps:
            return timedelta(0)
        return max(timedelta(0), max(stamps) + CLAIM_KEEP - workflow.now())

    async def _admit(self, workflow_id: str, keep_claims: bool) -> None:
        if keep_claims:
            # Claims too old for any lookup window are dropped; undated ones (from a lane
            # recorded before claims were dated) are kept.
            now = workflow.now()
            self._claims = [
                c for c in self._claims if c.claimed_at is None or now - c.claimed_at < CLAIM_KEEP
            ]
        grant = LaneGrant(
            lane_id=workflow.info().workflow_id,
            claimed_refund_ids=tuple(c.refund_id for c in self._claims),
            claims=tuple(self._claims),
        )
        try:
            await workflow.get_external_workflow_handle_for(RefundWorkflow.run, workflow_id).signal(
                RefundWorkflow.admitted, grant
            )
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
                elif (
                    workflow.info().get_current_history_length() > EVENTS_PER_RUN
                    and workflow.patched(ROLL_OVER_WHILE_HELD_PATCH)
                ):
                    # A holder can wait weeks (an operator's resolve): the lane hands over to
                    # a fresh run, holder included, before its history grows too long.
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(
                        LaneInput(
                            queue=tuple(self._queue),
                            holder=self._holder,
                            claims=tuple(self._claims),
                        )
                    )


# Last: the refund workflow and its lane signal each other, so each module imports the other
# once its own class exists; either can then be imported first (in the worker and in the
# workflow sandbox alike). Passed through: here it only names a signal, and the sandbox
# would otherwise run the refund module again for every lane it loads.
with workflow.unsafe.imports_passed_through():
    from workflows.refund import RefundWorkflow
