"""The workflow's own messages: its input (with what continue-as-new carries) and the
`cancel` signal's payload. No aliases, no credentials.

What callers write (the input's request and options, `ResolveRequest`) is strict. What travels
between worker versions (carried state, answers, the lane's messages and status) ignores
fields it does not know, so a rolling deploy never breaks an older worker."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from activities.models import ValidatedRefund
from core.models import (
    OutcomeEvent,
    ProviderRefund,
    RefundOptions,
    RefundRequest,
    RefundState,
    Resolution,
    ResolveAction,
    forward_compatible,
)


class CancelRequest(BaseModel):
    """Payload of the `cancel` signal: ``{"reason": "..."}``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class CheckNow(BaseModel):
    """Payload of the `check_now` signal: the provider said the refund changed (a webhook),
    so its status is read now instead of at the next scheduled check."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    reason: Annotated[str, Field(min_length=1, max_length=200)] = "provider webhook"


class CancelAnswer(BaseModel):
    """Answer of the `request_cancel` update, once the cancel has played out."""

    model_config = forward_compatible()

    canceled: bool
    state: RefundState
    note: str


class ResolveRequest(BaseModel):
    """Payload of the `resolve` update: an operator's decision for a refund in
    `NEEDS_ATTENTION`.

    * ``adopt`` (with ``refund_id``): this provider refund is this refund's; it is checked
      at the provider first (exists, this amount and currency, not claimed by a sibling).
    * ``resend``: nothing was made; look once more, then send the refund again.
    * ``close`` (with ``close_as`` ``FAILED`` or ``CANCELED``): end the refund so.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: ResolveAction
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    by: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    refund_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    close_as: RefundState | None = None

    @model_validator(mode="after")
    def _fits_the_action(self) -> Self:
        if not self.reason.strip():
            raise ValueError("a resolution needs a reason")
        if (self.action is ResolveAction.ADOPT) != (self.refund_id is not None):
            raise ValueError("refund_id goes with action adopt, and only with it")
        if self.action is ResolveAction.CLOSE:
            if self.close_as not in (RefundState.FAILED, RefundState.CANCELED):
                raise ValueError("close needs close_as FAILED or CANCELED")
        elif self.close_as is not None:
            raise ValueError("close_as goes with action close, and only with it")
        return self


class ResolveAnswer(BaseModel):
    """Answer of the `resolve` update: what was done, and the state after it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: RefundState
    note: str


class CarriedState(BaseModel):
    """What one run hands to the next on continue-as-new. Not for callers to set."""

    # The next run may be on a worker of another version.
    model_config = forward_compatible()

    state: RefundState
    validated: ValidatedRefund
    refund: ProviderRefund
    started_at: datetime
    submitted_at: datetime
    attempts: int = 0
    checks: int = 0
    last_error: str | None = None
    attention_reason: str | None = None
    cancel_requested: bool = False
    cancel_reason: str | None = None
    cancel_handled: bool = False
    cancel_note: str | None = None
    attention_actions: str | None = None
    resolutions: tuple[Resolution, ...] = ()
    confirmed_amount_minor: int | None = None
    confirmed_currency: str | None = None
    payer_amount_minor: int | None = None
    voucher_amount_minor: int | None = None
    events: tuple[OutcomeEvent, ...] = ()


class EventInput(BaseModel):
    """Input of `RefundEventWorkflow`: one outcome event and where it goes."""

    model_config = forward_compatible()

    event: OutcomeEvent
    url: str
    # The event's JSON body, the same bytes on every attempt (the timestamp header and the
    # signature are per attempt).
    body: str
    options: RefundOptions


class RefundWorkflowInput(BaseModel):
    """The workflow's one input: ``{"request": {...}}``; ``options`` defaults are sane."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: RefundRequest
    options: RefundOptions = Field(default_factory=RefundOptions)
    carried: CarriedState | None = None


def lane_id_for(request: RefundRequest, task_queue: str, *, by_account: bool = True) -> str:
    """One lane per reconciliation scope (and merchant profile): its refunds are admitted one
    at a time.

    The scope is what a lookup of lost answers reads: where the request names an account
    (Mews), the whole account, since a refund there carries no link to its payment and a
    lookup sees every refund of the account; otherwise the payment. ``by_account=False`` is
    the per-payment lane of histories recorded before accounts were serialized.

    The task queue is part of the id: the lane runs on the refunds' own task queue, so
    workers of another deployment in the same namespace never wait on it. Workflow ids are
    never encrypted, so the account is named by a digest: a guest account id is customer
    data (the payment id already shows, as a search attribute)."""
    prefix = f"refund-lane:{task_queue}:{request.provider.value}:{request.merchant}"
    if by_account and request.account_id is not None:
        digest = hashlib.sha256(request.account_id.lower().encode()).hexdigest()[:32]
        return f"{prefix}:account:{digest}"
    return f"{prefix}:{request.payment_id}"


def lane_scope(request: RefundRequest) -> str:
    """What a request's lane serializes, for people: ``account X`` or ``payment Y`` (sent
    only inside payloads, which the codec encrypts)."""
    if request.account_id is not None:
        return f"account {request.account_id}"
    return f"payment {request.payment_id}"


class LaneClaim(BaseModel):
    """A provider refund a lane member made (or may have made): no sibling may adopt it
    while any lookup window can still reach it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    refund_id: str
    payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    # True when the provider said the refund succeeded (a final state): only those count as
    # refunded on their payment in a sibling's validation.
    succeeded: bool = False
    claimed_at: datetime | None = None


class LaneEntry(BaseModel):
    """`enqueue` signal: a refund workflow asks to be admitted."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workflow_id: str


class LaneExit(BaseModel):
    """`release` signal: the holder is done with the critical section, or a queued refund
    leaves. ``refund_ids`` are the provider refunds it made (or may have made): they are
    claimed, and no later sibling may adopt them while reconciling."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workflow_id: str
    refund_ids: tuple[str, ...] = ()
    claims: tuple[LaneClaim, ...] = ()


class ReleaseLaneInput(BaseModel):
    """Input of the ``release_refund_lane`` local activity (patch local-lane-messages): the
    lane to signal and its ``release`` signal's payload. Strict, as activity inputs are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lane_id: str
    exit: LaneExit


class LaneGrant(BaseModel):
    """`admitted` signal to a refund workflow: its turn, with the refunds siblings claimed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    lane_id: str
    claimed_refund_ids: tuple[str, ...] = ()
    claims: tuple[LaneClaim, ...] = ()


class LaneInput(BaseModel):
    """The lane's input; continue-as-new carries the queue and the claims."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    queue: tuple[str, ...] = ()
    holder: str | None = None
    claimed_refund_ids: tuple[str, ...] = ()
    claims: tuple[LaneClaim, ...] = ()


class LaneStatus(BaseModel):
    """The lane's `lane` query answer."""

    model_config = forward_compatible(frozen=False)

    holder: str | None
    queue: list[str]
    claimed_refund_ids: list[str]
    claims: list[LaneClaim] = Field(default_factory=list)
