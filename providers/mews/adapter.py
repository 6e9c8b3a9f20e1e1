"""Mews Connector API refunds, in the neutral terms of :mod:`providers.base`.

Every Mews operation is ``POST {base}/api/connector/v1/{resource}/{action}`` with a JSON body
that carries the credentials (``ClientToken``, ``AccessToken``, ``Client``). Two operations
are used: ``payments/refund`` and ``payments/getAll`` (a refund is itself a payment).

What Mews does not give us, and how the adapter copes:

* **No idempotency key.** A refund that timed out may or may not exist: the adapter reports
  ``UnknownOutcomeError`` and never re-sends; the caller reconciles with :meth:`find_refunds`.
* **No refund cancellation.** :meth:`cancel` refuses at once, without any HTTP call.
* **No link from a refund to its payment** in ``payments/getAll``, and an account holds many
  payments (PROVIDERS.md, Mews: "A customer account holds many payments"). So nothing read
  by account is ever attributed to one payment: :meth:`MewsAdapter.check_refundable` counts
  only what this service itself refunded (``known_refunded_minor``) and lets Mews decide the
  rest; :meth:`MewsAdapter.find_refunds` returns the whole account's refunds for the caller.
* **Errors are classified by HTTP status only** (PROVIDERS.md, Mews, "Errors"): Mews sends a
  message for people and no code, and its wording is not documented, so it is kept in the
  error for the operator but never parsed.

Errors come from exactly two places: :func:`error_from_response` (the one status ladder) and
:func:`providers.http.translate_transport_errors`. When the adapter itself decides from a
successful read that a payment cannot be refunded or a refund does not exist, the error
carries ``status_code=0`` (:data:`ADAPTER_VERDICT`): no HTTP status said so, we did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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
from providers.credentials import Credential, as_credential
from providers.errors import (
    AmountExceedsRefundableError,
    InvalidRequestError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderStatusError,
    RefundNotCancellableError,
    ServerError,
    Step,
    Subject,
    class_for_status,
    operator_sentence,
    redact,
)
from providers.http import build_client, parse_retry_after, translate_transport_errors
from providers.mews.models import (
    CHARGED,
    MAX_PAGE_SIZE,
    PAYMENT_KIND,
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

# getAll refuses intervals longer than 3 months (PROVIDERS.md, Mews, getAll). 89 days is no
# longer than any three consecutive calendar months (Feb + Mar + Apr = 89 days), whichever way
# Mews counts them.
MAX_WINDOW = timedelta(days=89)
# A cursor that never ends would loop forever; no real account has this many pages.
MAX_PAGES = 10_000
# getAll takes at most this many PaymentIds (PROVIDERS.md, Mews, "Request limit").
MAX_PAYMENT_IDS = 1000

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_STATUSES: dict[str, ProviderRefundStatus] = {
    "Pending": ProviderRefundStatus.PENDING,
    "Verifying": ProviderRefundStatus.PENDING,
    "Charged": ProviderRefundStatus.SUCCEEDED,
    "Failed": ProviderRefundStatus.FAILED,
    "Canceled": ProviderRefundStatus.CANCELED,
}

_MAX_MESSAGE_CHARS = 500
_TRIED_AGAIN = "it is tried again automatically; nothing to do unless it lasts"

_Answer = TypeVar("_Answer", bound=BaseModel)

# The adapter's call names -> what they are for, in the operator's sentence.
STEPS: dict[str, Step] = {
    "check": Step.CHECK,
    "refund": Step.SUBMIT,
    "status": Step.STATUS,
    "cancel": Step.CANCEL,
    "find": Step.FIND,
}


def subject(
    operation: str, request: RefundRequest | None = None, refund_id: str | None = None
) -> Subject:
    """What a call is about: its step and the request's payment, account, amount, refund."""
    return Subject.of_call(PROVIDER, STEPS, operation, request, refund_id)


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
    response: httpx.Response,
    *,
    operation: str,
    secrets: Iterable[str],
    about: Subject | None = None,
) -> ProviderStatusError:
    """The one status ladder: a non-success Mews answer -> the error tree, by status alone.

    PROVIDERS.md, Mews, "Errors" (and the seed page's responses): 400 BadRequest (malformed
    request, invalid identifier), 401 Authentication, 403 Forbidden (a business rule or
    server-side validation failed: wrong payment type, not charged, over-refund, ...), 404
    NotFound, 408 RequestTimeout, 409 Conflict, 429 RateLimited (``Retry-After``: seconds or
    HTTP-date), 5xx Server; any other status the generic :class:`ProviderStatusError`.
    Mews gives no error code and documents no wording, and which of 400/403 carries which
    business refusal is unconfirmed: both are final whatever the text says, and the
    ``Message`` is kept in the error as its ``detail``, for the operator, never matched; the
    error's message is the operator's sentence for its class. Every provider text is
    redacted of our credentials before it reaches the error.
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
        message = response.reason_phrase.strip()
        if snippet:
            message = f"{message}: {snippet}" if message else snippet
    detail = redact(message, hidden)[:_MAX_MESSAGE_CHARS] or None
    request_id = response.headers.get("Request-Id") or body_request_id
    retry_after = parse_retry_after(response.headers.get("Retry-After"))

    error_class = class_for_status(status)
    about = about or subject(operation)
    return error_class(
        operator_sentence(error_class, about, retry_after=retry_after),
        provider=PROVIDER,
        status_code=status,
        request_id=redact(request_id, hidden) if request_id else None,
        retry_after=retry_after,
        body=_redact_json(body, hidden) if body is not None else None,
        detail=detail,
        about=about,
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


def check_token_scope(request: RefundRequest, *, portfolio: bool | None) -> None:
    """Offline: ``enterprise_id`` against what the merchant profile says its token is.

    PROVIDERS.md, Mews: "``EnterpriseId`` is required with a Portfolio Access Token and
    ignored otherwise". So a portfolio token without it is refused here, before any call.
    With an enterprise's own token Mews would *ignore* it, and the refund would be made at the
    token's enterprise whatever the caller named: the harshest plausible reading is that the
    caller meant another enterprise, so it is refused too rather than silently dropped.
    ``None`` (not stated: the ``MEWS_*`` settings) keeps today's behaviour: passed on as given.
    """
    if portfolio is None:
        return
    if portfolio and request.enterprise_id is None:
        raise InvalidRequestError(
            f"enterprise_id is required: merchant profile {request.merchant!r} uses a Mews "
            "Portfolio Access Token, which needs the EnterpriseId of the property on every call",
            provider=PROVIDER,
        )
    if not portfolio and request.enterprise_id is not None:
        raise InvalidRequestError(
            f"enterprise_id must be left unset: merchant profile {request.merchant!r} uses the "
            "access token of one Mews enterprise, which Mews would ignore it for (the refund "
            "would be made at the token's enterprise, whichever one was named)",
            provider=PROVIDER,
        )


def _utc(moment: datetime) -> datetime:
    # A naive datetime is read as UTC: every Mews time is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _wire_time(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _windows(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end)`` cut into consecutive half-open intervals getAll accepts.

    getAll intervals are half-open, ``StartUtc <= x < EndUtc`` (PROVIDERS.md, Mews, getAll),
    so a window's end is the next one's start and no moment is read twice or missed. An empty
    ``[start, start)`` yields nothing."""
    lower = start
    while lower < end:
        upper = min(lower + MAX_WINDOW, end)
        yield lower, upper
        lower = upper


