"""Request, status and result models: the provider-neutral language of the whole service.

These models travel through Temporal (workflow input, query answers, results), so they carry
**no aliases** (the pydantic data converter writes field names but would read aliases) and
**no credentials**: a request names at most a merchant profile; the worker holds the secrets.
Other services, in any language, send the same JSON; ``schemas/`` holds its JSON Schema.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.common import SearchAttributeKey

from core.money import CurrencyCode, MinorUnits, Money
from core.notify_urls import NotifyUrl

IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=45,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="1-45 chars of [A-Za-z0-9._:-]; also sent as Paynow's Idempotency-Key.",
    ),
]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]

WORKFLOW_ID_PREFIX = "refund:"


# The search attributes refunds are indexed by (the Temporal UI's filters, `refunds list`).
REFUND_STATE = SearchAttributeKey.for_keyword("RefundState")
REFUND_PROVIDER = SearchAttributeKey.for_keyword("RefundProvider")
REFUND_PAYMENT_ID = SearchAttributeKey.for_keyword("RefundPaymentId")
# The provider's id of the refund, once known: a provider's webhook names only that.
REFUND_PROVIDER_REFUND_ID = SearchAttributeKey.for_keyword("RefundProviderRefundId")
SEARCH_ATTRIBUTES = (REFUND_STATE, REFUND_PROVIDER, REFUND_PAYMENT_ID, REFUND_PROVIDER_REFUND_ID)


def workflow_id_for(key: str) -> str:
    """The workflow id is derived from the idempotency key alone."""
    return f"{WORKFLOW_ID_PREFIX}{key}"


class ProviderName(StrEnum):
    MEWS = "mews"
    PAYNOW = "paynow"


class ReasonCode(StrEnum):
    """Paynow's refund reason enum (Mews takes free text only)."""

    RMA = "RMA"
    REFUND_BEFORE_14 = "REFUND_BEFORE_14"
    REFUND_AFTER_14 = "REFUND_AFTER_14"
    OTHER = "OTHER"


class RefundState(StrEnum):
    """Lifecycle of one refund; transitions are drawn in ``workflows/refund.py``."""

    VALIDATING = "VALIDATING"
    SUBMITTING = "SUBMITTING"
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


FINAL_STATES = frozenset(
    {RefundState.SUCCEEDED, RefundState.FAILED, RefundState.CANCELED, RefundState.REJECTED}
)


class ProviderRefundStatus(StrEnum):
    """Every provider status maps to one of these; the raw status is kept beside it."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class _Frozen(BaseModel):
    """What a caller writes: strict, an unknown field is refused (a typo is never dropped)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def forward_compatible(*, frozen: bool = True) -> ConfigDict:
    """Config of a model that travels between versions (activity results, the status, carried
    state, answers): fields it does not know are ignored, so what a newer worker adds never
    breaks an older one during a rolling deploy.

    Its JSON Schema still says "no other properties": it describes what this version writes,
    and the published schemas (``schemas/``) stay as they are."""
    return ConfigDict(
        frozen=frozen, extra="ignore", json_schema_extra={"additionalProperties": False}
    )


class Transfer(_Frozen):
    """A marketplace seller transfer (Paynow only)."""

    seller_id: Annotated[str, Field(min_length=1, max_length=15)]
    gross_amount_minor: Annotated[int, Field(ge=0, le=100_000_000, strict=True)]
    fee_amount_minor: Annotated[int, Field(ge=0, le=100_000_000, strict=True)]


class RefundRequest(_Frozen):
    """What a caller asks for. Identity is the idempotency key; the rest is the fingerprint."""

    idempotency_key: IdempotencyKey
    provider: ProviderName
    payment_id: Annotated[str, Field(min_length=1, max_length=64)]
    account_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    enterprise_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    amount_minor: MinorUnits | None = Field(
        default=None, description="Minor units; absent = whole payment (Mews only)."
    )
    currency: CurrencyCode | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    reason_code: ReasonCode | None = None
    transfers: tuple[Transfer, ...] = ()
    requester: ShortText | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=500)]] = (
        Field(default_factory=dict, max_length=32)
    )
    merchant: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")] = (
        "default"
    )
    notify_url: NotifyUrl | None = Field(
        default=None,
        description=(
            "Where signed outcome events (Standard Webhooks) are POSTed: on the final state "
            "and on NEEDS_ATTENTION. http(s) only; public addresses only unless "
            "REFUNDS_EVENTS_ALLOW_PRIVATE=true."
        ),
    )

    @model_validator(mode="after")
    def _amount_and_currency_together(self) -> Self:
        if (self.amount_minor is None) != (self.currency is None):
            raise ValueError("amount_minor and currency go together: give both or neither")
        if not self.reason.strip():
            raise ValueError("reason must not be blank")
        return self

    @property
    def money(self) -> Money | None:
        if self.amount_minor is None or self.currency is None:
            return None
        return Money(amount_minor=self.amount_minor, currency=self.currency)

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.idempotency_key)

    def fingerprint(self) -> str:
        """Stable digest of what the caller sent: same key + same fingerprint = same refund.

        Canonical: fields left at their defaults are left out, so a field added later with a
        default never turns an identical retry into a conflict; keys are sorted."""
        return _digest(self.model_dump(mode="json", exclude_defaults=True))

    def legacy_fingerprints(self) -> frozenset[str]:
        """Digests earlier versions recorded (every field, defaults included): a retry of a
        refund started before the canonical form still attaches to it."""
        return frozenset({_digest(self.model_dump(mode="json"))})


