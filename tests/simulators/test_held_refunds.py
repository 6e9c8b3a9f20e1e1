"""The simulators' ``held`` scenario and ``POST /_sim/refunds/settle``: a held refund stays
pending on every status read until it is settled, then keeps its final state; only held
refunds are settled (the benchmark of many pending refunds relies on both)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from providers.paynow import sign_request
from simulators.mews import DEFAULT_ACCESS_TOKEN, DEFAULT_CLIENT_TOKEN, MewsSimulator
from simulators.paynow import PaynowSimulator
from simulators.paynow.seed import DEFAULT_API_KEY, DEFAULT_SIGNATURE_KEY

CREDENTIALS = {
    "ClientToken": DEFAULT_CLIENT_TOKEN,
    "AccessToken": DEFAULT_ACCESS_TOKEN,
    "Client": "sim tests 1.0",
}


@pytest.fixture
async def mews() -> AsyncIterator[httpx.AsyncClient]:
    sim = MewsSimulator()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://mews.sim"
    ) as http:
        yield http


@pytest.fixture
async def paynow() -> AsyncIterator[httpx.AsyncClient]:
    sim = PaynowSimulator()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://paynow.sim"
    ) as http:
        yield http


async def mews_refund(http: httpx.AsyncClient, scenario: str) -> str:
    made = await http.post("/_sim/payments", json={"scenario": scenario})
    assert made.status_code == 201, made.text
    payment = made.json()
    answer = await http.post(
        "/api/connector/v1/payments/refund",
        json={
            **CREDENTIALS,
            "PaymentId": payment["payment_id"],
            "AccountId": payment["account_id"],
            "Reason": "test",
        },
    )
    assert answer.status_code == 200, answer.text
    refund_id: str = answer.json()["RefundId"]
    return refund_id


async def mews_state(http: httpx.AsyncClient, refund_id: str) -> str:
    answer = await http.post(
        "/api/connector/v1/payments/getAll",
        json={**CREDENTIALS, "PaymentIds": [refund_id], "Limitation": {"Count": 10}},
    )
    assert answer.status_code == 200, answer.text
    state: str = answer.json()["Payments"][0]["State"]
    return state


async def test_mews_held_refunds_stay_pending_until_settled_then_stay_charged(
    mews: httpx.AsyncClient,
) -> None:
    held = [await mews_refund(mews, "held") for _ in range(2)]
    slow = await mews_refund(mews, "slow")
    for _ in range(15):  # more reads than any other scenario's script is long
        assert {await mews_state(mews, r) for r in held} == {"Pending"}

    settled = await mews.post("/_sim/refunds/settle")
    assert settled.status_code == 200
    assert settled.json() == {"settled": 2, "state": "Charged"}
    for _ in range(3):
        assert {await mews_state(mews, r) for r in held} == {"Charged"}
    # Not held: left to its own script (one read so far).
    assert await mews_state(mews, slow) == "Pending"
    # Nothing is left to settle; a state that is not final is refused.
    assert (await mews.post("/_sim/refunds/settle")).json()["settled"] == 0
    refused = await mews.post("/_sim/refunds/settle", json={"state": "Pending"})
    assert refused.status_code == 422


async def test_mews_held_refunds_settle_to_the_state_asked(mews: httpx.AsyncClient) -> None:
    held = await mews_refund(mews, "held")
    answer = await mews.post("/_sim/refunds/settle", json={"state": "Failed"})
    assert answer.json() == {"settled": 1, "state": "Failed"}
    assert await mews_state(mews, held) == "Failed"


async def paynow_call(http: httpx.AsyncClient, method: str, path: str, body: str = "") -> str:
    key = uuid.uuid4().hex
    headers = {
        "Accept": "application/json",
        "Api-Key": DEFAULT_API_KEY,
        "Idempotency-Key": key,
        "Signature": sign_request(
            api_key=DEFAULT_API_KEY,
            idempotency_key=key,
            signature_key=DEFAULT_SIGNATURE_KEY,
            body=body,
        ),
    }
    if body:
        headers["Content-Type"] = "application/json"
    answer = await http.request(method, path, content=body.encode() or None, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    return answer.text


async def paynow_refund(http: httpx.AsyncClient, scenario: str) -> str:
    made = await http.post("/_sim/payments", json={"scenario": scenario})
    assert made.status_code == 201, made.text
    body = json.dumps({"amount": 1000, "reason": "OTHER"})
    answer = await paynow_call(
        http, "POST", f"/v3/payments/{made.json()['payment_id']}/refunds", body
    )
    refund_id: str = json.loads(answer)["refundId"]
    return refund_id


async def paynow_status(http: httpx.AsyncClient, refund_id: str) -> str:
    answer = await paynow_call(http, "GET", f"/v3/refunds/{refund_id}/status")
    status: str = json.loads(answer)["status"]
    return status


async def test_paynow_held_refunds_stay_pending_until_settled_then_stay_final(
    paynow: httpx.AsyncClient,
) -> None:
    held = [await paynow_refund(paynow, "held") for _ in range(2)]
    slow = await paynow_refund(paynow, "slow")
    for _ in range(15):
        assert {await paynow_status(paynow, r) for r in held} == {"PENDING"}

    settled = await paynow.post("/_sim/refunds/settle")
    assert settled.status_code == 200
    assert settled.json() == {"settled": 2, "status": "SUCCESSFUL"}
    for _ in range(3):
        assert {await paynow_status(paynow, r) for r in held} == {"SUCCESSFUL"}
    assert await paynow_status(paynow, slow) == "PENDING"
    assert (await paynow.post("/_sim/refunds/settle")).json()["settled"] == 0
    refused = await paynow.post("/_sim/refunds/settle", json={"status": "PENDING"})
    assert refused.status_code == 422


async def test_paynow_held_refunds_settle_to_failed_when_asked(
    paynow: httpx.AsyncClient,
) -> None:
    held = await paynow_refund(paynow, "held")
    answer = await paynow.post("/_sim/refunds/settle", json={"status": "FAILED"})
    assert answer.json() == {"settled": 1, "status": "FAILED"}
    assert await paynow_status(paynow, held) == "FAILED"
