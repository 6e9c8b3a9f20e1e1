"""Stand-ins for the status batch tests: a scripted ``check_refund_statuses`` activity and two
"refund" workflows receiving ``provider_status``.

* :class:`ListeningRefund` only listens: the test registers it with the batch.
* :class:`ContractRefund` follows the refund side's contract of :mod:`workflows.status_batch`
  (register by signal, start the batch as an abandoned child when it does not exist,
  watchdog, unwatch): the shape RefundWorkflow's integration takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.status_batch import CheckedStatuses, CheckStatusesInput
    from core.models import ProviderRefund, ProviderRefundStatus
    from workflows.status_batch import (
        EXTERNAL_NOT_FOUND,
        PROVIDER_STATUS_SIGNAL,
        QUIET,
        ProviderStatus,
        RefundStatusBatchWorkflow,
        StatusBatchInput,
        StatusOutcome,
        UnwatchRefund,
        WatchRefund,
        expected_by,
        registered_due_at,
        status_batch_id,
    )


def refund(refund_id: str, status: ProviderRefundStatus) -> ProviderRefund:
    raw = {
        ProviderRefundStatus.PENDING: "Pending",
        ProviderRefundStatus.SUCCEEDED: "Charged",
        ProviderRefundStatus.FAILED: "Failed",
        ProviderRefundStatus.CANCELED: "Canceled",
    }[status]
    return ProviderRefund(refund_id=refund_id, status=status, raw_status=raw, amount_minor=500)


@dataclass
class Read:
    ids: list[str]
    at: datetime
    task_queue: str
    attempt: int


# The answer for one refund at its n-th read (1-based): a ProviderRefund, None (the provider
# does not show it), or an ApplicationError raised for the whole read.
Script = Callable[[str, int], ProviderRefund | ApplicationError | None]


@dataclass
class FakeReads:
    """``check_refund_statuses`` by script; records every attempt at its (skipped) time."""

    script: Script
    # Given the attempt's info: an error to fail the whole attempt with, or None.
    fail: Callable[[activity.Info], ApplicationError | None] | None = None
    reads: list[Read] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @activity.defn(name="check_refund_statuses")
    async def check(self, params: CheckStatusesInput) -> CheckedStatuses:
        info = activity.info()
        ids = [t.refund_id for t in params.refunds]
        at = info.current_attempt_scheduled_time
        self.reads.append(Read(ids, at, info.task_queue, info.attempt))
        error = self.fail(info) if self.fail is not None else None
        if error is not None:
            raise error
        found: dict[str, ProviderRefund] = {}
        missing: list[str] = []
        for refund_id in ids:
            n = self.counts[refund_id] = self.counts.get(refund_id, 0) + 1
            answer = self.script(refund_id, n)
            if isinstance(answer, ApplicationError):
                raise answer
            if answer is None:
                missing.append(refund_id)
            else:
                found[refund_id] = answer
        return CheckedStatuses(found=found, missing=tuple(missing), attempt=info.attempt)


class Heard(BaseModel):
    at: datetime
    status: ProviderStatus


@workflow.defn(name="ListeningRefund")
class ListeningRefund:
    """Records each ``provider_status``; ends on a final one or after ``limit`` of them."""

    def __init__(self) -> None:
        self._heard: list[Heard] = []

    @workflow.signal(name=PROVIDER_STATUS_SIGNAL)
    def provider_status(self, status: ProviderStatus) -> None:
        self._heard.append(Heard(at=workflow.now(), status=status))

    @workflow.run
    async def run(self, limit: int) -> list[Heard]:
        await workflow.wait_condition(
            lambda: (
                len(self._heard) >= limit
                or any(h.status.next_check_at is None for h in self._heard)
            )
        )
        return self._heard


class ContractInput(BaseModel):
    watch: WatchRefund
    budget_queue: str
    idle_s: float = 600.0
    # The watchdog's slack; None: WATCHDOG_SLACK (tests on real time shorten it).
    watchdog_slack_s: float | None = None
    # The batch's quiet time (StatusBatchInput.quiet_s) when this refund starts it (tests on
    # real time shorten it: a lost batch is noticed after it).
    quiet_s: float = QUIET.total_seconds()


class ContractResult(BaseModel):
    heard: list[Heard]
    registrations: int
    started_batch: int
    final: ProviderRefund | None = None
    canceled: bool = False


@workflow.defn(name="ContractRefund")
class ContractRefund:
    """The refund side of the contract: register, receive, watchdog, unwatch."""

    def __init__(self) -> None:
        self._heard: list[Heard] = []
        self._new = False
        self._cancel = False
        self._registrations = 0
        self._started = 0

    @workflow.signal(name=PROVIDER_STATUS_SIGNAL)
    def provider_status(self, status: ProviderStatus) -> None:
        self._heard.append(Heard(at=workflow.now(), status=status))
        self._new = True

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        self._cancel = True

    async def _register(self, params: ContractInput, checks: int) -> datetime:
        watch = params.watch.model_copy(
            update={"checks_so_far": checks, "workflow_id": workflow.info().workflow_id}
        )
        batch_id = status_batch_id(params.budget_queue)
        handle = workflow.get_external_workflow_handle_for(RefundStatusBatchWorkflow.run, batch_id)
        self._registrations += 1
        try:
            await handle.signal(RefundStatusBatchWorkflow.watch, watch)
        except ApplicationError as err:
            if err.type != EXTERNAL_NOT_FOUND:
                raise
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await workflow.start_child_workflow(
                    RefundStatusBatchWorkflow.run,
                    StatusBatchInput(
                        task_queue=params.budget_queue,
                        idle_s=params.idle_s,
                        quiet_s=params.quiet_s,
                    ),
                    id=batch_id,
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )
                self._started += 1
            await handle.signal(RefundStatusBatchWorkflow.watch, watch)
        return registered_due_at(workflow.now(), watch)

    @workflow.run
    async def run(self, params: ContractInput) -> ContractResult:
        checks = params.watch.checks_so_far
        due = await self._register(params, checks)
        while True:
            self._new = False
            deadline = (
                expected_by(due)
                if params.watchdog_slack_s is None
                else due + timedelta(seconds=params.watchdog_slack_s)
            )
            timeout = deadline - workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: self._new or self._cancel,
                    timeout=max(timeout, timedelta(seconds=1)),
                    timeout_summary="watchdog",
                )
            except TimeoutError:
                # No result by the time it was expected: register again.
                due = await self._register(params, checks)
                continue
            if self._cancel:
                # Best effort: a batch that is gone watches nothing anyway.
                with contextlib.suppress(ApplicationError):
                    await workflow.get_external_workflow_handle_for(
                        RefundStatusBatchWorkflow.run, status_batch_id(params.budget_queue)
                    ).signal(
                        RefundStatusBatchWorkflow.unwatch,
                        UnwatchRefund(workflow_id=workflow.info().workflow_id),
                    )
                return ContractResult(
                    heard=self._heard,
                    registrations=self._registrations,
                    started_batch=self._started,
                    canceled=True,
                )
            last = self._heard[-1].status
            if last.refund_id != params.watch.refund_id:
                continue
            checks = max(checks, last.checks)
            if last.outcome is StatusOutcome.FOUND and last.next_check_at is None:
                return ContractResult(
                    heard=self._heard,
                    registrations=self._registrations,
                    started_batch=self._started,
                    final=last.refund,
                )
            if last.next_check_at is not None:
                due = last.next_check_at
