"""The Mews webhook endpoint in-process with a fake service: the token check, what is read
of a message, the lookup within its time budget, problems, and no token in any log line (the
access log of a real uvicorn server included). No stack needed."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.service import RPCError, RPCStatusCode
from uvicorn.logging import AccessFormatter

import api.webhooks
from api.app import create_app
from api.keys import dev_key_config
from api.webhooks import MASKED_PATH, mask_token, token_matches
from core.models import ProviderName
from core.settings import Settings
from simulators.serving import free_port

WEBHOOK_TOKEN = "mews-hook-7Qf2xZ9kLm3Np8Rt"
URL = f"/webhooks/mews/{WEBHOOK_TOKEN}"
REFUND_ID = "0b5c8a1e-4f2d-4a6b-9c7e-1d2f3a4b5c6d"


def message(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "EnterpriseId": "3b0f6a2e-5c1d-4e8f-9a70-1d2c3b4a5e60",
        "IntegrationId": "7c4e1f0a-2b3d-4c5e-8f60-9a1b2c3d4e70",
        "Events": list(events),
    }


def updated(payment_id: str = REFUND_ID) -> dict[str, Any]:
    return {"Discriminator": "PaymentUpdated", "Value": {"Id": payment_id}}


class FakeService:
    """Knows ``known`` refund ids; each becomes visible after ``visible_after`` lookups."""

    def __init__(
        self,
        known: dict[str, int] | None = None,
        *,
        visible_after: int = 0,
        fail_with: Exception | None = None,
    ) -> None:
        self.known = known or {}
        self.visible_after = visible_after
        self.fail_with = fail_with
        self.lookups: list[tuple[ProviderName, str, str]] = []

    async def check_now_by_provider_refund_id(
        self, provider: ProviderName, refund_id: str, *, reason: str = "provider webhook"
    ) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        self.lookups.append((provider, refund_id, reason))
        seen = sum(1 for _, rid, _ in self.lookups if rid == refund_id)
        if seen <= self.visible_after:
            return 0
        return self.known.get(refund_id, 0)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, refunds_api_keys=dev_key_config("rfk_unit", "unit"), **values)


async def client(
    service: FakeService | None, token: str | None = WEBHOOK_TOKEN
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(mews_webhook_token=token), service=service)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


@pytest.fixture
def short_budget(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(api.webhooks, "BUDGET_S", 0.6)
    monkeypatch.setattr(api.webhooks, "LOOKUP_EVERY_S", 0.1)
    return 0.6


async def test_payment_updated_makes_the_refund_check_now() -> None:
    service = FakeService({REFUND_ID: 1})
    async for http in client(service):
        response = await http.post(URL, json=message(updated()))
    assert response.status_code == 200, response.text
    assert response.json() == {"payment_updated": 1, "signalled": 1}
    assert service.lookups == [(ProviderName.MEWS, REFUND_ID, "Mews PaymentUpdated webhook")]


async def test_a_wrong_token_is_the_same_404_as_no_route_and_as_no_configured_token() -> None:
    service = FakeService({REFUND_ID: 1})
    answers = []
    async for http in client(service):
        answers.append(await http.post(f"/webhooks/mews/{WEBHOOK_TOKEN}x", json=message(updated())))
        answers.append(await http.post("/webhooks/mews/", json=message(updated())))
        no_route = await http.post("/no/such/route", json={})
    async for http in client(service, token=None):
        answers.append(await http.post(URL, json=message(updated())))
    async for http in client(service, token=""):
        answers.append(await http.post("/webhooks/mews/x", json=message(updated())))
    assert service.lookups == []
    for answer in answers:
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert (body["type"], body["title"], body["status"]) == (
            no_route.json()["type"],
            no_route.json()["title"],
            404,
        )
        assert WEBHOOK_TOKEN not in answer.text
    # A wrong token and a missing configuration answer exactly alike.
    assert answers[0].json() == answers[2].json()


def test_the_token_is_compared_by_digest_and_never_matches_when_unset() -> None:
    from pydantic import SecretStr

    assert token_matches(WEBHOOK_TOKEN, SecretStr(WEBHOOK_TOKEN))
    assert not token_matches(WEBHOOK_TOKEN[:-1], SecretStr(WEBHOOK_TOKEN))
    assert not token_matches("", SecretStr(""))
    assert not token_matches("", None)


async def test_other_discriminators_are_ignored() -> None:
    service = FakeService({REFUND_ID: 1})
    events: list[dict[str, Any]] = [
        {"Discriminator": "ReservationUpdated", "Value": {"Id": REFUND_ID}},
        {"Discriminator": "CustomerAdded", "Value": "anything"},
        {"Discriminator": "ServiceOrderUpdated"},
    ]
    async for http in client(service):
        response = await http.post(URL, json=message(*events))
        empty = await http.post(URL, json=message())
    assert response.json() == {"payment_updated": 0, "signalled": 0}
    assert empty.json() == {"payment_updated": 0, "signalled": 0}
    assert service.lookups == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"not json", ["body"]),
        (b"[]", ["body"]),
        (b'{"EnterpriseId": "e"}', ["body", "Events"]),
        (b'{"Events": {"Discriminator": "PaymentUpdated"}}', ["body", "Events"]),
        (b'{"Events": [{"Value": {"Id": "x"}}]}', ["body", "Events", 0, "Discriminator"]),
        (
            b'{"Events": [{"Discriminator": "X"}, {"Discriminator": "PaymentUpdated"}]}',
            ["body", "Events", 1, "Value"],
        ),
        (
            b'{"Events": [{"Discriminator": "PaymentUpdated", "Value": {"Id": ""}}]}',
            ["body", "Events", 0, "Value", "Id"],
        ),
        (b"\xff\xfe", ["body"]),
    ],
)
async def test_a_malformed_message_is_a_422_problem_without_the_token(
    body: bytes, where: list[str | int]
) -> None:
    service = FakeService({REFUND_ID: 1})
    async for http in client(service):
        response = await http.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "urn:refunds:problem:validation"
    assert problem["instance"] == MASKED_PATH
    assert problem["errors"][0]["loc"] == where
    assert WEBHOOK_TOKEN not in response.text
    assert service.lookups == []


async def test_an_unknown_id_is_looked_up_within_the_budget_then_2xx(short_budget: float) -> None:
    service = FakeService()
    async for http in client(service):
        started = time.monotonic()
        response = await http.post(URL, json=message(updated("not-a-refund-of-ours")))
        took = time.monotonic() - started
    assert response.json() == {"payment_updated": 1, "signalled": 0}
    assert 3 <= len(service.lookups) <= 7, service.lookups
    assert short_budget - 0.2 <= took <= short_budget + 0.5


async def test_a_refund_not_visible_yet_is_found_on_a_later_lookup(short_budget: float) -> None:
    service = FakeService({REFUND_ID: 1}, visible_after=2)
    async for http in client(service):
        response = await http.post(URL, json=message(updated()))
    assert response.json() == {"payment_updated": 1, "signalled": 1}
    assert len(service.lookups) == 3


async def test_repeats_in_one_message_are_one_lookup_and_ids_are_looked_up_together(
    short_budget: float,
) -> None:
    other = "1a2b3c4d-0000-4000-8000-000000000001"
    service = FakeService({REFUND_ID: 1, other: 1})
    async for http in client(service):
        response = await http.post(URL, json=message(updated(), updated(other), updated()))
    assert response.json() == {"payment_updated": 3, "signalled": 2}
    assert sorted(rid for _, rid, _ in service.lookups) == sorted([REFUND_ID, other])


async def test_a_lookup_hanging_past_the_budget_is_given_up(short_budget: float) -> None:
    class Hanging(FakeService):
        async def check_now_by_provider_refund_id(
            self, provider: ProviderName, refund_id: str, *, reason: str = "provider webhook"
        ) -> int:
            await asyncio.sleep(30)
            return 1

    async for http in client(Hanging()):
        started = time.monotonic()
        response = await http.post(URL, json=message(updated()))
        took = time.monotonic() - started
    assert response.json() == {"payment_updated": 1, "signalled": 0}
    assert took < short_budget + 1.5


async def test_temporal_unreachable_is_503_so_mews_sends_it_again() -> None:
    failing = FakeService(fail_with=RPCError("down", RPCStatusCode.UNAVAILABLE, b""))
    async for http in client(failing):
        down = await http.post(URL, json=message(updated()))
    async for http in client(None):
        not_connected = await http.post(URL, json=message(updated()))
    for response in (down, not_connected):
        assert response.status_code == 503
        assert response.json()["instance"] == MASKED_PATH
        assert response.headers["Retry-After"] == "5"
        assert WEBHOOK_TOKEN not in response.text


def test_the_openapi_document_describes_the_webhook_without_a_token() -> None:
    app = create_app(
        settings(mews_webhook_token=WEBHOOK_TOKEN),
        service=FakeService(),  # type: ignore[arg-type]
    )
    document = app.openapi()
    operation = document["paths"]["/webhooks/mews/{token}"]["post"]
    assert set(operation["responses"]) >= {"200", "404", "422", "503"}
    assert "MewsWebhook" in document["components"]["schemas"]
    assert WEBHOOK_TOKEN not in str(document)


def test_mask_token() -> None:
    line = f'127.0.0.1:5 - "POST {URL}?a=1 HTTP/1.1" 200'
    assert mask_token(line) == '127.0.0.1:5 - "POST /webhooks/mews/***?a=1 HTTP/1.1" 200'


async def test_the_token_never_reaches_a_log_line_of_a_real_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Built as `refunds api` builds it (app, then uvicorn's config and its logging), served
    on a socket: the access log line shows the path masked."""
    app = create_app(
        settings(mews_webhook_token=WEBHOOK_TOKEN),
        service=FakeService({REFUND_ID: 1}),  # type: ignore[arg-type]
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on")
    server = uvicorn.Server(config)
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ok = await http.post(URL, json=message(updated()))
            bad = await http.post(URL, content=b"{")
            wrong = await http.post(f"{URL}-wrong", json=message(updated()))
            get = await http.get(URL)
        assert [ok.status_code, bad.status_code, wrong.status_code] == [200, 422, 404]
        assert get.status_code == 405
    finally:
        server.should_exit = True
        await serving
        access.removeHandler(handler)
    lines = written.getvalue()
    assert f"POST {MASKED_PATH} HTTP/1.1" in lines, lines
    assert lines.count(MASKED_PATH) == 4, lines
    # Everything the server side logged (httpx and httpcore are the test's client: Mews).
    served = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "refunds.api" for r in served)
    everything = lines + "\n".join(r.getMessage() for r in served)
    assert WEBHOOK_TOKEN not in everything
