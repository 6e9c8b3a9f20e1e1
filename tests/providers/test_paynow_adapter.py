"""The Paynow adapter on a MockTransport: what goes on the wire, what comes back, refusals."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.models import ProviderName, ProviderRefundStatus, ReasonCode, RefundRequest, Transfer
from core.settings import MissingSettingError, Settings
from providers.base import RefundProvider
from providers.errors import (
    AmountExceedsRefundableError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderConnectError,
    ProviderStatusError,
    RateLimitedError,
    RefundNotCancellableError,
    ServerError,
    UnknownOutcomeError,
)
from providers.paynow import PaynowAdapter, check_paynow_request, sign_request
from providers.paynow.adapter import (
    AWAITING_REFUND_MAX_S,
    cancel_idempotency_key,
    map_refund_status,
)

API_KEY = "97a55694-5478-43b5-b406-fb49ebfdd2b5"
SIGNATURE_KEY = "b305b996-bca5-4404-a0b7-2ccea3d2b64b"
BASE_URL = "https://paynow.test/paynow"
PAYMENT_ID = "ABCD-123-456-789"
REFUND_ID = "R123-456-789-ABC"

Handler = Callable[[httpx.Request], httpx.Response]


def _request(**changes: Any) -> RefundRequest:
    fields: dict[str, Any] = {
        "idempotency_key": "order-42:refund-1",
        "provider": ProviderName.PAYNOW,
        "payment_id": PAYMENT_ID,
        "amount_minor": 1234,
        "currency": "PLN",
        "reason": "customer returned the parcel",
    }
    fields.update(changes)
    return RefundRequest(**fields)


def _adapter(handler: Handler, seen: list[httpx.Request] | None = None) -> PaynowAdapter:
    def recording(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording), base_url=BASE_URL)
    return PaynowAdapter(
        client=client, api_key=SecretStr(API_KEY), signature_key=SecretStr(SIGNATURE_KEY)
    )


def _answer(status: int, body: dict[str, Any]) -> Handler:
    return lambda _: httpx.Response(status, json=body)


def _assert_signed(sent: httpx.Request) -> None:
    """The Signature header is the v3 signature of what this request actually carried."""
    parameters: dict[str, list[str]] = {}
    for name, value in sent.url.params.multi_items():
        parameters.setdefault(name, []).append(value)
    assert sent.headers["Signature"] == sign_request(
        api_key=sent.headers["Api-Key"],
        idempotency_key=sent.headers["Idempotency-Key"],
        signature_key=SIGNATURE_KEY,
        body=sent.content,
        parameters=parameters,
    )
    assert sent.headers["Api-Key"] == API_KEY
    assert sent.headers["Accept"] == "application/json"


def test_is_a_refund_provider() -> None:
    adapter = _adapter(_answer(200, {}))
    assert isinstance(adapter, RefundProvider)
    assert adapter.name is ProviderName.PAYNOW
    assert adapter.supports_idempotency_key is True
    assert API_KEY not in repr(adapter)
    assert SIGNATURE_KEY not in repr(adapter)


async def test_submit_sends_the_signed_compact_body_under_the_request_key() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(201, {"refundId": REFUND_ID, "status": "NEW"}), seen)
    refund = await adapter.submit(_request())
    (sent,) = seen
    assert sent.method == "POST"
    assert sent.url.path == f"/paynow/v3/payments/{PAYMENT_ID}/refunds"
    assert sent.headers["Idempotency-Key"] == "order-42:refund-1"
    assert sent.headers["Content-Type"] == "application/json"
    # No reason code given: the optional field is left out, not sent as null or OTHER.
    assert sent.content == b'{"amount":1234}'
    _assert_signed(sent)
    assert refund.refund_id == REFUND_ID
    assert refund.status is ProviderRefundStatus.PENDING
    assert refund.raw_status == "NEW"
    # Without a voucher Paynow states no amount, and it never states a refund's currency:
    # nothing is reported as confirmed (not the requested 1234 PLN).
    assert (refund.amount_minor, refund.currency) == (None, None)
    assert (refund.payer_amount_minor, refund.voucher_amount_minor) == (None, None)
    # A NEW refund may be awaiting the merchant balance for up to 120 h.
    assert refund.pending_may_last_s == AWAITING_REFUND_MAX_S == 120 * 3600


async def test_submit_reports_the_voucher_split_as_paynow_states_it() -> None:
    body = {"refundId": REFUND_ID, "status": "PENDING", "payerAmount": 734, "voucherAmount": 500}
    refund = await _adapter(_answer(201, body)).submit(_request())
    assert (refund.payer_amount_minor, refund.voucher_amount_minor) == (734, 500)
    assert refund.amount_minor == 1234
    assert refund.currency is None
    assert refund.pending_may_last_s is None


async def test_submit_confirms_what_paynow_says_not_what_was_asked() -> None:
    body = {"refundId": REFUND_ID, "status": "SUCCESSFUL", "payerAmount": 600, "voucherAmount": 0}
    refund = await _adapter(_answer(201, body)).submit(_request())
    assert refund.amount_minor == 600  # asked 1234; the difference is for the workflow to see


async def test_a_payer_amount_alone_confirms_no_total() -> None:
    body = {"refundId": REFUND_ID, "status": "NEW", "payerAmount": 1234}
    refund = await _adapter(_answer(201, body)).submit(_request())
    assert refund.payer_amount_minor == 1234
    assert refund.voucher_amount_minor is None
    assert refund.amount_minor is None


async def test_submit_sends_reason_code_and_transfers_in_camel_case() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(201, {"refundId": REFUND_ID, "status": "PENDING"}), seen)
    request = _request(
        reason_code=ReasonCode.REFUND_BEFORE_14,
        transfers=(
            Transfer(seller_id="seller-1", gross_amount_minor=1000, fee_amount_minor=50),
            Transfer(seller_id="seller-2", gross_amount_minor=234, fee_amount_minor=0),
        ),
    )
    await adapter.submit(request)
    assert json.loads(seen[0].content) == {
        "amount": 1234,
        "reason": "REFUND_BEFORE_14",
        "transfers": [
            {"sellerId": "seller-1", "grossAmount": 1000, "feeAmount": 50},
            {"sellerId": "seller-2", "grossAmount": 234, "feeAmount": 0},
        ],
    }
    assert b" " not in seen[0].content
    _assert_signed(seen[0])


async def test_every_retry_of_submit_sends_the_same_key_and_bytes() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(201, {"refundId": REFUND_ID, "status": "NEW"}), seen)
    for _ in range(3):
        await adapter.submit(_request(reason_code=ReasonCode.RMA))
    assert {r.headers["Idempotency-Key"] for r in seen} == {"order-42:refund-1"}
    assert {r.content for r in seen} == {b'{"amount":1234,"reason":"RMA"}'}


async def test_reads_use_fresh_keys_and_no_body() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(200, {"refundId": REFUND_ID, "status": "PENDING"}), seen)
    await adapter.get_refund(_request(), REFUND_ID)
    await adapter.get_refund(_request(), REFUND_ID)
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert keys[0] != keys[1]
    for sent, key in zip(seen, keys, strict=True):
        uuid.UUID(key)
        assert sent.method == "GET"
        assert sent.url.path == f"/paynow/v3/refunds/{REFUND_ID}/status"
        assert sent.content == b""
        assert "Content-Type" not in sent.headers
        _assert_signed(sent)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NEW", ProviderRefundStatus.PENDING),
        ("PENDING", ProviderRefundStatus.PENDING),
        ("SUCCESSFUL", ProviderRefundStatus.SUCCEEDED),
        ("FAILED", ProviderRefundStatus.FAILED),
        ("CANCELLED", ProviderRefundStatus.CANCELED),
        ("SOMETHING_NEW", ProviderRefundStatus.PENDING),
    ],
)
async def test_status_mapping(raw: str, expected: ProviderRefundStatus) -> None:
    assert map_refund_status(raw) is expected
    body = {"refundId": REFUND_ID, "status": raw, "failureReason": "OTHER"}
    refund = await _adapter(_answer(200, body)).get_refund(_request(), REFUND_ID)
    assert refund.status is expected
    assert refund.raw_status == raw
    assert refund.failure_reason == "OTHER"
    # The status call states no money at all.
    assert (refund.amount_minor, refund.currency) == (None, None)
    assert refund.pending_may_last_s == (120 * 3600 if raw == "NEW" else None)


async def test_cancel_uses_a_derived_stable_key_and_signs_an_empty_body() -> None:
    seen: list[httpx.Request] = []
    body = {"refundId": REFUND_ID, "status": "CANCELLED"}
    adapter = _adapter(_answer(200, body), seen)
    first = await adapter.cancel(_request(), REFUND_ID)
    await adapter.cancel(_request(), REFUND_ID)
    key = seen[0].headers["Idempotency-Key"]
    assert key == seen[1].headers["Idempotency-Key"] == cancel_idempotency_key("order-42:refund-1")
    assert key != "order-42:refund-1"
    assert len(key) <= 45
    assert seen[0].url.path == f"/paynow/v3/refunds/{REFUND_ID}/cancel"
    assert seen[0].content == b""
    assert "Content-Type" not in seen[0].headers
    _assert_signed(seen[0])
    assert first.status is ProviderRefundStatus.CANCELED


async def test_cancel_200_without_a_readable_answer_is_a_cancelled_snapshot() -> None:
    adapter = _adapter(lambda _: httpx.Response(200, text="OK"))
    refund = await adapter.cancel(_request(), REFUND_ID)
    assert (refund.refund_id, refund.status, refund.raw_status) == (
        REFUND_ID,
        ProviderRefundStatus.CANCELED,
        "CANCELLED",
    )
    assert (refund.amount_minor, refund.currency) == (None, None)


@pytest.mark.parametrize("status", [201, 202, 204])
async def test_cancel_with_another_success_status_is_not_taken_as_cancelled(status: int) -> None:
    # Only 200 is documented; a 202 "accepted" might still go on to pay out.
    adapter = _adapter(lambda _: httpx.Response(status))
    with pytest.raises(RefundNotCancellableError) as caught:
        await adapter.cancel(_request(), REFUND_ID)
    assert caught.value.status_code == status
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "VALIDATION_ERROR"),
        (400, "INSUFFICIENT_BALANCE_FUNDS"),
        (403, None),
        (409, None),
        (422, "VALIDATION_ERROR"),
    ],
)
async def test_cancel_undocumented_refusals_end_the_attempt(
    status: int, error_type: str | None
) -> None:
    seen: list[httpx.Request] = []
    errors = [{"errorType": error_type, "message": "Paynow says no"}] if error_type else []
    body = {"statusCode": status, "errors": errors}
    adapter = _adapter(_answer(status, body), seen)
    with pytest.raises(RefundNotCancellableError) as caught:
        await adapter.cancel(_request(), REFUND_ID)
    error = caught.value
    assert not error.retryable
    assert error.status_code == status
    assert error.provider_code == error_type
    assert error.message.startswith(f"Paynow cannot cancel refund {REFUND_ID}")
    if error_type:
        assert f"Paynow said (HTTP {status}): {error_type}: Paynow says no." in str(error)
    assert len(seen) == 1  # the adapter never retries by itself


@pytest.mark.parametrize(
    ("status", "expected", "retryable"),
    [
        (401, AuthenticationError, False),
        (404, NotFoundError, False),
        (429, RateLimitedError, True),
        (500, ServerError, True),
        (503, ServerError, True),
    ],
)
async def test_cancel_documented_failures_keep_their_class(
    status: int, expected: type[ProviderStatusError], retryable: bool
) -> None:
    adapter = _adapter(_answer(status, {"statusCode": status, "errors": []}))
    with pytest.raises(expected) as caught:
        await adapter.cancel(_request(), REFUND_ID)
    assert caught.value.retryable is retryable


async def test_error_type_decides_not_the_message() -> None:
    def over(message: str) -> Handler:
        errors = [{"errorType": "REFUND_AMOUNT_TOO_LARGE", "message": message}]
        return _answer(400, {"statusCode": 400, "errors": errors})

    for message in ("", "Zwrot przekracza kwote platnosci", "Payment is not CONFIRMED"):
        with pytest.raises(AmountExceedsRefundableError):
            await _adapter(over(message)).submit(_request())


async def test_unreadable_success_answer_is_a_retryable_server_error() -> None:
    adapter = _adapter(lambda _: httpx.Response(201, text="<html>ok</html>"))
    with pytest.raises(ServerError) as caught:
        await adapter.submit(_request())
    assert caught.value.retryable
    assert caught.value.status_code == 201


async def test_check_refundable_reports_the_payment_state() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(200, {"paymentId": PAYMENT_ID, "status": "CONFIRMED"}), seen)
    check = await adapter.check_refundable(_request())
    # Paynow tells no remainder: what we refunded ourselves changes nothing here.
    assert await adapter.check_refundable(_request(), known_refunded_minor=10**9) == check
    assert seen[0].url.path == f"/paynow/v3/payments/{PAYMENT_ID}/status"
    _assert_signed(seen[0])
    assert check.payment_id == PAYMENT_ID
    assert (check.amount_minor, check.currency) == (1234, "PLN")
    assert check.refundable_minor is None
    assert check.raw_payment_state == "CONFIRMED"


async def test_a_payment_not_confirmed_is_refused_in_the_operators_terms() -> None:
    """Before: "paynow HTTP 200 PENDING: check_refundable: payment ... is PENDING; ...": a
    200 answer read as an HTTP error, the state twice and the call's internal name."""
    answer = httpx.Response(
        200, json={"paymentId": PAYMENT_ID, "status": "PENDING"}, headers={"X-Request-Id": "q-9"}
    )
    adapter = _adapter(lambda _: answer)
    with pytest.raises(PaymentNotRefundableError) as caught:
        await adapter.check_refundable(_request())
    assert str(caught.value) == (
        f"Paynow cannot refund payment {PAYMENT_ID}: only a confirmed payment can be "
        "refunded; if it is still being paid, start the refund again once Paynow confirms "
        "it. Paynow said (request id q-9): payment status PENDING."
    )
    assert caught.value.provider_code == "PENDING"
    assert not caught.value.retryable


