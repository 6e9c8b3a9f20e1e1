"""The API app in-process with a fake service: key configuration, insecure mode, Temporal
unreachable, the streamed body limit and the OpenAPI document. No stack needed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from api.auth import INSECURE_CALLER
from api.keys import ApiKeysError, Keyring, Scope, dev_key_config, hash_token
from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from core.settings import Settings
from starter.client import RefundPage, StartedRefund

TOKEN = "rfk_unit-test-token"


class FakeService:
    def __init__(self, *, reachable: bool = True, fail_with: Exception | None = None) -> None:
        self.started: list[tuple[RefundRequest, str | None]] = []
        self._reachable = reachable
        self.fail_with = fail_with

    async def start(
        self,
        request: RefundRequest,
        traceparent: str | None = None,
        *,
        started_by: str | None = None,
    ) -> StartedRefund:
        if self.fail_with is not None:
            raise self.fail_with
        self.started.append((request, started_by))
        return StartedRefund(request.idempotency_key, request.workflow_id, created=True)

    async def status(self, key: str) -> RefundStatus:
        return RefundStatus(
            key=key,
            workflow_id=f"refund:{key}",
            provider=ProviderName.PAYNOW,
            payment_id="P-1",
            state=RefundState.SUCCEEDED,
        )

    async def list_page(self, **query: Any) -> RefundPage:
        return RefundPage([], None)

    async def request_cancel(self, key: str, reason: str) -> Any:
        raise NotImplementedError

    async def resolve(self, key: str, request: Any) -> Any:
        raise NotImplementedError

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        return self._reachable


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


BODY = {
    "provider": "paynow",
    "payment_id": "P-1",
    "amount_minor": 100,
    "currency": "PLN",
    "reason": "r",
}
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "unit-1"}


@pytest.fixture
async def keyed() -> AsyncIterator[tuple[httpx.AsyncClient, FakeService]]:
    service = FakeService()
    app = create_app(settings(refunds_api_keys=dev_key_config(TOKEN, "unit")), service=service)
    async for client in client_for(app):
        yield client, service


def test_keys_are_found_by_digest_and_configured_from_env_and_file(tmp_path: Path) -> None:
    other = {"name": "other", "sha256": hash_token("another"), "scopes": ["refunds:read"]}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([other]))
    keyring = Keyring.from_settings(
        settings(refunds_api_keys=dev_key_config(TOKEN, "unit"), refunds_api_keys_file=path)
    )
    found = keyring.find(TOKEN)
    assert found is not None
    assert (found.name, found.scopes) == ("unit", frozenset(Scope))
    assert keyring.find("another") is not None
    assert keyring.find("nothing") is None
    assert keyring.find(hash_token(TOKEN)) is None, "the digest itself is no token"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "no API key is configured"),
        ({"refunds_api_keys": "not json"}, "REFUNDS_API_KEYS is not JSON"),
        (
            {"refunds_api_keys": '[{"name": "a", "sha256": "x", "scopes": ["refunds:read"]}]'},
            "sha256",
        ),
        (
            {
                "refunds_api_keys": dev_key_config("a", "n")[:-1]
                + ","
                + dev_key_config("b", "n")[1:]
            },
            "unique",
        ),
        ({"refunds_api_keys_file": Path("/nonexistent/keys.json")}, "cannot read"),
    ],
)
def test_unusable_key_configurations_refuse_to_start(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiKeysError, match=message) as raised:
        create_app(settings(**values), service=FakeService())
    assert TOKEN not in str(raised.value)


async def test_insecure_mode_lets_anyone_in_and_records_it() -> None:
    service = FakeService()
    app = create_app(settings(refunds_api_insecure_no_auth=True), service=service)
    async for client in client_for(app):
        answer = await client.post("/v1/refunds", json=BODY, headers={"Idempotency-Key": "k"})
        assert answer.status_code == 201, answer.text
    assert service.started[0][1] == INSECURE_CALLER


async def test_the_key_name_is_who_started_and_the_fingerprint_ignores_it(
    keyed: tuple[httpx.AsyncClient, FakeService],
) -> None:
    client, service = keyed
    assert (await client.post("/v1/refunds", json=BODY, headers=HEADERS)).status_code == 201
    request, who = service.started[0]
    assert who == "unit"
    assert request.requester is None
    plain = RefundRequest.model_validate({**BODY, "idempotency_key": "unit-1"})
    assert request.fingerprint() == plain.fingerprint()


async def test_temporal_unreachable_is_503(keyed: tuple[httpx.AsyncClient, FakeService]) -> None:
    client, service = keyed
    service.fail_with = RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
    answer = await client.post("/v1/refunds", json=BODY, headers=HEADERS)
    assert answer.status_code == 503
    assert answer.json()["type"] == "urn:refunds:problem:unavailable"
    assert answer.headers["retry-after"] == "5"
    assert "connection refused" not in answer.text
    not_connected = create_app(settings(refunds_api_keys=dev_key_config(TOKEN)))
    async for other in client_for(not_connected):
        assert (await other.get("/readyz")).status_code == 503
        assert (await other.get("/v1/refunds/k", headers=HEADERS)).status_code == 503
        assert (await other.get("/healthz")).status_code == 200
    unreachable = create_app(
        settings(refunds_api_keys=dev_key_config(TOKEN)), service=FakeService(reachable=False)
    )
    async for other in client_for(unreachable):
        assert (await other.get("/readyz")).status_code == 503


async def test_a_streamed_body_over_the_limit_is_413(
    keyed: tuple[httpx.AsyncClient, FakeService],
) -> None:
    client, service = keyed

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 4096  # no Content-Length: counted as it streams in

    answer = await client.post("/v1/refunds", content=chunks(), headers=HEADERS)
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert service.started == []


def test_openapi_is_3_1_and_documents_problem_answers() -> None:
    app = create_app(settings(refunds_api_keys=dev_key_config(TOKEN)), service=FakeService())
    document = app.openapi()
    assert document["openapi"].startswith("3.1")
    assert "Problem" in document["components"]["schemas"]
    paths = document["paths"]
    assert set(paths) == {
        "/v1/refunds",
        "/v1/refunds/{key}",
        "/v1/refunds/{key}/cancel",
        "/v1/refunds/{key}/resolve",
        "/healthz",
        "/readyz",
        "/webhooks/mews/{token}",
    }
    create = paths["/v1/refunds"]["post"]
    assert {"200", "201", "401", "403", "409", "413", "422", "503"} <= set(create["responses"])
    assert "application/problem+json" in create["responses"]["409"]["content"]
    body = document["components"]["schemas"]["RefundCreate"]
    assert "idempotency_key" not in body["properties"]
    assert "by" not in document["components"]["schemas"]["ResolveBody"]["properties"]
    header = next(p for p in create["parameters"] if p["in"] == "header")
    assert header["name"] == "Idempotency-Key"
    assert header["schema"]["pattern"] == "^[A-Za-z0-9._:-]+$"


async def test_a_keys_default_notify_url_goes_into_requests_that_name_none() -> None:
    service = FakeService()
    key = {
        "name": "pms",
        "sha256": hash_token(TOKEN),
        "scopes": ["refunds:write"],
        "notify_url": "https://pms.example.com/refund-events",
    }
    app = create_app(settings(refunds_api_keys=json.dumps([key])), service=service)
    async for client in client_for(app):
        plain = await client.post("/v1/refunds", json=BODY, headers=HEADERS)
        assert plain.status_code == 201, plain.text
        own = {**BODY, "notify_url": "https://other.example.com/hook"}
        named = await client.post(
            "/v1/refunds", json=own, headers={**HEADERS, "Idempotency-Key": "unit-2"}
        )
        assert named.status_code == 201, named.text
        bad = await client.post(
            "/v1/refunds",
            json={**BODY, "notify_url": "gopher://x"},
            headers={**HEADERS, "Idempotency-Key": "unit-3"},
        )
    assert [r.notify_url for r, _ in service.started] == [
        "https://pms.example.com/refund-events",
        "https://other.example.com/hook",
    ]
    assert bad.status_code == 422
    assert "notify_url" in bad.text
