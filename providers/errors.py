"""The one error tree every provider adapter raises.

::

    ProviderError                         base: provider, request_id, retryable, retry_after
    ├── InvalidRequestError               refused by our own checks, nothing was sent (final)
    ├── ProviderTransportError            no HTTP response at all
    │   ├── ProviderConnectError          never reached the provider: safe to retry
    │   └── UnknownOutcomeError           sent, then timeout / reset: it MAY have been processed
    └── ProviderStatusError               a response with a non-success status
        ├── BadRequestError           400  malformed request, invalid identifier (final)
        │   └── ProviderValidationError    the provider's field validation (final)
        ├── AuthenticationError       401  bad/expired credentials, no permission (final)
        ├── ForbiddenError            403  business rule refused, the detail says which (final)
        ├── NotFoundError             404  wrong URL or unknown payment/refund (final)
        ├── RequestTimeoutError       408  too heavy / too slow (retryable; write outcome unknown)
        ├── ConflictError             409  data changed, refresh and resubmit (retryable)
        ├── RateLimitedError          429  honour retry_after (retryable)
        ├── ServerError               5xx  (retryable; outcome of a write is unknown)
        └── provider business codes (final), whatever status carried them:
            ├── PaymentNotRefundableError        wrong type, not charged / not CONFIRMED
            ├── AmountExceedsRefundableError     over-refund
            ├── InsufficientBalanceError         merchant balance too low (Paynow)
            └── RefundNotCancellableError        cancel asked too late

Rules kept by every adapter:

* Errors are built in exactly one status ladder per adapter and one transport translator
  (:func:`providers.http.translate_transport_errors`), never at call sites.
* ``retryable`` says whether the *same* request may be sent again; the workflow engine owns
  retries, adapters never retry.
* ``outcome_unknown`` says a write may have taken effect although we got no success answer;
  for a provider without idempotency keys (Mews) that forbids blind re-sending.
* No message, ``repr`` or attribute holds a credential: adapters pass their secrets to
  :func:`redact` before any provider text reaches an error.
* Messages are for people. ``message`` is one sentence in the operator's terms: what
  happened, at which provider, what to do (:func:`operator_sentence` gives it from the class
  and the call's :class:`Subject`; amounts in major units with their currency). ``detail``
  keeps the provider's own words and codes once; ``str()`` joins them, e.g.
  ``Paynow does not know payment X: check the payment id. Paynow said (HTTP 404, request id
  r): NOT_FOUND: Payment X not found.``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from core.models import RefundRequest
from core.money import describe_amount


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret occurring in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def provider_title(provider: str) -> str:
    """The provider as people write it: ``paynow`` -> ``Paynow``."""
    return provider[:1].upper() + provider[1:]


class Step(StrEnum):
    """What a provider call was for, in neutral terms (adapters name their calls their way)."""

    CHECK = "check"
    SUBMIT = "submit"
    STATUS = "status"
    CANCEL = "cancel"
    FIND = "find"


@dataclass(frozen=True)
class Subject:
    """What a failed call was about: enough to say it in the operator's terms."""

    provider: str
    step: Step
    payment_id: str | None = None
    refund_id: str | None = None
    account_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None

    @classmethod
    def of_call(
        cls,
        provider: str,
        steps: Mapping[str, Step],
        operation: str,
        request: RefundRequest | None = None,
        refund_id: str | None = None,
    ) -> Subject:
        """What an adapter's call is about: its step (``steps`` maps the adapter's own call
        names; an unnamed call is a check) and the request's payment, account, amount and
        refund."""
        step = steps.get(operation, Step.CHECK)
        if request is None:
            return cls(provider, step, refund_id=refund_id)
        return cls(
            provider,
            step,
            payment_id=request.payment_id,
            refund_id=refund_id,
            account_id=request.account_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
        )

    @property
    def title(self) -> str:
        return provider_title(self.provider)

    @property
    def amount(self) -> str:
        """``12.34 PLN`` (major units), or ``the whole payment``."""
        if self.amount_minor is None or not self.currency:
            return "the whole payment"
        return describe_amount(self.amount_minor, self.currency)

    @property
    def payment(self) -> str:
        return f"payment {self.payment_id}" if self.payment_id else "the payment"

    @property
    def refund(self) -> str:
        return f"refund {self.refund_id}" if self.refund_id else "the refund"

    @property
    def doing(self) -> str:
        """The call as a noun phrase: ``the refund of 12.34 PLN on payment X``."""
        if self.step is Step.CHECK:
            return f"the check of {self.payment}"
        if self.step is Step.SUBMIT:
            if self.amount_minor is None or not self.currency:
                return "the refund of the whole " + (
                    f"payment {self.payment_id}" if self.payment_id else "payment"
                )
            return f"the refund of {self.amount} on {self.payment}"
        if self.step is Step.STATUS:
            return f"the status read of {self.refund}"
        if self.step is Step.CANCEL:
            return f"the cancel of {self.refund}"
        account = f" on account {self.account_id}" if self.account_id else ""
        return f"the lookup of refunds{account}"