async def test_find_refunds_is_empty_without_calling_paynow() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(200, {}), seen)
    now = datetime.now(UTC)
    assert await adapter.find_refunds(_request(), created_from=now, created_to=now) == []
    assert seen == []


async def test_refused_requests_never_reach_paynow() -> None:
    seen: list[httpx.Request] = []
    adapter = _adapter(_answer(201, {"refundId": REFUND_ID, "status": "NEW"}), seen)
    with pytest.raises(InvalidRequestError):
        await adapter.submit(_request(payment_id="not-a-paynow-id"))
    with pytest.raises(InvalidRequestError):
        await adapter.check_refundable(_request(amount_minor=None, currency=None))
    with pytest.raises(InvalidRequestError, match="refund id"):
        await adapter.get_refund(_request(), "../payments/x")
    assert seen == []


async def test_transport_errors_are_translated_without_secrets() -> None:
    def connect_refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused (key {API_KEY})", request=request)

    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout(f"timed out (key {SIGNATURE_KEY})", request=request)

    with pytest.raises(ProviderConnectError) as refused:
        await _adapter(connect_refused).submit(_request())
    with pytest.raises(UnknownOutcomeError) as unknown:
        await _adapter(read_timeout).submit(_request())
    for error in (refused.value, unknown.value):
        assert error.retryable
        for text in (str(error), repr(error)):
            assert API_KEY not in text
            assert SIGNATURE_KEY not in text
    assert unknown.value.outcome_unknown
    assert not refused.value.outcome_unknown


