"""The Paynow v3 refund adapter and its one status ladder.

What Paynow's public API gives us, and what we make of it:

* Every call carries an ``Idempotency-Key``. ``submit`` sends the request's own key, unchanged
  on every attempt, so a retry after a timeout or a 5xx can never refund twice: that is why
  :attr:`PaynowAdapter.supports_idempotency_key` is true and why :meth:`find_refunds` has
  nothing to do (the public API has no "list refunds" endpoint either). ``cancel`` sends a key
  derived from the request's key, so its retries are idempotent too. Status reads are safe to
  repeat and use a fresh key each time.
* There is no whole-payment refund: amount and currency are required. The API exposes no
  refundable remainder, so :meth:`check_refundable` only checks that the payment is
  ``CONFIRMED``; an over-refund is reported by the create call itself.
* Money as Paynow says it. The create answer states ``payerAmount`` and ``voucherAmount`` only
  for a payment with a voucher reservation (the seed page): then the refund's confirmed amount
  is their sum; otherwise Paynow confirms no amount and none is reported. Paynow never states
  a refund's currency (it is the payment's, which the v3 API does not tell), so the currency
  is never reported as confirmed. The status call states no amount at all.
* A ``NEW`` refund may be an "awaiting refund" (the merchant balance is short): Paynow keeps
  it up to 120 h by default before cancelling it, so a NEW snapshot says it may stay pending
  that long (:attr:`ProviderRefund.pending_may_last_s`).
* Errors are classified by HTTP status and Paynow's structured ``errorType`` only, never by
  message wording (:func:`error_from_response`). The cancel call documents 200, 401, 404, 500
  and 503 only: any other refusal ends the cancel attempt (``RefundNotCancellableError``).
* The request's free-text ``reason`` is ours; Paynow only takes the ``reason_code`` enum. When
  no code is given the ``reason`` field is left out of the body (the seed page marks it
  optional) rather than defaulting to ``OTHER``.
* Marketplace ``transfers`` are passed through. Whether their gross amounts must add up to the
  refund amount is unconfirmed, so it is not enforced here; Paynow will say if it disagrees.

The adapter never retries: the workflow engine owns retries and sees every attempt.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from core.models import ProviderName, ProviderRefund, ProviderRefundStatus, RefundRequest
from core.settings import Settings
from providers.base import RefundableCheck
from providers.credentials import Credential, as_credential
from providers.errors import (
    AmountExceedsRefundableError,
    BadRequestError,
    InsufficientBalanceError,
    InvalidRequestError,
    PaymentNotRefundableError,
    ProviderStatusError,
    ProviderValidationError,
    RefundNotCancellableError,
    ServerError,
    Step,
    Subject,
    class_for_status,
    operator_sentence,
    redact,
)
from providers.http import build_client, parse_retry_after, translate_transport_errors
from providers.paynow.models import (
    MAX_AMOUNT,
    MAX_TRANSFER_AMOUNT,
    PAYMENT_ID_PATTERN,
    CreateRefundAnswer,
    CreateRefundBody,
    ErrorAnswer,
    PaymentStatusAnswer,
    RefundStatusAnswer,
    TransferBody,
)
from providers.paynow.signature import IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER, PaynowSignatureAuth

PROVIDER = ProviderName.PAYNOW.value
USER_AGENT = "refund-orchestrator/0.1.0"

_PAYMENT_ID = re.compile(PAYMENT_ID_PATTERN)
# Refund ids come back from Paynow; they go into a URL path, so only plain ids are accepted.
_REFUND_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_REQUEST_ID_HEADERS = ("X-Request-Id", "Request-Id")

REFUND_STATUSES: Mapping[str, ProviderRefundStatus] = {
    "NEW": ProviderRefundStatus.PENDING,
    "PENDING": ProviderRefundStatus.PENDING,
    "SUCCESSFUL": ProviderRefundStatus.SUCCEEDED,
    "FAILED": ProviderRefundStatus.FAILED,
    "CANCELLED": ProviderRefundStatus.CANCELED,
}

# Awaiting refunds (merchant balance short) are cancelled by Paynow when not funded within
# 120 h: its documented default (shops may configure another).
AWAITING_REFUND_MAX_S: Final = 120 * 3600.0

_VALIDATION = "VALIDATION_ERROR"
# Business errorTypes -> the shared tree's business classes. INSUFFICIENT_BALANCE_FUNDS is
# documented; the other four appear only in unofficial third-party client code (UNCONFIRMED).
# Unknown types fall back to the status ladder below; message wording is never read.
BUSINESS_ERROR_TYPES: Mapping[str, type[ProviderStatusError]] = {
    "INSUFFICIENT_BALANCE_FUNDS": InsufficientBalanceError,
    "INSUFFICIENT_CARD_BALANCE_FUNDS": InsufficientBalanceError,
    "REFUND_AMOUNT_TOO_LARGE": AmountExceedsRefundableError,
    "REFUND_POSSIBILITY_EXPIRED": PaymentNotRefundableError,
    "REFUND_AMOUNT_TOO_SMALL": ProviderValidationError,
    _VALIDATION: ProviderValidationError,
}
# Statuses a business errorType refines: the final 4xx refusals. 401/404 keep their meaning,
# and 408/409/429 say "try again", whatever type rides along.
_REFINED_STATUSES = frozenset({400, 403, 422})

_Answer = TypeVar("_Answer", bound=BaseModel)

# The adapter's call names -> what they are for, in the operator's sentence.
STEPS: Mapping[str, Step] = {
    "check_refundable": Step.CHECK,
    "submit": Step.SUBMIT,
    "get_refund": Step.STATUS,
    "cancel": Step.CANCEL,
}


def subject(
    operation: str, request: RefundRequest | None = None, refund_id: str | None = None
) -> Subject:
    """What a call is about: its step and the request's payment, amount and refund (a
    Paynow request names no account: `check_request` refuses one before any call)."""
    return Subject.of_call(PROVIDER, STEPS, operation, request, refund_id)


def map_refund_status(raw_status: str) -> ProviderRefundStatus:
    """Paynow refund status -> neutral status; an unknown status is treated as pending."""
    return REFUND_STATUSES.get(raw_status.upper(), ProviderRefundStatus.PENDING)


def cancel_idempotency_key(idempotency_key: str) -> str:
    """The cancel call's key: derived from the refund's key, so every retry sends the same."""
    return "cancel-" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:38]


def check_paynow_request(request: RefundRequest) -> None:
    """Offline checks of what Paynow would refuse; raises one error listing every problem."""
    problems: list[str] = []
    if request.provider is not ProviderName.PAYNOW:
        problems.append(f"provider is {request.provider.value!r}, not 'paynow'")
    if not _PAYMENT_ID.match(request.payment_id):
        problems.append(
            f"payment_id {request.payment_id!r} is not a Paynow payment id "
            "(four letters or digits, then three groups of three, like 'NOLV-8F9-08K-WGD')"
        )
    if request.amount_minor is None or request.currency is None:
        problems.append(
            "amount_minor and currency are required: Paynow has no whole-payment refund"
        )
    elif request.amount_minor > MAX_AMOUNT:
        problems.append(f"amount_minor {request.amount_minor} has more than 10 digits")
    if request.account_id is not None:
        problems.append("account_id is a Mews-only field that Paynow refunds do not take")
    if request.enterprise_id is not None:
        problems.append("enterprise_id is a Mews-only field that Paynow refunds do not take")
    for index, transfer in enumerate(request.transfers):
        if len(transfer.seller_id) > 15:
            problems.append(f"transfers[{index}].seller_id is longer than 15 characters")
        for field, value in (
            ("gross_amount_minor", transfer.gross_amount_minor),
            ("fee_amount_minor", transfer.fee_amount_minor),
        ):
            if not 0 <= value <= MAX_TRANSFER_AMOUNT:
                problems.append(f"transfers[{index}].{field} must be 0..{MAX_TRANSFER_AMOUNT}")
    if problems:
        raise InvalidRequestError(
            "refund request refused before sending anything to Paynow: " + "; ".join(problems),
            provider=PROVIDER,
        )


def _request_id(response: httpx.Response) -> str | None:
    for header in _REQUEST_ID_HEADERS:
        value: str | None = response.headers.get(header)
        if value:
            return value
    return None


def _redact_tree(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: _redact_tree(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_tree(item, secrets) for item in value]
    return value


def _secrets_of(response: httpx.Response, secrets: Sequence[str]) -> list[str]:
    """The adapter's secrets plus the Signature that was sent, should a provider echo it."""
    found = list(secrets)
    signature: str | None
    try:
        signature = response.request.headers.get(SIGNATURE_HEADER)
    except RuntimeError:  # a Response built without its request (tests)
        signature = None
    if signature:
        found.append(signature)
    return found


