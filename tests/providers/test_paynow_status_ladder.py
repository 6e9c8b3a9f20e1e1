"""The Paynow status ladder, row by row: status and errorType -> error class and retry facts."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.models import ProviderName, RefundRequest
from providers.errors import (
    AmountExceedsRefundableError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InsufficientBalanceError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderStatusError,
    ProviderValidationError,
    RateLimitedError,
    RefundNotCancellableError,
    RequestTimeoutError,
    ServerError,
)
from providers.paynow.adapter import error_from_response, subject

API_KEY = "97a55694-5478-43b5-b406-fb49ebfdd2b5"
SIGNATURE_KEY = "b305b996-bca5-4404-a0b7-2ccea3d2b64b"
SENT_SIGNATURE = "fXwLZRwo0WiGll90PPl5oULX9VKA0gpFA/3+E+NRp5E="


def _body(status: int, error_type: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "errors": [{"errorType": error_type, "message": message}]}


def _http_date(seconds_ahead: int) -> str:
    return email.utils.format_datetime(
        datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True
    )


def _response(
    status: int,
    body: dict[str, Any] | str | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    request = httpx.Request(
        "POST",
        "https://api.sandbox.paynow.pl/v3/payments/ABCD-123-456-789/refunds",
        headers={"Api-Key": API_KEY, "Signature": SENT_SIGNATURE},
    )
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@dataclass(frozen=True)
class Row:
    name: str
    status: int
    body: dict[str, Any] | str | None
    expected: type[ProviderStatusError]
    retryable: bool
    outcome_unknown: bool
    operation: str = "submit"
    # A string is sent as is; an int becomes an HTTP-date that many seconds ahead, built when
    # the test runs (not at collection) so the expected delay holds.
    retry_after: str | int | None = None
    expected_retry_after: float | None = None
    provider_code: str | None = None


def _final(
    name: str,
    status: int,
    error_type: str | None,
    expected: type[ProviderStatusError],
    *,
    operation: str = "submit",
    message: str = "refused",
) -> Row:
    """A final (non-retryable, outcome known) row whose body carries ``error_type``."""
    body = _body(status, error_type, message) if error_type is not None else None
    return Row(
        name,
        status,
        body,
        expected,
        False,
        False,
        operation=operation,
        provider_code=error_type,
    )


ROWS = [
    _final("validation", 400, "VALIDATION_ERROR", ProviderValidationError),
    Row("400 without a Paynow body", 400, None, BadRequestError, False, False),
    _final("400 with an unknown errorType", 400, "SOMETHING_NEW", BadRequestError),
    # Business errorTypes (only INSUFFICIENT_BALANCE_FUNDS is documented; the rest unconfirmed).
    _final("over-refund", 400, "REFUND_AMOUNT_TOO_LARGE", AmountExceedsRefundableError),
    _final("too small", 400, "REFUND_AMOUNT_TOO_SMALL", ProviderValidationError),
    _final("refund expired", 400, "REFUND_POSSIBILITY_EXPIRED", PaymentNotRefundableError),
    _final("insufficient balance", 400, "INSUFFICIENT_BALANCE_FUNDS", InsufficientBalanceError),
    _final(
        "insufficient card balance",
        400,
        "INSUFFICIENT_CARD_BALANCE_FUNDS",
        InsufficientBalanceError,
    ),
    _final("over-refund at 422", 422, "REFUND_AMOUNT_TOO_LARGE", AmountExceedsRefundableError),
    _final("over-refund at 403", 403, "REFUND_AMOUNT_TOO_LARGE", AmountExceedsRefundableError),
    _final("lower-case errorType", 400, "refund_amount_too_large", AmountExceedsRefundableError),
    # The words of a message never decide: a VALIDATION_ERROR stays one whatever it says.
    _final(
        "over-refund words, validation type",
        400,
        "VALIDATION_ERROR",
        ProviderValidationError,
        message="Refund amount 5000 exceeds the amount available for refund",
    ),
    _final(
        "not-confirmed words, validation type",
        400,
        "VALIDATION_ERROR",
        ProviderValidationError,
        message="Payment is not CONFIRMED: only CONFIRMED payments can be refunded",
    ),
    Row(
        "a business type beside VALIDATION_ERROR decides",
        400,
        {
            "statusCode": 400,
            "errors": [
                {"errorType": "VALIDATION_ERROR", "message": "amount"},
                {"errorType": "REFUND_AMOUNT_TOO_LARGE", "message": "amount"},
            ],
        },
        AmountExceedsRefundableError,
        False,
        False,
        provider_code="REFUND_AMOUNT_TOO_LARGE",
    ),
    # Statuses that say "not you" or "try again" keep their meaning whatever type rides along.
    _final("unauthorized", 401, "UNAUTHORIZED", AuthenticationError),
    _final("401 with a business type", 401, "INSUFFICIENT_BALANCE_FUNDS", AuthenticationError),
    _final("forbidden", 403, None, ForbiddenError),
    _final("not found", 404, "NOT_FOUND", NotFoundError),
    _final("404 with a business type", 404, "REFUND_AMOUNT_TOO_LARGE", NotFoundError),
    Row("request timeout", 408, None, RequestTimeoutError, True, True),
    Row("conflict", 409, None, ConflictError, True, False),
    Row(
        "409 with a business type stays a conflict",
        409,
        _body(409, "REFUND_AMOUNT_TOO_LARGE", "later"),
        ConflictError,
        True,
        False,
    ),
    _final("idempotency key reused", 422, "VALIDATION_ERROR", ProviderValidationError),
    Row(
        "rate limited, seconds",
        429,
        None,
        RateLimitedError,
        True,
        False,
        retry_after="7",
        expected_retry_after=7.0,
    ),
    Row(
        "rate limited, HTTP-date",
        429,
        None,
        RateLimitedError,
        True,
        False,
        retry_after=120,
        expected_retry_after=120.0,
    ),
    Row("rate limited, no header", 429, None, RateLimitedError, True, False),
    Row(
        "rate limited with a business type",
        429,
        _body(429, "REFUND_AMOUNT_TOO_LARGE", "later"),
        RateLimitedError,
        True,
        False,
    ),
    Row(
        "internal error",
        500,
        _body(500, "INTERNAL_SERVER_ERROR", "Oops"),
        ServerError,
        True,
        True,
        provider_code="INTERNAL_SERVER_ERROR",
    ),
    Row("bad gateway, HTML body", 502, "<html>Bad gateway</html>", ServerError, True, True),
    Row(
        "temporarily unavailable",
        503,
        _body(503, "SYSTEM_TEMPORARILY_UNAVAILABLE", "Try again later"),
        ServerError,
        True,
        True,
        retry_after="30",
        expected_retry_after=30.0,
        provider_code="SYSTEM_TEMPORARILY_UNAVAILABLE",
    ),
    Row("unmapped 4xx", 418, None, ProviderStatusError, False, False),
    # Cancel documents 200/401/404/500/503 only: anything else ends the cancel attempt.
    _final("cancel: 400", 400, "VALIDATION_ERROR", RefundNotCancellableError, operation="cancel"),
    _final(
        "cancel: 400 with a business type",
        400,
        "INSUFFICIENT_BALANCE_FUNDS",
        RefundNotCancellableError,
        operation="cancel",
    ),
    _final("cancel: 403", 403, None, RefundNotCancellableError, operation="cancel"),
    _final("cancel: 408", 408, None, RefundNotCancellableError, operation="cancel"),
    _final("cancel: 409", 409, None, RefundNotCancellableError, operation="cancel"),
    _final("cancel: 418", 418, None, RefundNotCancellableError, operation="cancel"),
    _final("cancel: 422", 422, "VALIDATION_ERROR", RefundNotCancellableError, operation="cancel"),
    _final("cancel: 401", 401, "UNAUTHORIZED", AuthenticationError, operation="cancel"),
    _final("cancel: 404", 404, "NOT_FOUND", NotFoundError, operation="cancel"),
    Row(
        "cancel: 429 stays retryable",
        429,
        None,
        RateLimitedError,
        True,
        False,
        operation="cancel",
        retry_after="5",
        expected_retry_after=5.0,
    ),
    Row(
        "cancel: 500 stays retryable",
        500,
        _body(500, "INTERNAL_SERVER_ERROR", "Oops"),
        ServerError,
        True,
        True,
        operation="cancel",
    ),
    Row(
        "cancel: 503 stays retryable",
        503,
        _body(503, "SYSTEM_TEMPORARILY_UNAVAILABLE", "later"),
        ServerError,
        True,
        True,
        operation="cancel",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_status_ladder(row: Row) -> None:
    retry_after = (
        _http_date(row.retry_after) if isinstance(row.retry_after, int) else row.retry_after
    )
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    error = error_from_response(
        _response(row.status, row.body, headers),
        operation=row.operation,
        secrets=[API_KEY, SIGNATURE_KEY],
    )
    assert type(error) is row.expected
    assert error.status_code == row.status
    assert error.retryable is row.retryable
    assert error.outcome_unknown is row.outcome_unknown
    assert error.provider == "paynow"
    # The operator's sentence names the provider; its words follow once, with the status.
    assert error.message.startswith("Paynow ")
    assert f" Paynow said (HTTP {row.status}): " in str(error)
    assert f"HTTP {row.status}" not in error.message
    if row.expected_retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(row.expected_retry_after, abs=3)
    if row.provider_code is not None:
        assert error.provider_code == row.provider_code.upper()


# Every errorType the ladder knows, with the class it gives at 400 on submit.
BY_TYPE: dict[str, type[ProviderStatusError]] = {
    "VALIDATION_ERROR": ProviderValidationError,
    "REFUND_AMOUNT_TOO_LARGE": AmountExceedsRefundableError,
    "REFUND_AMOUNT_TOO_SMALL": ProviderValidationError,
    "REFUND_POSSIBILITY_EXPIRED": PaymentNotRefundableError,
    "INSUFFICIENT_BALANCE_FUNDS": InsufficientBalanceError,
    "INSUFFICIENT_CARD_BALANCE_FUNDS": InsufficientBalanceError,
    "NOT_A_PAYNOW_TYPE": BadRequestError,
}
# Messages that would have steered a wording-based ladder each to another class.
MISLEADING_MESSAGES = (
    "",
    "Refund amount exceeds the amount available for refund",
    "Payment is not CONFIRMED: only CONFIRMED payments can be refunded; not refundable",
    "Insufficient funds on the merchant balance",
    "Refund cannot be cancelled: only NEW refunds can be cancelled",
    "amount: is below the minimum",
)


@pytest.mark.parametrize("error_type", sorted(BY_TYPE))
def test_message_wording_never_changes_the_class(error_type: str) -> None:
    for message in MISLEADING_MESSAGES:
        error = error_from_response(
            _response(400, _body(400, error_type, message)), operation="submit"
        )
        assert type(error) is BY_TYPE[error_type], message
        assert error.provider_code == error_type


def test_the_same_status_with_another_error_type_maps_differently() -> None:
    classes = {
        error_type: type(
            error_from_response(_response(400, _body(400, error_type, "x")), operation="submit")
        )
        for error_type in BY_TYPE
    }
    assert classes == BY_TYPE
    assert len(set(classes.values())) == 5


def test_message_carries_the_provider_text() -> None:
    error = error_from_response(
        _response(400, _body(400, "VALIDATION_ERROR", "amount: must be positive")),
        operation="submit",
    )
    assert error.detail == "VALIDATION_ERROR: amount: must be positive"
    assert str(error) == (
        "Paynow found the refund of the whole payment invalid: correct what it names below; "
        "sending it again unchanged will not help. Paynow said (HTTP 400): VALIDATION_ERROR: "
        "amount: must be positive."
    )
    assert error.body == _body(400, "VALIDATION_ERROR", "amount: must be positive")


def test_message_falls_back_to_the_reason_phrase() -> None:
    error = error_from_response(_response(502, "<html>Bad gateway</html>"), operation="submit")
    assert error.detail == "Bad Gateway"
    assert str(error).endswith(" Paynow said (HTTP 502): Bad Gateway.")
    assert error.body is None


def test_not_found_names_the_payment_and_keeps_the_code_once() -> None:
    """Before: "paynow HTTP 404 NOT_FOUND: check_refundable: NOT_FOUND: Payment ..."."""
    about = subject("check_refundable", _paynow_request())
    error = error_from_response(
        _response(404, _body(404, "NOT_FOUND", "Payment NOLV-8F9-08K-WGD not found")),
        operation="check_refundable",
        about=about,
    )
    assert isinstance(error, NotFoundError)
    assert str(error) == (
        "Paynow does not know payment NOLV-8F9-08K-WGD: check the payment id. Paynow said "
        "(HTTP 404): NOT_FOUND: Payment NOLV-8F9-08K-WGD not found."
    )
    assert str(error).count("NOT_FOUND") == 1
    assert "check_refundable" not in str(error)


def test_over_refund_states_the_amount_in_major_units() -> None:
    """Before: the provider's minor units only ("9000 ... of 10000 PLN")."""
    words = "amount: 9000 is more than the 5000 left to refund of 10000 PLN"
    error = error_from_response(
        _response(400, _body(400, "REFUND_AMOUNT_TOO_LARGE", words), {"X-Request-Id": "q-1"}),
        operation="submit",
        about=subject("submit", _paynow_request()),
    )
    assert isinstance(error, AmountExceedsRefundableError)
    assert str(error) == (
        "Paynow refused the refund of 90.00 PLN on payment NOLV-8F9-08K-WGD: it is more than "
        "is left to refund on the payment; check the payment's earlier refunds and ask for at "
        "most what is left. Paynow said (HTTP 400, request id q-1): REFUND_AMOUNT_TOO_LARGE: "
        f"{words}."
    )