class MewsAdapter:
    """The Mews Connector API as a :class:`providers.base.RefundProvider`. Never retries."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        client_token: SecretStr | Credential,
        access_token: SecretStr | Credential,
        client_name: str,
        page_size: int = MAX_PAGE_SIZE,
        portfolio: bool | None = None,
    ) -> None:
        """``portfolio``: the access token is a Portfolio Access Token (True), an enterprise's
        own (False), or not stated (None: the ``MEWS_*`` settings say nothing, and Mews'
        tokens cannot be told apart by looking at them): then ``enterprise_id`` is passed on
        as given and Mews decides."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        self._client = client
        # Asked for on every call: a secret read from a file may have been rotated.
        self._client_token = as_credential(client_token)
        self._access_token = as_credential(access_token)
        self._client_name = client_name
        self._page_size = page_size
        self._portfolio = portfolio

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
        check_token_scope(request, portfolio=self._portfolio)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- operations ---------------------------------------------------------------------------

    async def check_refundable(
        self, request: RefundRequest, *, known_refunded_minor: int = 0
    ) -> RefundableCheck:
        """The payment exists on the account, is a charged card/alternative payment, and the
        amount (or the whole payment when none is asked) is at most the payment minus
        ``known_refunded_minor`` (what this service itself refunded on it lately).

        Refunds read from Mews are **not** subtracted: they carry no link to their payment and
        the account holds other payments too (PROVIDERS.md, Mews), so a refund of another
        payment on the account would wrongly shrink this one. The true remainder cannot be
        known here: ``refundable_minor`` stays ``None`` and Mews decides on submit (403)."""
        self.check_request(request)
        if known_refunded_minor < 0:
            raise InvalidRequestError(
                f"known_refunded_minor must not be negative, got {known_refunded_minor}",
                provider=PROVIDER,
            )
        about = subject("check", request)
        payment, request_id = await self._one_payment(request, request.payment_id, about)

        def refuse(
            cls: type[ProviderStatusError], message: str, detail: str | None = None
        ) -> ProviderStatusError:
            return cls(
                message,
                provider=PROVIDER,
                status_code=ADAPTER_VERDICT,
                request_id=request_id,
                detail=detail,
                about=about,
            )

        if payment is None:
            raise refuse(NotFoundError, operator_sentence(NotFoundError, about))
        if payment.account_id is not None and payment.account_id.lower() != (
            (request.account_id or "").lower()
        ):
            raise InvalidRequestError(
                f"Mews payment {payment.id} belongs to another account than "
                f"{request.account_id}: check the account id.",
                provider=PROVIDER,
                request_id=request_id,
            )
        # Only a payment proper is refundable: a refund, chargeback or reversal is not
        # (seed page: "Only CreditCardPayment and AlternativePayment can be refunded").
        if payment.kind is not None and payment.kind != PAYMENT_KIND:
            raise refuse(
                PaymentNotRefundableError,
                f"Mews cannot refund {payment.id}: it is not a payment (a refund, chargeback "
                "or reversal cannot be refunded); give the id of the payment itself.",
                f"record kind {payment.kind}",
            )
        if payment.type not in REFUNDABLE_TYPES:
            raise refuse(
                PaymentNotRefundableError,
                f"Mews cannot refund payment {payment.id}: only card and alternative payments "
                f"can be refunded through Mews; refund this one another way.",
                f"payment type {payment.type}",
            )
        if payment.state != CHARGED:
            raise refuse(
                PaymentNotRefundableError,
                f"Mews cannot refund payment {payment.id}: only a charged payment can be "
                "refunded; if it is still being charged, start the refund again once it is.",
                f"payment state {payment.state}",
            )
        currency = payment.amount.currency
        if request.currency is not None and request.currency != currency:
            raise InvalidRequestError(
                f"The refund is asked in {request.currency} but Mews payment {payment.id} "
                f"is in {currency}: ask for it in {currency}.",
                provider=PROVIDER,
                request_id=request_id,
            )
        payment_minor = abs(self._minor(payment.amount.gross_value, currency, about))
        # An upper bound only: other refunds of this payment may exist that this service
        # does not know of; Mews refuses those over-refunds itself.
        at_most = payment_minor - known_refunded_minor
        amount = request.amount_minor if request.amount_minor is not None else payment_minor
        if amount > at_most:
            raise refuse(
                AmountExceedsRefundableError,
                f"Mews payment {payment.id} cannot take a refund of "
                f"{format_minor(amount, currency)}: this service already refunded "
                f"{format_minor(known_refunded_minor, currency)} of its "
                f"{format_minor(payment_minor, currency)}, so at most "
                f"{format_minor(max(at_most, 0), currency)} is left; ask for at most that.",
            )
        return RefundableCheck(
            payment_id=payment.id,
            currency=currency,
            amount_minor=amount,
            payment_amount_minor=payment_minor,
            refundable_minor=None,
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
        about = subject("refund", request)
        result, _ = await self._post(
            "refund", REFUND_PATH, parameters.wire(), RefundResult, about=about
        )
        currency = result.amount.currency
        return ProviderRefund(
            refund_id=result.refund_id,
            status=status_from_state(result.state),
            raw_status=result.state,
            amount_minor=abs(self._minor(result.amount.value, currency, about)),
            currency=currency,
        )

    async def get_refund(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """The refund read back as a payment, ``payments/getAll`` by ``PaymentIds``."""
        self.check_request(request)
        if not _is_uuid(refund_id):
            raise InvalidRequestError(
                f"refund id {refund_id!r} is not a Mews id (a UUID)", provider=PROVIDER
            )
        about = subject("status", request, refund_id)
        payment, request_id = await self._one_payment(request, refund_id, about)
        problem = _refund_problem(payment, request.account_id or "")
        if payment is None or problem is not None:
            raise NotFoundError(
                operator_sentence(NotFoundError, about),
                provider=PROVIDER,
                status_code=ADAPTER_VERDICT,
                request_id=request_id,
                detail=problem,
                about=about,
            )
        return self._to_refund(payment, about)

    async def cancel(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """Mews has no way to cancel a refund: always refused, nothing is sent."""
        raise RefundNotCancellableError(
            f"Mews has no refund cancellation, so refund {refund_id} cannot be canceled.",
            provider=PROVIDER,
            status_code=ADAPTER_VERDICT,
            about=subject("cancel", request, refund_id),
        )

    async def find_refunds(
        self, request: RefundRequest, *, created_from: datetime, created_to: datetime
    ) -> list[ProviderRefund]:
        """Every refund on the request's **account** created in ``[created_from, created_to)``,
        oldest first.

        Mews links no refund to its payment and an account holds many payments, so these are
        the account's refunds, not the payment's: the caller decides which (if any) is its own
        (callers serialize refunds per account). The window is half-open like getAll's and
        cut into windows of at most :data:`MAX_WINDOW`; each is paged with ``Cursor`` to its end.
        """
        self.check_request(request)
        start, end = _utc(created_from), _utc(created_to)
        if start > end:
            raise InvalidRequestError(
                f"created_from {start.isoformat()} is after created_to {end.isoformat()}",
                provider=PROVIDER,
            )
        about = subject("find", request)
        found = await self._refund_payments(request, start, end, about)
        return [self._to_refund(payment, about) for payment in found]

    async def poll_many(self, refunds: Sequence[str | RefundRef]) -> dict[str, ProviderRefund]:
        """Many refunds read back at once: one ``payments/getAll`` per
        :data:`MAX_PAYMENT_IDS` ids (``PaymentIds``), keyed by the id as given.

        Each record is judged exactly as :meth:`get_refund` judges its one (the same
        :func:`_refund_problem` and :meth:`_to_refund`): an id with no record, a record that
        is not a refund, or a refund on another account than its :class:`RefundRef` names is
        simply absent from the answer, and so is an id that is not a Mews id (a UUID: sent, it
        would make Mews refuse the whole call). A bare ``str`` names no account: only its
        kind is checked.

        ``EnterpriseIds`` (as :meth:`get_refund` sends its request's ``enterprise_id``): ids
        that name an enterprise are read together with the enterprises of their call, and a
        record Mews shows on another enterprise than its ref names is absent, as a read
        narrowed to that one enterprise would not have found it either; ids naming none are
        read in calls of their own, narrowed to nothing, as :meth:`get_refund` reads them.

        Paging follows ``Limitation``/``Cursor`` as documented (until ``Cursor`` is null or
        fewer than ``Count`` come back), but a call that has found every id it asked for
        stops: a ``PaymentIds`` filter matches at most that many payments, so a full last page
        never costs an empty extra call. Any call failing fails the whole read (the error
        ladder of every other call); nothing is retried here."""
        wanted: list[RefundRef] = []
        for item in refunds:
            ref = item if isinstance(item, RefundRef) else RefundRef(refund_id=item)
            if _is_uuid(ref.refund_id) and (
                ref.enterprise_id is None or _is_uuid(ref.enterprise_id)
            ):
                wanted.append(ref)
        about = Subject(PROVIDER, Step.STATUS)
        # One group with enterprises and one without, so no id is narrowed by another's.
        with_enterprise = [r for r in wanted if r.enterprise_id is not None]
        without = [r for r in wanted if r.enterprise_id is None]
        payments: dict[str, Payment] = {}
        for group in (with_enterprise, without):
            ids = list(dict.fromkeys(r.refund_id.lower() for r in group))
            for start in range(0, len(ids), MAX_PAYMENT_IDS):
                chunk = ids[start : start + MAX_PAYMENT_IDS]
                in_chunk = set(chunk)
                named = {
                    (r.enterprise_id or "").lower()
                    for r in group
                    if r.refund_id.lower() in in_chunk
                }
                enterprises = sorted(named - {""})
                payments.update(await self._payments_by_id(chunk, enterprises, about))
        found: dict[str, ProviderRefund] = {}
        for ref in wanted:
            payment = payments.get(ref.refund_id.lower())
            if payment is None or _refund_problem(payment, ref.account_id) is not None:
                continue
            if (
                ref.enterprise_id is not None
                and payment.enterprise_id is not None
                and payment.enterprise_id.lower() != ref.enterprise_id.lower()
                and self._portfolio is not False
            ):
                continue
            found[ref.refund_id] = self._to_refund(payment, about)
        return found

    # --- plumbing -----------------------------------------------------------------------------

    async def _payments_by_id(
        self, ids: list[str], enterprise_ids: list[str], about: Subject
    ) -> dict[str, Payment]:
        """One ``PaymentIds`` read (at most :data:`MAX_PAYMENT_IDS`), paged to its end; the
        payments by lower-case id."""
        count = min(self._page_size, len(ids))
        asked = set(ids)
        seen: dict[str, Payment] = {}
        cursor: str | None = None
        for pages in range(1, MAX_PAGES + 1):
            query = PaymentsFilter(
                payment_ids=ids,
                limitation=Limitation(count=count, cursor=cursor),
                enterprise_ids=enterprise_ids or None,
            )
            page, request_id = await self._post(
                "status", GET_ALL_PATH, query.wire(), PaymentsPage, about=about
            )
            for payment in page.payments:
                seen.setdefault(payment.id.lower(), payment)
            if page.cursor is None or len(page.payments) < count or asked.issubset(seen):
                break
            if page.cursor == cursor or pages == MAX_PAGES:
                raise ServerError(
                    f"Mews' paging cursor does not move on during {about.doing}: {_TRIED_AGAIN}.",
                    provider=PROVIDER,
                    status_code=200,
                    request_id=request_id,
                    about=about,
                )
            cursor = page.cursor
        return seen

    @property
    def _secrets(self) -> list[str]:
        return [
            self._client_token.current().get_secret_value(),
            self._access_token.current().get_secret_value(),
        ]

    async def _post(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        answer: type[_Answer],
        *,
        about: Subject,
    ) -> tuple[_Answer, str | None]:
        # Read once per call, so the body and the redaction agree on the values.
        secrets = self._secrets
        payload = {
            "ClientToken": secrets[0],
            "AccessToken": secrets[1],
            "Client": self._client_name,
            **body,
        }
        async with translate_transport_errors(PROVIDER, operation, secrets=secrets, about=about):
            response = await self._client.post(path, json=payload)
        if not response.is_success:
            raise error_from_response(response, operation=operation, secrets=secrets, about=about)
        request_id = response.headers.get("Request-Id")
        try:
            return answer.model_validate(response.json()), request_id
        except (ValueError, UnicodeDecodeError, ValidationError):
            # The error text of a failed parse may quote the body; say only what failed.
            raise ServerError(
                f"Mews' answer to {about.doing} (HTTP {response.status_code}) could not be "
                f"read as {answer.__name__}: {_TRIED_AGAIN}.",
                provider=PROVIDER,
                status_code=response.status_code,
                request_id=request_id,
                about=about,
            ) from None

    async def _one_payment(
        self, request: RefundRequest, payment_id: str, about: Subject
    ) -> tuple[Payment | None, str | None]:
        query = PaymentsFilter(
            payment_ids=[payment_id],
            limitation=Limitation(count=1),
            enterprise_ids=[request.enterprise_id] if request.enterprise_id else None,
        )
        operation = "check" if about.step is Step.CHECK else "status"
        page, request_id = await self._post(
            operation, GET_ALL_PATH, query.wire(), PaymentsPage, about=about
        )
        wanted = payment_id.lower()
        match = next((p for p in page.payments if p.id.lower() == wanted), None)
        return match, request_id

    async def _refund_payments(
        self, request: RefundRequest, start: datetime, end: datetime, about: Subject
    ) -> list[Payment]:
        """Every ``Kind: Refund`` payment on the account created in ``[start, end)``."""
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
                    "find", GET_ALL_PATH, query.wire(), PaymentsPage, about=about
                )
                for payment in page.payments:
                    if payment.kind == REFUND_KIND:
                        seen.setdefault(payment.id.lower(), payment)
                if page.cursor is None or len(page.payments) < self._page_size:
                    break
                if page.cursor == cursor or pages == MAX_PAGES:
                    raise ServerError(
                        f"Mews' paging cursor does not move on during {about.doing}: "
                        f"{_TRIED_AGAIN}.",
                        provider=PROVIDER,
                        status_code=200,
                        request_id=request_id,
                        about=about,
                    )
                cursor = page.cursor
        return sorted(seen.values(), key=lambda p: (_utc(p.created_utc), p.id))

    def _to_refund(self, payment: Payment, about: Subject) -> ProviderRefund:
        currency = payment.amount.currency
        return ProviderRefund(
            refund_id=payment.id,
            status=status_from_state(payment.state),
            raw_status=payment.state,
            amount_minor=abs(self._minor(payment.amount.gross_value, currency, about)),
            currency=currency,
            created_at=_utc(payment.created_utc),
        )

    @staticmethod
    def _minor(value: float, currency: str, about: Subject) -> int:
        try:
            return wire_float_to_minor(value, currency)
        except MoneyError as exc:
            raise ServerError(
                f"Mews' answer to {about.doing} holds an amount that cannot be read exactly "
                f"({exc}): {_TRIED_AGAIN}.",
                provider=PROVIDER,
                status_code=200,
                about=about,
            ) from None


@dataclass(frozen=True)
class RefundRef:
    """A refund to read back with :meth:`MewsAdapter.poll_many`: its id, and the account and
    enterprise its request named (``None``: not checked, not narrowed)."""

    refund_id: str
    account_id: str | None = None
    enterprise_id: str | None = None


def _refund_problem(payment: Payment | None, account_id: str | None) -> str | None:
    """Why a record read by id is not the refund asked for, or ``None`` when it is.

    The record must be a refund on the request's account: a payment id, or a refund on
    another account, is not this request's refund (PROVIDERS.md, Mews: a refund is a payment
    of Kind Refund on the same account). ``account_id`` ``None``: the account is not checked.
    """
    if payment is None:
        return "no record with this id"
    if payment.kind != REFUND_KIND:
        return f"record kind {payment.kind or 'none'}, not a refund"
    if account_id is not None and (payment.account_id or "").lower() != account_id.lower():
        return f"the refund is on another account than {account_id}"
    return None


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "ADAPTER_VERDICT",
    "MAX_PAYMENT_IDS",
    "MewsAdapter",
    "RefundRef",
    "check_mews_request",
    "error_from_response",
    "status_from_state",
]