def _cancel_answer_is_documented(status: int) -> bool:
    """Cancel documents 401, 404, 500 and 503 (besides 200). 429 is treated as everywhere
    (no rate limit is documented, so like Mews'), and every 5xx as a passing outage: those
    stay retryable, bounded by the workflow. Anything else is undocumented."""
    return status in (401, 404, 429) or status >= 500


def error_class(
    status: int, error_type: str | None, *, operation: str
) -> type[ProviderStatusError]:
    """One Paynow refusal -> one class, from the HTTP status and ``errorType`` alone."""
    if operation == "cancel" and not _cancel_answer_is_documented(status):
        # An undocumented cancel answer (400, 409, 422, ...): whatever it means, retrying the
        # cancel cannot be shown to help. The attempt ends; the refund keeps being polled, and
        # its status tells whether it was cancelled.
        return RefundNotCancellableError
    business = BUSINESS_ERROR_TYPES.get(error_type) if error_type else None
    if status in _REFINED_STATUSES and business is not None:
        return business
    if status in (400, 422):
        return BadRequestError
    # 401, 403, 404, 408, 409, 429 and 5xx (503 SYSTEM_TEMPORARILY_UNAVAILABLE included).
    return class_for_status(status)


def _primary_error_type(error_types: Sequence[str]) -> str | None:
    """The errorType that decides: a business type over ``VALIDATION_ERROR`` (it says more),
    else the first one given."""
    upper = [error_type.upper() for error_type in error_types]
    for error_type in upper:
        if error_type in BUSINESS_ERROR_TYPES and error_type != _VALIDATION:
            return error_type
    return upper[0] if upper else None


