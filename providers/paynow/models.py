"""Paynow v3 wire models (camelCase on the wire), used only inside this package.

Requests are ours (``extra="forbid"``); answers are Paynow's (``extra="ignore"``, so a field
added upstream never breaks us). Statuses stay plain strings: a status we do not know yet is
kept raw and mapped to "pending" by the adapter rather than refused.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from core.models import ReasonCode

PAYMENT_ID_PATTERN = r"^([a-zA-Z0-9]{4}(-[a-zA-Z0-9]{3}){3})$"
# "at most 10 characters" for an int64 amount: at most 10 digits.
MAX_AMOUNT = 9_999_999_999
MAX_TRANSFER_AMOUNT = 100_000_000

TransferAmount = Annotated[int, Field(ge=0, le=MAX_TRANSFER_AMOUNT, strict=True)]


class _Request(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _Answer(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class TransferBody(_Request):
    seller_id: Annotated[str, Field(min_length=1, max_length=15)]
    gross_amount: TransferAmount
    fee_amount: TransferAmount


class CreateRefundBody(_Request):
    """``POST /v3/payments/{paymentId}/refunds``; ``None`` fields are left out of the JSON."""

    amount: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)]
    reason: ReasonCode | None = None
    transfers: list[TransferBody] | None = None


class CreateRefundAnswer(_Answer):
    """201 of create refund. ``status`` is NEW, PENDING or SUCCESSFUL.

    ``payerAmount`` (to the buyer) and ``voucherAmount`` (to the voucher card) are "only
    included if a voucher reservation was used in the payment" (the seed page): absent, Paynow
    states no amount for the refund. No currency is ever stated (the payment's applies).
    """

    refund_id: str
    status: str
    payer_amount: int | None = None
    voucher_amount: int | None = None


class RefundStatusAnswer(_Answer):
    refund_id: str
    status: str
    failure_reason: str | None = None


class PaymentStatusAnswer(_Answer):
    payment_id: str
    status: str


class ErrorItem(_Answer):
    error_type: str | None = None
    message: str | None = None


class ErrorAnswer(_Answer):
    """``{statusCode, errors: [{errorType, message}]}``. ``errorType`` is what the adapter
    classifies by; ``message`` is for people and never decides anything."""

    status_code: int | None = None
    errors: list[ErrorItem] = Field(default_factory=list)
