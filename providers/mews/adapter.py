"""Mews Connector API refunds, in the neutral terms of :mod:`providers.base`.

Every Mews operation is ``POST {base}/api/connector/v1/{resource}/{action}`` with a JSON body
that carries the credentials (``ClientToken``, ``AccessToken``, ``Client``). Two operations
are used: ``payments/refund`` and ``payments/getAll`` (a refund is itself a payment).

What Mews does not give us, and how the adapter copes:

* **No idempotency key.** A refund that timed out may or may not exist: the adapter reports
  ``UnknownOutcomeError`` and never re-sends; the caller reconciles with :meth:`find_refunds`.
* **No refund cancellation.** :meth:`cancel` refuses at once, without any HTTP call.
* **No link from a refund to its payment** in ``payments/getAll``. Earlier refunds are found
  by the payment's account and creation time, which can over-count (see
  :meth:`MewsAdapter.check_refundable`).

Errors come from exactly two places: :func:`error_from_response` (the one status ladder) and
:func:`providers.http.translate_transport_errors`. When the adapter itself decides from a
successful read that a payment cannot be refunded or a refund does not exist, the error
carries ``status_code=0`` (:data:`ADAPTER_VERDICT`): no HTTP status said so, we did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from core.models import ProviderName, ProviderRefund, ProviderRefundStatus, RefundRequest
from core.money import (
    CURRENCY_EXPONENTS,
    MoneyError,
    format_minor,
    minor_to_wire_float,
    wire_float_to_minor,
)
from core.settings import Settings
from providers.base import RefundableCheck
from providers.errors import (
    AmountExceedsRefundableError,
    InvalidRequestError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderStatusError,
    RefundNotCancellableError,
    ServerError,
    class_for_status,
    redact,
)
from providers.http import build_client, parse_retry_after, translate_transport_errors
from providers.mews.models import (
    CHARGED,
    DEAD_STATES,
    MAX_PAGE_SIZE,
    REFUND_KIND,
    REFUNDABLE_TYPES,
    Limitation,
    Payment,
    PaymentsFilter,
    PaymentsPage,
    RefundParameters,
    RefundResult,
    TimeInterval,
)

PROVIDER = ProviderName.MEWS.value
REFUND_PATH = "api/connector/v1/payments/refund"
GET_ALL_PATH = "api/connector/v1/payments/getAll"

# status_code of errors the adapter decides itself from a successful answer (or, for cancel,
# without asking at all): no HTTP status said so.
ADAPTER_VERDICT = 0

# getAll refuses CreatedUtc intervals longer than 3 months. 89 days is shorter than any three
# consecutive calendar months (Feb + Mar + Apr = 89 days), whichever way Mews counts them.
MAX_WINDOW = timedelta(days=89)
# A cursor that never ends would loop forever; no real account has this many pages.
MAX_PAGES = 10_000

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_STATUSES: dict[str, ProviderRefundStatus] = {
    "Pending": ProviderRefundStatus.PENDING,
    "Verifying": ProviderRefundStatus.PENDING,
    "Charged": ProviderRefundStatus.SUCCEEDED,
    "Failed": ProviderRefundStatus.FAILED,
    "Canceled": ProviderRefundStatus.CANCELED,
}

# Mews answers business-rule failures with a human message and no code. These patterns are
# keyed on the wording of our simulator (simulators/mews/app.py), which follows the docs'
# phrasing; Mews' exact production wording is unconfirmed. Which of 400 and 403 carries them is
# unconfirmed too, so both are refined; every class here is final, like 400 and 403 themselves.
# Order matters: an over-refund message may also say "cannot be refunded".
_BUSINESS_MESSAGES: tuple[tuple[re.Pattern[str], type[ProviderStatusError]], ...] = (
    (
        re.compile(
            r"(refund|amount)\b.*\bexceed|exceed.*\b(refundable|remaining|left)"
            r"|greater than the (remaining|refundable)|over-?refund",
            re.IGNORECASE,
        ),
        AmountExceedsRefundableError,
    ),
    (
        re.compile(
            r"cannot be refunded|can't be refunded|not refundable|is not charged|not been charged",
            re.IGNORECASE,
        ),
        PaymentNotRefundableError,
    ),
)
_MAX_MESSAGE_CHARS = 500

_Answer = TypeVar("_Answer", bound=BaseModel)


def status_from_state(state: str) -> ProviderRefundStatus:
    """Mews payment state -> neutral status; an unknown state is treated as not final."""
    return _STATUSES.get(state, ProviderRefundStatus.PENDING)


def _redact_json(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): _redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v, secrets) for v in value]
    return value


def error_from_response(
    response: httpx.Response, *, operation: str, secrets: Iterable[str]
) -> ProviderStatusError:
    """The one status ladder: a non-success Mews answer -> the error tree.

    400 BadRequest, 401 Authentication, 403 Forbidden, 404 NotFound, 408 RequestTimeout,
    409 Conflict, 429 RateLimited (``Retry-After``: seconds or HTTP-date), 5xx Server; 400 and
    403 are refined into domain classes by the message (see ``_BUSINESS_MESSAGES``).
    Every provider text is redacted of our credentials before it reaches the error.
    """
    hidden = list(secrets)
    status = response.status_code
    try:
        parsed: Any = response.json()
    except (ValueError, UnicodeDecodeError):
        parsed = None
    body = parsed if isinstance(parsed, dict) else None
    message: str | None = None
    body_request_id: str | None = None
    if body is not None:
        raw_message = body.get("Message")
        message = raw_message if isinstance(raw_message, str) and raw_message.strip() else None
        raw_id = body.get("RequestId")
        body_request_id = raw_id if isinstance(raw_id, str) and raw_id else None
    if message is None:
        # Redact before cutting: a cut could leave half a token that redact no longer sees.
        snippet = redact(response.text, hidden).strip()[:200] if response.content else ""
        message = f"HTTP {status} {response.reason_phrase}".strip()
        if snippet:
            message = f"{message}: {snippet}"
    message = redact(message, hidden)[:_MAX_MESSAGE_CHARS]
    request_id = response.headers.get("Request-Id") or body_request_id
    retry_after = parse_retry_after(response.headers.get("Retry-After"))

    error_class = class_for_status(status)
    if status in (400, 403):
        for pattern, refined in _BUSINESS_MESSAGES:
            if pattern.search(message):
                error_class = refined
                break
    return error_class(
        f"{operation}: {message}",
        provider=PROVIDER,
        status_code=status,
        request_id=redact(request_id, hidden) if request_id else None,
        retry_after=retry_after,
        body=_redact_json(body, hidden) if body is not None else None,
    )


def _is_uuid(value: str | None) -> bool:
    return value is not None and _UUID.match(value) is not None


def check_mews_request(request: RefundRequest) -> None:
    """Offline checks of a request meant for Mews; raises :class:`InvalidRequestError`."""

    def refuse(message: str) -> InvalidRequestError:
        return InvalidRequestError(message, provider=PROVIDER)

    if not _is_uuid(request.payment_id):
        raise refuse(f"payment_id {request.payment_id!r} is not a Mews payment id (a UUID)")
    if request.account_id is None:
        raise refuse("account_id is required for Mews: the account (e.g. customer) paying")
    if not _is_uuid(request.account_id):
        raise refuse(f"account_id {request.account_id!r} is not a Mews account id (a UUID)")
    if request.enterprise_id is not None and not _is_uuid(request.enterprise_id):
        raise refuse(
            f"enterprise_id {request.enterprise_id!r} is not a Mews enterprise id (a UUID)"
        )
    if request.reason_code is not None:
        raise refuse("reason_code is Paynow-only: Mews takes a free-text reason, leave it unset")
    if request.transfers:
        raise refuse("transfers are Paynow marketplace-only: Mews refunds take none")
    if request.currency is not None and request.currency not in CURRENCY_EXPONENTS:
        raise refuse(f"currency {request.currency!r} is not an ISO 4217 code Mews can take")
    if request.amount_minor is not None and request.currency is not None:
        try:
            minor_to_wire_float(request.amount_minor, request.currency)
        except MoneyError as exc:
            raise refuse(str(exc)) from None


def _utc(moment: datetime) -> datetime:
    # A naive datetime is read as UTC: every Mews time is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _wire_time(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _windows(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end]`` cut into intervals getAll accepts; neighbours share their boundary."""
    cursor = start
    while True:
        upper = min(cursor + MAX_WINDOW, end)
        yield cursor, upper
        if upper >= end:
            return
        cursor = upper