async def test_error_answers_echoing_credentials_are_redacted() -> None:
    signatures: list[str] = []

    def echo(request: httpx.Request) -> httpx.Response:
        signatures.append(request.headers["Signature"])
        text = f"bad {request.headers['Api-Key']} {request.headers['Signature']} {SIGNATURE_KEY}"
        return httpx.Response(
            401,
            json={"statusCode": 401, "errors": [{"errorType": "UNAUTHORIZED", "message": text}]},
        )

    with pytest.raises(AuthenticationError) as caught:
        await _adapter(echo).submit(_request())
    error = caught.value
    for text in (str(error), repr(error), repr(error.body)):
        assert API_KEY not in text
        assert SIGNATURE_KEY not in text
        assert signatures[0] not in text


def test_from_settings_requires_the_signature_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYNOW_SIGNATURE_KEY", raising=False)
    settings = Settings(_env_file=None, paynow_api_key=SecretStr(API_KEY))
    with pytest.raises(MissingSettingError, match="PAYNOW_SIGNATURE_KEY"):
        PaynowAdapter.from_settings(settings)


def test_from_settings_requires_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYNOW_API_KEY", raising=False)
    settings = Settings(_env_file=None, paynow_signature_key=SecretStr(SIGNATURE_KEY))
    with pytest.raises(MissingSettingError, match="PAYNOW_API_KEY"):
        PaynowAdapter.from_settings(settings)