_RETRIED = "it is tried again automatically; nothing to do unless it lasts"


def operator_sentence(
    kind: type[ProviderError], about: Subject, *, retry_after: float | None = None
) -> str:
    """One sentence for the operator: what happened, at which provider, what to do.

    Chosen by the error's class (itself chosen by status and documented codes), never by
    the provider's wording, which is kept apart as the error's ``detail``."""
    p, doing = about.title, about.doing
    if issubclass(kind, AmountExceedsRefundableError):
        return (
            f"{p} refused {doing}: it is more than is left to refund on the payment; "
            "check the payment's earlier refunds and ask for at most what is left."
        )
    if issubclass(kind, InsufficientBalanceError):
        return (
            f"{p} refused {doing}: the merchant balance at {p} is too low; "
            "top it up, then start the refund again."
        )
    if issubclass(kind, PaymentNotRefundableError):
        return (
            f"{p} cannot refund {about.payment}: its type or state does not allow a refund; "
            f"check the payment at {p}."
        )
    if issubclass(kind, RefundNotCancellableError):
        return f"{p} cannot cancel {about.refund}: it is too late, or {p} does not allow it."
    if issubclass(kind, NotFoundError):
        if about.step in (Step.STATUS, Step.CANCEL):
            return (
                f"{p} does not know {about.refund}: check it at {p}; "
                f"the refund of {about.payment} may need an operator."
            )
        if about.step is Step.FIND:
            return f"{p} found nothing for {doing}: check the account id."
        return f"{p} does not know {about.payment}: check the payment id."
    if issubclass(kind, AuthenticationError):
        return f"{p} refused our credentials on {doing}: check the worker's {p} credentials."
    if issubclass(kind, ForbiddenError):
        return (
            f"{p} refused {doing} under one of its business rules: see its reason below; "
            "sending it again unchanged will not help."
        )
    if issubclass(kind, BadRequestError):
        return (
            f"{p} found {doing} invalid: correct what it names below; "
            "sending it again unchanged will not help."
        )
    if issubclass(kind, RateLimitedError):
        when = (
            f"after the {retry_after:g} s it asked for"
            if retry_after is not None
            else "with a growing pause"
        )
        return f"{p} is limiting how often we call it ({doing}): it is tried again {when}."
    if issubclass(kind, RequestTimeoutError):
        return f"{p} timed out on {doing}: {_RETRIED}."
    if issubclass(kind, ConflictError):
        return f"{p} says its data changed during {doing}: {_RETRIED}."
    if issubclass(kind, ServerError):
        return f"{p} failed with a server error on {doing}: {_RETRIED}."
    if issubclass(kind, ProviderConnectError):
        return (
            f"Could not reach {p} for {doing}: nothing was sent and {_RETRIED} "
            f"(then check the network and the worker's {p} address)."
        )
    if issubclass(kind, UnknownOutcomeError):
        return f"{p} did not answer {doing} after it was sent: {_RETRIED}."
    return (
        f"{p} refused {doing} with an answer it does not document: see it below; check the request."
    )


