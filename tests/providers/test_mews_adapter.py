"""The Mews adapter against the simulator, in-process (ASGI) and over a real socket.

The simulator is mounted under ``/mews`` so every base URL carries a path prefix.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

from core.models import ProviderName, ProviderRefundStatus, RefundRequest, Transfer
from core.settings import MissingSettingError, Settings
from providers.base import RefundProvider
from providers.errors import (
    AmountExceedsRefundableError,
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderStatusError,
    RateLimitedError,
    RefundNotCancellableError,
    ServerError,
    UnknownOutcomeError,
)
from providers.mews import MewsAdapter, check_mews_request
from simulators.common import FaultKind, FaultSpec
from simulators.mews import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_TOKEN,
    DEFAULT_PORTFOLIO_TOKEN,
    MewsSimulator,
)
from simulators.mews.seed import (
    ENTERPRISE_ID,
    SEEDED_BY_SCENARIO,
    SHARED_ACCOUNT_ID,
    SHARED_PAYMENT_A_ID,
    SHARED_PAYMENT_B_ID,
    Scenario,
)
from simulators.serving import serve_in_thread

SECRETS = (DEFAULT_CLIENT_TOKEN, DEFAULT_ACCESS_TOKEN, DEFAULT_PORTFOLIO_TOKEN)
GET_ALL = "/api/connector/v1/payments/getAll"


def assert_no_secrets(err: BaseException) -> None:
    texts = [str(err), repr(err)]
    if isinstance(err, ProviderStatusError) and err.body is not None:
        texts.append(json.dumps(err.body))
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def mounted(sim: MewsSimulator) -> Starlette:
    return Starlette(routes=[Mount("/mews", app=sim.app)])


def request_for(payment: dict[str, Any], **changes: Any) -> RefundRequest:
    fields: dict[str, Any] = {
        "idempotency_key": "mews-test",
        "provider": ProviderName.MEWS,
        "payment_id": payment["payment_id"],
        "account_id": payment["account_id"],
        "reason": "guest left early",
    }
    fields.update(changes)
    return RefundRequest(**fields)


def seeded(scenario: Scenario) -> dict[str, Any]:
    seed = SEEDED_BY_SCENARIO[scenario]
    return {"payment_id": seed.payment_id, "account_id": seed.account_id}


@dataclass
class Harness:
    sim: MewsSimulator
    base_url: str
    app: Starlette | None
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, timeout_s: float = 5.0, base_url: str | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app) if self.app is not None else None
        client = httpx.AsyncClient(
            transport=transport,
            base_url=base_url or self.base_url,
            timeout=httpx.Timeout(timeout_s),
        )
        self._clients.append(client)
        return client

    def adapter(
        self,
        *,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        client_token: str = DEFAULT_CLIENT_TOKEN,
        page_size: int = 1000,
        timeout_s: float = 5.0,
        base_url: str | None = None,
    ) -> MewsAdapter:
        return MewsAdapter(
            client=self.client(timeout_s, base_url),
            client_token=SecretStr(client_token),
            access_token=SecretStr(access_token),
            client_name="refund-orchestrator tests 0.1",
            page_size=page_size,
        )

    async def new_payment(self, scenario: Scenario, **fields: Any) -> dict[str, Any]:
        response = await self.client().post(
            "_sim/payments", json={"scenario": scenario.value, **fields}
        )
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        return payment

    def get_all_count(self) -> int:
        return sum(1 for r in self.sim.core.journal()["requests"] if r["path"] == GET_ALL)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture(scope="module")
def sim() -> MewsSimulator:
    return MewsSimulator()


@pytest.fixture(scope="module")
def socket_base_url(sim: MewsSimulator) -> Iterator[str]:
    with serve_in_thread(mounted(sim)) as url:
        yield f"{url}/mews"


@pytest.fixture(params=["asgi", "socket"])
async def mews(
    request: pytest.FixtureRequest, sim: MewsSimulator, socket_base_url: str
) -> AsyncIterator[Harness]:
    sim.reset()
    if request.param == "asgi":
        harness = Harness(sim, "http://mews.test/mews", mounted(sim))
    else:
        harness = Harness(sim, socket_base_url, None)
    yield harness
    await harness.aclose()


# --- offline ------------------------------------------------------------------------------


GOOD = {
    "payment_id": "6d1b2c3a-0001-4a5b-8c6d-7e8f9a0b1c01",
    "account_id": "a1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01",
}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"payment_id": "NOLV-8F9-08K-WGD"}, "payment_id"),
        ({"account_id": None}, "account_id is required"),
        ({"account_id": "customer-42"}, "account_id"),
        ({"enterprise_id": "hotel-1"}, "enterprise_id"),
        ({"reason_code": "RMA"}, "Paynow-only"),
        (
            {"transfers": (Transfer(seller_id="s1", gross_amount_minor=1, fee_amount_minor=0),)},
            "Paynow",
        ),
    ],
)
def test_check_request_refuses(changes: dict[str, Any], needle: str) -> None:
    request = request_for(GOOD, **changes)
    with pytest.raises(InvalidRequestError, match=needle) as caught:
        check_mews_request(request)
    assert caught.value.provider == "mews"
    assert_no_secrets(caught.value)


def test_check_request_refuses_a_currency_mews_cannot_take() -> None:
    # Built without validation: the model itself already refuses unknown codes.
    request = request_for(GOOD).model_copy(update={"amount_minor": 100, "currency": "XXX"})
    with pytest.raises(InvalidRequestError, match="XXX"):
        check_mews_request(request)


def test_check_request_accepts_a_good_request() -> None:
    check_mews_request(
        request_for(GOOD, enterprise_id=ENTERPRISE_ID, amount_minor=1, currency="KWD")
    )
    check_mews_request(request_for(GOOD))


async def test_identity_and_protocol() -> None:
    async with httpx.AsyncClient(base_url="http://unused") as client:
        adapter = MewsAdapter(
            client=client,
            client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
            access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
            client_name="tests",
        )
        assert isinstance(adapter, RefundProvider)
        assert adapter.name is ProviderName.MEWS
        assert adapter.supports_idempotency_key is False
        for secret in SECRETS:
            assert secret not in repr(adapter)
        with pytest.raises(InvalidRequestError):
            adapter.check_request(request_for(GOOD, reason_code="OTHER"))


async def test_cancel_is_refused_without_any_http_call() -> None:
    def no_http(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected HTTP call to {request.url}")

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(no_http), base_url="http://mews.test"
    ) as client:
        adapter = MewsAdapter(
            client=client,
            client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
            access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
            client_name="tests",
        )
        with pytest.raises(RefundNotCancellableError) as caught:
            await adapter.cancel(request_for(GOOD), "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
    assert caught.value.status_code == 0
    assert not caught.value.retryable
    assert_no_secrets(caught.value)


def test_from_settings_names_the_missing_access_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None, mews_client_token=SecretStr(DEFAULT_CLIENT_TOKEN))
    with pytest.raises(MissingSettingError, match="MEWS_ACCESS_TOKEN") as caught:
        MewsAdapter.from_settings(settings)
    assert DEFAULT_CLIENT_TOKEN not in str(caught.value)


def test_from_settings_names_the_missing_client_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None, mews_access_token=SecretStr(DEFAULT_ACCESS_TOKEN))
    with pytest.raises(MissingSettingError, match="MEWS_CLIENT_TOKEN"):
        MewsAdapter.from_settings(settings)


async def test_from_settings_talks_to_the_simulator(
    sim: MewsSimulator, socket_base_url: str
) -> None:
    sim.reset()
    settings = Settings(
        _env_file=None,
        mews_base_url=socket_base_url,
        mews_client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
        mews_access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
        refunds_http_timeout_s=3.0,
    )
    adapter = MewsAdapter.from_settings(settings)
    try:
        check = await adapter.check_refundable(request_for(seeded(Scenario.SUCCEEDS)))
        assert check.amount_minor == 10_000
        assert check.currency == "GBP"
    finally:
        await adapter.aclose()


# --- check_refundable ---------------------------------------------------------------------


async def test_check_refundable_ok(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.SUCCEEDS)
    adapter = mews.adapter()
    check = await adapter.check_refundable(request_for(payment, amount_minor=1234, currency="GBP"))
    assert check.payment_id == payment["payment_id"]
    # The remainder cannot be known from Mews (refunds name no payment): not claimed.
    assert (check.amount_minor, check.payment_amount_minor, check.refundable_minor) == (
        1234,
        10_000,
        None,
    )
    assert check.currency == "GBP"
    assert check.raw_payment_state == "Charged"
    whole = await adapter.check_refundable(request_for(payment))
    assert whole.amount_minor == 10_000


@pytest.mark.parametrize("scenario", [Scenario.NOT_REFUNDABLE_TYPE, Scenario.NOT_CHARGED])
async def test_check_refundable_refuses_unrefundable_payments(
    mews: Harness, scenario: Scenario
) -> None:
    with pytest.raises(PaymentNotRefundableError) as caught:
        await mews.adapter().check_refundable(request_for(seeded(scenario)))
    assert caught.value.status_code == 0
    assert caught.value.request_id is not None
    assert not caught.value.retryable
    assert_no_secrets(caught.value)
    # One sentence for the operator, then what Mews' answer showed, once; no HTTP status
    # (Mews answered 200: the refusal is the adapter's verdict).
    text = str(caught.value)
    assert text.startswith(f"Mews cannot refund payment {seeded(scenario)['payment_id']}: only")
    assert f"Mews said (request id {caught.value.request_id}): payment " in text
    assert "HTTP" not in text


async def test_check_refundable_counts_only_what_this_service_refunded(mews: Harness) -> None:
    adapter = mews.adapter()
    partly = seeded(Scenario.PARTLY_REFUNDED)  # 100.00 GBP, 60.00 refunded by someone else
    # Mews' own refunds on the account are not attributed to the payment: the check lets
    # the whole payment through and Mews refuses it on submit (403, final).
    check = await adapter.check_refundable(request_for(partly))
    assert (check.amount_minor, check.payment_amount_minor, check.refundable_minor) == (
        10_000,
        10_000,
        None,
    )
    with pytest.raises(ForbiddenError) as at_submit:
        await adapter.submit(request_for(partly))
    assert at_submit.value.status_code == 403
    assert not at_submit.value.retryable
    # What this service knows it refunded is subtracted.
    for amount in (None, 4001):
        changes = {} if amount is None else {"amount_minor": amount, "currency": "GBP"}
        with pytest.raises(AmountExceedsRefundableError) as caught:
            await adapter.check_refundable(
                request_for(partly, **changes), known_refunded_minor=6_000
            )
        asked = "100.00 GBP" if amount is None else "40.01 GBP"
        assert caught.value.message == (
            f"Mews payment {partly['payment_id']} cannot take a refund of {asked}: this "
            "service already refunded 60.00 GBP of its 100.00 GBP, so at most 40.00 GBP is "
            "left; ask for at most that."
        )
        assert caught.value.status_code == 0
        assert_no_secrets(caught.value)
    check = await adapter.check_refundable(
        request_for(partly, amount_minor=4000, currency="GBP"), known_refunded_minor=6_000
    )
    assert check.amount_minor == 4000
    with pytest.raises(InvalidRequestError, match="negative"):
        await adapter.check_refundable(request_for(partly), known_refunded_minor=-1)


async def test_check_refundable_currency_mismatch(mews: Harness) -> None:
    with pytest.raises(InvalidRequestError, match="EUR") as caught:
        await mews.adapter().check_refundable(
            request_for(seeded(Scenario.SUCCEEDS), amount_minor=100, currency="EUR")
        )
    assert_no_secrets(caught.value)


async def test_check_refundable_unknown_payment_and_wrong_account(mews: Harness) -> None:
    adapter = mews.adapter()
    unknown = {**GOOD, "payment_id": "00000000-0000-4000-8000-000000000000"}
    with pytest.raises(NotFoundError) as missing:
        await adapter.check_refundable(request_for(unknown))
    assert missing.value.status_code == 0
    assert missing.value.message == (
        f"Mews does not know payment {unknown['payment_id']}: check the payment id."
    )
    assert_no_secrets(missing.value)
    other_account = {
        **seeded(Scenario.SUCCEEDS),
        "account_id": seeded(Scenario.FAILS)["account_id"],
    }
    with pytest.raises(InvalidRequestError, match="another account") as wrong:
        await adapter.check_refundable(request_for(other_account))
    assert_no_secrets(wrong.value)


# --- submit ---------------------------------------------------------------------------------


async def test_submit_partial_amounts_are_exact(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.SUCCEEDS)
    adapter = mews.adapter()
    # 0.1 + 0.2 != 0.3 in floats; in minor units it is exactly 30.
    first = await adapter.submit(request_for(payment, amount_minor=10, currency="GBP"))
    second = await adapter.submit(request_for(payment, amount_minor=20, currency="GBP"))
    assert (first.amount_minor, second.amount_minor) == (10, 20)
    assert first.refund_id != second.refund_id
    assert first.status is ProviderRefundStatus.PENDING
    assert first.raw_status == "Pending"
    recorded = [r["amount_minor"] for r in mews.sim.core.journal()["refunds"]]
    assert recorded == [10, 20]
    check = await adapter.check_refundable(
        request_for(payment, amount_minor=9_970, currency="GBP"), known_refunded_minor=30
    )
    assert check.amount_minor == 9_970
    with pytest.raises(AmountExceedsRefundableError, match=r"99\.70 GBP"):
        await adapter.check_refundable(
            request_for(payment, amount_minor=9_971, currency="GBP"), known_refunded_minor=30
        )


async def test_submit_whole_payment_then_nothing_is_left(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.SUCCEEDS_IMMEDIATELY)
    adapter = mews.adapter()
    refund = await adapter.submit(request_for(payment))
    assert refund.amount_minor == payment["amount_minor"] == 5_000
    assert refund.currency == "EUR"
    assert refund.status is ProviderRefundStatus.SUCCEEDED
    with pytest.raises(AmountExceedsRefundableError) as at_check:
        await adapter.check_refundable(
            request_for(payment, amount_minor=1, currency="EUR"), known_refunded_minor=5_000
        )
    assert at_check.value.status_code == 0
    # Without knowing, the check lets it through; Mews refuses (403, by status alone).
    await adapter.check_refundable(request_for(payment, amount_minor=1, currency="EUR"))
    with pytest.raises(ForbiddenError) as at_submit:
        await adapter.submit(request_for(payment))
    assert at_submit.value.status_code == 403
    assert "exceeds" in str(at_submit.value)  # Mews' text, kept for the operator
    assert_no_secrets(at_submit.value)


@pytest.mark.parametrize(
    ("currency", "payment_minor", "refunds"),
    [("KWD", 1_235, [1, 1_234]), ("JPY", 5_000, [4_999, 1]), ("CLF", 10_001, [1, 10_000])],
)
async def test_submit_other_exponents_exactly(
    mews: Harness, currency: str, payment_minor: int, refunds: list[int]
) -> None:
    payment = await mews.new_payment(
        Scenario.SUCCEEDS, currency=currency, amount_minor=payment_minor
    )
    adapter = mews.adapter()
    for amount in refunds:
        refund = await adapter.submit(request_for(payment, amount_minor=amount, currency=currency))
        assert refund.amount_minor == amount
    # Everything is refunded to the last minor unit: one more is over.
    with pytest.raises(ForbiddenError) as caught:
        await adapter.submit(request_for(payment, amount_minor=1, currency=currency))
    assert_no_secrets(caught.value)


@pytest.mark.parametrize("scenario", [Scenario.NOT_REFUNDABLE_TYPE, Scenario.NOT_CHARGED])
async def test_submit_refused_by_mews_business_rules(mews: Harness, scenario: Scenario) -> None:
    with pytest.raises(ForbiddenError) as caught:
        await mews.adapter().submit(request_for(seeded(scenario)))
    assert caught.value.status_code == 403
    assert caught.value.request_id is not None
    assert_no_secrets(caught.value)
    assert mews.sim.core.journal()["refunds"] == []


@pytest.mark.parametrize(
    ("client_token", "access_token"),
    [(DEFAULT_CLIENT_TOKEN, "WRONG-ACCESS-TOKEN"), ("WRONG-CLIENT-TOKEN", DEFAULT_ACCESS_TOKEN)],
)
async def test_bad_tokens_are_authentication_errors(
    mews: Harness, client_token: str, access_token: str
) -> None:
    adapter = mews.adapter(client_token=client_token, access_token=access_token)
    with pytest.raises(AuthenticationError) as caught:
        await adapter.submit(request_for(seeded(Scenario.SUCCEEDS)))
    assert caught.value.status_code == 401
    assert caught.value.request_id is not None
    assert not caught.value.retryable
    assert_no_secrets(caught.value)
    assert "WRONG" not in str(caught.value)


async def test_portfolio_token_needs_the_enterprise(mews: Harness) -> None:
    adapter = mews.adapter(access_token=DEFAULT_PORTFOLIO_TOKEN)
    payment = seeded(Scenario.SUCCEEDS)
    with pytest.raises(BadRequestError, match="EnterpriseId") as caught:
        await adapter.submit(request_for(payment, amount_minor=100, currency="GBP"))
    assert_no_secrets(caught.value)
    request = request_for(payment, amount_minor=100, currency="GBP", enterprise_id=ENTERPRISE_ID)
    assert (await adapter.check_refundable(request)).payment_amount_minor == 10_000
    refund = await adapter.submit(request)
    assert refund.amount_minor == 100


# --- get_refund -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (Scenario.SUCCEEDS, ["Pending", "Charged", "Charged"]),
        (Scenario.FAILS, ["Pending", "Failed", "Failed"]),
    ],
)
async def test_get_refund_follows_the_scenario(
    mews: Harness, scenario: Scenario, expected: list[str]
) -> None:
    payment = await mews.new_payment(scenario)
    adapter = mews.adapter()
    request = request_for(payment, amount_minor=500, currency=payment["currency"])
    submitted = await adapter.submit(request)
    assert submitted.raw_status == "Pending"
    seen = [await adapter.get_refund(request, submitted.refund_id) for _ in expected]
    assert [r.raw_status for r in seen] == expected
    last = seen[-1]
    assert last.status is (
        ProviderRefundStatus.SUCCEEDED
        if scenario is Scenario.SUCCEEDS
        else ProviderRefundStatus.FAILED
    )
    assert last.refund_id == submitted.refund_id
    assert last.amount_minor == 500
    assert last.created_at is not None


async def test_a_failed_refund_gives_the_money_back_to_refund(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.FAILS)
    adapter = mews.adapter()
    request = request_for(payment)
    refund = await adapter.submit(request)
    with pytest.raises(ForbiddenError) as caught:
        await adapter.submit(request)
    assert_no_secrets(caught.value)
    for _ in range(2):
        last = await adapter.get_refund(request, refund.refund_id)
    assert last.status is ProviderRefundStatus.FAILED
    check = await adapter.check_refundable(request)
    assert check.amount_minor == 7_550
    assert (await adapter.submit(request)).amount_minor == 7_550


async def test_get_refund_unknown_is_not_found(mews: Harness) -> None:
    with pytest.raises(NotFoundError) as caught:
        await mews.adapter().get_refund(
            request_for(seeded(Scenario.SUCCEEDS)), "00000000-0000-4000-8000-0000000000ff"
        )
    assert caught.value.status_code == 0
    assert not caught.value.retryable
    assert_no_secrets(caught.value)


# --- find_refunds ---------------------------------------------------------------------------


async def test_find_refunds_pages_and_splits_windows(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.SUCCEEDS)
    other = await mews.new_payment(Scenario.SUCCEEDS)
    writer = mews.adapter()
    made = [
        (await writer.submit(request_for(payment, amount_minor=100 + i, currency="GBP"))).refund_id
        for i in range(5)
    ]
    await writer.submit(request_for(other, amount_minor=100, currency="GBP"))
    reader = mews.adapter(page_size=2)
    now = datetime.now(UTC)
    before = mews.get_all_count()
    found = await reader.find_refunds(
        request_for(payment), created_from=now - timedelta(days=200), created_to=now
    )
    assert [r.refund_id for r in found] == made
    assert [r.amount_minor for r in found] == [100, 101, 102, 103, 104]
    assert all(r.currency == "GBP" and r.created_at is not None for r in found)
    # 200 days = 3 windows of at most 89 days; the first two are empty (1 call each); the last
    # holds the payment and 5 refunds: pages of 2, 2, 2, then an empty page (Cursor null).
    assert mews.get_all_count() - before == 6
    # The window bounds are honoured.
    assert (
        await reader.find_refunds(
            request_for(payment),
            created_from=now - timedelta(days=10),
            created_to=now - timedelta(days=5),
        )
        == []
    )


async def test_find_refunds_refuses_a_reversed_window(mews: Harness) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidRequestError) as caught:
        await mews.adapter().find_refunds(
            request_for(seeded(Scenario.SUCCEEDS)),
            created_from=now,
            created_to=now - timedelta(seconds=1),
        )
    assert_no_secrets(caught.value)


# --- faults and limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [("3", 3.0, 3.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, 0.0)],
)
async def test_rate_limit_fault(mews: Harness, retry_after: str, low: float, high: float) -> None:
    mews.sim.core.add_faults([FaultSpec(kind=FaultKind.RATE_LIMIT, retry_after=retry_after)])
    with pytest.raises(RateLimitedError) as caught:
        await mews.adapter().check_refundable(request_for(seeded(Scenario.SUCCEEDS)))
    assert caught.value.retry_after is not None
    # A date in the past means "now": never negative.
    assert low <= caught.value.retry_after <= high
    assert caught.value.retryable
    assert caught.value.request_id is not None
    assert_no_secrets(caught.value)


async def test_server_fault_is_a_server_error(mews: Harness) -> None:
    mews.sim.core.add_faults([FaultSpec(kind=FaultKind.STATUS, status=503)])
    with pytest.raises(ServerError) as caught:
        await mews.adapter().submit(request_for(seeded(Scenario.SUCCEEDS)))
    assert caught.value.status_code == 503
    assert caught.value.outcome_unknown
    assert caught.value.request_id is not None
    assert caught.value.body is not None
    assert caught.value.body["RequestId"] == caught.value.request_id
    assert_no_secrets(caught.value)


async def test_the_simulators_own_rate_limit() -> None:
    sim = MewsSimulator(rate_limit=2, rate_window_s=30.0, clock=lambda: 100.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mounted(sim)), base_url="http://mews.test/mews"
    ) as client:
        adapter = MewsAdapter(
            client=client,
            client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
            access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
            client_name="tests",
        )
        request = request_for(seeded(Scenario.SUCCEEDS))
        await adapter.check_refundable(request)
        await adapter.check_refundable(request)
        with pytest.raises(RateLimitedError) as caught:
            await adapter.submit(request)
    assert caught.value.retry_after == 30.0
    assert sim.core.journal()["refunds"] == []
    assert_no_secrets(caught.value)


async def test_timeout_after_send_is_an_unknown_outcome_and_reconciles() -> None:
    sim = MewsSimulator()
    with serve_in_thread(mounted(sim)) as url:
        async with httpx.AsyncClient(base_url=f"{url}/mews", timeout=httpx.Timeout(0.3)) as client:
            adapter = MewsAdapter(
                client=client,
                client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
                access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
                client_name="tests",
            )
            payment = seeded(Scenario.SUCCEEDS)
            request = request_for(payment, amount_minor=777, currency="GBP")
            started = datetime.now(UTC)
            sim.core.add_faults(
                [
                    FaultSpec(
                        kind=FaultKind.PROCESS_THEN_HANG,
                        seconds=1.0,
                        path_contains="payments/refund",
                    )
                ]
            )
            with pytest.raises(UnknownOutcomeError) as caught:
                await adapter.submit(request)
            assert caught.value.outcome_unknown
            assert caught.value.retryable
            assert_no_secrets(caught.value)
            # The refund was made although no answer came: find it instead of re-sending.
            found = await adapter.find_refunds(
                request, created_from=started, created_to=datetime.now(UTC)
            )
            assert [r.amount_minor for r in found] == [777]
            journal = sim.core.journal()
            assert [r["refund_id"] for r in journal["refunds"]] == [found[0].refund_id]
            assert journal["requests"][0]["fault"] == "process_then_hang"


async def test_a_wrong_base_url_is_not_found(mews: Harness) -> None:
    # Without the /mews prefix the request misses the API: a typed, credential-free 404.
    adapter = mews.adapter(base_url=mews.base_url.removesuffix("/mews"))
    with pytest.raises(NotFoundError) as caught:
        await adapter.submit(request_for(seeded(Scenario.SUCCEEDS)))
    assert caught.value.status_code == 404
    assert_no_secrets(caught.value)
    assert mews.sim.core.journal()["requests"] == []


# --- an account holds several payments; refunds name none of them ----------------------------


def shared(payment_id: str) -> dict[str, Any]:
    return {"payment_id": payment_id, "account_id": SHARED_ACCOUNT_ID}


async def test_a_full_refund_of_a_does_not_block_b_on_the_same_account(mews: Harness) -> None:
    adapter = mews.adapter()
    a, b = shared(SHARED_PAYMENT_A_ID), shared(SHARED_PAYMENT_B_ID)
    whole_a = await adapter.submit(request_for(a))
    assert (whole_a.amount_minor, whole_a.currency) == (25_050, "EUR")
    # The account now shows a 250.50 EUR refund, more than B itself: B is still refundable.
    check = await adapter.check_refundable(request_for(b))
    assert (check.amount_minor, check.payment_amount_minor) == (10_000, 10_000)
    partial = await adapter.check_refundable(request_for(b, amount_minor=6_000, currency="EUR"))
    assert partial.amount_minor == 6_000
    refund_b = await adapter.submit(request_for(b))
    assert refund_b.amount_minor == 10_000
    # A itself: refused by what this service knows, else by Mews on submit.
    with pytest.raises(AmountExceedsRefundableError):
        await adapter.check_refundable(
            request_for(a, amount_minor=1, currency="EUR"), known_refunded_minor=25_050
        )
    with pytest.raises(ForbiddenError):
        await adapter.submit(request_for(a, amount_minor=1, currency="EUR"))
    assert mews.sim.core.journal()["refunds_per_payment"] == {
        SHARED_PAYMENT_A_ID: 1,
        SHARED_PAYMENT_B_ID: 1,
    }


async def test_find_refunds_returns_the_accounts_refunds(mews: Harness) -> None:
    adapter = mews.adapter(page_size=1)
    a = request_for(shared(SHARED_PAYMENT_A_ID), amount_minor=1_000, currency="EUR")
    b = request_for(shared(SHARED_PAYMENT_B_ID), amount_minor=2_000, currency="EUR")
    made = [(await adapter.submit(r)).refund_id for r in (a, b, a)]
    now = datetime.now(UTC)
    window = {"created_from": now - timedelta(days=1), "created_to": now + timedelta(seconds=5)}
    # Whichever payment the request names, the same account, the same refunds, oldest first.
    for request in (a, b):
        found = await adapter.find_refunds(request, **window)
        assert [r.refund_id for r in found] == made
        assert [r.amount_minor for r in found] == [1_000, 2_000, 1_000]


async def test_find_refunds_windows_are_half_open(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.SUCCEEDS)
    adapter = mews.adapter()
    request = request_for(payment, amount_minor=100, currency="GBP")
    refund = await adapter.get_refund(request, (await adapter.submit(request)).refund_id)
    at = refund.created_at
    assert at is not None
    tick = timedelta(microseconds=1)
    hour = timedelta(hours=1)
    assert await adapter.find_refunds(request, created_from=at - hour, created_to=at) == []
    found = await adapter.find_refunds(request, created_from=at, created_to=at + tick)
    assert [r.refund_id for r in found] == [refund.refund_id]
    # An empty window asks nothing.
    before = mews.get_all_count()
    assert await adapter.find_refunds(request, created_from=at, created_to=at) == []
    assert mews.get_all_count() == before


async def test_find_refunds_splits_long_windows_into_accepted_intervals(mews: Harness) -> None:
    payment = await mews.new_payment(Scenario.SUCCEEDS)
    adapter = mews.adapter()
    request = request_for(payment, amount_minor=100, currency="GBP")
    made = (await adapter.submit(request)).refund_id
    now = datetime.now(UTC)
    start = len(mews.sim.core.journal()["requests"])
    found = await adapter.find_refunds(
        request, created_from=now - timedelta(days=400), created_to=now + timedelta(minutes=1)
    )
    assert [r.refund_id for r in found] == [made]
    # 400 days in windows of at most 89: 5 intervals, each accepted (one call each).
    requests = mews.sim.core.journal()["requests"][start:]
    assert [(r["path"], r["status"]) for r in requests] == [(GET_ALL, 200)] * 5


async def test_get_refund_must_be_a_refund_on_the_requests_account(mews: Harness) -> None:
    adapter = mews.adapter()
    a = request_for(shared(SHARED_PAYMENT_A_ID), amount_minor=100, currency="EUR")
    refund = await adapter.submit(a)
    # Its own refund: fine, also when asked through B (same account).
    assert (await adapter.get_refund(a, refund.refund_id)).refund_id == refund.refund_id
    b = request_for(shared(SHARED_PAYMENT_B_ID))
    assert (await adapter.get_refund(b, refund.refund_id)).amount_minor == 100
    # A payment is not a refund.
    with pytest.raises(NotFoundError) as not_refund:
        await adapter.get_refund(a, SHARED_PAYMENT_B_ID)
    assert not_refund.value.status_code == 0
    # A refund on another account is not this request's.
    other = request_for(seeded(Scenario.SUCCEEDS))
    with pytest.raises(NotFoundError, match="account") as elsewhere:
        await adapter.get_refund(other, refund.refund_id)
    assert not elsewhere.value.retryable
    assert_no_secrets(elsewhere.value)


# --- faults: dropped before processing, timed outages --------------------------------------


async def test_a_drop_before_processing_is_an_unknown_outcome_with_nothing_made() -> None:
    sim = MewsSimulator()
    with serve_in_thread(mounted(sim)) as url:
        async with httpx.AsyncClient(base_url=f"{url}/mews", timeout=httpx.Timeout(3.0)) as client:
            adapter = MewsAdapter(
                client=client,
                client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
                access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
                client_name="tests",
            )
            request = request_for(seeded(Scenario.SUCCEEDS), amount_minor=321, currency="GBP")
            started = datetime.now(UTC)
            sim.core.add_faults(
                [FaultSpec(kind=FaultKind.DROP_BEFORE, path_contains="payments/refund")]
            )
            with pytest.raises(UnknownOutcomeError) as caught:
                await adapter.submit(request)
            assert caught.value.outcome_unknown
            assert_no_secrets(caught.value)
            # Looking finds nothing: here (unlike `drop`) re-sending is what makes the refund.
            window = {"created_from": started, "created_to": datetime.now(UTC)}
            assert await adapter.find_refunds(request, **window) == []
    assert sim.core.journal()["refunds"] == []


async def test_a_timed_outage_fails_every_call_until_it_ends() -> None:
    now = [0.0]
    sim = MewsSimulator(clock=lambda: now[0])
    sim.core.add_faults([FaultSpec(kind=FaultKind.STATUS, status=503, duration_s=180)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mounted(sim)), base_url="http://mews.test/mews"
    ) as client:
        adapter = MewsAdapter(
            client=client,
            client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
            access_token=SecretStr(DEFAULT_ACCESS_TOKEN),
            client_name="tests",
        )
        request = request_for(seeded(Scenario.SUCCEEDS))
        for at in (0.0, 90.0, 179.0):
            now[0] = at
            with pytest.raises(ServerError) as caught:
                await adapter.check_refundable(request)
            assert caught.value.retryable
        now[0] = 180.0
        assert (await adapter.check_refundable(request)).amount_minor == 10_000