def _digest(document: object) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RefundOptions(_Frozen):
    """Timing knobs, fixed at start and carried in the input so replay stays deterministic."""

    poll_initial_s: Annotated[float, Field(gt=0, le=86_400)] = 5.0
    poll_max_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 300.0
    attention_after_s: Annotated[float, Field(gt=0)] = 48 * 3600.0
    # Longest one activity attempt may take before Temporal retries it elsewhere (a worker
    # that died mid-call is noticed after this). Well above REFUNDS_HTTP_TIMEOUT_S.
    call_timeout_s: Annotated[float, Field(ge=1, le=600)] = 60.0
    # Continue-as-new after this many status checks, long before the history grows large.
    checks_per_run: Annotated[int, Field(ge=10, le=5_000)] = 500
    # Evidence needed before a refund whose answer was lost is sent again to a provider that
    # has no idempotency key (Mews): wait this long for the provider to show what it made,
    # then look this many times, each lookup finding nothing.
    reconcile_settle_s: Annotated[float, Field(ge=1, le=3_600)] = 30.0
    reconcile_lookups: Annotated[int, Field(ge=1, le=10)] = 2
    # Outcome events (a request's notify_url): a failed delivery is tried again after this
    # long, doubling up to the max, until the event is this old; then it is given up.
    events_retry_initial_s: Annotated[float, Field(gt=0, le=3_600)] = 5.0
    events_retry_max_s: Annotated[float, Field(gt=0, le=86_400)] = 3_600.0
    events_give_up_after_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 3 * 86_400.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.poll_max_s < self.poll_initial_s:
            raise ValueError("poll_max_s must be >= poll_initial_s")
        return self


class ProviderRefund(BaseModel):
    """A provider's view of one refund, in neutral terms with the raw status kept."""

    model_config = forward_compatible()

    refund_id: str
    status: ProviderRefundStatus
    raw_status: str
    amount_minor: int | None = None
    currency: str | None = None
    failure_reason: str | None = None
    created_at: datetime | None = None
    # What the provider says reached the buyer and a voucher card (Paynow vouchers).
    payer_amount_minor: int | None = None
    voucher_amount_minor: int | None = None
    # How long the provider documents that this refund may stay pending (Paynow's awaiting
    # refunds: up to 120 h until the merchant balance allows). The attention deadline of a
    # refund is never earlier than its submit time plus this.
    pending_may_last_s: float | None = None


class EventDelivery(StrEnum):
    """Where the delivery of one outcome event stands."""

    SENDING = "sending"
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"


class OutcomeEvent(BaseModel):
    """One outcome event of a refund and its delivery to the refund's ``notify_url``."""

    model_config = forward_compatible(frozen=False)

    event_id: str = Field(description="The webhook-id header: the same on every attempt.")
    type: str = Field(description="refund.succeeded, refund.failed, refund.needs_attention, ...")
    state: RefundState
    created_at: datetime
    delivery: EventDelivery = EventDelivery.SENDING
    attempts: int = 0
    last_error: str | None = None
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None


class ResolveAction(StrEnum):
    """What an operator may decide for a refund in `NEEDS_ATTENTION` (the `resolve` update)."""

    ADOPT = "adopt"
    RESEND = "resend"
    CLOSE = "close"


class Resolution(BaseModel):
    """One operator decision, as recorded in the status (who, when, why)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    action: ResolveAction
    reason: str
    by: str | None = None
    at: datetime
    refund_id: str | None = None
    close_as: RefundState | None = None
    outcome: str


class RefundStatus(BaseModel):
    """The `status` query answer, the CLI's JSON and the workflow's result."""

    model_config = forward_compatible(frozen=False)

    key: str
    workflow_id: str
    provider: ProviderName
    payment_id: str
    merchant: str = "default"
    state: RefundState
    amount_minor: int | None = None
    currency: str | None = None
    provider_refund_id: str | None = None
    provider_status: str | None = None
    attempts: int = Field(
        default=0,
        description=(
            "Tries of the payment check plus tries of the refund call that got the "
            "provider's answer, retries included (status checks are not counted): 2 on a "
            "clean run, one of each."
        ),
    )
    last_error: str | None = None
    message: str | None = None
    next_check_at: datetime | None = None
    cancel_requested: bool = False
    cancel_reason: str | None = None
    cancel_note: str | None = None
    attention_reason: str | None = None
    # What an operator can do now (NEEDS_ATTENTION), in words; empty otherwise.
    attention_actions: str | None = None
    resolutions: list[Resolution] = Field(default_factory=list)
    # Money as the provider confirmed it (None: not confirmed). Paynow states no currency for
    # a refund: its refunds are in the payment's currency, which the API does not tell.
    confirmed_amount_minor: int | None = None
    confirmed_currency: str | None = None
    payer_amount_minor: int | None = None
    voucher_amount_minor: int | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    # Outcome events sent to the request's notify_url, with how their delivery went.
    events: list[OutcomeEvent] = Field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES
