"""Mews Connector API wire models (PascalCase on the wire, snake_case in Python).

Only the fields the adapter sends or reads are declared. Answers ignore extra fields, so new
Mews fields never break us. Credentials (``ClientToken``, ``AccessToken``, ``Client``) are not
part of these models: the adapter adds them to the JSON body at the last moment, so no model,
``repr`` or validation error can ever show them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal

REFUNDABLE_TYPES = frozenset({"CreditCardPayment", "AlternativePayment"})
REFUND_KIND = "Refund"
PAYMENT_KIND = "Payment"
CHARGED = "Charged"
# Refunds in these states no longer take money back from the payment.
DEAD_STATES = frozenset({"Failed", "Canceled"})
MAX_PAGE_SIZE = 1000


class _Outgoing(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="forbid", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-able body, PascalCase, without the fields left unset."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Incoming(BaseModel):
    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="ignore")


# --- requests ---------------------------------------------------------------------------------


class RefundParameters(_Outgoing):
    """``payments/refund`` body, minus the credentials."""

    payment_id: str
    account_id: str
    reason: str
    value_to_refund: float | None = None
    enterprise_id: str | None = None


class TimeInterval(_Outgoing):
    """``{StartUtc, EndUtc}``: ISO 8601 UTC strings with a ``Z``."""

    start_utc: str
    end_utc: str


class Limitation(_Outgoing):
    count: int = Field(ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = None


class PaymentsFilter(_Outgoing):
    """``payments/getAll`` body, minus the credentials."""

    limitation: Limitation
    payment_ids: list[str] | None = None
    account_ids: list[str] | None = None
    created_utc: TimeInterval | None = None
    enterprise_ids: list[str] | None = None


# --- answers ----------------------------------------------------------------------------------


class CurrencyValue(_Incoming):
    """``Amount`` of a refund answer: the absolute value."""

    currency: str
    value: float


class RefundResult(_Incoming):
    """``payments/refund`` answer."""

    payment_id: str
    refund_id: str
    type: str | None = None
    amount: CurrencyValue
    state: str


class PaymentAmount(_Incoming):
    """``Amount`` of a payment in ``payments/getAll``; refunds may carry negative values."""

    currency: str
    gross_value: float
    net_value: float | None = None


class Payment(_Incoming):
    """One item of ``payments/getAll``. A refund is a payment too (``Kind: Refund``)."""

    id: str
    account_id: str | None = None
    enterprise_id: str | None = None
    amount: PaymentAmount
    state: str
    type: str | None = None
    kind: str | None = None
    created_utc: datetime
    updated_utc: datetime | None = None
    charged_utc: datetime | None = None


class PaymentsPage(_Incoming):
    payments: list[Payment]
    cursor: str | None = None


class ErrorBody(_Incoming):
    """``ConnectorApiExceptionResult``: every field is nullable."""

    message: str | None = None
    request_id: str | None = None
    details: Any = None