def test_rate_limited_says_when_it_is_tried_again() -> None:
    error = error_from_response(
        _response(429, _body(429, "TOO_MANY_REQUESTS", "slow down"), {"Retry-After": "30"}),
        operation="get_refund",
        about=subject("get_refund", _paynow_request(), "R1"),
    )
    assert isinstance(error, RateLimitedError)
    assert str(error) == (
        "Paynow is limiting how often we call it (the status read of refund R1): it is tried "
        "again after the 30 s it asked for. Paynow said (HTTP 429): TOO_MANY_REQUESTS: "
        "slow down."
    )


def test_server_error_says_it_is_tried_again() -> None:
    error = error_from_response(
        _response(503, _body(503, "SYSTEM_TEMPORARILY_UNAVAILABLE", "Try again later")),
        operation="submit",
        about=subject("submit", _paynow_request()),
    )
    assert isinstance(error, ServerError)
    assert str(error) == (
        "Paynow failed with a server error on the refund of 90.00 PLN on payment "
        "NOLV-8F9-08K-WGD: it is tried again automatically; nothing to do unless it lasts. "
        "Paynow said (HTTP 503): SYSTEM_TEMPORARILY_UNAVAILABLE: Try again later."
    )


def _paynow_request() -> RefundRequest:
    return RefundRequest(
        idempotency_key="k-1",
        provider=ProviderName.PAYNOW,
        payment_id="NOLV-8F9-08K-WGD",
        amount_minor=9000,
        currency="PLN",
        reason="customer asked",
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Request-Id": "req-1"}, "req-1"),
        ({"Request-Id": "req-2"}, "req-2"),
        ({}, None),
    ],
)
def test_request_id_from_headers(headers: dict[str, str], expected: str | None) -> None:
    error = error_from_response(_response(500, None, headers), operation="get_refund")
    assert error.request_id == expected
    if expected:
        assert expected in str(error)


def test_echoed_credentials_and_signature_are_redacted() -> None:
    echo = f"bad Api-Key {API_KEY} / key {SIGNATURE_KEY} / Signature {SENT_SIGNATURE}"
    error = error_from_response(
        _response(401, _body(401, "UNAUTHORIZED", echo)),
        operation="submit",
        secrets=[API_KEY, SIGNATURE_KEY],
    )
    assert isinstance(error, AuthenticationError)
    for text in (str(error), repr(error), error.detail or "", repr(error.body)):
        assert API_KEY not in text
        assert SIGNATURE_KEY not in text
        assert SENT_SIGNATURE not in text
    assert "***" in (error.detail or "")
    assert "***" in str(error)
