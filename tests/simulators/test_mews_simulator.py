"""The Mews simulator on its own: raw HTTP in, Mews-shaped answers out."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from simulators.common import FaultKind, FaultSpec
from simulators.mews import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_TOKEN,
    DEFAULT_PORTFOLIO_TOKEN,
    SEEDED_PAYMENTS,
    MewsSimulator,
    Scenario,
)
from simulators.mews.seed import (
    ENTERPRISE_ID,
    SEEDED_BY_SCENARIO,
    SHARED_ACCOUNT_ID,
    SHARED_PAYMENT_A_ID,
    SHARED_PAYMENT_B_ID,
)
from simulators.serving import serve_in_thread

REFUND = "/api/connector/v1/payments/refund"
GET_ALL = "/api/connector/v1/payments/getAll"
CREDENTIALS = {
    "ClientToken": DEFAULT_CLIENT_TOKEN,
    "AccessToken": DEFAULT_ACCESS_TOKEN,
    "Client": "sim tests 1.0",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def seeded(scenario: Scenario) -> dict[str, str]:
    seed = SEEDED_BY_SCENARIO[scenario]
    return {"PaymentId": seed.payment_id, "AccountId": seed.account_id}


def refund_body(scenario: Scenario = Scenario.SUCCEEDS, **extra: Any) -> dict[str, Any]:
    return {**CREDENTIALS, **seeded(scenario), "Reason": "test", **extra}


def by_ids(*ids: str, count: int = 10) -> dict[str, Any]:
    return {**CREDENTIALS, "PaymentIds": list(ids), "Limitation": {"Count": count}}


@pytest.fixture
def sim() -> MewsSimulator:
    return MewsSimulator()


@pytest.fixture
async def http(sim: MewsSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://mews.sim"
    ) as client:
        yield client


def assert_mews_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"Message", "RequestId", "Details"}
    assert body["Message"]
    assert body["RequestId"] == response.headers["Request-Id"]
    return body


async def test_seeded_payments_are_fixed_and_listed(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    listed = (await http.get("/_sim/payments")).json()
    assert listed == sim.payments()
    assert {p["scenario"] for p in listed} == {s.value for s in Scenario}
    assert [p["payment_id"] for p in listed] == [s.payment_id for s in SEEDED_PAYMENTS]
    assert {p["currency"] for p in listed} <= {"GBP", "EUR"}
    partly = next(p for p in listed if p["scenario"] == "partly_refunded")
    assert (partly["amount_minor"], partly["refunded_minor"]) == (10_000, 6_000)
    # Same ids in a second simulator: deterministic across runs.
    assert [p["payment_id"] for p in MewsSimulator().payments()] == [
        p["payment_id"] for p in listed
    ]


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"ClientToken": DEFAULT_CLIENT_TOKEN, "Client": "x"},
        {"ClientToken": "nope", "AccessToken": DEFAULT_ACCESS_TOKEN, "Client": "x"},
        {"ClientToken": DEFAULT_CLIENT_TOKEN, "AccessToken": "nope", "Client": "x"},
    ],
)
@pytest.mark.parametrize("path", [REFUND, GET_ALL])
async def test_bad_tokens_are_401_with_the_mews_body(
    http: httpx.AsyncClient, credentials: dict[str, str], path: str
) -> None:
    body = {**credentials, **seeded(Scenario.SUCCEEDS), "Reason": "r", "Limitation": {"Count": 1}}
    answer = assert_mews_error(await http.post(path, json=body), 401)
    assert DEFAULT_ACCESS_TOKEN not in answer["Message"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
    ],
)
async def test_unreadable_bodies_are_400(
    http: httpx.AsyncClient, content: bytes, needle: str
) -> None:
    response = await http.post(REFUND, content=content)
    assert needle in assert_mews_error(response, 400)["Message"]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"Client": ""}, "Client"),
        ({"PaymentId": "not-a-uuid"}, "PaymentId"),
        ({"AccountId": 42}, "AccountId"),
        ({"Reason": ""}, "Reason"),
        ({"Reason": "   "}, "Reason"),
        ({"ValueToRefund": 0}, "ValueToRefund"),
        ({"ValueToRefund": -1.5}, "ValueToRefund"),
        ({"ValueToRefund": 0.001}, "decimal"),
        ({"ValueToRefund": "10"}, "ValueToRefund"),
        ({"ValueToRefund": True}, "ValueToRefund"),
        ({"PaymentId": "00000000-0000-4000-8000-000000000000"}, "PaymentId"),
        ({"AccountId": SEEDED_BY_SCENARIO[Scenario.FAILS].account_id}, "AccountId"),
    ],
)
async def test_invalid_refund_requests_are_400(
    sim: MewsSimulator, http: httpx.AsyncClient, changes: dict[str, Any], needle: str
) -> None:
    response = await http.post(REFUND, json={**refund_body(), **changes})
    assert needle in assert_mews_error(response, 400)["Message"]
    assert sim.core.journal()["refunds"] == []


@pytest.mark.parametrize(
    ("scenario", "extra", "needle"),
    [
        (Scenario.NOT_REFUNDABLE_TYPE, {}, "CashPayment cannot be refunded"),
        (Scenario.NOT_CHARGED, {}, "not charged"),
        (Scenario.PARTLY_REFUNDED, {}, "exceeds"),
        (Scenario.PARTLY_REFUNDED, {"ValueToRefund": 40.01}, "(40.00 GBP)"),
    ],
)
async def test_business_rules_are_403(
    sim: MewsSimulator,
    http: httpx.AsyncClient,
    scenario: Scenario,
    extra: dict[str, Any],
    needle: str,
) -> None:
    response = await http.post(REFUND, json=refund_body(scenario, **extra))
    assert needle in assert_mews_error(response, 403)["Message"]
    assert sim.core.journal()["refunds"] == []


async def test_partial_refunds_add_up_to_the_payment(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    ok = await http.post(REFUND, json=refund_body(Scenario.PARTLY_REFUNDED, ValueToRefund=40))
    assert ok.status_code == 200
    assert ok.json()["Amount"] == {"Currency": "GBP", "Value": 40}
    again = await http.post(REFUND, json=refund_body(Scenario.PARTLY_REFUNDED, ValueToRefund=0.01))
    assert_mews_error(again, 403)


async def test_no_idempotency_every_request_refunds(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    body = refund_body(ValueToRefund=10.5)
    first = await http.post(REFUND, json=body, headers={"Idempotency-Key": "same"})
    second = await http.post(REFUND, json=body, headers={"Idempotency-Key": "same"})
    assert first.status_code == second.status_code == 200
    assert first.json()["RefundId"] != second.json()["RefundId"]
    journal = sim.core.journal()
    payment_id = SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].payment_id
    assert journal["refunds_per_payment"] == {payment_id: 2}
    assert [r["amount_minor"] for r in journal["refunds"]] == [1050, 1050]
    assert all(r["idempotency_key"] is None for r in journal["refunds"])


async def test_refund_answer_and_getall_shape(http: httpx.AsyncClient) -> None:
    answer = (await http.post(REFUND, json=refund_body(ValueToRefund=12.34))).json()
    assert answer["PaymentId"] == SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].payment_id
    assert answer["Type"] == "CreditCardPayment"
    assert answer["State"] == "Pending"
    assert answer["Amount"] == {"Currency": "GBP", "Value": 12.34}
    page = (await http.post(GET_ALL, json=by_ids(answer["RefundId"]))).json()
    (refund,) = page["Payments"]
    assert refund["Kind"] == "Refund"
    assert refund["AccountId"] == SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id
    # Refunds are negative in getAll; the refund answer shows the absolute value.
    assert refund["Amount"]["GrossValue"] == -12.34
    assert refund["CreatedUtc"].endswith("Z")
    assert page["Cursor"] == refund["Id"]


@pytest.mark.parametrize(
    ("scenario", "states"),
    [
        (Scenario.SUCCEEDS, ["Pending", "Pending", "Charged", "Charged"]),
        (Scenario.SUCCEEDS_IMMEDIATELY, ["Charged", "Charged"]),
        (Scenario.FAILS, ["Pending", "Pending", "Failed", "Failed"]),
        (Scenario.SLOW, ["Pending"] * 11 + ["Charged", "Charged"]),
    ],
)
async def test_refund_state_scripts(
    http: httpx.AsyncClient, scenario: Scenario, states: list[str]
) -> None:
    answer = (await http.post(REFUND, json=refund_body(scenario, ValueToRefund=1))).json()
    seen = [answer["State"]]
    for _ in states[1:]:
        page = (await http.post(GET_ALL, json=by_ids(answer["RefundId"]))).json()
        seen.append(page["Payments"][0]["State"])
    assert seen == states


async def test_reads_by_account_do_not_advance_refunds(http: httpx.AsyncClient) -> None:
    refund_id = (await http.post(REFUND, json=refund_body(ValueToRefund=1))).json()["RefundId"]
    by_account = {
        **CREDENTIALS,
        "AccountIds": [SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id],
        "Limitation": {"Count": 10},
    }
    for _ in range(3):
        await http.post(GET_ALL, json=by_account)
    page = (await http.post(GET_ALL, json=by_ids(refund_id))).json()
    assert page["Payments"][0]["State"] == "Pending"


def interval(start: datetime, end: datetime) -> dict[str, str]:
    return {"StartUtc": start.isoformat().replace("+00:00", "Z"), "EndUtc": end.isoformat()}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"Limitation": None}, "Limitation"),
        ({"Limitation": {"Count": 0}}, "Count"),
        ({"Limitation": {"Count": 1001}}, "Count"),
        ({"Limitation": {"Count": "5"}}, "Count"),
        ({"PaymentIds": None}, "filter"),
        ({"PaymentIds": ["nope"]}, "PaymentIds"),
        ({"PaymentIds": None, "AccountIds": [str(uuid.uuid4()) for _ in range(101)]}, "100"),
        (
            {
                "PaymentIds": None,
                "CreatedUtc": interval(
                    datetime(2025, 1, 31, tzinfo=UTC), datetime(2025, 5, 1, tzinfo=UTC)
                ),
            },
            "3 months",
        ),
        (
            {
                "PaymentIds": None,
                "CreatedUtc": interval(
                    datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
                ),
            },
            "before",
        ),
        ({"PaymentIds": None, "CreatedUtc": {"StartUtc": "yesterday", "EndUtc": "now"}}, "ISO"),
        ({"Limitation": {"Count": 5, "Cursor": str(uuid.uuid4())}}, "Cursor"),
    ],
)
async def test_invalid_getall_requests_are_400(
    http: httpx.AsyncClient, changes: dict[str, Any], needle: str
) -> None:
    body = {**by_ids(SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].payment_id), **changes}
    body = {k: v for k, v in body.items() if v is not None}
    response = await http.post(GET_ALL, json=body)
    assert needle in assert_mews_error(response, 400)["Message"]


async def test_three_calendar_months_is_allowed(http: httpx.AsyncClient) -> None:
    body = {
        **CREDENTIALS,
        "CreatedUtc": interval(
            datetime(2025, 1, 31, tzinfo=UTC), datetime(2025, 4, 30, tzinfo=UTC)
        ),
        "Limitation": {"Count": 5},
    }
    response = await http.post(GET_ALL, json=body)
    assert response.status_code == 200
    assert response.json() == {"Payments": [], "Cursor": None}


async def test_cursor_paging_newest_first(http: httpx.AsyncClient) -> None:
    for value in (1, 2, 3):
        await http.post(REFUND, json=refund_body(ValueToRefund=value))
    body = {
        **CREDENTIALS,
        "AccountIds": [SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id],
        "Limitation": {"Count": 2},
    }
    seen: list[dict[str, Any]] = []
    cursors: list[str | None] = []
    cursor: str | None = None
    while True:
        page = (
            await http.post(GET_ALL, json={**body, "Limitation": {"Count": 2, "Cursor": cursor}})
        ).json()
        seen.extend(page["Payments"])
        cursors.append(page["Cursor"])
        if page["Cursor"] is None or len(page["Payments"]) < 2:
            break
        # The cursor is the id of the last (oldest) item of the page.
        assert page["Cursor"] == page["Payments"][-1]["Id"]
        cursor = page["Cursor"]
    # 4 items in pages of 2: two full pages, then an empty one with a null Cursor.
    assert cursors[-1] is None
    assert len(cursors) == 3
    # Newest first: the refunds (newest last made first), then the payment.
    assert [p["Kind"] for p in seen] == ["Refund", "Refund", "Refund", "Payment"]
    assert [p["Amount"]["GrossValue"] for p in seen] == [-3, -2, -1, 100]
    created = [p["CreatedUtc"] for p in seen]
    assert created == sorted(created, reverse=True)
    assert len({p["Id"] for p in seen}) == 4


async def test_a_cursor_continues_after_its_item_even_if_new_ones_arrive(
    http: httpx.AsyncClient,
) -> None:
    for value in (1, 2):
        await http.post(REFUND, json=refund_body(ValueToRefund=value))
    body = {
        **CREDENTIALS,
        "AccountIds": [SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id],
        "Limitation": {"Count": 1},
    }
    first = (await http.post(GET_ALL, json=body)).json()
    assert first["Payments"][0]["Amount"]["GrossValue"] == -2
    # A refund made between pages is newer than the cursor: it is not on later pages.
    await http.post(REFUND, json=refund_body(ValueToRefund=7))
    rest = await http.post(
        GET_ALL, json={**body, "Limitation": {"Count": 10, "Cursor": first["Cursor"]}}
    )
    assert [p["Amount"]["GrossValue"] for p in rest.json()["Payments"]] == [-1, 100]


async def test_rate_limit_is_a_sliding_window_per_access_token() -> None:
    clock = Clock()
    sim = MewsSimulator(rate_limit=3, rate_window_s=10.0, clock=clock)
    body = by_ids(SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].payment_id)
    portfolio = {**body, "AccessToken": DEFAULT_PORTFOLIO_TOKEN}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://mews.sim"
    ) as http:
        for second in (0.0, 1.0, 2.0):
            clock.now = 1_000.0 + second
            assert (await http.post(GET_ALL, json=body)).status_code == 200
        clock.now = 1_005.0
        limited = await http.post(GET_ALL, json=body)
        assert_mews_error(limited, 429)
        # The oldest admission (t=1000) leaves the window at t=1010.
        assert limited.headers["Retry-After"] == "5"
        # Another access token has its own window.
        assert (await http.post(GET_ALL, json=portfolio)).status_code == 200
        clock.now = 1_010.0
        assert (await http.post(GET_ALL, json=body)).status_code == 200
        assert (await http.post(GET_ALL, json=body)).status_code == 429
    statuses = [r["status"] for r in sim.core.journal()["requests"]]
    assert statuses == [200, 200, 200, 429, 200, 200, 429]


async def test_portfolio_token_requires_enterprise(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    body = refund_body(AccessToken=DEFAULT_PORTFOLIO_TOKEN, ValueToRefund=1)
    assert "EnterpriseId" in assert_mews_error(await http.post(REFUND, json=body), 400)["Message"]
    wrong = {**body, "EnterpriseId": str(uuid.uuid4())}
    assert "PaymentId" in assert_mews_error(await http.post(REFUND, json=wrong), 400)["Message"]
    ok = await http.post(REFUND, json={**body, "EnterpriseId": ENTERPRISE_ID})
    assert ok.status_code == 200
    # With a normal token EnterpriseId is ignored, even a made-up one.
    plain = refund_body(ValueToRefund=1, EnterpriseId="whatever")
    assert (await http.post(REFUND, json=plain)).status_code == 200


async def test_create_payment_control_route(sim: MewsSimulator, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/_sim/payments",
        json={"scenario": "fails", "amount_minor": 1_234, "currency": "KWD"},
    )
    assert response.status_code == 201
    created = response.json()
    assert {
        "payment_id",
        "account_id",
        "currency",
        "amount_minor",
        "type",
        "state",
        "scenario",
    } <= set(created)
    assert (created["scenario"], created["currency"], created["amount_minor"]) == (
        "fails",
        "KWD",
        1_234,
    )
    assert (created["type"], created["state"]) == ("CreditCardPayment", "Charged")
    uuid.UUID(created["payment_id"])
    assert created in sim.payments()
    # 1.234 KWD can be refunded to the fils; 1.2345 cannot.
    body = {
        **CREDENTIALS,
        "PaymentId": created["payment_id"],
        "AccountId": created["account_id"],
        "Reason": "r",
    }
    assert_mews_error(await http.post(REFUND, json={**body, "ValueToRefund": 1.2345}), 400)
    assert (await http.post(REFUND, json={**body, "ValueToRefund": 1.234})).status_code == 200

    template = (await http.post("/_sim/payments", json={"scenario": "partly_refunded"})).json()
    assert (template["amount_minor"], template["refunded_minor"]) == (10_000, 6_000)
    custom = await http.post(
        "/_sim/payments",
        json={"scenario": "succeeds", "type": "CashPayment", "state": "Pending"},
    )
    assert (custom.json()["type"], custom.json()["state"]) == ("CashPayment", "Pending")


@pytest.mark.parametrize(
    "body",
    [
        {"scenario": "explodes"},
        {"scenario": "succeeds", "amount_minor": 0},
        {"scenario": "succeeds", "currency": "XXX"},
        {"scenario": "succeeds", "state": "Lost"},
        {"scenario": "succeeds", "amount_minor": 100, "refunded_minor": 101},
        {"scenario": "succeeds", "colour": "blue"},
    ],
)
async def test_create_payment_refuses_bad_specs(
    sim: MewsSimulator, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    before = len(sim.payments())
    assert (await http.post("/_sim/payments", json=body)).status_code == 422
    assert len(sim.payments()) == before


async def test_status_and_rate_limit_faults_are_journaled(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    await http.post(
        "/_sim/faults",
        json=[
            {"kind": "status", "status": 502, "path_contains": "refund"},
            {"kind": "rate_limit", "retry_after": "9"},
        ],
    )
    failed = await http.post(REFUND, json=refund_body(ValueToRefund=1))
    assert_mews_error(failed, 502)
    limited = await http.post(GET_ALL, json=by_ids(str(uuid.uuid4())))
    assert_mews_error(limited, 429)
    assert limited.headers["Retry-After"] == "9"
    journal = (await http.get("/_sim/journal")).json()
    assert [(r["fault"], r["status"]) for r in journal["requests"]] == [
        ("status", 502),
        ("rate_limit", 429),
    ]
    assert journal["refunds"] == []


async def test_process_then_hang_really_refunds(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    sim.core.add_faults([FaultSpec(kind=FaultKind.PROCESS_THEN_HANG, seconds=0.05)])
    response = await http.post(REFUND, json=refund_body(ValueToRefund=2))
    assert response.status_code == 200
    journal = sim.core.journal()
    assert journal["requests"][0]["fault"] == "process_then_hang"
    assert [r["amount_minor"] for r in journal["refunds"]] == [200]


async def test_reset_restores_the_seed(sim: MewsSimulator, http: httpx.AsyncClient) -> None:
    await http.post(REFUND, json=refund_body(ValueToRefund=1))
    await http.post("/_sim/payments", json={"scenario": "succeeds"})
    sim.core.add_faults([FaultSpec(kind=FaultKind.STATUS)])
    assert (await http.post("/_sim/reset")).status_code == 204
    assert len(sim.payments()) == len(SEEDED_PAYMENTS)
    assert sim.core.journal() == {
        "requests": [],
        "refunds": [],
        "refunds_per_payment": {},
        "refunds_per_key": {},
    }
    assert (await http.post(REFUND, json=refund_body(ValueToRefund=1))).status_code == 200


async def test_unknown_route_is_a_mews_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/connector/v1/payments/nothing", json=CREDENTIALS)
    assert_mews_error(response, 404)


async def test_concurrent_refunds_over_a_real_socket_never_over_refund() -> None:
    sim = MewsSimulator()
    payment = sim.payments()[0]
    body = {
        **CREDENTIALS,
        "PaymentId": payment["payment_id"],
        "AccountId": payment["account_id"],
        "Reason": "race",
        "ValueToRefund": 30,
    }
    with serve_in_thread(sim.app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            answers = await asyncio.gather(*(http.post(REFUND, json=body) for _ in range(8)))
        # Read from this thread while the server thread may still be finishing up.
        refunded = sim.payments()[0]["refunded_minor"]
    statuses = sorted(a.status_code for a in answers)
    # 100.00 GBP holds three refunds of 30.00; the rest are refused.
    assert statuses == [200] * 3 + [403] * 5
    assert refunded == 9_000
    assert len(sim.core.journal()["refunds"]) == 3


async def test_seeded_payments_are_an_hour_old(http: httpx.AsyncClient) -> None:
    # Recent enough for one getAll window to cover them and their refunds.
    response = await http.post(GET_ALL, json=by_ids(SEEDED_PAYMENTS[0].payment_id))
    created = datetime.fromisoformat(response.json()["Payments"][0]["CreatedUtc"])
    assert timedelta(minutes=50) < datetime.now(UTC) - created < timedelta(minutes=70)


# --- faults: dropped before processing, and timed outages ----------------------------------


async def test_drop_before_makes_no_refund(sim: MewsSimulator, http: httpx.AsyncClient) -> None:
    await http.post("/_sim/faults", json={"kind": "drop_before", "path_contains": "refund"})
    with pytest.raises(ConnectionAbortedError):
        await http.post(REFUND, json=refund_body(ValueToRefund=5))
    journal = sim.core.journal()
    assert [r["fault"] for r in journal["requests"]] == ["drop_before"]
    assert journal["refunds"] == []
    # Nothing on the account either, and the fault is used up.
    page = await http.post(
        GET_ALL,
        json={
            **CREDENTIALS,
            "AccountIds": [SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id],
            "Limitation": {"Count": 10},
        },
    )
    assert [p["Kind"] for p in page.json()["Payments"]] == ["Payment"]
    assert (await http.post(REFUND, json=refund_body(ValueToRefund=5))).status_code == 200


async def test_drop_before_over_a_socket_breaks_the_connection_without_refunding() -> None:
    sim = MewsSimulator()
    sim.core.add_faults([FaultSpec(kind=FaultKind.DROP_BEFORE)])
    with serve_in_thread(sim.app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await http.post(REFUND, json=refund_body(ValueToRefund=5))
    assert sim.core.journal()["refunds"] == []


async def test_a_timed_outage_hits_every_request_then_expires() -> None:
    clock = Clock()
    sim = MewsSimulator(clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://mews.sim"
    ) as http:
        queued = await http.post(
            "/_sim/faults",
            json={"kind": "status", "status": 503, "duration_s": 180, "path_contains": "refund"},
        )
        assert queued.status_code == 201
        for second in (0.0, 1.0, 60.0, 179.9):
            clock.now = 1_000.0 + second
            failed = await http.post(REFUND, json=refund_body(ValueToRefund=1))
            assert_mews_error(failed, 503)
        # Other paths are untouched meanwhile.
        other = await http.post(GET_ALL, json=by_ids(SEEDED_PAYMENTS[0].payment_id))
        assert other.status_code == 200
        # [queued, queued + 180 s): at 180 s the outage is over.
        clock.now = 1_180.0
        assert (await http.post(REFUND, json=refund_body(ValueToRefund=1))).status_code == 200
    statuses = [(r["fault"], r["status"]) for r in sim.core.journal()["requests"]]
    assert statuses == [("status", 503)] * 4 + [(None, 200), (None, 200)]
    assert len(sim.core.journal()["refunds"]) == 1


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "status", "duration_s": 0},
        {"kind": "status", "duration_s": -1},
        {"kind": "status", "duration_s": 180, "count": 2},
    ],
)
async def test_bad_timed_faults_are_refused(
    sim: MewsSimulator, http: httpx.AsyncClient, spec: dict[str, Any]
) -> None:
    assert (await http.post("/_sim/faults", json=spec)).status_code == 422
    assert (await http.post(REFUND, json=refund_body(ValueToRefund=1))).status_code == 200


def test_counted_faults_keep_their_shape() -> None:
    # The JSON shape of before: no duration_s means a count (1 unless given).
    spec = FaultSpec.model_validate({"kind": "drop"})
    assert (spec.count, spec.duration_s) == (1, None)
    assert FaultSpec.model_validate({"kind": "status", "count": 3}).count == 3


# --- several payments per account; refunds carry no link to their payment --------------------


def by_account(account_id: str, count: int = 100, **extra: Any) -> dict[str, Any]:
    return {**CREDENTIALS, "AccountIds": [account_id], "Limitation": {"Count": count}, **extra}


def shared_refund(payment_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **CREDENTIALS,
        "PaymentId": payment_id,
        "AccountId": SHARED_ACCOUNT_ID,
        "Reason": "stay shortened",
        **extra,
    }


async def test_the_shared_account_holds_two_payments(http: httpx.AsyncClient) -> None:
    page = (await http.post(GET_ALL, json=by_account(SHARED_ACCOUNT_ID))).json()
    # Newest first: B is ten minutes younger than A.
    assert [p["Id"] for p in page["Payments"]] == [SHARED_PAYMENT_B_ID, SHARED_PAYMENT_A_ID]
    assert [p["Amount"]["GrossValue"] for p in page["Payments"]] == [100.0, 250.5]
    assert {
        (p["Kind"], p["Type"], p["State"], p["Amount"]["Currency"]) for p in page["Payments"]
    } == {("Payment", "CreditCardPayment", "Charged", "EUR")}
    assert {p["AccountId"] for p in page["Payments"]} == {SHARED_ACCOUNT_ID}


async def test_refunds_on_a_shared_account_name_no_payment(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    whole_a = await http.post(REFUND, json=shared_refund(SHARED_PAYMENT_A_ID))
    assert whole_a.status_code == 200
    assert whole_a.json()["Amount"] == {"Currency": "EUR", "Value": 250.5}
    # A is fully refunded; B, on the same account, is untouched by that.
    part_b = await http.post(REFUND, json=shared_refund(SHARED_PAYMENT_B_ID, ValueToRefund=60))
    assert part_b.status_code == 200
    assert_mews_error(
        await http.post(REFUND, json=shared_refund(SHARED_PAYMENT_A_ID, ValueToRefund=0.01)), 403
    )
    assert_mews_error(
        await http.post(REFUND, json=shared_refund(SHARED_PAYMENT_B_ID, ValueToRefund=40.01)), 403
    )
    page = (await http.post(GET_ALL, json=by_account(SHARED_ACCOUNT_ID))).json()
    refunds = [p for p in page["Payments"] if p["Kind"] == "Refund"]
    assert [r["Id"] for r in refunds] == [part_b.json()["RefundId"], whole_a.json()["RefundId"]]
    # Negative in getAll; nothing says which payment each one refunded.
    assert [r["Amount"]["GrossValue"] for r in refunds] == [-60, -250.5]
    payment_keys = {k for p in page["Payments"] if p["Kind"] == "Payment" for k in p}
    for refund in refunds:
        assert set(refund) == payment_keys
        assert refund["AccountId"] == SHARED_ACCOUNT_ID
        text = json.dumps(refund)
        assert SHARED_PAYMENT_A_ID not in text
        assert SHARED_PAYMENT_B_ID not in text
    # The simulator's own bookkeeping (not the API) knows, for the journal.
    assert sim.core.journal()["refunds_per_payment"] == {
        SHARED_PAYMENT_A_ID: 1,
        SHARED_PAYMENT_B_ID: 1,
    }


async def test_a_refund_cannot_be_refunded(sim: MewsSimulator, http: httpx.AsyncClient) -> None:
    refund_id = (await http.post(REFUND, json=refund_body(ValueToRefund=1))).json()["RefundId"]
    body = {**refund_body(), "PaymentId": refund_id, "ValueToRefund": 0.5}
    assert_mews_error(await http.post(REFUND, json=body), 400)
    assert len(sim.core.journal()["refunds"]) == 1


async def test_create_payment_on_an_existing_account(
    sim: MewsSimulator, http: httpx.AsyncClient
) -> None:
    created = await http.post(
        "/_sim/payments",
        json={"scenario": "succeeds", "account_id": SHARED_ACCOUNT_ID, "currency": "EUR"},
    )
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["account_id"] == SHARED_ACCOUNT_ID
    page = (await http.post(GET_ALL, json=by_account(SHARED_ACCOUNT_ID))).json()
    assert next(p["Id"] for p in page["Payments"]) == payment["payment_id"]
    assert len(page["Payments"]) == 3
    before = len(sim.payments())
    unknown = await http.post(
        "/_sim/payments", json={"scenario": "succeeds", "account_id": str(uuid.uuid4())}
    )
    assert unknown.status_code == 404
    garbled = await http.post("/_sim/payments", json={"scenario": "succeeds", "account_id": "x"})
    assert garbled.status_code == 422
    assert len(sim.payments()) == before


# --- getAll: filters, non-filters, half-open intervals ------------------------------------------


@pytest.mark.parametrize(
    "only",
    [
        {"States": ["Charged"]},
        {"Currency": "EUR"},
        {"EnterpriseIds": [ENTERPRISE_ID], "AccessToken": DEFAULT_PORTFOLIO_TOKEN},
        {"Kinds": ["Refund"]},
        {},
    ],
)
async def test_non_filters_alone_are_refused(http: httpx.AsyncClient, only: dict[str, Any]) -> None:
    body = {**CREDENTIALS, "Limitation": {"Count": 10}, **only}
    assert "filter" in assert_mews_error(await http.post(GET_ALL, json=body), 400)["Message"]


async def test_currency_converts_and_does_not_filter(http: httpx.AsyncClient) -> None:
    gbp = SEEDED_BY_SCENARIO[Scenario.SUCCEEDS]  # 100.00 GBP
    eur = SEEDED_BY_SCENARIO[Scenario.SLOW]  # 20.00 EUR
    body = {**by_ids(gbp.payment_id, eur.payment_id), "Currency": "EUR"}
    page = (await http.post(GET_ALL, json=body)).json()
    by_id = {p["Id"]: p for p in page["Payments"]}
    assert set(by_id) == {gbp.payment_id, eur.payment_id}
    assert by_id[gbp.payment_id]["Amount"]["Currency"] == "EUR"
    assert by_id[gbp.payment_id]["Amount"]["GrossValue"] == 117.0
    assert by_id[gbp.payment_id]["OriginalAmount"]["GrossValue"] == 100.0
    assert by_id[eur.payment_id]["Amount"]["GrossValue"] == 20.0
    bad = {**by_ids(gbp.payment_id), "Currency": "XXX"}
    assert_mews_error(await http.post(GET_ALL, json=bad), 400)


async def test_states_narrow_a_filtered_query(http: httpx.AsyncClient) -> None:
    await http.post(REFUND, json=refund_body(ValueToRefund=1))  # Pending
    account = SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id
    page = (await http.post(GET_ALL, json=by_account(account, States=["Pending"]))).json()
    assert [p["Kind"] for p in page["Payments"]] == ["Refund"]
    assert_mews_error(await http.post(GET_ALL, json=by_account(account, States=["Lost"])), 400)


async def test_unlisted_fields_filter_nothing(http: httpx.AsyncClient) -> None:
    await http.post(REFUND, json=refund_body(ValueToRefund=1))
    account = SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].account_id
    page = (await http.post(GET_ALL, json=by_account(account, Kinds=["Payment"]))).json()
    assert [p["Kind"] for p in page["Payments"]] == ["Refund", "Payment"]


@pytest.mark.parametrize("name", ["BillIds", "ReservationIds"])
async def test_bill_and_reservation_ids_are_filters_matching_nothing_here(
    http: httpx.AsyncClient, name: str
) -> None:
    body = {**CREDENTIALS, name: [str(uuid.uuid4())], "Limitation": {"Count": 10}}
    response = await http.post(GET_ALL, json=body)
    assert response.status_code == 200
    assert response.json() == {"Payments": [], "Cursor": None}
    assert_mews_error(await http.post(GET_ALL, json={**body, name: ["nope"]}), 400)


def wire(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("name", ["CreatedUtc", "UpdatedUtc", "ChargedUtc"])
async def test_intervals_are_half_open(http: httpx.AsyncClient, name: str) -> None:
    payment = SEEDED_BY_SCENARIO[Scenario.SUCCEEDS]
    listed = (await http.post(GET_ALL, json=by_ids(payment.payment_id))).json()["Payments"][0]
    at = datetime.fromisoformat(listed[name])
    tick = timedelta(microseconds=1)

    async def ids(start: datetime, end: datetime) -> list[str]:
        body = {
            **by_account(payment.account_id),
            name: {"StartUtc": wire(start), "EndUtc": wire(end)},
        }
        response = await http.post(GET_ALL, json=body)
        assert response.status_code == 200, response.text
        return [p["Id"] for p in response.json()["Payments"]]

    assert await ids(at, at + tick) == [payment.payment_id]  # StartUtc <= x
    assert await ids(at - timedelta(hours=1), at) == []  # x < EndUtc
    assert await ids(at - tick, at + tick) == [payment.payment_id]


async def test_closed_utc_is_a_filter_matching_nothing_here(http: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    body = {
        **CREDENTIALS,
        "ClosedUtc": {"StartUtc": wire(now - timedelta(days=1)), "EndUtc": wire(now)},
        "Limitation": {"Count": 10},
    }
    response = await http.post(GET_ALL, json=body)
    assert response.json() == {"Payments": [], "Cursor": None}


@pytest.mark.parametrize("name", ["CreatedUtc", "UpdatedUtc", "ChargedUtc", "ClosedUtc"])
async def test_intervals_longer_than_three_months_are_400(
    http: httpx.AsyncClient, name: str
) -> None:
    start = datetime(2025, 1, 31, tzinfo=UTC)
    ok = {**CREDENTIALS, "Limitation": {"Count": 1}}
    exact = {"StartUtc": wire(start), "EndUtc": wire(datetime(2025, 4, 30, tzinfo=UTC))}
    assert (await http.post(GET_ALL, json={**ok, name: exact})).status_code == 200
    longer = {**exact, "EndUtc": wire(datetime(2025, 4, 30, 0, 0, 0, 1, tzinfo=UTC))}
    message = assert_mews_error(await http.post(GET_ALL, json={**ok, name: longer}), 400)
    assert "3 months" in message["Message"]


async def test_interval_times_must_be_utc(http: httpx.AsyncClient) -> None:
    body = {
        **CREDENTIALS,
        "CreatedUtc": {"StartUtc": "2025-01-01T00:00:00+02:00", "EndUtc": "2025-01-02T00:00:00Z"},
        "Limitation": {"Count": 1},
    }
    assert "UTC" in assert_mews_error(await http.post(GET_ALL, json=body), 400)["Message"]


async def test_a_cursor_naming_no_payment_is_400(http: httpx.AsyncClient) -> None:
    body = by_account(SHARED_ACCOUNT_ID, Limitation={"Count": 1, "Cursor": str(uuid.uuid4())})
    assert "Cursor" in assert_mews_error(await http.post(GET_ALL, json=body), 400)["Message"]
