"""Scripted stand-ins for the refund activities, registered under the real activity names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import (
    CancelAtProviderInput,
    CancelAtProviderResult,
    FindRefundsInput,
    FoundRefunds,
    PolledRefund,
    PollInput,
    RefundRoute,
    SubmitInput,
    SubmittedRefund,
    ValidatedRefund,
    ValidateInput,
)
from activities.status_batch import CheckedStatuses, CheckStatusesInput
from activities.status_watch import RegisterWatchInput
from core.models import ProviderRefund, ProviderRefundStatus, RefundRequest
from workflows.status_batch import (
    PROVIDER_STATUS_SIGNAL,
    ProviderStatus,
    StatusOutcome,
    WatchRefund,
    poll_delay_s,
)

RAW = {
    ProviderRefundStatus.PENDING: "PENDING",
    ProviderRefundStatus.SUCCEEDED: "SUCCESSFUL",
    ProviderRefundStatus.FAILED: "FAILED",
    ProviderRefundStatus.CANCELED: "CANCELLED",
}


def refund(
    status: ProviderRefundStatus, refund_id: str = "R-1", raw: str | None = None, **kw: Any
) -> ProviderRefund:
    return ProviderRefund(refund_id=refund_id, status=status, raw_status=raw or RAW[status], **kw)


def final_error(message: str, error_type: str = "ForbiddenError") -> ApplicationError:
    return ApplicationError(message, type=error_type, non_retryable=True)


def no_budget_route(_: RefundRequest) -> RefundRoute:
    """A ``route_step``: the worker's own task queue, for a budget group without a budget,
    whose reads may run as local activities (patch local-provider-reads)."""
    return RefundRoute(task_queue=activity.info().task_queue, local_reads=True)


@dataclass
class Call:
    name: str
    attempt: int
    scheduled: datetime
    # Run as a local activity (patch local-provider-reads).
    local: bool = False


# A step gets the call number of its activity (1-based) and the attempt's info.
Step = Callable[[int, activity.Info], Any]


@dataclass
class FakeProvider:
    """Answers by script; records every attempt with its (skipped) server time."""

    validate_step: Step | None = None
    submit_step: Step | None = None
    poll_step: Step | None = None
    cancel_step: Step | None = None
    find_step: Step | None = None
    # The budget queue lookup (a local activity): by default the worker's own task queue. Not
    # recorded in ``calls``, which are the provider's.
    route_step: Callable[[RefundRequest], RefundRoute | None] | None = None
    calls: list[Call] = field(default_factory=list)
    # The batched read's answer for one refund id, by read number (1-based); None: as
    # ``poll_step`` says. Not set: ``poll_step`` answers each refund of a batched read.
    batch_step: Callable[[str, int], ProviderRefund | None] | None = None
    # Refund ids of each batched status read (check_refund_statuses), in order.
    batch_reads: list[tuple[str, ...]] = field(default_factory=list)
    # A registration with the status batch (watch_refund_status), by attempt number (1-based,
    # every attempt recorded as a "watch" call): raise to fail the attempt, return a
    # ProviderStatus to signal it instead of a read, or None to read and signal as without
    # it. Not set: no "watch" call is recorded.
    watch_step: Step | None = None

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c.name == name)

    def _record(self, name: str) -> tuple[int, activity.Info]:
        info = activity.info()
        self.calls.append(
            Call(name, info.attempt, info.current_attempt_scheduled_time, info.is_local)
        )
        return self.count(name), info

    @activity.defn(name="route_refund")
    async def route(self, request: RefundRequest) -> RefundRoute:
        answer = self.route_step(request) if self.route_step else None
        return answer or RefundRoute(task_queue=activity.info().task_queue)

    @activity.defn(name="validate_refund")
    async def validate(self, params: ValidateInput) -> ValidatedRefund:
        n, info = self._record("validate")
        if self.validate_step is not None:
            answer = self.validate_step(n, info)
            if answer is not None:
                assert isinstance(answer, ValidatedRefund)
                return answer
        request = params.request
        return ValidatedRefund(
            amount_minor=request.amount_minor or 10_000,
            currency=request.currency or "EUR",
            attempt=info.attempt,
        )

    @activity.defn(name="submit_refund")
    async def submit(self, params: SubmitInput) -> SubmittedRefund:
        n, info = self._record("submit")
        answer = self.submit_step(n, info) if self.submit_step else None
        return SubmittedRefund(
            refund=answer or refund(ProviderRefundStatus.PENDING), attempt=info.attempt
        )

    @activity.defn(name="poll_refund_status")
    async def poll_status(self, params: PollInput) -> PolledRefund:
        n, info = self._record("poll")
        answer = self.poll_step(n, info) if self.poll_step else None
        return PolledRefund(
            refund=answer or refund(ProviderRefundStatus.SUCCEEDED, params.refund_id),
            attempt=info.attempt,
        )

    @activity.defn(name="check_refund_statuses")
    async def check_statuses(self, params: CheckStatusesInput) -> CheckedStatuses:
        """The batched read: one "poll" call recorded (and ``poll_step`` asked) per refund."""
        self.batch_reads.append(tuple(t.refund_id for t in params.refunds))
        found: dict[str, ProviderRefund] = {}
        for target in params.refunds:
            n, info = self._record("poll")
            answer = (
                self.batch_step(target.refund_id, len(self.batch_reads))
                if self.batch_step
                else None
            )
            if answer is None and self.poll_step is not None:
                answer = self.poll_step(n, info)
            found[target.refund_id] = answer or refund(
                ProviderRefundStatus.SUCCEEDED, target.refund_id
            )
        return CheckedStatuses(found=found, attempt=activity.info().attempt)

    @activity.defn(name="watch_refund_status")
    async def watch_status(self, params: RegisterWatchInput) -> None:
        """Stands in for registering with the status batch where no batch workflow runs (a
        worker of its own in a test): reads at once, as ``poll_step`` says, and signals the
        result (or what ``watch_step`` scripts instead). Not a poll round: a pending refund
        hears again only at its watchdog."""
        watch = params.watch
        scripted = None
        if self.watch_step is not None:
            scripted = self.watch_step(*self._record("watch"))
            assert scripted is None or isinstance(scripted, ProviderStatus)
        status = self._read_for(watch) if scripted is None else scripted
        await (
            activity.client()
            .get_workflow_handle(watch.workflow_id)
            .signal(PROVIDER_STATUS_SIGNAL, status)
        )

    def _read_for(self, watch: WatchRefund) -> ProviderStatus:
        """The stand-in's read of a registering refund, as ``poll_step`` says."""
        n, info = self._record("poll")
        answer = self.poll_step(n, info) if self.poll_step else None
        found = answer or refund(ProviderRefundStatus.SUCCEEDED, watch.refund_id)
        delay = poll_delay_s(watch.poll_initial_s, watch.poll_max_s, watch.checks_so_far + 1)
        pending = found.status is ProviderRefundStatus.PENDING
        return ProviderStatus(
            refund_id=watch.refund_id,
            outcome=StatusOutcome.FOUND,
            refund=found,
            checks=watch.checks_so_far + 1,
            next_check_at=info.current_attempt_scheduled_time + timedelta(seconds=delay)
            if pending
            else None,
        )

    @activity.defn(name="cancel_refund")
    async def cancel(self, params: CancelAtProviderInput) -> CancelAtProviderResult:
        n, info = self._record("cancel")
        answer = self.cancel_step(n, info) if self.cancel_step else None
        if answer is not None:
            assert isinstance(answer, CancelAtProviderResult)
            return answer
        return CancelAtProviderResult(
            canceled=True,
            refund=refund(ProviderRefundStatus.CANCELED, params.refund_id),
            note="canceled at paynow",
        )

    @activity.defn(name="find_submitted_refunds")
    async def find_submitted(self, params: FindRefundsInput) -> FoundRefunds:
        n, info = self._record("find")
        answer = self.find_step(n, info) if self.find_step else None
        return FoundRefunds(refunds=tuple(answer or ()))

    @property
    def all(self) -> list[Callable[..., Any]]:
        return [
            self.route,
            self.validate,
            self.submit,
            self.poll_status,
            self.cancel,
            self.find_submitted,
            self.check_statuses,
            self.watch_status,
        ]
