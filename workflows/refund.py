"""`RefundWorkflow`: one refund, carried to a final, known outcome exactly once.

States and transitions::

    VALIDATING ──refused by us or the provider──────────────────────────▶ REJECTED
        │      ──cancel signal──────────────────────────────────────────▶ CANCELED
        ▼ ok
    SUBMITTING ──cancel signal (before the submit call)──────────────────▶ CANCELED
        │      ──provider refuses the refund (final 4xx)─────────────────▶ FAILED
        │      ──outcome unknown (Mews): reconcile; adopt, re-send, or──▶ NEEDS_ATTENTION
        ▼ accepted
     PENDING ──provider says succeeded / failed / canceled──▶ SUCCEEDED / FAILED / CANCELED
        │  ▲
        ▼  │ still watched; a final provider status ends it as above
    NEEDS_ATTENTION   (past the attention deadline, or the provider lost track of the refund)

`REJECTED` means nothing was sent to the provider. Business outcomes complete the workflow
with a :class:`RefundStatus`; only bugs fail it.

* Retries: every activity states its timeout and retry policy. Final provider errors come
  back as non-retryable ``ApplicationError`` s; transient ones are retried by the server
  with exponential backoff, or exactly after ``Retry-After``. Each activity call also has a
  budget (schedule-to-close); when it runs out the workflow records the last error, checks
  the attention deadline and calls again, so the status stays current through long outages.
* Polling: durable timers, capped exponential from ``poll_initial_s`` to ``poll_max_s``
  (both carried in the input, so replay is deterministic). A cancel signal wakes the wait.
* Cancel: before submit, the refund ends `CANCELED` and the provider's refund call is never
  made. After submit, the provider's cancel is tried once; if the provider cannot cancel,
  the note says why and watching goes on.
* Continue-as-new after ``checks_per_run`` status checks or when the server suggests it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities import RefundActivities
    from activities.failures import OUTCOME_UNKNOWN
    from activities.lane_activities import LaneActivities
    from activities.models import (
        CancelAtProviderInput,
        CancelAtProviderResult,
        EnterLaneInput,
        FindRefundsInput,
        FoundRefunds,
        PolledRefund,
        PollInput,
        SubmitInput,
        SubmittedRefund,
        ValidatedRefund,
        ValidateInput,
    )
    from core.models import (
        FINAL_STATES,
        ProviderRefund,
        ProviderRefundStatus,
        RefundState,
        RefundStatus,
    )
    from core.money import format_minor
    from core.temporal import REFUND_PAYMENT_ID, REFUND_PROVIDER, REFUND_STATE
    from telemetry.metrics import record_refund_finished, record_refund_started
    from workflows.models import (
        CancelAnswer,
        CancelRequest,
        CarriedState,
        LaneExit,
        LaneGrant,
        RefundWorkflowInput,
        lane_id_for,
    )

# How long the server keeps retrying one activity before the workflow looks up again.
CALL_BUDGET = timedelta(minutes=10)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=0,
)
# Mews reconciliation: give the provider time to show a refund it may have made.
RECONCILE_SETTLE = timedelta(seconds=30)
RECONCILE_MARGIN = timedelta(minutes=5)
RECONCILE_LOOKUPS = 2
# Versioning: histories recorded before refunds queued in their payment's lane replay
# without it.
LANE_PATCH = "per-payment-lane"

R = TypeVar("R")
P = TypeVar("P")


class _Final(Exception):
    """A non-retryable failure from an activity: the step's answer is "no"."""

    def __init__(self, error: ApplicationError) -> None:
        super().__init__(error.message)
        self.error = error


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.init
    def __init__(self, params: RefundWorkflowInput) -> None:
        request = params.request
        carried = params.carried
        self._request = request
        self._options = params.options
        # One call's timeout; the HTTP client's own (REFUNDS_HTTP_TIMEOUT_S) is far shorter.
        self._call_timeout = timedelta(seconds=params.options.call_timeout_s)
        self._validated: ValidatedRefund | None = carried.validated if carried else None
        self._refund: ProviderRefund | None = carried.refund if carried else None
        self._submitted_at: datetime | None = carried.submitted_at if carried else None
        self._checks = carried.checks if carried else 0
        self._checks_this_run = 0
        self._cancel_handled = carried.cancel_handled if carried else False
        self._lane: str | None = None
        self._admitted = False
        self._claimed: tuple[str, ...] = ()
        # Refunds that may be this one's (ambiguous reconciliation): claimed on release.
        self._possible_refunds: tuple[str, ...] = ()
        now = workflow.now()
        self._status = RefundStatus(
            key=request.idempotency_key,
            workflow_id=request.workflow_id,
            provider=request.provider,
            payment_id=request.payment_id,
            merchant=request.merchant,
            state=carried.state if carried else RefundState.VALIDATING,
            amount_minor=(carried.validated.amount_minor if carried else request.amount_minor),
            currency=(carried.validated.currency if carried else request.currency),
            provider_refund_id=carried.refund.refund_id if carried else None,
            provider_status=carried.refund.raw_status if carried else None,
            attempts=carried.attempts if carried else 0,
            last_error=carried.last_error if carried else None,
            attention_reason=carried.attention_reason if carried else None,
            cancel_requested=carried.cancel_requested if carried else False,
            cancel_reason=carried.cancel_reason if carried else None,
            cancel_note=carried.cancel_note if carried else None,
            started_at=carried.started_at if carried else now,
            updated_at=now,
        )

    # ----------------------------------------------------------------- messages

    @workflow.run
    async def run(self, params: RefundWorkflowInput) -> RefundStatus:
        workflow.upsert_search_attributes(
            [
                REFUND_PROVIDER.value_set(self._request.provider.value),
                REFUND_PAYMENT_ID.value_set(self._request.payment_id),
            ]
        )
        self._set_state(self._status.state)
        if params.carried is None:
            record_refund_started(self._request.provider.value)
        if params.carried is None and not await self._validate_and_submit():
            return self._result()
        return await self._watch()

    @workflow.signal(name="cancel")
    def cancel(self, params: CancelRequest) -> None:
        """Operator's cancel. Idempotent: the first reason is kept."""
        if self._status.cancel_requested or self._status.is_final:
            return
        self._status.cancel_requested = True
        self._status.cancel_reason = params.reason
        self._touch()

    @workflow.update(name="request_cancel")
    async def request_cancel(self, params: CancelRequest) -> CancelAnswer:
        """Cancel with an answer: waits until the cancel has played out (before submit, at the
        provider, or refused by it) and says which."""
        self.cancel(params)
        await workflow.wait_condition(
            lambda: self._status.is_final or self._status.cancel_note is not None
        )
        canceled = self._status.state is RefundState.CANCELED
        note = self._status.cancel_note or self._status.message or self._status.state.value
        return CancelAnswer(canceled=canceled, state=self._status.state, note=note)

    @request_cancel.validator
    def _accept_cancel(self, params: CancelRequest) -> None:
        # Rejected updates leave no trace in the history: "too late" costs nothing.
        if self._status.is_final:
            raise ValueError(
                f"too late to cancel: the refund is already {self._status.state.value}"
                + (f" ({self._status.message})" if self._status.message else "")
            )

    @workflow.signal(name="admitted")
    def admitted(self, grant: LaneGrant) -> None:
        """The payment's lane says it is this refund's turn."""
        self._admitted = True
        self._claimed = grant.claimed_refund_ids

    @workflow.query(name="status")
    def status(self) -> RefundStatus:
        return self._status.model_copy()

    # ------------------------------------------------------------------- phases

    async def _validate_and_submit(self) -> bool:
        """Returns False when the refund ended before anything needs watching."""
        if self._canceled_before_submit():
            return False
        if workflow.patched(LANE_PATCH) and not await self._enter_lane():
            return False
        made: tuple[str, ...] = ()
        try:
            refund = await self._validate_then_submit()
            if refund is not None:
                made = (refund.refund_id,)
        finally:
            await self._leave_lane(made + self._possible_refunds)
        if refund is None:
            return False
        self._adopt(refund)
        return True

    async def _enter_lane(self) -> bool:
        """Queue behind earlier refunds of the same payment; False if canceled meanwhile."""
        self._lane = lane_id_for(self._request, workflow.info().task_queue)
        self._status.message = "waiting for earlier refunds of this payment"
        self._touch()
        await workflow.execute_activity_method(
            LaneActivities.enter,
            EnterLaneInput(lane_id=self._lane, workflow_id=workflow.info().workflow_id),
            start_to_close_timeout=self._call_timeout,
            retry_policy=RETRY,
            summary="queue in the payment's lane",
        )
        await workflow.wait_condition(lambda: self._admitted or self._status.cancel_requested)
        self._status.message = None
        if not self._admitted:
            await self._leave_lane(())
            self._canceled_before_submit()
            return False
        return True

    async def _leave_lane(self, refund_ids: tuple[str, ...]) -> None:
        if self._lane is None:
            return
        lane, self._lane = self._lane, None
        try:
            await workflow.get_external_workflow_handle(lane).signal(
                "release",
                LaneExit(workflow_id=workflow.info().workflow_id, refund_ids=refund_ids),
            )
        except FailureError:
            # The lane is gone (an operator terminated it): nothing left to release.
            workflow.logger.warning("payment lane %s was gone at release", lane)

    async def _validate_then_submit(self) -> ProviderRefund | None:
        try:
            validated = await self._call(
                "validate",
                lambda: self._provider_call(
                    RefundActivities.validate,
                    ValidateInput(request=self._request),
                    f"validate at {self._request.provider.value}",
                ),
            )
        except _Final as final:
            self._finish(RefundState.REJECTED, final.error.message)
            return None
        self._validated = validated
        self._status.amount_minor = validated.amount_minor
        self._status.currency = validated.currency
        self._status.attempts += validated.attempt
        if self._canceled_before_submit():
            return None

        self._set_state(RefundState.SUBMITTING)
        return await self._submit()

    async def _submit(self) -> ProviderRefund | None:
        """Submit, reconciling unknown outcomes when re-sending is unsafe."""
        assert self._validated is not None
        for _ in range(3):
            self._submitted_at = workflow.now()
            try:
                submitted: SubmittedRefund = await self._call(
                    "submit",
                    lambda: self._provider_call(
                        RefundActivities.submit,
                        SubmitInput(request=self._request),
                        self._amount_summary("submit"),
                    ),
                )
            except _Final as final:
                if final.error.type != OUTCOME_UNKNOWN:
                    self._finish(RefundState.FAILED, final.error.message)
                    return None
                self._note_error(final.error.message)
                found = await self._reconcile(self._submitted_at)
                if isinstance(found, ProviderRefund):
                    return found
                if found == "ambiguous":
                    return None
                continue  # sure that nothing was made: send again
            self._status.attempts += submitted.attempt
            return submitted.refund
        self._flag_attention("the provider's answer to the refund call was lost three times")
        return None

    async def _reconcile(self, attempt_started: datetime) -> ProviderRefund | str:
        """Look for the refund a lost answer may have made; adopt it if exactly one fits.

        Returns the refund, ``"none"`` when sure none was made, or ``"ambiguous"`` (state is
        then NEEDS_ATTENTION with the evidence).
        """
        assert self._validated is not None
        expected = self._validated.amount_minor
        for _ in range(RECONCILE_LOOKUPS):
            await workflow.sleep(RECONCILE_SETTLE, summary="let the provider settle")
            try:
                found: FoundRefunds = await self._call(
                    "reconcile",
                    lambda: self._provider_call(
                        RefundActivities.find_submitted,
                        FindRefundsInput(
                            request=self._request,
                            created_from=attempt_started - RECONCILE_MARGIN,
                            created_to=workflow.now() + RECONCILE_MARGIN,
                        ),
                        "look for a refund the lost answer may have made",
                    ),
                )
            except _Final as final:
                self._flag_attention(f"could not reconcile a lost answer: {final.error.message}")
                return "ambiguous"
            matches = [
                r
                for r in found.refunds
                if r.refund_id not in self._claimed
                and r.amount_minor == expected
                and (r.currency is None or r.currency == self._validated.currency)
                and r.status is not ProviderRefundStatus.FAILED
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                self._possible_refunds = tuple(r.refund_id for r in matches)
                ids = ", ".join(self._possible_refunds)
                self._flag_attention(
                    f"answer lost and {len(matches)} refunds of this amount exist ({ids}); "
                    "an operator must decide which one is this refund"
                )
                return "ambiguous"
        return "none"

    async def _watch(self) -> RefundStatus:
        while not self._status.is_final:
            await self._handle_cancel()
            if self._status.is_final:
                break
            await self._check_status()
            if self._status.is_final:
                break
            self._check_attention()
            delay = self._next_delay()
            self._status.next_check_at = workflow.now() + delay
            self._touch()
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    self._cancel_pending, timeout=delay, timeout_summary="next status check"
                )
            self._status.next_check_at = None
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry())
        return self._result()

    async def _check_status(self) -> None:
        assert self._refund is not None
        refund_id = self._refund.refund_id
        try:
            polled: PolledRefund = await self._call(
                "status",
                lambda: self._provider_call(
                    RefundActivities.poll_status,
                    PollInput(request=self._request, refund_id=refund_id),
                    f"check refund {refund_id}",
                ),
                once=True,
            )
        except _Final as final:
            self._flag_attention(f"status check refused: {final.error.message}")
            return
        except _Budget:
            return
        self._checks += 1
        self._checks_this_run += 1
        self._adopt(polled.refund)

    async def _handle_cancel(self) -> None:
        if not self._cancel_pending():
            return
        assert self._refund is not None
        self._cancel_handled = True
        refund_id = self._refund.refund_id
        reason = self._status.cancel_reason or "canceled by operator"
        try:
            result: CancelAtProviderResult = await self._call(
                "cancel",
                lambda: self._provider_call(
                    RefundActivities.cancel,
                    CancelAtProviderInput(
                        request=self._request, refund_id=refund_id, reason=reason
                    ),
                    f"cancel refund {refund_id} at the provider",
                ),
            )
        except _Final as final:
            result = CancelAtProviderResult(canceled=False, note=final.error.message)
        if result.canceled:
            self._status.cancel_note = result.note
            if result.refund is not None:
                self._adopt(result.refund)
            if not self._status.is_final:
                self._finish(RefundState.CANCELED, f"canceled: {reason}")
        else:
            self._status.cancel_note = (
                f"could not cancel at the provider ({result.note}); watching until final"
            )
            self._touch()

    # ------------------------------------------------------------------ helpers

    def _provider_call(
        self, activity: Callable[[RefundActivities, P], Awaitable[R]], arg: P, summary: str
    ) -> Awaitable[R]:
        """One provider activity with the timeout, call budget and retry policy every provider
        call shares; :meth:`_call` runs it (loops over spent budgets, sorts failures)."""
        return workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=self._call_timeout,
            schedule_to_close_timeout=CALL_BUDGET,
            retry_policy=RETRY,
            summary=summary,
        )

    async def _call(self, step: str, start: Callable[[], Awaitable[R]], *, once: bool = False) -> R:
        """Run an activity; loop over exhausted budgets; raise `_Final` on a final "no"."""
        while True:
            try:
                return await start()
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.non_retryable:
                    raise _Final(cause) from None
                self._note_error(f"{step}: {_describe(err)}")
                self._check_attention()
                if once:
                    raise _Budget() from None

    def _canceled_before_submit(self) -> bool:
        if not self._status.cancel_requested:
            return False
        self._cancel_handled = True
        reason = self._status.cancel_reason or "canceled by operator"
        self._status.cancel_note = "canceled before submit: the provider was never asked"
        self._finish(RefundState.CANCELED, f"canceled before submit: {reason}")
        return True

    def _cancel_pending(self) -> bool:
        return self._status.cancel_requested and not self._cancel_handled

    def _adopt(self, refund: ProviderRefund) -> None:
        self._refund = refund
        self._status.provider_refund_id = refund.refund_id
        self._status.provider_status = refund.raw_status
        outcome = {
            ProviderRefundStatus.SUCCEEDED: RefundState.SUCCEEDED,
            ProviderRefundStatus.FAILED: RefundState.FAILED,
            ProviderRefundStatus.CANCELED: RefundState.CANCELED,
        }.get(refund.status)
        if outcome is not None:
            detail = f": {refund.failure_reason}" if refund.failure_reason else ""
            self._finish(outcome, f"provider status {refund.raw_status}{detail}")
        elif self._status.state is not RefundState.NEEDS_ATTENTION:
            self._set_state(RefundState.PENDING)
        else:
            self._touch()

    def _check_attention(self) -> None:
        if self._status.is_final or self._status.state is RefundState.NEEDS_ATTENTION:
            return
        started = self._status.started_at or workflow.now()
        waited = workflow.now() - started
        if waited.total_seconds() >= self._options.attention_after_s:
            hours = waited.total_seconds() / 3600
            where = self._status.provider_status or self._status.state.value
            self._flag_attention(f"not final after {hours:.1f} h (last known: {where})")

    def _flag_attention(self, reason: str) -> None:
        self._status.attention_reason = reason
        self._set_state(RefundState.NEEDS_ATTENTION)

    def _note_error(self, message: str) -> None:
        self._status.last_error = message
        self._touch()

    def _next_delay(self) -> timedelta:
        # The first wait is poll_initial_s, then it doubles up to poll_max_s.
        exponent = min(max(self._checks - 1, 0), 30)
        seconds = min(self._options.poll_initial_s * 2**exponent, self._options.poll_max_s)
        return timedelta(seconds=seconds)

    def _should_continue_as_new(self) -> bool:
        return (
            self._checks_this_run >= self._options.checks_per_run
            or workflow.info().is_continue_as_new_suggested()
        )

    def _carry(self) -> RefundWorkflowInput:
        assert self._validated is not None
        assert self._refund is not None
        assert self._submitted_at is not None
        assert self._status.started_at is not None
        return RefundWorkflowInput(
            request=self._request,
            options=self._options,
            carried=CarriedState(
                state=self._status.state,
                validated=self._validated,
                refund=self._refund,
                started_at=self._status.started_at,
                submitted_at=self._submitted_at,
                attempts=self._status.attempts,
                checks=self._checks,
                last_error=self._status.last_error,
                attention_reason=self._status.attention_reason,
                cancel_requested=self._status.cancel_requested,
                cancel_reason=self._status.cancel_reason,
                cancel_handled=self._cancel_handled,
                cancel_note=self._status.cancel_note,
            ),
        )

    def _finish(self, state: RefundState, message: str) -> None:
        assert state in FINAL_STATES
        self._status.message = message
        self._status.finished_at = workflow.now()
        self._status.next_check_at = None
        self._set_state(state)
        record_refund_finished(
            self._request.provider.value,
            state.value,
            started_at=self._status.started_at,
            finished_at=self._status.finished_at,
        )

    def _set_state(self, state: RefundState) -> None:
        self._status.state = state
        workflow.upsert_search_attributes([REFUND_STATE.value_set(state.value)])
        self._touch()
        # Not logged while replaying; workflow_id and run_id are added by the SDK.
        workflow.logger.info(
            "refund is %s",
            state.value,
            extra={"refund_state": state.value, "provider": self._request.provider.value},
        )

    def _touch(self) -> None:
        self._status.updated_at = workflow.now()
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        s = self._status
        lines = [f"**{s.state.value}**"]
        if s.provider_refund_id:
            lines.append(f"provider refund `{s.provider_refund_id}`: {s.provider_status}")
        if s.next_check_at:
            lines.append(f"next check {s.next_check_at.isoformat(timespec='seconds')}")
        for label, value in (
            ("attention", s.attention_reason),
            ("cancel", s.cancel_note),
            ("last error", s.last_error),
            ("outcome", s.message),
        ):
            if value:
                lines.append(f"{label}: {value}")
        return "\n\n".join(lines)

    def _amount_summary(self, verb: str) -> str:
        s = self._status
        amount = (
            format_minor(s.amount_minor, s.currency)
            if s.amount_minor is not None and s.currency
            else "whole payment"
        )
        return f"{verb} {amount} at {self._request.provider.value}"

    def _result(self) -> RefundStatus:
        return self._status.model_copy()


class _Budget(Exception):
    """One status check ran out of budget; the watch loop simply tries again later."""


def _describe(err: BaseException) -> str:
    """The innermost message of a failure chain (the provider's words, credential-free)."""
    messages: list[str] = []
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, ActivityTimeoutError):
            kind = current.type.name.lower() if current.type else "timeout"
            messages.append(f"timed out ({kind})")
        elif isinstance(current, ApplicationError):
            messages.append(current.message)
        current = current.__cause__
    return messages[-1] if messages else str(err)
