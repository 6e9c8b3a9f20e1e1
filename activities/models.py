"""One typed input and one typed result per activity (fields can be added without breaking
history). No aliases, no credentials: these travel through Temporal.

Inputs are strict: an older activity worker refuses (and Temporal retries elsewhere) an input
carrying an instruction it does not know, rather than dropping it. Results are read leniently:
an older workflow ignores what a newer activity adds."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from core.models import ProviderRefund, RefundRequest, forward_compatible


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Result(BaseModel):
    model_config = forward_compatible()


class ValidateInput(_Model):
    request: RefundRequest
    # Live refunds this service made on this payment (the lane's claims): never another's.
    known_refunded_minor: int = 0


class ValidatedRefund(_Result):
    amount_minor: int
    currency: str
    payment_amount_minor: int | None = None
    refundable_minor: int | None = None
    raw_payment_state: str | None = None
    attempt: int = 1


class SubmitInput(_Model):
    request: RefundRequest
    # An earlier submit of this refund ended without a verdict (its call budget ran out, maybe
    # mid-call): a provider without an idempotency key must reconcile, not send blindly.
    resumed: bool = False


class SubmittedRefund(_Result):
    refund: ProviderRefund
    attempt: int = 1


class PollInput(_Model):
    request: RefundRequest
    refund_id: str


class PolledRefund(_Result):
    refund: ProviderRefund
    attempt: int = 1


class CancelAtProviderInput(_Model):
    request: RefundRequest
    refund_id: str
    reason: str


class CancelAtProviderResult(_Result):
    canceled: bool
    refund: ProviderRefund | None = None
    note: str


class FindRefundsInput(_Model):
    request: RefundRequest
    created_from: datetime
    created_to: datetime


class FoundRefunds(_Result):
    refunds: tuple[ProviderRefund, ...]


class RefundRoute(_Result):
    """Where a refund's provider calls run: the budget queue of its profile's credential
    (``core.budgets``), e.g. ``refunds.budget.mews.default``.

    ``local_reads``: the group has no budget, so nothing is counted on its queue and the
    refund may first try its reads (validate, status checks) as local activities in its own
    workflow task (patch ``local-provider-reads``). Absent in what older workers returned:
    False, every call on the queue as before."""

    task_queue: str
    local_reads: bool = False


class EnterLaneInput(_Model):
    lane_id: str
    workflow_id: str
    # What the lane serializes, for people ("account X", "payment Y").
    scope: str | None = None


class WorkflowRef(_Model):
    workflow_id: str
