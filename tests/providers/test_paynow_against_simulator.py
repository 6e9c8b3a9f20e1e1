"""The Paynow adapter against the Paynow simulator, in-process (ASGI) and over a real socket.

Both stacks mount the simulator under ``/paynow``, so every call also proves the adapter keeps
a base URL's path prefix. Each test makes its own payment through ``POST /_sim/payments``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

from core.models import ProviderName, ProviderRefundStatus, RefundRequest, Transfer
from providers.errors import (
    AmountExceedsRefundableError,
    AuthenticationError,
    InsufficientBalanceError,
    NotFoundError,
    PaymentNotRefundableError,
    ProviderConnectError,
    ProviderError,
    ProviderValidationError,
    RateLimitedError,
    RefundNotCancellableError,
    ServerError,
    UnknownOutcomeError,
)
from providers.paynow import PaynowAdapter
from simulators.paynow import PaynowSimulator
from simulators.paynow.seed import DEFAULT_API_KEY, DEFAULT_SIGNATURE_KEY
from simulators.serving import free_port, serve_in_thread

PREFIX = "/paynow"


def _mounted(sim: PaynowSimulator) -> Starlette:
    return Starlette(routes=[Mount(PREFIX, app=sim.app)])


def _adapter(
    client: httpx.AsyncClient,
    *,
    api_key: str = DEFAULT_API_KEY,
    signature_key: str = DEFAULT_SIGNATURE_KEY,
) -> PaynowAdapter:
    return PaynowAdapter(
        client=client, api_key=SecretStr(api_key), signature_key=SecretStr(signature_key)
    )


def _refund(payment_id: str, amount_minor: int = 1000, **changes: Any) -> RefundRequest:
    fields: dict[str, Any] = {
        "idempotency_key": f"test-{uuid.uuid4()}",
        "provider": ProviderName.PAYNOW,
        "payment_id": payment_id,
        "amount_minor": amount_minor,
        "currency": "PLN",
        "reason": "test refund",
    }
    fields.update(changes)
    return RefundRequest(**fields)


@dataclass
class Stack:
    sim: PaynowSimulator
    base_url: str
    transport: httpx.AsyncBaseTransport | None
    clients: list[httpx.AsyncClient]

    def client(self, *, timeout: float = 5.0) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=self.base_url, transport=self.transport, timeout=timeout
        )
        self.clients.append(client)
        return client

    def adapter(self, **keys: str) -> PaynowAdapter:
        return _adapter(self.client(), **keys)

    async def new_payment(self, scenario: str, **fields: Any) -> str:
        response = await self.client().post("_sim/payments", json={"scenario": scenario, **fields})
        assert response.status_code == 201, response.text
        payment_id: str = response.json()["payment_id"]
        return payment_id

    async def add_fault(self, **spec: Any) -> None:
        response = await self.client().post("_sim/faults", json=spec)
        assert response.status_code == 201

    async def fund(self, payment_id: str) -> None:
        response = await self.client().post(f"_sim/payments/{payment_id}/fund")
        assert response.status_code == 200, response.text

    async def advance_clock(self, seconds: float) -> None:
        response = await self.client().post("_sim/clock", json={"advance_s": seconds})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def socket_sim() -> Iterator[tuple[PaynowSimulator, str]]:
    sim = PaynowSimulator()
    with serve_in_thread(_mounted(sim)) as url:
        yield sim, url + PREFIX


@pytest.fixture(params=["asgi", "socket"])
async def stack(
    request: pytest.FixtureRequest, socket_sim: tuple[PaynowSimulator, str]
) -> AsyncIterator[Stack]:
    if request.param == "asgi":
        sim = PaynowSimulator()
        built = Stack(sim, f"http://paynow.sim{PREFIX}", httpx.ASGITransport(_mounted(sim)), [])
    else:
        sim, url = socket_sim
        built = Stack(sim, url, None, [])
    yield built
    for client in built.clients:
        await client.aclose()


async def test_check_refundable_confirmed(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds")
    check = await stack.adapter().check_refundable(_refund(payment_id, 2500))
    assert check.payment_id == payment_id
    assert (check.amount_minor, check.currency) == (2500, "PLN")
    assert check.raw_payment_state == "CONFIRMED"
    assert check.refundable_minor is None


async def test_check_refundable_not_confirmed(stack: Stack) -> None:
    payment_id = await stack.new_payment("not_confirmed")
    with pytest.raises(PaymentNotRefundableError, match="PENDING"):
        await stack.adapter().check_refundable(_refund(payment_id))


async def test_check_refundable_unknown_payment(stack: Stack) -> None:
    with pytest.raises(NotFoundError) as caught:
        await stack.adapter().check_refundable(_refund("ZZZZ-999-999-999"))
    assert caught.value.provider_code == "NOT_FOUND"
    assert caught.value.request_id  # the simulator's X-Request-Id


async def test_submit_then_resubmit_makes_one_refund(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds")
    adapter = stack.adapter()
    request = _refund(payment_id, 1500)
    first = await adapter.submit(request)
    again = await adapter.submit(request)
    assert first.refund_id == again.refund_id
    assert first.status is ProviderRefundStatus.PENDING
    assert first.raw_status == "NEW"
    # No voucher: Paynow states no amount and never a currency.
    assert (first.amount_minor, first.currency) == (None, None)
    journal = stack.sim.core.journal()
    assert journal["refunds_per_key"][request.idempotency_key] == 1
    assert journal["refunds_per_payment"][payment_id] == 1


async def test_refund_advances_to_successful(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds")
    adapter = stack.adapter()
    request = _refund(payment_id)
    refund = await adapter.submit(request)
    seen = [(await adapter.get_refund(request, refund.refund_id)).raw_status for _ in range(3)]
    assert seen == ["PENDING", "SUCCESSFUL", "SUCCESSFUL"]
    final = await adapter.get_refund(request, refund.refund_id)
    assert final.status is ProviderRefundStatus.SUCCEEDED
    assert final.failure_reason is None


async def test_refund_advances_to_failed(stack: Stack) -> None:
    payment_id = await stack.new_payment("fails")
    adapter = stack.adapter()
    request = _refund(payment_id)
    refund = await adapter.submit(request)
    assert (await adapter.get_refund(request, refund.refund_id)).raw_status == "PENDING"
    final = await adapter.get_refund(request, refund.refund_id)
    assert final.status is ProviderRefundStatus.FAILED
    assert final.failure_reason == "CARD_BALANCE_ERROR"


async def test_refund_succeeding_immediately(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds_immediately")
    refund = await stack.adapter().submit(_refund(payment_id))
    assert refund.status is ProviderRefundStatus.SUCCEEDED


async def test_cancel_while_new(stack: Stack) -> None:
    payment_id = await stack.new_payment("awaiting")
    adapter = stack.adapter()
    request = _refund(payment_id)
    refund = await adapter.submit(request)
    assert (await adapter.get_refund(request, refund.refund_id)).raw_status == "NEW"
    cancelled = await adapter.cancel(request, refund.refund_id)
    assert cancelled.status is ProviderRefundStatus.CANCELED
    # A retried cancel (same derived key) answers the same, and the refund stays cancelled.
    assert (await adapter.cancel(request, refund.refund_id)).status is ProviderRefundStatus.CANCELED
    later = await adapter.get_refund(request, refund.refund_id)
    assert later.status is ProviderRefundStatus.CANCELED


async def test_cancel_too_late(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds")
    adapter = stack.adapter()
    request = _refund(payment_id)
    refund = await adapter.submit(request)
    await adapter.get_refund(request, refund.refund_id)  # now PENDING
    with pytest.raises(RefundNotCancellableError) as caught:
        await adapter.cancel(request, refund.refund_id)
    assert caught.value.status_code == 400
    assert not caught.value.retryable


async def test_over_refund(stack: Stack) -> None:
    payment_id = await stack.new_payment("partly_refunded")  # 100.00 PLN, 60.00 gone
    adapter = stack.adapter()
    with pytest.raises(AmountExceedsRefundableError):
        await adapter.submit(_refund(payment_id, 4001))
    refund = await adapter.submit(_refund(payment_id, 4000))
    assert refund.status is ProviderRefundStatus.PENDING
    with pytest.raises(AmountExceedsRefundableError):
        await adapter.submit(_refund(payment_id, 100))


async def test_insufficient_funds(stack: Stack) -> None:
    payment_id = await stack.new_payment("insufficient_funds")
    with pytest.raises(InsufficientBalanceError) as caught:
        await stack.adapter().submit(_refund(payment_id))
    assert caught.value.provider_code == "INSUFFICIENT_BALANCE_FUNDS"
    assert not caught.value.retryable


async def test_submit_on_a_payment_not_confirmed(stack: Stack) -> None:
    # A 400 VALIDATION_ERROR, final: which errorType Paynow answers is undocumented, and the
    # message's words are not read (check_refundable is what names the payment's state).
    payment_id = await stack.new_payment("not_confirmed")
    with pytest.raises(ProviderValidationError) as caught:
        await stack.adapter().submit(_refund(payment_id))
    assert caught.value.provider_code == "VALIDATION_ERROR"
    assert not caught.value.retryable


async def test_below_the_card_minimum(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds", method="card")
    with pytest.raises(ProviderValidationError) as caught:
        await stack.adapter().submit(_refund(payment_id, 99))
    assert caught.value.provider_code == "REFUND_AMOUNT_TOO_SMALL"


async def test_voucher_refund_reports_paynow_amounts(stack: Stack) -> None:
    payment_id = await stack.new_payment("voucher", amount_minor=10_000)  # 40% by voucher
    refund = await stack.adapter().submit(_refund(payment_id, 2500))
    assert (refund.payer_amount_minor, refund.voucher_amount_minor) == (1500, 1000)
    assert refund.amount_minor == 2500
    assert refund.currency is None


async def test_transfers_only_on_marketplace_payments(stack: Stack) -> None:
    adapter = stack.adapter()
    transfers = (Transfer(seller_id="seller-1", gross_amount_minor=1000, fee_amount_minor=20),)
    plain = await stack.new_payment("succeeds")
    with pytest.raises(ProviderValidationError):
        await adapter.submit(_refund(plain, 1000, transfers=transfers))
    marketplace = await stack.new_payment("marketplace")
    refund = await adapter.submit(_refund(marketplace, 1000, transfers=transfers))
    assert refund.status is ProviderRefundStatus.PENDING
    with pytest.raises(ProviderValidationError):
        await adapter.submit(_refund(marketplace, 1000))


async def test_awaiting_refund_waits_for_funds_then_succeeds(stack: Stack) -> None:
    payment_id = await stack.new_payment("awaiting_funds")
    adapter = stack.adapter()
    request = _refund(payment_id)
    refund = await adapter.submit(request)
    assert refund.raw_status == "NEW"
    assert refund.pending_may_last_s == 120 * 3600
    for _ in range(5):
        still = await adapter.get_refund(request, refund.refund_id)
        assert (still.raw_status, still.pending_may_last_s) == ("NEW", 120 * 3600)
    await stack.fund(payment_id)
    moving = await adapter.get_refund(request, refund.refund_id)
    assert (moving.raw_status, moving.pending_may_last_s) == ("PENDING", None)
    final = await adapter.get_refund(request, refund.refund_id)
    assert final.status is ProviderRefundStatus.SUCCEEDED


async def test_awaiting_refund_not_funded_in_time_is_cancelled_by_paynow(stack: Stack) -> None:
    payment_id = await stack.new_payment("awaiting_funds")
    adapter = stack.adapter()
    request = _refund(payment_id)
    refund = await adapter.submit(request)
    await stack.advance_clock(120 * 3600)
    cancelled = await adapter.get_refund(request, refund.refund_id)
    assert cancelled.status is ProviderRefundStatus.CANCELED
    assert cancelled.raw_status == "CANCELLED"
    with pytest.raises(RefundNotCancellableError):
        await adapter.cancel(request, refund.refund_id)


async def test_key_reused_with_another_amount(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds")
    adapter = stack.adapter()
    first = _refund(payment_id, 1000)
    await adapter.submit(first)
    with pytest.raises(ProviderValidationError) as caught:
        await adapter.submit(first.model_copy(update={"amount_minor": 2000}))
    assert caught.value.status_code == 422
    assert stack.sim.core.journal()["refunds_per_key"][first.idempotency_key] == 1


@pytest.mark.parametrize(
    ("api_key", "signature_key"),
    [
        ("00000000-0000-4000-8000-000000000000", DEFAULT_SIGNATURE_KEY),
        (DEFAULT_API_KEY, "11111111-1111-4111-8111-111111111111"),
    ],
)
async def test_wrong_credentials(stack: Stack, api_key: str, signature_key: str) -> None:
    payment_id = await stack.new_payment("succeeds")
    with pytest.raises(AuthenticationError) as caught:
        await stack.adapter(api_key=api_key, signature_key=signature_key).submit(
            _refund(payment_id)
        )
    assert caught.value.provider_code == "UNAUTHORIZED"
    for text in (str(caught.value), repr(caught.value)):
        assert api_key not in text
        assert signature_key not in text


async def test_faults_reach_the_adapter(stack: Stack) -> None:
    payment_id = await stack.new_payment("succeeds")
    adapter = stack.adapter()
    request = _refund(payment_id)
    path = f"/v3/payments/{payment_id}/refunds"
    await stack.add_fault(kind="status", status=503, path_contains=path)
    with pytest.raises(ServerError) as unavailable:
        await adapter.submit(request)
    assert unavailable.value.provider_code == "SYSTEM_TEMPORARILY_UNAVAILABLE"
    assert unavailable.value.retryable
    await stack.add_fault(kind="rate_limit", retry_after="2", path_contains=path)
    with pytest.raises(RateLimitedError) as limited:
        await adapter.submit(request)
    assert limited.value.retry_after == 2.0
    # Neither fault created anything; the retry with the same key creates the refund once.
    refund = await adapter.submit(request)
    journal = stack.sim.core.journal()
    faults = [e["fault"] for e in journal["requests"] if e["path"] == path]
    assert faults == ["status", "rate_limit", None]
    assert journal["refunds_per_key"][request.idempotency_key] == 1
    assert [r["refund_id"] for r in journal["refunds"] if r["payment_id"] == payment_id] == [
        refund.refund_id
    ]


# --- Real socket only --------------------------------------------------------------------------


async def test_process_then_hang_is_unknown_then_the_retry_finds_the_same_refund(
    socket_sim: tuple[PaynowSimulator, str],
) -> None:
    sim, url = socket_sim
    stack = Stack(sim, url, None, [])
    try:
        payment_id = await stack.new_payment("succeeds")
        await stack.add_fault(
            kind="process_then_hang",
            seconds=1.0,
            method="POST",
            path_contains=f"/v3/payments/{payment_id}/refunds",
        )
        request = _refund(payment_id)
        impatient = _adapter(stack.client(timeout=0.3))
        with pytest.raises(UnknownOutcomeError) as caught:
            await impatient.submit(request)
        assert caught.value.outcome_unknown
        assert caught.value.retryable
        refund = await stack.adapter().submit(request)
        journal = sim.core.journal()
        assert journal["refunds_per_key"][request.idempotency_key] == 1
        made = [r for r in journal["refunds"] if r["idempotency_key"] == request.idempotency_key]
        assert [r["refund_id"] for r in made] == [refund.refund_id]
    finally:
        for client in stack.clients:
            await client.aclose()


async def test_connection_refused() -> None:
    base_url = f"http://127.0.0.1:{free_port()}{PREFIX}"
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
        with pytest.raises(ProviderConnectError) as caught:
            await _adapter(client).submit(_refund("ABCD-123-456-789"))
    error: ProviderError = caught.value
    assert error.retryable
    assert not error.outcome_unknown
    for text in (str(error), repr(error)):
        assert DEFAULT_API_KEY not in text
        assert DEFAULT_SIGNATURE_KEY not in text
