"""Status checks of many pending refunds in one provider call (issue 12: "one poll per batch").

``check_refund_statuses`` reads up to :data:`MAX_BATCH` refunds of one merchant profile with
the adapter's batched read (Mews: one ``payments/getAll`` by ``PaymentIds``). It runs on the
profile's budget queue, scheduled by ``RefundStatusBatchWorkflow``
(:mod:`workflows.status_batch`), so the provider's request budget is spent once per batch
instead of once per refund.

Failures are those of ``poll_refund_status``, through the same
:func:`~activities.failures.provider_failures`: final provider errors are non-retryable,
transient ones retried by the server (``Retry-After`` honoured). A refund the provider does not
show (no record, not a refund, another account: :meth:`MewsAdapter.poll_many` judges it as
``get_refund`` does) is no failure of the batch: it is listed in ``missing``, and the workflow
tells that refund what ``get_refund`` would have raised (:func:`not_found_sentence`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import PROVIDER_NOT_CONFIGURED, provider_failures
from activities.telemetry import observed
from core.models import ProviderName, ProviderRefund, RefundRequest, forward_compatible
from providers.errors import NotFoundError, Step, Subject, operator_sentence, provider_title
from providers.mews.adapter import MAX_PAYMENT_IDS, RefundRef
from providers.registry import ProviderDirectory, ProviderNotConfiguredError

# Refunds per activity call: one Mews getAll takes at most this many PaymentIds.
MAX_BATCH = MAX_PAYMENT_IDS
# The error type of a provider that has no batched status read (a worker misconfiguration).
NO_BATCH_READ = "NoBatchedStatusRead"


class StatusTarget(BaseModel):
    """One refund to read: the provider's refund id, and the account and enterprise its
    request named (checked as ``get_refund`` checks them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refund_id: Annotated[str, Field(min_length=1, max_length=100)]
    account_id: str | None = None
    enterprise_id: str | None = None


class CheckStatusesInput(BaseModel):
    """Input of ``check_refund_statuses``: refunds of one provider and merchant profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: ProviderName
    merchant: Annotated[str, Field(min_length=1, max_length=64)]
    refunds: Annotated[tuple[StatusTarget, ...], Field(min_length=1, max_length=MAX_BATCH)]


class CheckedStatuses(BaseModel):
    """What one batched read found: the provider's view of each refund it shows, and the ids
    it does not (as ``get_refund`` would have said ``NotFoundError``)."""

    model_config = forward_compatible()

    # By the refund id as asked (the provider's own may differ in case).
    found: dict[str, ProviderRefund] = Field(default_factory=dict)
    missing: tuple[str, ...] = ()
    attempt: int = 1


@runtime_checkable
class BatchStatusReader(Protocol):
    """An adapter that reads many refunds in one call (today :class:`MewsAdapter`)."""

    async def poll_many(self, refunds: Sequence[str | RefundRef]) -> dict[str, ProviderRefund]:
        """The refunds it shows, by the id given; the others absent."""
        ...


def not_found_sentence(provider: str, refund_id: str) -> str:
    """What a refund's single status read says when the provider does not show it: the
    sentence of the adapter's ``NotFoundError`` for the status step, and the verdict's origin.
    """
    about = Subject(provider, Step.STATUS, refund_id=refund_id)
    return (
        f"{operator_sentence(NotFoundError, about)} The batched status read at "
        f"{provider_title(provider)} did not show it as a refund on its account."
    )


class StatusBatchActivities:
    """Holds the provider adapters, like :class:`~activities.RefundActivities`; one per worker
    of the budget queues."""

    def __init__(self, providers: ProviderDirectory) -> None:
        self._providers = providers

    def _reader(self, provider: ProviderName, merchant: str) -> BatchStatusReader:
        # The directory finds adapters by request; only provider and merchant are read.
        probe = RefundRequest(
            idempotency_key="status-batch",
            provider=provider,
            payment_id="status-batch",
            reason="batched status read",
            merchant=merchant,
        )
        try:
            adapter = self._providers.for_request(probe)
        except ProviderNotConfiguredError as err:
            raise ApplicationError(
                str(err), type=PROVIDER_NOT_CONFIGURED, non_retryable=True
            ) from None
        if not isinstance(adapter, BatchStatusReader):
            raise ApplicationError(
                f"{provider_title(provider.value)} has no batched status read on this worker: "
                "its refunds poll their status one by one.",
                type=NO_BATCH_READ,
                non_retryable=True,
            )
        return adapter

    @activity.defn(name="check_refund_statuses")
    async def check_statuses(self, params: CheckStatusesInput) -> CheckedStatuses:
        """One batched status read of up to :data:`MAX_BATCH` refunds."""
        reader = self._reader(params.provider, params.merchant)
        refs = [
            RefundRef(refund_id=t.refund_id, account_id=t.account_id, enterprise_id=t.enterprise_id)
            for t in params.refunds
        ]
        with (
            observed(params.provider, "check_refund_statuses", params.merchant),
            provider_failures(),
        ):
            found = await reader.poll_many(refs)
        ids = list(dict.fromkeys(t.refund_id for t in params.refunds))
        return CheckedStatuses(
            found={i: found[i] for i in ids if i in found},
            missing=tuple(i for i in ids if i not in found),
            attempt=activity.info().attempt,
        )

    @property
    def all(self) -> list[Callable[..., Any]]:
        """Every activity method, for ``Worker(activities=...)``."""
        return [self.check_statuses]


__all__ = [
    "MAX_BATCH",
    "NO_BATCH_READ",
    "BatchStatusReader",
    "CheckStatusesInput",
    "CheckedStatuses",
    "StatusBatchActivities",
    "StatusTarget",
    "not_found_sentence",
]