class ProviderError(Exception):
    """Base of every provider failure. Safe to log: it never holds a credential.

    ``message`` is one sentence for the operator (what happened, at which provider, what to
    do); ``detail`` the provider's own words (or the transport's), kept once; ``str()``
    joins them."""

    retryable: ClassVar[bool] = False
    outcome_unknown: ClassVar[bool] = False
    code: ClassVar[str] = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
        about: Subject | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id
        self.retry_after = retry_after
        self.detail = detail
        self.about = about

    def said(self) -> str:
        """The detail as it follows the sentence: `` Detail (request id r): ...``."""
        meta = f" (request id {self.request_id})" if self.request_id else ""
        if self.detail:
            return f" Detail{meta}: {_sentence_end(self.detail)}"
        return f" Request id {self.request_id}." if self.request_id else ""

    def __str__(self) -> str:
        said = self.said()
        return f"{_sentence_end(self.message)}{said}" if said else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, message={self.message!r}, "
            f"detail={self.detail!r}, request_id={self.request_id!r}, "
            f"retry_after={self.retry_after!r})"
        )


def _sentence_end(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


class InvalidRequestError(ProviderError):
    """Our own pre-flight checks refused the request; nothing was sent."""

    code = "invalid_request"


class ProviderTransportError(ProviderError):
    """No HTTP response was received."""

    retryable = True
    code = "transport_error"


class ProviderConnectError(ProviderTransportError):
    """The request never left (connection refused, DNS, connect timeout, pool timeout)."""

    code = "connect_error"


class UnknownOutcomeError(ProviderTransportError):
    """The request was (or may have been) sent, and no answer came back."""

    outcome_unknown = True
    code = "unknown_outcome"


class ProviderStatusError(ProviderError):
    """A response with a non-success HTTP status (or, with ``status_code`` below 300, the
    adapter's own verdict on what a successful answer said)."""

    code = "status_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: Mapping[str, Any] | None = None,
        provider_code: str | None = None,
        detail: str | None = None,
        about: Subject | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            request_id=request_id,
            retry_after=retry_after,
            detail=detail,
            about=about,
        )
        self.status_code = status_code
        self.body = dict(body) if body is not None else None
        self.provider_code = provider_code

    def said(self) -> str:
        """`` Paynow said (HTTP 404, request id r): NOT_FOUND: Payment not found.``: the
        provider's words and codes, once. A verdict on a success answer shows no status."""
        meta = []
        if self.status_code >= 300:
            meta.append(f"HTTP {self.status_code}")
        if self.request_id:
            meta.append(f"request id {self.request_id}")
        paren = f" ({', '.join(meta)})" if meta else ""
        who = provider_title(self.provider)
        if self.detail:
            return f" {who} said{paren}: {_sentence_end(self.detail)}"
        if self.provider_code:
            return f" {who} said{paren}: {self.provider_code}."
        return f" {who} answered{paren}." if meta else ""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, status_code={self.status_code}, "
            f"provider_code={self.provider_code!r}, message={self.message!r}, "
            f"detail={self.detail!r}, request_id={self.request_id!r}, "
            f"retry_after={self.retry_after!r})"
        )


class BadRequestError(ProviderStatusError):
    code = "bad_request"


class ProviderValidationError(BadRequestError):
    code = "validation_error"


class AuthenticationError(ProviderStatusError):
    code = "authentication_error"


class ForbiddenError(ProviderStatusError):
    code = "forbidden"


class NotFoundError(ProviderStatusError):
    code = "not_found"


class RequestTimeoutError(ProviderStatusError):
    retryable = True
    outcome_unknown = True
    code = "request_timeout"


class ConflictError(ProviderStatusError):
    retryable = True
    code = "conflict"


class RateLimitedError(ProviderStatusError):
    retryable = True
    code = "rate_limited"


class ServerError(ProviderStatusError):
    retryable = True
    outcome_unknown = True
    code = "server_error"


class PaymentNotRefundableError(ProviderStatusError):
    code = "payment_not_refundable"


class AmountExceedsRefundableError(ProviderStatusError):
    code = "amount_exceeds_refundable"


class InsufficientBalanceError(ProviderStatusError):
    code = "insufficient_balance"


class RefundNotCancellableError(ProviderStatusError):
    code = "refund_not_cancellable"


_BY_STATUS: dict[int, type[ProviderStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    429: RateLimitedError,
}


def class_for_status(status_code: int) -> type[ProviderStatusError]:
    """The generic class for an HTTP status; adapters refine it with their business codes."""
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, ProviderStatusError)