async def test_from_settings_builds_a_client_for_the_base_url() -> None:
    settings = Settings(
        _env_file=None,
        paynow_base_url="http://127.0.0.1:8700/paynow",
        paynow_api_key=SecretStr(API_KEY),
        paynow_signature_key=SecretStr(SIGNATURE_KEY),
    )
    adapter = PaynowAdapter.from_settings(settings)
    assert "127.0.0.1:8700/paynow" in repr(adapter)
    await adapter.aclose()


# --- check_paynow_request ----------------------------------------------------------------------


def test_a_good_request_passes() -> None:
    check_paynow_request(_request())
    check_paynow_request(
        _request(
            reason_code=ReasonCode.OTHER,
            amount_minor=9_999_999_999,
            transfers=(Transfer(seller_id="s" * 15, gross_amount_minor=1, fee_amount_minor=0),),
        )
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"payment_id": "ABCD-123-456"}, "is not a Paynow payment id"),
        ({"payment_id": "ABCD_123-456-789"}, "is not a Paynow payment id"),
        ({"amount_minor": None, "currency": None}, "Paynow has no whole-payment refund"),
        ({"amount_minor": 10_000_000_000}, "more than 10 digits"),
        ({"account_id": "acc-1"}, "account_id is a Mews-only field"),
        ({"enterprise_id": "ent-1"}, "enterprise_id is a Mews-only field"),
        ({"provider": ProviderName.MEWS}, "not 'paynow'"),
    ],
)
def test_refusals_say_why(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)) as caught:
        check_paynow_request(_request(**changes))
    assert str(caught.value).startswith("refund request refused before sending anything to Paynow")


def test_transfer_limits_are_checked_even_past_the_model() -> None:
    # The core model bounds these already; model_construct skips it to prove ours holds too.
    oversized = Transfer.model_construct(
        seller_id="s" * 16, gross_amount_minor=100_000_001, fee_amount_minor=-1
    )
    request = _request().model_copy(update={"transfers": (oversized,)})
    with pytest.raises(InvalidRequestError) as caught:
        check_paynow_request(request)
    assert "transfers[0].seller_id" in caught.value.message
    assert "transfers[0].gross_amount_minor" in caught.value.message
    assert "transfers[0].fee_amount_minor" in caught.value.message


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_paynow_request(_request(payment_id="nope", account_id="a", enterprise_id="e"))
    assert caught.value.message.count(";") == 2


def test_transfer_sum_is_not_enforced() -> None:
    # Unconfirmed upstream rule: transfers need not add up to the refund amount.
    check_paynow_request(
        _request(
            transfers=(Transfer(seller_id="s", gross_amount_minor=1, fee_amount_minor=0),),
        )
    )


def test_check_request_method_is_the_same_check() -> None:
    with pytest.raises(InvalidRequestError):
        _adapter(_answer(200, {})).check_request(_request(payment_id="bad"))
