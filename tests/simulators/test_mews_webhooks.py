"""The Mews simulator's general webhooks (`PaymentUpdated`) and its settle control: what is
sent, when, how often, and that nothing changes while no URL is set."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.mews import DEFAULT_ACCESS_TOKEN, DEFAULT_CLIENT_TOKEN, MewsSimulator, Scenario
from simulators.mews.seed import ENTERPRISE_ID, INTEGRATION_ID, SEEDED_BY_SCENARIO
from simulators.mews.webhooks import masked
from simulators.serving import serve_in_thread

REFUND = "/api/connector/v1/payments/refund"
GET_ALL = "/api/connector/v1/payments/getAll"
CREDENTIALS = {
    "ClientToken": DEFAULT_CLIENT_TOKEN,
    "AccessToken": DEFAULT_ACCESS_TOKEN,
    "Client": "sim tests 1.0",
}
TOKEN = "s3cret-webhook-token"


@dataclass
class Receiver:
    """A webhook receiver on a real socket: records every body, answers ``status``."""

    url: str = ""
    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def receive(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.bodies.append(body)
            self.paths.append(request.url.path)
        return JSONResponse({}, self.status)

    def ids(self) -> list[str]:
        with self.lock:
            return [event["Value"]["Id"] for body in self.bodies for event in body["Events"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    app = Starlette(routes=[Route("/webhooks/mews/{token}", found.receive, methods=["POST"])])
    with serve_in_thread(app) as base_url:
        found.url = f"{base_url}/webhooks/mews/{TOKEN}"
        yield found


@pytest.fixture
def sim() -> MewsSimulator:
    return MewsSimulator()


@pytest.fixture
async def http(sim: MewsSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://mews.sim"
    ) as client:
        yield client


async def refund(http: httpx.AsyncClient, scenario: Scenario = Scenario.SUCCEEDS) -> str:
    seed = SEEDED_BY_SCENARIO[scenario]
    body = {
        **CREDENTIALS,
        "PaymentId": seed.payment_id,
        "AccountId": seed.account_id,
        "Reason": "test",
        "ValueToRefund": 1,
    }
    response = await http.post(REFUND, json=body)
    assert response.status_code == 200, response.text
    refund_id: str = response.json()["RefundId"]
    return refund_id


async def read(http: httpx.AsyncClient, refund_id: str) -> str:
    body = {**CREDENTIALS, "PaymentIds": [refund_id], "Limitation": {"Count": 10}}
    page = (await http.post(GET_ALL, json=body)).json()
    state: str = page["Payments"][0]["State"]
    return state


async def until(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def webhooks(http: httpx.AsyncClient, **config: Any) -> dict[str, Any]:
    response = await http.post("/_sim/webhooks", json=config)
    assert response.status_code == 201, response.text
    described: dict[str, Any] = response.json()
    return described


async def test_every_change_of_a_refund_is_announced_twice(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    described = await webhooks(http, url=receiver.url)
    # The token is never shown.
    assert TOKEN not in str(described)
    assert described["url"].endswith("/webhooks/mews/***")
    refund_id = await refund(http)
    # Created (Pending), read once (Pending: no change), read again (Charged): two changes,
    # each delivered twice (at least once, the harsh way).
    assert [await read(http, refund_id) for _ in range(2)] == ["Pending", "Charged"]
    await until(lambda: len(receiver.ids()) == 4)
    await asyncio.sleep(0.2)
    assert receiver.ids() == [refund_id] * 4
    assert receiver.bodies[0] == {
        "EnterpriseId": ENTERPRISE_ID,
        "IntegrationId": INTEGRATION_ID,
        "Events": [{"Discriminator": "PaymentUpdated", "Value": {"Id": refund_id}}],
    }
    assert set(receiver.paths) == {f"/webhooks/mews/{TOKEN}"}
    log = (await http.get("/_sim/webhooks")).json()
    # Two messages (ids), each delivered as copy 1 then copy 2, concurrently with the other.
    deliveries = sorted(
        (d["message_id"], d["copy"], d["attempt"], d["status"]) for d in log["deliveries"]
    )
    assert len({d[0] for d in deliveries}) == 2
    assert [d[1:] for d in deliveries] == [(1, 1, 200), (2, 1, 200)] * 2
    assert TOKEN not in str(log)


async def test_without_duplicates_each_change_is_sent_once(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await webhooks(http, url=receiver.url, duplicates=False)
    refund_id = await refund(http, Scenario.SUCCEEDS_IMMEDIATELY)
    await until(lambda: len(receiver.ids()) == 1)
    await asyncio.sleep(0.2)
    assert receiver.ids() == [refund_id]


async def test_a_refused_delivery_is_retried(http: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.status = 503
    await webhooks(http, url=receiver.url, duplicates=False, max_attempts=3, retry_delay_s=0.05)
    await refund(http)
    await until(lambda: len(receiver.ids()) == 3)
    log = (await http.get("/_sim/webhooks")).json()
    await asyncio.sleep(0.2)
    assert [(d["attempt"], d["status"]) for d in log["deliveries"]] == [
        (1, 503),
        (2, 503),
        (3, 503),
    ]
    assert len(receiver.ids()) == 3


async def test_an_unreachable_receiver_is_recorded_without_the_url(
    http: httpx.AsyncClient,
) -> None:
    # Nothing listens on port 9 of loopback (discard): the connection is refused.
    await webhooks(
        http, url=f"http://127.0.0.1:9/webhooks/mews/{TOKEN}", duplicates=False, max_attempts=1
    )
    await refund(http)

    async def deliveries() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await http.get("/_sim/webhooks")).json()["deliveries"]
        return found

    deadline = time.monotonic() + 5
    while not (found := await deliveries()) or found[0]["answered_at"] is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert found[0]["status"] is None
    assert found[0]["error"] == "ConnectError"
    assert TOKEN not in str(found)


async def test_settle_makes_a_refund_final_without_a_read_and_announces_it(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    refund_id = await refund(http, Scenario.SLOW)
    assert await read(http, refund_id) == "Pending"
    await webhooks(http, url=receiver.url, duplicates=False)
    settled = await http.post(f"/_sim/refunds/{refund_id}/settle")
    assert settled.json() == {"refund_id": refund_id, "state": "Charged"}
    await until(lambda: receiver.ids() == [refund_id])
    history = {r["refund_id"]: r for r in (await http.get("/_sim/refunds")).json()}[refund_id]
    # One read before the settle; the settle changed the state without one.
    assert [r["state"] for r in history["reads"]] == ["Pending"]
    assert [c["state"] for c in history["changes"]] == ["Pending", "Charged"]
    # Final for good: reads keep it, nothing more is announced.
    assert [await read(http, refund_id) for _ in range(3)] == ["Charged"] * 3
    assert (await http.post(f"/_sim/refunds/{refund_id}/settle")).status_code == 409
    await asyncio.sleep(0.2)
    assert receiver.ids() == [refund_id]


async def test_settle_to_a_chosen_state_and_refusals(http: httpx.AsyncClient) -> None:
    refund_id = await refund(http, Scenario.SLOW)
    chosen = await http.post(f"/_sim/refunds/{refund_id}/settle", json={"state": "Failed"})
    assert chosen.json()["state"] == "Failed"
    assert await read(http, refund_id) == "Failed"
    other = await refund(http, Scenario.SLOW)
    bad = await http.post(f"/_sim/refunds/{other}/settle", json={"state": "Pending"})
    assert bad.status_code == 422
    unknown = await http.post("/_sim/refunds/00000000-0000-4000-8000-000000000000/settle")
    assert unknown.status_code == 404
    payment = SEEDED_BY_SCENARIO[Scenario.SUCCEEDS].payment_id
    assert (await http.post(f"/_sim/refunds/{payment}/settle")).status_code == 404


async def test_bad_configurations_are_refused(http: httpx.AsyncClient) -> None:
    for config in ({"url": "ftp://example.com/x"}, {"url": "/relative/path"}, {"x": 1}, {}):
        response = await http.post("/_sim/webhooks", json=config)
        assert response.status_code == 422, config
    assert (await http.get("/_sim/webhooks")).json()["url"] is None


async def test_nothing_is_sent_without_a_url_or_after_delete(
    sim: MewsSimulator, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    refund_id = await refund(http)
    await read(http, refund_id)
    await webhooks(http, url=receiver.url)
    assert (await http.delete("/_sim/webhooks")).status_code == 204
    await read(http, refund_id)
    await asyncio.sleep(0.2)
    assert receiver.ids() == []
    assert (await http.get("/_sim/webhooks")).json()["deliveries"] == []


async def test_reset_keeps_the_url_and_clears_the_log(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await webhooks(http, url=receiver.url, duplicates=False)
    await refund(http)
    await until(lambda: len(receiver.ids()) == 1)
    assert (await http.post("/_sim/reset")).status_code == 204
    described = (await http.get("/_sim/webhooks")).json()
    assert described["url"] == masked(receiver.url)
    assert described["deliveries"] == []
    # Only the seeded (earlier, settled) refunds are left.
    assert all(r["changes"] == [] for r in (await http.get("/_sim/refunds")).json())


def test_masked_hides_the_last_path_segment() -> None:
    assert masked("http://h:1/webhooks/mews/abc?x=1") == "http://h:1/webhooks/mews/***"
    assert masked("https://h/abc/") == "https://h/***"
