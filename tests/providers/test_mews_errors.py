"""The Mews status ladder, transport errors and redaction, against ``httpx.MockTransport``."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from core.models import ProviderName, RefundRequest
from core.money import minor_to_decimal
from providers.errors import (
    AmountExceedsRefundableError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderConnectError,
    ProviderStatusError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
)
from providers.mews import MewsAdapter
from providers.mews.adapter import status_from_state
from simulators.mews.app import MSG_EXCEEDS, MSG_NOT_CHARGED, MSG_NOT_REFUNDABLE_TYPE
from simulators.serving import free_port

CLIENT_TOKEN = "TEST-CLIENT-TOKEN-0c5b7f0e9a1d"
ACCESS_TOKEN = "TEST-ACCESS-TOKEN-63e1a24f8b9c"
PAYMENT_ID = "0f8e4a1c-2b3d-4c5e-8f60-718293a4b5c6"
ACCOUNT_ID = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
BASE_URL = "https://mews.test/prefix"

Handler = Callable[[httpx.Request], httpx.Response]


def assert_no_secrets(err: BaseException) -> None:
    texts = [str(err), repr(err)]
    if isinstance(err, ProviderStatusError) and err.body is not None:
        texts.append(json.dumps(err.body))
    for text in texts:
        assert CLIENT_TOKEN not in text
        assert ACCESS_TOKEN not in text


def make_adapter(handler: Handler, base_url: str = BASE_URL) -> MewsAdapter:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=base_url)
    return MewsAdapter(
        client=client,
        client_token=SecretStr(CLIENT_TOKEN),
        access_token=SecretStr(ACCESS_TOKEN),
        client_name="refund-orchestrator tests",
    )


def make_request(**changes: Any) -> RefundRequest:
    fields: dict[str, Any] = {
        "idempotency_key": "key-1",
        "provider": ProviderName.MEWS,
        "payment_id": PAYMENT_ID,
        "account_id": ACCOUNT_ID,
        "reason": "guest complaint",
        "amount_minor": 1050,
        "currency": "GBP",
    }
    fields.update(changes)
    return RefundRequest(**fields)


def answer(status: int, message: str | None = "Something happened.", **headers: str) -> Handler:
    def handler(_: httpx.Request) -> httpx.Response:
        body = {"Message": message, "RequestId": "body-request-id", "Details": None}
        return httpx.Response(status, json=body, headers=headers)

    return handler


def http_date(seconds_from_now: int) -> str:
    return email.utils.format_datetime(
        datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True
    )


# status, message, headers -> class, retryable, outcome_unknown, retry_after (approx)
LADDER: list[
    tuple[int, str, dict[str, str], type[ProviderStatusError], bool, bool, float | None]
] = [
    (400, "Invalid PaymentId.", {}, BadRequestError, False, False, None),
    (401, "Invalid ClientToken or AccessToken.", {}, AuthenticationError, False, False, None),
    (403, "The enterprise does not allow refunds.", {}, ForbiddenError, False, False, None),
    (404, "Wrong URL.", {}, NotFoundError, False, False, None),
    (408, "Request too heavy.", {}, RequestTimeoutError, True, True, None),
    (409, "Data changed.", {}, ConflictError, True, False, None),
    (429, "Too many requests.", {"Retry-After": "7"}, RateLimitedError, True, False, 7.0),
    (429, "Too many requests.", {}, RateLimitedError, True, False, None),
    (500, "Unexpected error.", {}, ServerError, True, True, None),
    (502, "Bad gateway.", {}, ServerError, True, True, None),
    (503, "Unavailable.", {"Retry-After": "2"}, ServerError, True, True, 2.0),
    (418, "Teapot.", {}, ProviderStatusError, False, False, None),
]


@pytest.mark.parametrize(
    ("status", "message", "headers", "cls", "retryable", "unknown", "retry_after"), LADDER
)
async def test_status_ladder(
    status: int,
    message: str,
    headers: dict[str, str],
    cls: type[ProviderStatusError],
    retryable: bool,
    unknown: bool,
    retry_after: float | None,
) -> None:
    adapter = make_adapter(answer(status, message, **{"Request-Id": "hdr-1", **headers}))
    with pytest.raises(ProviderStatusError) as caught:
        await adapter.submit(make_request())
    err = caught.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.retryable is retryable
    assert err.outcome_unknown is unknown
    assert err.request_id == "hdr-1"
    assert err.retry_after == retry_after
    # The operator's sentence first, then Mews' own words once, with status and request id.
    assert err.message.startswith("Mews ")
    assert err.detail == message
    assert str(err).endswith(f" Mews said (HTTP {status}, request id hdr-1): {message}")
    assert str(err).count(message) == 1
    assert err.provider == "mews"
    assert_no_secrets(err)
    await adapter.aclose()


async def test_429_with_http_date_retry_after() -> None:
    adapter = make_adapter(answer(429, "Too many requests.", **{"Retry-After": http_date(30)}))
    with pytest.raises(RateLimitedError) as caught:
        await adapter.submit(make_request())
    assert caught.value.retry_after is not None
    assert 25.0 <= caught.value.retry_after <= 30.0
    assert caught.value.retryable
    await adapter.aclose()


# The simulator's wordings next to made-up ones: the class follows the status alone
# (PROVIDERS.md, Mews, "Errors": Mews documents statuses, no codes and no wording).
WORDINGS: list[str] = [
    MSG_NOT_REFUNDABLE_TYPE.format(type="CashPayment"),
    MSG_NOT_CHARGED.format(state="Pending"),
    MSG_EXCEEDS.format(asked="50.00 GBP", left="40.00 GBP"),
    "Refund amount is greater than the remaining amount.",
    "Payment is not refundable.",
    "Zahlung kann nicht erstattet werden.",
    "Qwfp 42: frobnicated.",
    "",
]
BY_STATUS: dict[int, type[ProviderStatusError]] = {
    400: BadRequestError,
    403: ForbiddenError,
    409: ConflictError,
}


@pytest.mark.parametrize("message", WORDINGS)
@pytest.mark.parametrize("status", sorted(BY_STATUS))
async def test_the_status_alone_decides_the_class(status: int, message: str) -> None:
    adapter = make_adapter(answer(status, message))
    with pytest.raises(ProviderStatusError) as caught:
        await adapter.submit(make_request())
    err = caught.value
    assert type(err) is BY_STATUS[status]
    assert not isinstance(err, PaymentNotRefundableError | AmountExceedsRefundableError)
    # Business refusals are final; only the 409 stays retryable.
    assert err.retryable is (status == 409)
    assert not err.outcome_unknown
    assert err.status_code == status
    # The provider's text stays in the error, for the operator.
    if message:
        assert message in str(err)
    assert_no_secrets(err)
    await adapter.aclose()


async def test_a_made_up_400_is_classified_like_a_documented_one() -> None:
    errors: list[ProviderStatusError] = []
    for message in ("Invalid PaymentId.", "Blorp: the thing went sideways."):
        adapter = make_adapter(answer(400, message))
        with pytest.raises(ProviderStatusError) as caught:
            await adapter.submit(make_request())
        errors.append(caught.value)
        await adapter.aclose()
    documented, made_up = errors
    assert type(documented) is type(made_up) is BadRequestError
    assert (documented.retryable, documented.outcome_unknown, documented.code) == (
        made_up.retryable,
        made_up.outcome_unknown,
        made_up.code,
    )


async def test_request_id_falls_back_to_the_body() -> None:
    adapter = make_adapter(answer(400, "Invalid AccountId."))
    with pytest.raises(BadRequestError) as caught:
        await adapter.submit(make_request())
    assert caught.value.request_id == "body-request-id"
    await adapter.aclose()


async def test_non_json_error_body_keeps_status_and_text() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>upstream down</html>")

    adapter = make_adapter(handler)
    with pytest.raises(ServerError) as caught:
        await adapter.submit(make_request())
    assert "upstream down" in (caught.value.detail or "")
    assert "Mews said (HTTP 502): Bad Gateway: <html>upstream down</html>." in str(caught.value)
    assert caught.value.request_id is None
    assert caught.value.body is None
    await adapter.aclose()


async def test_provider_text_echoing_credentials_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        echo = f"token {sent['AccessToken']} with client {sent['ClientToken']} refused"
        body = {"Message": echo, "RequestId": None, "Details": {"Token": [echo]}}
        return httpx.Response(401, json=body, headers={"Request-Id": sent["AccessToken"]})

    adapter = make_adapter(handler)
    with pytest.raises(AuthenticationError) as caught:
        await adapter.submit(make_request())
    assert "***" in (caught.value.detail or "")
    assert "***" in str(caught.value)
    assert_no_secrets(caught.value)
    await adapter.aclose()


@pytest.mark.parametrize("padding", [0, 174, 199])
async def test_non_json_error_echoing_credentials_is_redacted(padding: int) -> None:
    # The token may straddle the point where the text is cut.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="x" * padding + request.content.decode())

    adapter = make_adapter(handler)
    with pytest.raises(ServerError) as caught:
        await adapter.submit(make_request())
    assert_no_secrets(caught.value)
    for secret in (CLIENT_TOKEN, ACCESS_TOKEN):
        assert secret[:8] not in str(caught.value)
    await adapter.aclose()


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"Echo": "' + ACCESS_TOKEN.encode() + b'"}',
        b'{"PaymentId": "x", "RefundId": "y", "State": "Pending"}',
        # 0.001 GBP is not a whole number of pence: refused, never rounded.
        b'{"PaymentId": "x", "RefundId": "y", "State": "Pending",'
        b' "Amount": {"Currency": "GBP", "Value": 0.001}}',
    ],
)
async def test_unreadable_success_answer_is_a_server_error(content: bytes) -> None:
    adapter = make_adapter(lambda _: httpx.Response(200, content=content))
    with pytest.raises(ServerError) as caught:
        await adapter.submit(make_request())
    assert caught.value.outcome_unknown
    assert_no_secrets(caught.value)
    await adapter.aclose()


async def test_connect_refused_is_a_connect_error() -> None:
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}/mews", timeout=2.0)
    adapter = MewsAdapter(
        client=client,
        client_token=SecretStr(CLIENT_TOKEN),
        access_token=SecretStr(ACCESS_TOKEN),
        client_name="tests",
    )
    with pytest.raises(ProviderConnectError) as caught:
        await adapter.submit(make_request())
    assert caught.value.retryable
    assert not caught.value.outcome_unknown
    assert_no_secrets(caught.value)
    await adapter.aclose()


async def test_request_shape_path_prefix_and_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "PaymentId": PAYMENT_ID,
                "RefundId": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
                "Type": "CreditCardPayment",
                "Amount": {"Currency": "GBP", "Value": 10.5},
                "State": "Verifying",
            },
        )

    adapter = make_adapter(handler)
    enterprise = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    refund = await adapter.submit(make_request(enterprise_id=enterprise))
    assert refund.amount_minor == 1050
    assert refund.currency == "GBP"
    assert refund.raw_status == "Verifying"
    assert refund.status.value == "pending"
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/prefix/api/connector/v1/payments/refund"
    body = json.loads(request.content)
    assert body == {
        "ClientToken": CLIENT_TOKEN,
        "AccessToken": ACCESS_TOKEN,
        "Client": "refund-orchestrator tests",
        "PaymentId": PAYMENT_ID,
        "AccountId": ACCOUNT_ID,
        "Reason": "guest complaint",
        "ValueToRefund": 10.5,
        "EnterpriseId": enterprise,
    }
    await adapter.aclose()


async def test_whole_payment_refund_omits_value_and_enterprise() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "PaymentId": PAYMENT_ID,
                "RefundId": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
                "Amount": {"Currency": "EUR", "Value": -25},
                "State": "Charged",
            },
        )

    adapter = make_adapter(handler)
    refund = await adapter.submit(make_request(amount_minor=None, currency=None))
    assert "ValueToRefund" not in bodies[0]
    assert "EnterpriseId" not in bodies[0]
    # Absolute value, whatever sign Mews uses.
    assert refund.amount_minor == 2500
    assert refund.status.value == "succeeded"
    await adapter.aclose()


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("Pending", "pending"),
        ("Verifying", "pending"),
        ("Charged", "succeeded"),
        ("Failed", "failed"),
        ("Canceled", "canceled"),
        ("SomethingNew", "pending"),
    ],
)
def test_state_mapping(state: str, status: str) -> None:
    assert status_from_state(state).value == status


@settings(max_examples=150, deadline=None)
@given(
    currency=st.sampled_from(["GBP", "EUR", "JPY", "KWD", "CLF"]),
    amount_minor=st.integers(min_value=1, max_value=10**15 - 1),
)
async def test_amounts_cross_the_wire_exactly(currency: str, amount_minor: int) -> None:
    """The JSON number sent is the exact decimal, and the one read back gives the same units."""
    sent: list[Decimal] = []

    def handler(request: httpx.Request) -> httpx.Response:
        value = json.loads(request.content, parse_float=Decimal, parse_int=Decimal)
        sent.append(value["ValueToRefund"])
        text = (
            '{"PaymentId": "p", "RefundId": "r", "State": "Pending",'
            f' "Amount": {{"Currency": "{currency}", "Value": {value["ValueToRefund"]}}}}}'
        )
        return httpx.Response(200, content=text.encode())

    adapter = make_adapter(handler)
    refund = await adapter.submit(make_request(amount_minor=amount_minor, currency=currency))
    assert sent == [minor_to_decimal(amount_minor, currency)]
    assert refund.amount_minor == amount_minor
    await adapter.aclose()
