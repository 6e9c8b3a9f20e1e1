"""The Paynow status ladder, row by row: status and errorType -> error class and retry facts."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

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
from providers.paynow.adapter import error_from_response

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


ROWS = [
    Row(
        "validation",
        400,
        _body(400, "VALIDATION_ERROR", "amount: must be a positive integer"),
        ProviderValidationError,
        False,
        False,
        provider_code="VALIDATION_ERROR",
    ),
    Row("400 without a Paynow body", 400, None, BadRequestError, False, False),
    Row(
        "over-refund",
        400,
        _body(
            400,
            "VALIDATION_ERROR",
            "Refund amount 5000 exceeds the amount available for refund (4000 of 10000 PLN)",
        ),
        AmountExceedsRefundableError,
        False,
        False,
        provider_code="VALIDATION_ERROR",
    ),
    Row(
        "payment not confirmed",
        400,
        _body(
            400,
            "VALIDATION_ERROR",
            "Payment ABCD-123-456-789 is not CONFIRMED (status PENDING): "
            "only CONFIRMED payments can be refunded",
        ),
        PaymentNotRefundableError,
        False,
        False,
    ),
    Row(
        "insufficient balance",
        400,
        _body(400, "INSUFFICIENT_BALANCE_FUNDS", "Insufficient funds"),
        InsufficientBalanceError,
        False,
        False,
        provider_code="INSUFFICIENT_BALANCE_FUNDS",
    ),
    Row(
        "cancel too late",
        400,
        _body(400, "VALIDATION_ERROR", "Refund cannot be cancelled: its status is PENDING"),
        RefundNotCancellableError,
        False,
        False,
        operation="cancel",
    ),
    Row(
        "unauthorized",
        401,
        _body(401, "UNAUTHORIZED", "Invalid Api-Key"),
        AuthenticationError,
        False,
        False,
        provider_code="UNAUTHORIZED",
    ),
    Row("forbidden", 403, _body(403, "FORBIDDEN", "Forbidden"), ForbiddenError, False, False),
    Row(
        "not found",
        404,
        _body(404, "NOT_FOUND", "Payment not found"),
        NotFoundError,
        False,
        False,
        provider_code="NOT_FOUND",
    ),
    Row(
        "not found on cancel stays not found",
        404,
        _body(404, "NOT_FOUND", "Refund not found"),
        NotFoundError,
        False,
        False,
        operation="cancel",
    ),
    Row("request timeout", 408, None, RequestTimeoutError, True, True),
    Row("conflict", 409, None, ConflictError, True, False),
    Row(
        "conflict on cancel stays retryable",
        409,
        None,
        ConflictError,
        True,
        False,
        operation="cancel",
    ),
    Row(
        "idempotency key reused",
        422,
        _body(422, "VALIDATION_ERROR", "Idempotency-Key was already used"),
        ProviderValidationError,
        False,
        False,
    ),
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
    assert str(error).startswith(f"paynow HTTP {row.status}")
    assert row.operation in error.message
    if row.expected_retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(row.expected_retry_after, abs=3)
    if row.provider_code is not None:
        assert error.provider_code == row.provider_code


def test_message_carries_the_provider_text() -> None:
    error = error_from_response(
        _response(400, _body(400, "VALIDATION_ERROR", "amount: must be positive")),
        operation="submit",
    )
    assert error.message == "submit: VALIDATION_ERROR: amount: must be positive"
    assert error.body == _body(400, "VALIDATION_ERROR", "amount: must be positive")


def test_message_falls_back_to_the_reason_phrase() -> None:
    error = error_from_response(_response(502, "<html>Bad gateway</html>"), operation="submit")
    assert error.message == "submit: Bad Gateway"
    assert error.body is None


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
    for text in (str(error), repr(error), error.message, repr(error.body)):
        assert API_KEY not in text
        assert SIGNATURE_KEY not in text
        assert SENT_SIGNATURE not in text
    assert "***" in error.message