def error_from_response(
    response: httpx.Response,
    *,
    operation: str,
    secrets: Sequence[str] = (),
    about: Subject | None = None,
) -> ProviderStatusError:
    """The status ladder: one non-success Paynow answer -> one error of the shared tree.

    Its message is the operator's sentence for the class; Paynow's own words (each
    ``errorType: message``) are its ``detail``, redacted, never read for the class."""
    all_secrets = _secrets_of(response, secrets)
    try:
        raw: Any = response.json()
    except ValueError:
        raw = None
    body = _redact_tree(raw, all_secrets) if isinstance(raw, dict) else None
    try:
        parsed = ErrorAnswer.model_validate(body) if body is not None else ErrorAnswer()
    except ValidationError:
        parsed = ErrorAnswer()
    error_type = _primary_error_type([e.error_type for e in parsed.errors if e.error_type])
    details = [
        f"{item.error_type}: {item.message}" if item.error_type else str(item.message)
        for item in parsed.errors
        if item.error_type or item.message
    ]
    text = "; ".join(details) or response.reason_phrase or None
    chosen = error_class(response.status_code, error_type, operation=operation)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    about = about or subject(operation)
    return chosen(
        operator_sentence(chosen, about, retry_after=retry_after),
        provider=PROVIDER,
        status_code=response.status_code,
        request_id=_request_id(response),
        retry_after=retry_after,
        body=body,
        provider_code=error_type,
        detail=redact(text, all_secrets) if text else None,
        about=about,
    )


def _read_answer(response: httpx.Response, model: type[_Answer], *, about: Subject) -> _Answer:
    """A success answer in ``model``'s shape; an unreadable one is a retryable ServerError.

    Retrying is safe because every Paynow write is sent under an idempotency key.
    """
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise ServerError(
            f"Paynow's answer to {about.doing} (HTTP {response.status_code}) could not be "
            f"read as {model.__name__}: it is tried again automatically (the same "
            "idempotency key keeps a refund from being made twice); nothing to do unless "
            "it lasts.",
            provider=PROVIDER,
            status_code=response.status_code,
            request_id=_request_id(response),
            about=about,
        ) from None


