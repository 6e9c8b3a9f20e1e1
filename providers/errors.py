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
        ├── ForbiddenError            403  business rule refused, message is for people (final)
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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret occurring in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class ProviderError(Exception):
    """Base of every provider failure. Safe to log: it never holds a credential."""

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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.provider}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, message={self.message!r}, "
            f"request_id={self.request_id!r}, retry_after={self.retry_after!r})"
        )


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
    """A response with a non-success HTTP status."""

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
    ) -> None:
        super().__init__(message, provider=provider, request_id=request_id, retry_after=retry_after)
        self.status_code = status_code
        self.body = dict(body) if body is not None else None
        self.provider_code = provider_code

    def __str__(self) -> str:
        code = f" {self.provider_code}" if self.provider_code else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        # Status 0: the adapter's own verdict on what the provider answered, not an HTTP error.
        http = f" HTTP {self.status_code}" if self.status_code else ""
        return f"{self.provider}{http}{code}: {self.message}{rid}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, status_code={self.status_code}, "
            f"provider_code={self.provider_code!r}, message={self.message!r}, "
            f"request_id={self.request_id!r}, retry_after={self.retry_after!r})"
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