class MewsAdapter:
    """The Mews Connector API as a :class:`providers.base.RefundProvider`. Never retries."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        client_token: SecretStr,
        access_token: SecretStr,
        client_name: str,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        self._client = client
        self._client_token = client_token
        self._access_token = access_token
        self._client_name = client_name
        self._page_size = page_size

    @classmethod
    def from_settings(cls, settings: Settings) -> MewsAdapter:
        purpose = "the Mews Connector API (refunds)"
        client_token = settings.require("MEWS_CLIENT_TOKEN", purpose=purpose)
        access_token = settings.require("MEWS_ACCESS_TOKEN", purpose=purpose)
        client = build_client(
            base_url=settings.mews_base_url,
            timeout_s=settings.refunds_http_timeout_s,
            user_agent=settings.mews_client,
        )
        return cls(
            client=client,
            client_token=client_token,
            access_token=access_token,
            client_name=settings.mews_client,
        )

    def __repr__(self) -> str:
        return f"MewsAdapter(base_url={str(self._client.base_url)!r}, client={self._client_name!r})"

    @property
    def name(self) -> ProviderName:
        return ProviderName.MEWS

    @property
    def supports_idempotency_key(self) -> bool:
        return False

    def check_request(self, request: RefundRequest) -> None:
        check_mews_request(request)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- operations ---------------------------------------------------------------------------

    async def check_refundable(self, request: RefundRequest) -> RefundableCheck:
        """The payment exists on the account, is a charged card/alternative payment, and the
        amount (or the whole payment when none is asked) is still refundable."""
        self.check_request(request)
        payment, request_id = await self._one_payment(request, request.payment_id, "check")

        def refuse(cls: type[ProviderStatusError], message: str) -> ProviderStatusError:
            return cls(
                f"check: {message}",
                provider=PROVIDER,
                status_code=ADAPTER_VERDICT,
                request_id=request_id,
            )

        if payment is None:
            raise refuse(NotFoundError, f"payment {request.payment_id} not found")
        if payment.account_id is not None and payment.account_id.lower() != (
            (request.account_id or "").lower()
        ):
            raise InvalidRequestError(
                f"payment {payment.id} belongs to another account than {request.account_id}",
                provider=PROVIDER,
                request_id=request_id,
            )
        if payment.kind is not None and payment.kind != "Payment":
            raise refuse(
                PaymentNotRefundableError, f"{payment.id} is a {payment.kind}, not a payment"
            )
        if payment.type not in REFUNDABLE_TYPES:
            raise refuse(
                PaymentNotRefundableError,
                f"payment of type {payment.type} cannot be refunded "
                f"(only {' and '.join(sorted(REFUNDABLE_TYPES))})",
            )
        if payment.state != CHARGED:
            raise refuse(
                PaymentNotRefundableError,
                f"payment is {payment.state}, not Charged: it cannot be refunded",
            )
        currency = payment.amount.currency
        if request.currency is not None and request.currency != currency:
            raise InvalidRequestError(
                f"the request is in {request.currency} but the payment is in {currency}",
                provider=PROVIDER,
                request_id=request_id,
            )
        payment_minor = abs(self._minor(payment.amount.gross_value, currency, "check", 200))

        # No field links a refund to its payment, so every live refund on the same account
        # created since the payment counts against it. With one payment per account this is
        # exact; with several it under-estimates what is left (never over-estimates), and
        # Mews itself has the last word on submit.
        refunded = 0
        for refund in await self._refund_payments(request, _utc(payment.created_utc), _now()):
            if refund.state in DEAD_STATES or refund.amount.currency != currency:
                continue
            refunded += abs(self._minor(refund.amount.gross_value, currency, "check", 200))
        refundable = max(0, payment_minor - refunded)
        amount = request.amount_minor if request.amount_minor is not None else payment_minor
        if amount > refundable:
            raise refuse(
                AmountExceedsRefundableError,
                f"{format_minor(amount, currency)} asked but only "
                f"{format_minor(refundable, currency)} of the payment's "
                f"{format_minor(payment_minor, currency)} is left to refund",
            )
        return RefundableCheck(
            payment_id=payment.id,
            currency=currency,
            amount_minor=amount,
            payment_amount_minor=payment_minor,
            refundable_minor=refundable,
            raw_payment_state=payment.state,
        )

    async def submit(self, request: RefundRequest) -> ProviderRefund:
        """``payments/refund``. Mews has no idempotency key: a timeout is an unknown outcome."""
        self.check_request(request)
        value: float | None = None
        if request.amount_minor is not None and request.currency is not None:
            value = minor_to_wire_float(request.amount_minor, request.currency)
        parameters = RefundParameters(
            payment_id=request.payment_id,
            account_id=request.account_id or "",
            reason=request.reason,
            value_to_refund=value,
            enterprise_id=request.enterprise_id,
        )
        result, _ = await self._post("refund", REFUND_PATH, parameters.wire(), RefundResult)
        currency = result.amount.currency
        return ProviderRefund(
            refund_id=result.refund_id,
            status=status_from_state(result.state),
            raw_status=result.state,
            amount_minor=abs(self._minor(result.amount.value, currency, "refund", 200)),
            currency=currency,
        )

    async def get_refund(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """The refund read back as a payment, ``payments/getAll`` by ``PaymentIds``."""
        self.check_request(request)
        if not _is_uuid(refund_id):
            raise InvalidRequestError(
                f"refund id {refund_id!r} is not a Mews id (a UUID)", provider=PROVIDER
            )
        payment, request_id = await self._one_payment(request, refund_id, "status")
        if payment is None:
            raise NotFoundError(
                f"status: refund {refund_id} not found",
                provider=PROVIDER,
                status_code=ADAPTER_VERDICT,
                request_id=request_id,
            )
        return self._to_refund(payment, "status")

    async def cancel(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """Mews has no way to cancel a refund: always refused, nothing is sent."""
        raise RefundNotCancellableError(
            f"cancel: Mews has no refund cancellation; refund {refund_id} cannot be cancelled",
            provider=PROVIDER,
            status_code=ADAPTER_VERDICT,
        )

    async def find_refunds(
        self, request: RefundRequest, *, created_from: datetime, created_to: datetime
    ) -> list[ProviderRefund]:
        """Refunds on the request's account created in the window, oldest first.

        Mews links no refund to its payment, so this lists every refund of the account: the
        caller matches on amount and time. Windows longer than getAll allows are split.
        """
        self.check_request(request)
        start, end = _utc(created_from), _utc(created_to)
        if start > end:
            raise InvalidRequestError(
                f"created_from {start.isoformat()} is after created_to {end.isoformat()}",
                provider=PROVIDER,
            )
        found = await self._refund_payments(request, start, end)
        return [self._to_refund(payment, "find") for payment in found]

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def _secrets(self) -> list[str]:
        return [self._client_token.get_secret_value(), self._access_token.get_secret_value()]

    async def _post(
        self, operation: str, path: str, body: dict[str, Any], answer: type[_Answer]
    ) -> tuple[_Answer, str | None]:
        payload = {
            "ClientToken": self._client_token.get_secret_value(),
            "AccessToken": self._access_token.get_secret_value(),
            "Client": self._client_name,
            **body,
        }
        secrets = self._secrets
        async with translate_transport_errors(PROVIDER, operation, secrets=secrets):
            response = await self._client.post(path, json=payload)
        if not response.is_success:
            raise error_from_response(response, operation=operation, secrets=secrets)
        request_id = response.headers.get("Request-Id")
        try:
            return answer.model_validate(response.json()), request_id
        except (ValueError, UnicodeDecodeError, ValidationError):
            # The error text of a failed parse may quote the body; say only what failed.
            raise ServerError(
                f"{operation}: unreadable success answer from Mews "
                f"(HTTP {response.status_code}, not a valid {answer.__name__})",
                provider=PROVIDER,
                status_code=response.status_code,
                request_id=request_id,
            ) from None

    async def _one_payment(
        self, request: RefundRequest, payment_id: str, operation: str
    ) -> tuple[Payment | None, str | None]:
        query = PaymentsFilter(
            payment_ids=[payment_id],
            limitation=Limitation(count=1),
            enterprise_ids=[request.enterprise_id] if request.enterprise_id else None,
        )
        page, request_id = await self._post(operation, GET_ALL_PATH, query.wire(), PaymentsPage)
        wanted = payment_id.lower()
        match = next((p for p in page.payments if p.id.lower() == wanted), None)
        return match, request_id

    async def _refund_payments(
        self, request: RefundRequest, start: datetime, end: datetime
    ) -> list[Payment]:
        """Every ``Kind: Refund`` payment on the account created in ``[start, end]``."""
        seen: dict[str, Payment] = {}
        for lower, upper in _windows(start, end):
            interval = TimeInterval(start_utc=_wire_time(lower), end_utc=_wire_time(upper))
            cursor: str | None = None
            for pages in range(1, MAX_PAGES + 1):
                query = PaymentsFilter(
                    account_ids=[request.account_id or ""],
                    created_utc=interval,
                    limitation=Limitation(count=self._page_size, cursor=cursor),
                    enterprise_ids=[request.enterprise_id] if request.enterprise_id else None,
                )
                page, request_id = await self._post(
                    "find", GET_ALL_PATH, query.wire(), PaymentsPage
                )
                for payment in page.payments:
                    if payment.kind == REFUND_KIND:
                        seen.setdefault(payment.id.lower(), payment)
                if page.cursor is None or len(page.payments) < self._page_size:
                    break
                if page.cursor == cursor or pages == MAX_PAGES:
                    raise ServerError(
                        "find: Mews' paging cursor does not move on",
                        provider=PROVIDER,
                        status_code=200,
                        request_id=request_id,
                    )
                cursor = page.cursor
        return sorted(seen.values(), key=lambda p: (_utc(p.created_utc), p.id))

    def _to_refund(self, payment: Payment, operation: str) -> ProviderRefund:
        currency = payment.amount.currency
        return ProviderRefund(
            refund_id=payment.id,
            status=status_from_state(payment.state),
            raw_status=payment.state,
            amount_minor=abs(self._minor(payment.amount.gross_value, currency, operation, 200)),
            currency=currency,
            created_at=_utc(payment.created_utc),
        )

    @staticmethod
    def _minor(value: float, currency: str, operation: str, status: int) -> int:
        try:
            return wire_float_to_minor(value, currency)
        except MoneyError as exc:
            raise ServerError(
                f"{operation}: unreadable amount in Mews' answer ({exc})",
                provider=PROVIDER,
                status_code=status,
            ) from None


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "ADAPTER_VERDICT",
    "MewsAdapter",
    "check_mews_request",
    "error_from_response",
    "status_from_state",
]
