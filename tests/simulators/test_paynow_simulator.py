"""The Paynow simulator over raw HTTP: auth, validation, idempotency, scenarios, faults."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from providers.paynow import sign_request
from simulators.paynow import PaynowSimulator
from simulators.paynow.seed import DEFAULT_API_KEY, DEFAULT_SIGNATURE_KEY, SCENARIOS
from simulators.paynow.state import error_answer

PAYMENT_ID = re.compile(r"^([a-zA-Z0-9]{4}(-[a-zA-Z0-9]{3}){3})$")
# The errorTypes Paynow documents, plus the four only unofficial client code names.
DOCUMENTED_ERROR_TYPES = {
    "VALIDATION_ERROR",
    "INSUFFICIENT_BALANCE_FUNDS",
    "UNAUTHORIZED",
    "NOT_FOUND",
    "INTERNAL_SERVER_ERROR",
    "SYSTEM_TEMPORARILY_UNAVAILABLE",
    "REFUND_AMOUNT_TOO_LARGE",
    "REFUND_AMOUNT_TOO_SMALL",
    "REFUND_POSSIBILITY_EXPIRED",
    "INSUFFICIENT_CARD_BALANCE_FUNDS",
}


@pytest.fixture
def sim() -> PaynowSimulator:
    return PaynowSimulator()


@pytest.fixture
async def client(sim: PaynowSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://paynow.sim"
    ) as http:
        yield http


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    body: str = "",
    key: str | None = "key-1",
    api_key: str | None = DEFAULT_API_KEY,
    signature_key: str = DEFAULT_SIGNATURE_KEY,
    signature: str | None = None,
    signed_body: str | None = None,
    params: dict[str, str] | None = None,
    accept: str | None = "application/json",
    content_type: str | None = None,
) -> httpx.Response:
    """A v3 call, signed over what is sent unless told otherwise.

    ``Content-Type`` is ``application/json`` with a body unless ``content_type`` says
    otherwise (``""``: none); ``accept=None`` sends no ``Accept``."""
    headers = {}
    if accept is not None:
        headers["Accept"] = accept
    if api_key is not None:
        headers["Api-Key"] = api_key
    if key is not None:
        headers["Idempotency-Key"] = key
    if content_type is None and body:
        content_type = "application/json"
    if content_type:
        headers["Content-Type"] = content_type
    if signature is None and key is not None:
        signature = sign_request(
            api_key=api_key or "",
            idempotency_key=key,
            signature_key=signature_key,
            body=body if signed_body is None else signed_body,
        )
    if signature:
        headers["Signature"] = signature
    sent = client.build_request(
        method, path, content=body.encode() or None, headers=headers, params=params
    )
    if accept is None:
        # httpx adds "Accept: */*" to every request by default: take it off.
        del sent.headers["Accept"]
    return await client.send(sent)


async def new_payment(client: httpx.AsyncClient, scenario: str, **fields: Any) -> str:
    response = await client.post("/_sim/payments", json={"scenario": scenario, **fields})
    assert response.status_code == 201, response.text
    payment_id: str = response.json()["payment_id"]
    return payment_id


async def create(
    client: httpx.AsyncClient,
    payment_id: str,
    amount: int = 1000,
    *,
    key: str = "key-1",
    **fields: Any,
) -> httpx.Response:
    body = json.dumps({"amount": amount, **fields}, separators=(",", ":"))
    return await call(client, "POST", f"/v3/payments/{payment_id}/refunds", body=body, key=key)


async def advance_clock(client: httpx.AsyncClient, seconds: float) -> dict[str, Any]:
    response = await client.post("/_sim/clock", json={"advance_s": seconds})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def read(client: httpx.AsyncClient, refund_id: str) -> dict[str, Any]:
    response = await call(client, "GET", f"/v3/refunds/{refund_id}/status", key="read")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_paynow_error(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    (error,) = body["errors"]
    assert error["errorType"] == error_type
    assert error_type in DOCUMENTED_ERROR_TYPES
    message: str = error["message"]
    assert message
    return message


# --- Seeds and /_sim/payments -------------------------------------------------------------------


async def test_seeded_payments_cover_every_scenario(
    sim: PaynowSimulator, client: httpx.AsyncClient
) -> None:
    payments = sim.payments()
    assert {p["scenario"] for p in payments} == set(SCENARIOS)
    assert all(PAYMENT_ID.match(p["payment_id"]) for p in payments)
    assert {p["currency"] for p in payments} == {"PLN"}
    assert (await client.get("/_sim/payments")).json() == payments
    # Fixed ids: a second simulator seeds the very same ones.
    assert [p["payment_id"] for p in PaynowSimulator().payments()] == [
        p["payment_id"] for p in payments
    ]
    by_scenario = {p["scenario"]: p for p in payments}
    assert by_scenario["not_confirmed"]["status"] == "PENDING"
    partly = by_scenario["partly_refunded"]
    assert (partly["amount_minor"], partly["refunded_minor"]) == (10_000, 6_000)


async def test_sim_payments_creates_a_payment(client: httpx.AsyncClient) -> None:
    response = await client.post("/_sim/payments", json={"scenario": "slow"})
    assert response.status_code == 201
    made = response.json()
    assert PAYMENT_ID.match(made["payment_id"])
    assert {k: made[k] for k in ("currency", "amount_minor", "status", "method", "scenario")} == {
        "currency": "PLN",
        "amount_minor": 10_000,
        "status": "CONFIRMED",
        "method": "card",
        "scenario": "slow",
    }
    assert (made["marketplace"], made["voucher_minor"]) == (False, 0)
    custom = await client.post(
        "/_sim/payments",
        json={
            "scenario": "succeeds",
            "amount_minor": 500,
            "currency": "EUR",
            "status": "REJECTED",
            "method": "blik",
            "refunded_minor": 100,
            "marketplace": True,
            "voucher_minor": 200,
        },
    )
    assert custom.json()["status"] == "REJECTED"
    assert custom.json()["refunded_minor"] == 100
    assert (custom.json()["marketplace"], custom.json()["voucher_minor"]) == (True, 200)
    answer = await call(client, "GET", f"/v3/payments/{custom.json()['payment_id']}/status")
    assert answer.json() == {"paymentId": custom.json()["payment_id"], "status": "REJECTED"}


@pytest.mark.parametrize(
    "spec",
    [
        {"scenario": "nope"},
        {"scenario": "succeeds", "method": "cash"},
        {"scenario": "succeeds", "amount_minor": 0},
        {"scenario": "succeeds", "amount_minor": 100, "refunded_minor": 101},
        {"scenario": "succeeds", "colour": "blue"},
        {"scenario": "succeeds", "amount_minor": 100, "voucher_minor": 101},
        {"scenario": "succeeds", "marketplace": "yes"},
    ],
)
async def test_sim_payments_refuses_bad_specs(
    client: httpx.AsyncClient, spec: dict[str, Any]
) -> None:
    response = await client.post("/_sim/payments", json=spec)
    assert response.status_code == 422
    assert response.json()["error"]


async def test_reset_restores_the_seed(sim: PaynowSimulator, client: httpx.AsyncClient) -> None:
    seeded = sim.payments()
    payment_id = await new_payment(client, "succeeds")
    assert (await create(client, payment_id)).status_code == 201
    assert (await client.post("/_sim/reset")).status_code == 204
    assert sim.payments() == seeded
    assert sim.core.journal()["refunds"] == []
    sim.reset()
    assert sim.payments() == seeded


# --- Authentication ----------------------------------------------------------------------------


async def test_published_vector_passes_authentication(client: httpx.AsyncClient) -> None:
    key = "d243fdb3-c287-484a-bb9c-58536f2794c1"
    path = "/v3/refunds/RAAA-BBB-CCC-DDD/status"
    good = await call(
        client, "GET", path, key=key, signature="fXwLZRwo0WiGll90PPl5oULX9VKA0gpFA/3+E+NRp5E="
    )
    assert_paynow_error(good, 404, "NOT_FOUND")  # authenticated; the refund is unknown
    wrong = await call(
        client, "GET", path, key=key, signature="xSNeLriZGWGDTPYKdQ3C9+M0qddnyMmRKIQBwumPfro="
    )
    assert_paynow_error(wrong, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("api_key", [None, "", "97a55694-5478-43b5-b406-000000000000"])
async def test_bad_api_key_is_401(client: httpx.AsyncClient, api_key: str | None) -> None:
    response = await call(client, "GET", "/v3/payments/SUCC-EED-S00-001/status", api_key=api_key)
    message = assert_paynow_error(response, 401, "UNAUTHORIZED")
    assert "Api-Key" in message


async def test_bad_signatures_are_401(client: httpx.AsyncClient) -> None:
    path = "/v3/payments/SUCC-EED-S00-001/refunds"
    body = '{"amount":1000}'
    attempts = [
        await call(client, "POST", path, body=body, signature=""),
        await call(client, "POST", path, body=body, signed_body='{"amount":1}'),
        await call(client, "POST", path, body=body, signature_key="another-signature-key"),
        # Signed without parameters, sent with one: the parameters are part of the signature.
        await call(client, "GET", "/v3/payments/SUCC-EED-S00-001/status", params={"a": "1"}),
    ]
    for response in attempts:
        assert "Signature" in assert_paynow_error(response, 401, "UNAUTHORIZED")


async def test_simulator_keys_are_configurable() -> None:
    sim = PaynowSimulator(api_key="my-api-key", signature_key="my-signature-key")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://paynow.sim"
    ) as http:
        path = "/v3/payments/SUCC-EED-S00-001/status"
        assert (await call(http, "GET", path)).status_code == 401
        ok = await call(http, "GET", path, api_key="my-api-key", signature_key="my-signature-key")
        assert ok.json() == {"paymentId": "SUCC-EED-S00-001", "status": "CONFIRMED"}


@pytest.mark.parametrize(("key", "expected"), [(None, 400), ("k" * 46, 400), ("k" * 45, 200)])
async def test_idempotency_key_is_required_and_short(
    client: httpx.AsyncClient, key: str | None, expected: int
) -> None:
    signature = None
    if key is None:
        signature = sign_request(
            api_key=DEFAULT_API_KEY, idempotency_key="", signature_key=DEFAULT_SIGNATURE_KEY
        )
    response = await call(
        client, "GET", "/v3/payments/SUCC-EED-S00-001/status", key=key, signature=signature
    )
    if expected == 400:
        assert "Idempotency-Key" in assert_paynow_error(response, 400, "VALIDATION_ERROR")
    else:
        assert response.status_code == 200


# --- Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{}", "amount"),
        ('{"amount":0}', "amount"),
        ('{"amount":-5}', "amount"),
        ('{"amount":"100"}', "amount"),
        ('{"amount":10.5}', "amount"),
        ('{"amount":true}', "amount"),
        ('{"amount":10000000000}', "amount"),
        ('{"amount":100,"reason":"BECAUSE"}', "reason"),
        ('{"amount":100,"transfers":{}}', "transfers"),
        ('{"amount":100,"transfers":[1]}', "transfers[0]"),
        (
            '{"amount":100,"transfers":[{"sellerId":"s234567890123456","grossAmount":1,'
            '"feeAmount":0}]}',
            "transfers[0].sellerId",
        ),
        (
            '{"amount":100,"transfers":[{"sellerId":"s","grossAmount":100000001,"feeAmount":0}]}',
            "transfers[0].grossAmount",
        ),
        (
            '{"amount":100,"transfers":[{"sellerId":"s","grossAmount":1,"feeAmount":-1}]}',
            "transfers[0].feeAmount",
        ),
        ("[100]", "body"),
        ("amount=100", "body"),
    ],
)
async def test_invalid_bodies_are_400(client: httpx.AsyncClient, body: str, field: str) -> None:
    payment_id = await new_payment(client, "succeeds")
    response = await call(client, "POST", f"/v3/payments/{payment_id}/refunds", body=body)
    message = assert_paynow_error(response, 400, "VALIDATION_ERROR")
    assert message.startswith(f"{field}:")


async def test_a_full_valid_body_is_accepted(client: httpx.AsyncClient) -> None:
    payment_id = await new_payment(client, "marketplace")
    body = json.dumps(
        {
            "amount": 1000,
            "reason": "REFUND_AFTER_14",
            "transfers": [{"sellerId": "s" * 15, "grossAmount": 1000, "feeAmount": 100_000_000}],
        }
    )
    response = await call(client, "POST", f"/v3/payments/{payment_id}/refunds", body=body)
    assert response.status_code == 201
    assert response.headers["X-Request-Id"]


async def test_bad_payment_id_is_400_and_unknown_ones_404(client: httpx.AsyncClient) -> None:
    bad = await call(client, "POST", "/v3/payments/ABC-DEF/refunds", body='{"amount":100}')
    assert "paymentId" in assert_paynow_error(bad, 400, "VALIDATION_ERROR")
    unknown = await create(client, "ZZZZ-000-000-000")
    assert_paynow_error(unknown, 404, "NOT_FOUND")
    status = await call(client, "GET", "/v3/payments/ZZZZ-000-000-000/status")
    assert_paynow_error(status, 404, "NOT_FOUND")


# --- Business rules ----------------------------------------------------------------------------


async def test_refund_of_a_payment_not_confirmed(client: httpx.AsyncClient) -> None:
    response = await create(client, "NCNF-000-000-001")
    assert_paynow_error(response, 400, "VALIDATION_ERROR")


async def test_over_refund_counts_every_live_refund(client: httpx.AsyncClient) -> None:
    payment_id = await new_payment(client, "awaiting", amount_minor=10_000)
    first = await create(client, payment_id, 6000, key="a")
    assert first.status_code == 201
    over = await create(client, payment_id, 4001, key="b")
    assert_paynow_error(over, 400, "REFUND_AMOUNT_TOO_LARGE")
    # A cancelled refund gives its amount back.
    cancel = await call(client, "POST", f"/v3/refunds/{first.json()['refundId']}/cancel", key="c")
    assert cancel.status_code == 200
    assert (await create(client, payment_id, 10_000, key="d")).status_code == 201


async def test_minimum_refund_by_method(client: httpx.AsyncClient) -> None:
    card = await new_payment(client, "succeeds", method="card")
    assert_paynow_error(await create(client, card, 99, key="a"), 400, "REFUND_AMOUNT_TOO_SMALL")
    assert (await create(client, card, 100, key="b")).status_code == 201
    blik = await new_payment(client, "succeeds", method="blik")
    assert (await create(client, blik, 1, key="c")).status_code == 201


async def test_insufficient_funds_is_not_remembered(
    sim: PaynowSimulator, client: httpx.AsyncClient
) -> None:
    for _ in range(2):
        response = await create(client, "NOFU-NDS-000-001", key="same")
        assert_paynow_error(response, 400, "INSUFFICIENT_BALANCE_FUNDS")
    assert sim.core.journal()["refunds"] == []


# --- Idempotency -------------------------------------------------------------------------------


async def test_same_key_same_body_is_the_same_refund(
    sim: PaynowSimulator, client: httpx.AsyncClient
) -> None:
    payment_id = await new_payment(client, "succeeds")
    path = f"/v3/payments/{payment_id}/refunds"
    first = await create(client, payment_id, 1500, key="idem-1")
    second = await create(client, payment_id, 1500, key="idem-1")
    # The same JSON, spaced and ordered differently, is the same request.
    third = await call(
        client, "POST", path, body='{ "reason": null, "amount": 1500 }', key="idem-1"
    )
    assert first.status_code == second.status_code == third.status_code == 201
    assert first.json() == second.json() == third.json()
    other = await create(client, payment_id, 1600, key="idem-1")
    assert "different" in assert_paynow_error(other, 422, "VALIDATION_ERROR")
    journal = sim.core.journal()
    assert journal["refunds_per_key"] == {"idem-1": 1}
    assert journal["refunds_per_payment"] == {payment_id: 1}


def test_concurrent_creates_with_one_key_make_one_refund(sim: PaynowSimulator) -> None:
    def attempt(_: int) -> tuple[int, dict[str, Any]]:
        return sim.state.create_refund(
            "SUCC-EED-S00-001", idempotency_key="race", fingerprint="f", amount_minor=100
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(attempt, range(32)))
    assert {status for status, _ in answers} == {201}
    assert len({body["refundId"] for _, body in answers}) == 1
    assert sim.core.journal()["refunds_per_key"] == {"race": 1}


# --- Refund state machine ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "created", "reads"),
    [
        ("succeeds", "NEW", ["PENDING", "SUCCESSFUL", "SUCCESSFUL"]),
        ("succeeds_immediately", "SUCCESSFUL", ["SUCCESSFUL"]),
        ("fails", "NEW", ["PENDING", "FAILED", "FAILED"]),
        ("awaiting", "NEW", ["NEW"] * 20 + ["PENDING", "SUCCESSFUL", "SUCCESSFUL"]),
        ("awaiting_funds", "NEW", ["NEW"] * 50),
        ("slow", "NEW", ["PENDING"] * 10 + ["SUCCESSFUL"]),
    ],
)
async def test_scenario_timelines(
    client: httpx.AsyncClient, scenario: str, created: str, reads: list[str]
) -> None:
    payment_id = await new_payment(client, scenario)
    response = await create(client, payment_id)
    assert response.json()["status"] == created
    refund_id = response.json()["refundId"]
    assert PAYMENT_ID.match(refund_id)
    seen = [await read(client, refund_id) for _ in reads]
    assert [s["status"] for s in seen] == reads
    reasons = {s.get("failureReason") for s in seen if s["status"] == "FAILED"}
    assert reasons == ({"CARD_BALANCE_ERROR"} if scenario == "fails" else set())


async def test_cancel_only_while_new(client: httpx.AsyncClient) -> None:
    awaiting = (await create(client, "AWAI-TNG-000-001", key="a")).json()["refundId"]
    cancelled = await call(client, "POST", f"/v3/refunds/{awaiting}/cancel", key="cancel-a")
    assert cancelled.json() == {"refundId": awaiting, "status": "CANCELLED"}
    assert (await read(client, awaiting))["status"] == "CANCELLED"
    # The same cancel again (same key) replays; another key is refused: it is no longer NEW.
    again = await call(client, "POST", f"/v3/refunds/{awaiting}/cancel", key="cancel-a")
    assert again.json() == cancelled.json()
    late = await call(client, "POST", f"/v3/refunds/{awaiting}/cancel", key="cancel-b")
    assert_paynow_error(late, 400, "VALIDATION_ERROR")

    moving = (await create(client, "SUCC-EED-S00-001", key="b")).json()["refundId"]
    await read(client, moving)  # PENDING
    refused = await call(client, "POST", f"/v3/refunds/{moving}/cancel", key="cancel-c")
    assert_paynow_error(refused, 400, "VALIDATION_ERROR")
    assert (await read(client, moving))["status"] == "SUCCESSFUL"  # the refusal changed nothing
    unknown = await call(client, "POST", "/v3/refunds/RZZZ-ZZZ-ZZZ-ZZZ/cancel", key="cancel-d")
    assert_paynow_error(unknown, 404, "NOT_FOUND")


# --- Faults ------------------------------------------------------------------------------------


async def test_faults_answer_paynow_errors_and_show_in_the_journal(
    sim: PaynowSimulator, client: httpx.AsyncClient
) -> None:
    faults = [
        {"kind": "status", "status": 503, "path_contains": "/refunds"},
        {"kind": "rate_limit", "retry_after": "3", "path_contains": "/refunds"},
    ]
    assert (await client.post("/_sim/faults", json=faults)).status_code == 201
    unavailable = await create(client, "SUCC-EED-S00-001", key="f-1")
    assert_paynow_error(unavailable, 503, "SYSTEM_TEMPORARILY_UNAVAILABLE")
    assert unavailable.headers["X-Request-Id"]
    limited = await create(client, "SUCC-EED-S00-001", key="f-1")
    # No rate limit is documented, nor an errorType for it: the nearest documented one.
    assert_paynow_error(limited, 429, "SYSTEM_TEMPORARILY_UNAVAILABLE")
    assert limited.headers["Retry-After"] == "3"
    assert (await create(client, "SUCC-EED-S00-001", key="f-1")).status_code == 201
    journal = (await client.get("/_sim/journal")).json()
    assert [(e["status"], e["fault"], e["idempotency_key"]) for e in journal["requests"]] == [
        (503, "status", "f-1"),
        (429, "rate_limit", "f-1"),
        (201, None, "f-1"),
    ]
    assert journal["refunds_per_key"] == {"f-1": 1}
    assert sim.core.journal() == journal


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504])
async def test_fault_answers_carry_documented_error_types_only(
    client: httpx.AsyncClient, status: int
) -> None:
    fault = {"kind": "status", "status": status, "path_contains": "/status"}
    assert (await client.post("/_sim/faults", json=fault)).status_code == 201
    response = await call(client, "GET", "/v3/payments/SUCC-EED-S00-001/status")
    assert response.status_code == status
    (error,) = response.json()["errors"]
    assert error["errorType"] in DOCUMENTED_ERROR_TYPES


def test_invented_error_types_cannot_be_answered() -> None:
    with pytest.raises(ValueError, match="TOO_MANY_REQUESTS"):
        error_answer(429, "slow down", "TOO_MANY_REQUESTS")


# --- Required headers --------------------------------------------------------------------------


def _v3_calls(payment_id: str) -> list[tuple[str, str, str]]:
    return [
        ("POST", f"/v3/payments/{payment_id}/refunds", '{"amount":1000}'),
        ("GET", f"/v3/payments/{payment_id}/status", ""),
        ("GET", "/v3/refunds/RAAA-BBB-CCC-DDD/status", ""),
        ("POST", "/v3/refunds/RAAA-BBB-CCC-DDD/cancel", ""),
    ]


@pytest.mark.parametrize("accept", [None, "", "text/html", "application/xml, text/plain"])
async def test_every_call_needs_an_accept_admitting_json(
    sim: PaynowSimulator, client: httpx.AsyncClient, accept: str | None
) -> None:
    payment_id = await new_payment(client, "succeeds")
    for method, path, body in _v3_calls(payment_id):
        response = await call(client, method, path, body=body, accept=accept)
        assert "Accept" in assert_paynow_error(response, 400, "VALIDATION_ERROR"), path
    assert sim.core.journal()["refunds"] == []


@pytest.mark.parametrize("accept", ["*/*", "application/json", "text/html, application/*;q=0.5"])
async def test_accept_may_be_any_range_admitting_json(
    client: httpx.AsyncClient, accept: str
) -> None:
    payment_id = await new_payment(client, "succeeds")
    body = '{"amount":1000}'
    created = await call(
        client, "POST", f"/v3/payments/{payment_id}/refunds", body=body, accept=accept
    )
    assert created.status_code == 201, created.text
    status = await call(client, "GET", f"/v3/payments/{payment_id}/status", accept=accept)
    assert status.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_create_needs_a_json_content_type(
    sim: PaynowSimulator, client: httpx.AsyncClient, content_type: str
) -> None:
    payment_id = await new_payment(client, "succeeds")
    response = await call(
        client,
        "POST",
        f"/v3/payments/{payment_id}/refunds",
        body='{"amount":1000}',
        content_type=content_type,
    )
    assert "Content-Type" in assert_paynow_error(response, 400, "VALIDATION_ERROR")
    assert sim.core.journal()["refunds"] == []


async def test_json_content_type_with_a_utf8_charset_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    payment_id = await new_payment(client, "succeeds")
    response = await call(
        client,
        "POST",
        f"/v3/payments/{payment_id}/refunds",
        body='{"amount":1000}',
        content_type="Application/JSON; charset=UTF-8",
    )
    assert response.status_code == 201, response.text


async def test_cancel_with_a_body_is_refused(client: httpx.AsyncClient) -> None:
    refund_id = (await create(client, "AWAI-TNG-000-001", key="a")).json()["refundId"]
    response = await call(client, "POST", f"/v3/refunds/{refund_id}/cancel", body="{}", key="c")
    assert "body" in assert_paynow_error(response, 400, "VALIDATION_ERROR")
    assert (await read(client, refund_id))["status"] == "NEW"


# --- Refund ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "refund_id",
    ["R123", "RAAA-BBB-CCC", "RAAA-BBB-CCC-DDDD", "RAAA_BBB-CCC-DDD", "RAAA-BB!-CCC-DDD"],
)
async def test_malformed_refund_ids_are_400(client: httpx.AsyncClient, refund_id: str) -> None:
    status = await call(client, "GET", f"/v3/refunds/{refund_id}/status")
    assert "refundId" in assert_paynow_error(status, 400, "VALIDATION_ERROR")
    cancel = await call(client, "POST", f"/v3/refunds/{refund_id}/cancel")
    assert "refundId" in assert_paynow_error(cancel, 400, "VALIDATION_ERROR")


async def test_well_formed_unknown_refund_ids_are_404(client: httpx.AsyncClient) -> None:
    for method, action in (("GET", "status"), ("POST", "cancel")):
        response = await call(client, method, f"/v3/refunds/Rzz9-abc-000-XYZ/{action}")
        assert_paynow_error(response, 404, "NOT_FOUND")


# --- Marketplace transfers ---------------------------------------------------------------------


TRANSFER = {"sellerId": "seller-1", "grossAmount": 1000, "feeAmount": 10}


@pytest.mark.parametrize("transfers", [[TRANSFER], []])
async def test_transfers_on_a_payment_that_is_not_marketplace_are_refused(
    sim: PaynowSimulator, client: httpx.AsyncClient, transfers: list[dict[str, Any]]
) -> None:
    response = await create(client, "SUCC-EED-S00-001", 1000, transfers=transfers)
    assert "transfers" in assert_paynow_error(response, 400, "VALIDATION_ERROR")
    assert sim.core.journal()["refunds"] == []
    # The same refund without them goes through.
    assert (await create(client, "SUCC-EED-S00-001", 1000, key="k2")).status_code == 201


async def test_transfers_on_a_marketplace_payment_are_accepted(client: httpx.AsyncClient) -> None:
    payment_id = await new_payment(client, "marketplace")
    two = [
        {"sellerId": "seller-1", "grossAmount": 600, "feeAmount": 6},
        {"sellerId": "seller-2", "grossAmount": 400, "feeAmount": 0},
    ]
    response = await create(client, payment_id, 1000, transfers=two)
    assert response.status_code == 201, response.text
    assert (
        await create(client, "MRKT-PLC-000-001", 1000, key="k2", transfers=[TRANSFER])
    ).status_code == 201


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"transfers": None},
        {"transfers": []},
        {"transfers": [{"sellerId": "seller-1", "grossAmount": 999, "feeAmount": 0}]},
    ],
    ids=["absent", "null", "empty", "short of the amount"],
)
async def test_marketplace_refunds_need_transfers_for_the_whole_amount(
    sim: PaynowSimulator, client: httpx.AsyncClient, fields: dict[str, Any]
) -> None:
    payment_id = await new_payment(client, "marketplace")
    response = await create(client, payment_id, 1000, **fields)
    assert "transfers" in assert_paynow_error(response, 400, "VALIDATION_ERROR")
    assert sim.core.journal()["refunds"] == []


# --- Awaiting refunds, funding and the clock ---------------------------------------------------


async def test_awaiting_refund_stays_new_until_funded_then_succeeds(
    client: httpx.AsyncClient,
) -> None:
    payment_id = await new_payment(client, "awaiting_funds")
    created = await create(client, payment_id, 2500)
    assert created.json()["status"] == "NEW"
    refund_id = created.json()["refundId"]
    assert [(await read(client, refund_id))["status"] for _ in range(30)] == ["NEW"] * 30
    await advance_clock(client, 119 * 3600)  # long, but inside Paynow's 120 h
    assert (await read(client, refund_id))["status"] == "NEW"

    funded = await client.post(f"/_sim/payments/{payment_id}/fund")
    assert funded.status_code == 200
    assert funded.json() == {"payment_id": payment_id, "released_refund_ids": [refund_id]}
    assert [(await read(client, refund_id))["status"] for _ in range(3)] == [
        "PENDING",
        "SUCCESSFUL",
        "SUCCESSFUL",
    ]
    # Funded: past the 120 h nothing is cancelled, and a new refund does not wait.
    await advance_clock(client, 2 * 3600)
    assert (await read(client, refund_id))["status"] == "SUCCESSFUL"
    later = (await create(client, payment_id, 1000, key="k2")).json()["refundId"]
    assert (await read(client, later))["status"] == "PENDING"


@pytest.mark.parametrize("scenario", ["awaiting_funds", "awaiting"])
async def test_awaiting_refund_not_funded_in_120_hours_is_cancelled(
    client: httpx.AsyncClient, scenario: str
) -> None:
    payment_id = await new_payment(client, scenario, amount_minor=10_000)
    refund_id = (await create(client, payment_id, 10_000)).json()["refundId"]
    # The whole payment is held by the awaiting refund.
    held = await create(client, payment_id, 100, key="k2")
    assert_paynow_error(held, 400, "REFUND_AMOUNT_TOO_LARGE")

    clock = await advance_clock(client, 120 * 3600 - 60)
    assert clock["offset_s"] == 120 * 3600 - 60
    assert (await read(client, refund_id))["status"] == "NEW"
    await advance_clock(client, 120)
    assert (await read(client, refund_id))["status"] == "CANCELLED"
    assert (await read(client, refund_id))["status"] == "CANCELLED"
    # Too late for our own cancel, and funding now brings nothing back.
    cancel = await call(client, "POST", f"/v3/refunds/{refund_id}/cancel", key="cancel")
    assert_paynow_error(cancel, 400, "VALIDATION_ERROR")
    funded = await client.post(f"/_sim/payments/{payment_id}/fund")
    assert funded.json()["released_refund_ids"] == []
    assert (await read(client, refund_id))["status"] == "CANCELLED"
    # The cancelled refund gave its amount back.
    assert (await create(client, payment_id, 10_000, key="k3")).status_code == 201


async def test_refunds_that_are_not_awaiting_are_not_cancelled_by_the_clock(
    client: httpx.AsyncClient,
) -> None:
    # "slow" is created NEW too, but accepted, not waiting for the balance.
    refund_id = (await create(client, "SLOW-000-000-001")).json()["refundId"]
    await advance_clock(client, 1000 * 3600)
    assert (await read(client, refund_id))["status"] == "PENDING"


async def test_expiry_is_configurable() -> None:
    sim = PaynowSimulator(awaiting_expiry_s=3600)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app), base_url="http://paynow.sim"
    ) as http:
        refund_id = (await create(http, "AWAI-FND-000-001")).json()["refundId"]
        await advance_clock(http, 3600)
        assert (await read(http, refund_id))["status"] == "CANCELLED"


async def test_funding_lifts_an_insufficient_balance(client: httpx.AsyncClient) -> None:
    payment_id = await new_payment(client, "insufficient_funds")
    assert_paynow_error(await create(client, payment_id), 400, "INSUFFICIENT_BALANCE_FUNDS")
    assert (await client.post(f"/_sim/payments/{payment_id}/fund")).status_code == 200
    assert (await create(client, payment_id)).status_code == 201


async def test_fund_of_an_unknown_payment_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/_sim/payments/ZZZZ-000-000-000/fund")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "body", [{"advance_s": -1}, {"advance_s": "soon"}, {}, {"advance_s": 1, "x": 2}]
)
async def test_clock_refuses_bad_steps(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/_sim/clock", json=body)
    assert response.status_code == 422
    assert response.json()["error"]


async def test_reset_puts_the_clock_back(sim: PaynowSimulator, client: httpx.AsyncClient) -> None:
    before = sim.state.now()
    clock = await advance_clock(client, 7 * 86_400)
    assert clock["offset_s"] == 7 * 86_400
    assert (sim.state.now() - before).total_seconds() >= 7 * 86_400
    assert (await client.post("/_sim/reset")).status_code == 204
    assert (sim.state.now() - before).total_seconds() < 3600
    refund_id = (await create(client, "AWAI-FND-000-001")).json()["refundId"]
    assert (await read(client, refund_id))["status"] == "NEW"


# --- Vouchers ----------------------------------------------------------------------------------


async def test_voucher_answer_states_payer_and_voucher_amounts(client: httpx.AsyncClient) -> None:
    payment_id = await new_payment(client, "voucher", amount_minor=10_000)
    whole = (await create(client, payment_id, 5000)).json()
    assert (whole["payerAmount"], whole["voucherAmount"]) == (3000, 2000)
    odd = (await create(client, payment_id, 1001, key="k2")).json()
    assert odd["payerAmount"] + odd["voucherAmount"] == 1001
    seeded = (await create(client, "VOUC-HER-000-001", 10_000, key="k3")).json()
    assert (seeded["payerAmount"], seeded["voucherAmount"]) == (6000, 4000)
    # A replay answers the very same split.
    again = (await create(client, payment_id, 5000)).json()
    assert again == whole


async def test_answers_without_a_voucher_state_no_amounts(client: httpx.AsyncClient) -> None:
    # The seed page: both fields "will only be included if a voucher reservation was used".
    body = (await create(client, "SUCC-EED-S00-001", 1000)).json()
    assert set(body) == {"refundId", "status"}
