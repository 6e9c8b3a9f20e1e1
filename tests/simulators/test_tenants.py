"""Simulator tenants: several Mews tokens (one a portfolio token) and several Paynow shops,
each checking its own credentials, each seeing only its own payments; the journal names the
tenant and a digest of the credential, never the credential; a tenant's keys can be rotated."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.paynow.signature import sign_request
from simulators.common import credential_digest
from simulators.mews import DEFAULT_ACCESS_TOKEN, DEFAULT_CLIENT_TOKEN, MewsSimulator
from simulators.mews.seed import ENTERPRISE_ID
from simulators.paynow import PaynowSimulator
from simulators.paynow.seed import DEFAULT_API_KEY

REFUND = "/api/connector/v1/payments/refund"
GET_ALL = "/api/connector/v1/payments/getAll"
HOTEL = str(uuid.UUID(int=0xA1))
GROUP_A, GROUP_B = str(uuid.UUID(int=0xB1)), str(uuid.UUID(int=0xB2))


@pytest.fixture
async def mews() -> AsyncIterator[tuple[MewsSimulator, httpx.AsyncClient]]:
    sim = MewsSimulator()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://mews.sim"
    ) as http:
        for name, body in (
            ("hotel", {"client_token": "CT-H", "access_token": "AT-H", "enterprise_ids": [HOTEL]}),
            (
                "group",
                {
                    "client_token": "CT-G",
                    "access_token": "AT-G",
                    "enterprise_ids": [GROUP_A, GROUP_B],
                    "portfolio": True,
                },
            ),
        ):
            response = await http.put(f"/_sim/tenants/{name}", json=body)
            assert response.status_code == 200, response.text
        yield sim, http


async def mews_payment(http: httpx.AsyncClient, enterprise_id: str) -> dict[str, Any]:
    response = await http.post(
        "/_sim/payments", json={"scenario": "succeeds", "enterprise_id": enterprise_id}
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


def mews_refund(payment: dict[str, Any], client: str, access: str, **extra: Any) -> dict[str, Any]:
    return {
        "ClientToken": client,
        "AccessToken": access,
        "Client": "tenant tests",
        "PaymentId": payment["payment_id"],
        "AccountId": payment["account_id"],
        "Reason": "test",
        **extra,
    }


async def test_mews_each_token_refunds_only_its_own_enterprises(
    mews: tuple[MewsSimulator, httpx.AsyncClient],
) -> None:
    sim, http = mews
    at_hotel, at_b = await mews_payment(http, HOTEL), await mews_payment(http, GROUP_B)

    # The hotel's token, on its payment: made; on the group's payment: unknown to it.
    assert (await http.post(REFUND, json=mews_refund(at_hotel, "CT-H", "AT-H"))).is_success
    refused = await http.post(REFUND, json=mews_refund(at_b, "CT-H", "AT-H"))
    assert refused.status_code == 400
    assert refused.json()["Message"] == "Invalid PaymentId."
    # The default demo token does not reach the hotel either.
    other = await http.post(
        REFUND, json=mews_refund(at_hotel, DEFAULT_CLIENT_TOKEN, DEFAULT_ACCESS_TOKEN)
    )
    assert other.status_code == 400
    # A token with another tenant's client token: 401.
    assert (await http.post(REFUND, json=mews_refund(at_hotel, "CT-G", "AT-H"))).status_code == 401

    # The portfolio token needs EnterpriseId, and reaches both of its enterprises only.
    no_id = await http.post(REFUND, json=mews_refund(at_b, "CT-G", "AT-G"))
    assert no_id.status_code == 400
    assert "EnterpriseId" in no_id.json()["Message"]
    made = await http.post(REFUND, json=mews_refund(at_b, "CT-G", "AT-G", EnterpriseId=GROUP_B))
    assert made.is_success, made.text
    wrong = await http.post(REFUND, json=mews_refund(at_hotel, "CT-G", "AT-G", EnterpriseId=HOTEL))
    assert wrong.status_code == 400

    # getAll by account: a token sees its own enterprises' payments only.
    def by_account(payment: dict[str, Any], client: str, access: str) -> dict[str, Any]:
        return {
            "ClientToken": client,
            "AccessToken": access,
            "Client": "tenant tests",
            "AccountIds": [payment["account_id"]],
            "Limitation": {"Count": 10},
        }

    seen = await http.post(GET_ALL, json=by_account(at_b, "CT-H", "AT-H"))
    assert seen.json()["Payments"] == []
    seen = await http.post(GET_ALL, json=by_account(at_b, "CT-G", "AT-G"))
    assert {p["Kind"] for p in seen.json()["Payments"]} == {"Payment", "Refund"}

    journal = sim.core.journal()
    refunds = {r["payment_id"]: r for r in journal["refunds"]}
    assert refunds[at_hotel["payment_id"]]["tenant"] == "hotel"
    assert refunds[at_b["payment_id"]]["tenant"] == "group"
    assert refunds[at_b["payment_id"]]["credential"] == credential_digest("AT-G")
    tenants = [e["tenant"] for e in journal["requests"]]
    assert tenants[:3] == ["hotel", "hotel", "default"]
    assert tenants[3] is None  # no tenant's credentials: none noted
    text = json.dumps(journal) + json.dumps(sim.tenants())
    for secret in ("AT-H", "AT-G", "CT-H", "CT-G", DEFAULT_ACCESS_TOKEN):
        assert f'"{secret}"' not in text


async def test_mews_rotated_token_replaces_the_old_one(
    mews: tuple[MewsSimulator, httpx.AsyncClient],
) -> None:
    sim, http = mews
    payment = await mews_payment(http, HOTEL)
    rotated = {"client_token": "CT-H", "access_token": "AT-H-2", "enterprise_ids": [HOTEL]}
    assert (await http.put("/_sim/tenants/hotel", json=rotated)).status_code == 200

    old = await http.post(REFUND, json=mews_refund(payment, "CT-H", "AT-H"))
    assert old.status_code == 401
    new = await http.post(REFUND, json=mews_refund(payment, "CT-H", "AT-H-2"))
    assert new.is_success, new.text
    assert sim.core.journal()["refunds"][-1]["credential"] == credential_digest("AT-H-2")

    # Another tenant's token cannot be taken over; a reset brings back the seeded tenants.
    taken = {"client_token": "x", "access_token": "AT-G", "enterprise_ids": [HOTEL]}
    assert (await http.put("/_sim/tenants/thief", json=taken)).status_code == 409
    assert (await http.post("/_sim/reset")).status_code == 204
    assert [t["name"] for t in sim.tenants()] == ["default", "portfolio"]
    assert sim.tenants()[0]["enterprise_ids"] == [ENTERPRISE_ID]


@pytest.fixture
async def paynow() -> AsyncIterator[tuple[PaynowSimulator, httpx.AsyncClient]]:
    sim = PaynowSimulator()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://paynow.sim"
    ) as http:
        shop = {"api_key": "KEY-B", "signature_key": "SIG-B"}
        assert (await http.put("/_sim/shops/shop-b", json=shop)).status_code == 200
        yield sim, http


async def paynow_call(
    http: httpx.AsyncClient, path: str, api_key: str, signature_key: str, key: str, body: str = ""
) -> httpx.Response:
    headers = {
        "Api-Key": api_key,
        "Idempotency-Key": key,
        "Accept": "application/json",
        "Signature": sign_request(
            api_key=api_key, idempotency_key=key, signature_key=signature_key, body=body
        ),
    }
    if body:
        headers["Content-Type"] = "application/json"
        return await http.post(path, content=body, headers=headers)
    return await http.get(path, headers=headers)


async def test_paynow_each_shop_signs_with_its_keys_and_sees_its_payments(
    paynow: tuple[PaynowSimulator, httpx.AsyncClient],
) -> None:
    sim, http = paynow
    response = await http.post("/_sim/payments", json={"scenario": "succeeds", "shop": "shop-b"})
    assert response.status_code == 201, response.text
    payment = response.json()["payment_id"]
    status = f"/v3/payments/{payment}/status"

    assert (await paynow_call(http, status, "KEY-B", "SIG-B", "k1")).status_code == 200
    # The default shop's keys do not see shop B's payment; shop B's key with a wrong
    # signature key is refused.
    default_keys = (DEFAULT_API_KEY, sim._signature_key)
    assert (await paynow_call(http, status, *default_keys, "k2")).status_code == 404
    assert (await paynow_call(http, status, "KEY-B", "SIG-X", "k3")).status_code == 401
    body = '{"amount":100}'
    made = await paynow_call(http, f"/v3/payments/{payment}/refunds", "KEY-B", "SIG-B", "r1", body)
    assert made.status_code == 201, made.text
    # The same idempotency key at another shop is another shop's business: no replay there.
    seed = "/v3/payments/SUCC-EED-S00-001/refunds"
    other = await paynow_call(http, seed, *default_keys, "r1", body)
    assert other.status_code == 201
    assert other.json()["refundId"] != made.json()["refundId"]

    journal = sim.core.journal()
    assert [e["tenant"] for e in journal["requests"]] == [
        "shop-b",
        "default",
        "shop-b",
        "shop-b",
        "default",
    ]
    assert [r["tenant"] for r in journal["refunds"]] == ["shop-b", "default"]
    assert journal["refunds"][0]["credential"] == credential_digest("KEY-B")
    assert "KEY-B" not in json.dumps(journal)
    assert "SIG-B" not in json.dumps(sim.shops())

    # Rotation: new keys for shop B; the old ones are refused from then on.
    rotated = {"api_key": "KEY-B2", "signature_key": "SIG-B2"}
    assert (await http.put("/_sim/shops/shop-b", json=rotated)).status_code == 200
    assert (await paynow_call(http, status, "KEY-B", "SIG-B", "k4")).status_code == 401
    assert (await paynow_call(http, status, "KEY-B2", "SIG-B2", "k5")).status_code == 200