class PaynowAdapter:
    """:class:`providers.base.RefundProvider` for Paynow v3."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        api_key: SecretStr | Credential,
        signature_key: SecretStr | Credential,
    ) -> None:
        self._client = client
        self._api_key = as_credential(api_key)
        self._signature_key = as_credential(signature_key)
        self._auth = PaynowSignatureAuth(api_key=self._api_key, signature_key=self._signature_key)

    @property
    def _secrets(self) -> tuple[str, str]:
        # Read per call: a secret read from a file may have been rotated.
        return (
            self._api_key.current().get_secret_value(),
            self._signature_key.current().get_secret_value(),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PaynowAdapter:
        api_key = settings.require("PAYNOW_API_KEY", purpose="calling the Paynow v3 API")
        signature_key = settings.require(
            "PAYNOW_SIGNATURE_KEY", purpose="signing Paynow v3 requests"
        )
        client = build_client(
            base_url=settings.paynow_base_url,
            timeout_s=settings.refunds_http_timeout_s,
            user_agent=USER_AGENT,
        )
        return cls(client=client, api_key=api_key, signature_key=signature_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self._client.base_url)!r})"

    @property
    def name(self) -> ProviderName:
        return ProviderName.PAYNOW

    @property
    def supports_idempotency_key(self) -> bool:
        return True

    def check_request(self, request: RefundRequest) -> None:
        check_paynow_request(request)

    async def check_refundable(
        self, request: RefundRequest, *, known_refunded_minor: int = 0
    ) -> RefundableCheck:
        """The payment is ``CONFIRMED``. ``known_refunded_minor`` is unused: Paynow exposes
        neither a payment's amount nor its refundable remainder, so there is nothing to
        subtract it from; the create call itself refuses an over-refund."""
        del known_refunded_minor
        amount_minor, currency = _checked_money(request)
        about = subject("check_refundable", request)
        response = await self._call(
            "check_refundable",
            "GET",
            f"v3/payments/{request.payment_id}/status",
            idempotency_key=str(uuid.uuid4()),
            about=about,
        )
        answer = _read_answer(response, PaymentStatusAnswer, about=about)
        state = redact(answer.status, self._secrets)
        if answer.status.upper() != "CONFIRMED":
            # Paynow answered; the refusal is ours (its status), so no HTTP status is shown.
            raise PaymentNotRefundableError(
                f"Paynow cannot refund payment {request.payment_id}: only a confirmed payment "
                "can be refunded; if it is still being paid, start the refund again once "
                "Paynow confirms it.",
                provider=PROVIDER,
                status_code=response.status_code,
                request_id=_request_id(response),
                provider_code=state,
                detail=f"payment status {state}",
                about=about,
            )
        return RefundableCheck(
            payment_id=request.payment_id,
            currency=currency,
            amount_minor=amount_minor,
            refundable_minor=None,
            raw_payment_state=state,
        )

    async def submit(self, request: RefundRequest) -> ProviderRefund:
        # The currency is checked, not sent: Paynow refunds in the payment's currency.
        amount_minor, _ = _checked_money(request)
        body = CreateRefundBody(
            amount=amount_minor,
            reason=request.reason_code,
            transfers=[
                TransferBody(
                    seller_id=t.seller_id,
                    gross_amount=t.gross_amount_minor,
                    fee_amount=t.fee_amount_minor,
                )
                for t in request.transfers
            ]
            or None,
        )
        about = subject("submit", request)
        response = await self._call(
            "submit",
            "POST",
            f"v3/payments/{request.payment_id}/refunds",
            idempotency_key=request.idempotency_key,
            json_body=body.model_dump(mode="json", by_alias=True, exclude_none=True),
            about=about,
        )
        answer = _read_answer(response, CreateRefundAnswer, about=about)
        confirmed: int | None = None
        if answer.payer_amount is not None and answer.voucher_amount is not None:
            # Both are stated only with a voucher reservation: together they are the refund.
            # One without the other is not the whole refund, so nothing is confirmed.
            confirmed = answer.payer_amount + answer.voucher_amount
        return ProviderRefund(
            refund_id=answer.refund_id,
            status=map_refund_status(answer.status),
            raw_status=answer.status,
            amount_minor=confirmed,
            currency=None,
            payer_amount_minor=answer.payer_amount,
            voucher_amount_minor=answer.voucher_amount,
            pending_may_last_s=_pending_may_last_s(answer.status),
        )

    async def get_refund(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        _check_refund_id(refund_id)
        about = subject("get_refund", request, refund_id)
        response = await self._call(
            "get_refund",
            "GET",
            f"v3/refunds/{refund_id}/status",
            idempotency_key=str(uuid.uuid4()),
            about=about,
        )
        answer = _read_answer(response, RefundStatusAnswer, about=about)
        return self._snapshot(request, refund_id, answer.status, answer.failure_reason)

    async def cancel(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """Cancel a NEW refund; its new state comes back without a second call.

        Only 200 is a documented success. Its body is not documented: when it carries
        ``{refundId, status}`` that status is returned, otherwise a ``CANCELLED`` snapshot.
        Any other answer, another 2xx included, is undocumented and ends the attempt with
        ``RefundNotCancellableError`` (the refund's status then tells what happened).
        """
        _check_refund_id(refund_id)
        about = subject("cancel", request, refund_id)
        response = await self._call(
            "cancel",
            "POST",
            f"v3/refunds/{refund_id}/cancel",
            idempotency_key=cancel_idempotency_key(request.idempotency_key),
            about=about,
        )
        if response.status_code != 200:
            raise RefundNotCancellableError(
                f"Paynow gave an answer it does not document to the cancel of refund "
                f"{refund_id}: the refund's status will tell whether it was canceled.",
                provider=PROVIDER,
                status_code=response.status_code,
                request_id=_request_id(response),
                about=about,
            )
        try:
            answer = RefundStatusAnswer.model_validate_json(response.content)
        except ValidationError:
            return self._snapshot(request, refund_id, "CANCELLED", None)
        return self._snapshot(request, refund_id, answer.status, answer.failure_reason)

    async def find_refunds(
        self, request: RefundRequest, *, created_from: datetime, created_to: datetime
    ) -> list[ProviderRefund]:
        """Always empty: Paynow's public API cannot list refunds, and needs not.

        An unknown outcome is resolved by re-sending ``submit`` with the same
        Idempotency-Key, which returns the refund made the first time.
        """
        return []

    async def aclose(self) -> None:
        await self._client.aclose()

    def _snapshot(
        self, request: RefundRequest, refund_id: str, raw_status: str, failure_reason: str | None
    ) -> ProviderRefund:
        # The status and cancel answers state no amount and no currency: nothing confirmed.
        return ProviderRefund(
            refund_id=refund_id,
            status=map_refund_status(raw_status),
            raw_status=raw_status,
            amount_minor=None,
            currency=None,
            failure_reason=failure_reason,
            pending_may_last_s=_pending_may_last_s(raw_status),
        )

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        idempotency_key: str,
        json_body: Mapping[str, Any] | None = None,
        about: Subject | None = None,
    ) -> httpx.Response:
        headers = {IDEMPOTENCY_KEY_HEADER: idempotency_key, "Accept": "application/json"}
        content: bytes | None = None
        if json_body is not None:
            # Serialized once: these bytes are both signed (by the auth) and sent.
            content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        about = about or subject(operation)
        async with translate_transport_errors(
            PROVIDER, operation, secrets=self._secrets, about=about
        ):
            response = await self._client.request(
                method, path, content=content, headers=headers, auth=self._auth
            )
        if response.is_success:
            return response
        raise error_from_response(response, operation=operation, secrets=self._secrets, about=about)


def _pending_may_last_s(raw_status: str) -> float | None:
    """A NEW refund may be awaiting the merchant balance, for up to 120 h."""
    return AWAITING_REFUND_MAX_S if raw_status.upper() == "NEW" else None


def _checked_money(request: RefundRequest) -> tuple[int, str]:
    check_paynow_request(request)
    if request.amount_minor is None or request.currency is None:  # refused above; narrows
        raise InvalidRequestError("amount_minor and currency are required", provider=PROVIDER)
    return request.amount_minor, request.currency


def _check_refund_id(refund_id: str) -> None:
    if not _REFUND_ID.match(refund_id):
        raise InvalidRequestError(
            f"refund id {refund_id!r} is not a Paynow refund id", provider=PROVIDER
        )
