"""Merchant profiles end to end: one real worker process, the dev server and the simulators.

The worker holds five profiles besides a disabled one: Mews ``default`` (the MEWS_* settings),
``hotel`` (an enterprise's own token, its access token in a file) and ``group`` (a portfolio
token in environment variables), Paynow ``default`` and ``shop-b`` (both keys in files). The
simulators hold a tenant per profile, each checking its own credentials; the journal shows
which tenant (and which credential, as a digest) every refund was made with.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from devstack.stack import EmbeddedStack, StackConfig
from simulators.common import credential_digest
from simulators.serving import free_port
from starter.client import RefundClient
from tests.support.simulators import SimulatorControl
from tests.support.stacks import started

# A real worker process, dev server and simulators: left out by `make unit`.
pytestmark = pytest.mark.e2e

FINAL_TIMEOUT_S = 30.0
HOTEL_ENTERPRISE = str(uuid.UUID(int=0x40E1))
GROUP_A, GROUP_B = str(uuid.UUID(int=0x6A01)), str(uuid.UUID(int=0x6B02))
SECRETS = {
    "HOTEL_CLIENT_TOKEN": "E2E-HOTEL-CLIENT-TOKEN-7f3a",
    "HOTEL_ACCESS_TOKEN": "E2E-HOTEL-ACCESS-TOKEN-1b9c",
    "HOTEL_ACCESS_TOKEN_ROTATED": "E2E-HOTEL-ACCESS-TOKEN-ROTATED-5d2e",
    "GROUP_CLIENT_TOKEN": "E2E-GROUP-CLIENT-TOKEN-0c4d",
    "GROUP_ACCESS_TOKEN": "E2E-GROUP-PORTFOLIO-TOKEN-8e1f",
    "SHOP_B_API_KEY": "e2e-shop-b-api-key-3a7b",
    "SHOP_B_SIGNATURE_KEY": "e2e-shop-b-signature-key-9c6d",
}


def profiles_toml(sim_url: str) -> str:
    return f"""
[mews.hotel]
base_url = "{sim_url}/mews"
portfolio = false
client_token_env = "E2E_HOTEL_CLIENT_TOKEN"
access_token_file = "secrets/hotel-access-token"

[mews.group]
base_url = "{sim_url}/mews"
portfolio = true
client = "refund-orchestrator e2e group"
client_token_env = "E2E_GROUP_CLIENT_TOKEN"
access_token_env = "E2E_GROUP_ACCESS_TOKEN"

[mews.closed]
base_url = "{sim_url}/mews"
portfolio = false
enabled = false
client_token_env = "E2E_NOT_SET_ANYWHERE"
access_token_env = "E2E_NOT_SET_ANYWHERE"

[paynow.shop-b]
base_url = "{sim_url}/paynow"
api_key_file = "secrets/shop-b-api-key"
signature_key_file = "secrets/shop-b-signature-key"
"""


def write_secret(path: Path, value: str) -> None:
    """As Kubernetes does: a new file moved into place, never a half-written one."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(value + "\n")
    os.replace(staged, path)


@dataclass
class ProfilesStack(SimulatorControl):
    stack: EmbeddedStack
    client: RefundClient
    http: httpx.AsyncClient
    secrets_dir: Path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def profiles(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProfilesStack]:
    root = tmp_path_factory.mktemp("profiles")
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    write_secret(secrets_dir / "hotel-access-token", SECRETS["HOTEL_ACCESS_TOKEN"])
    write_secret(secrets_dir / "shop-b-api-key", SECRETS["SHOP_B_API_KEY"])
    write_secret(secrets_dir / "shop-b-signature-key", SECRETS["SHOP_B_SIGNATURE_KEY"])
    config = StackConfig(
        temporal_port=free_port(),
        ui_port=free_port(),
        sim_port=free_port(),
        state_dir=root / "state",
        poll_initial_s=0.3,
        poll_max_s=1.0,
        secret_env={
            "REFUNDS_PROFILES_FILE": str(root / "profiles.toml"),
            "E2E_HOTEL_CLIENT_TOKEN": SECRETS["HOTEL_CLIENT_TOKEN"],
            "E2E_GROUP_CLIENT_TOKEN": SECRETS["GROUP_CLIENT_TOKEN"],
            "E2E_GROUP_ACCESS_TOKEN": SECRETS["GROUP_ACCESS_TOKEN"],
        },
    )
    stack = EmbeddedStack(config)
    (root / "profiles.toml").write_text(profiles_toml(stack.sim_url))
    async with started(stack):
        client = await RefundClient.connect(stack.settings())
        async with httpx.AsyncClient(base_url=stack.sim_url, timeout=10) as http:
            tenants: list[tuple[str, dict[str, Any]]] = [
                (
                    "/mews/_sim/tenants/hotel",
                    {
                        "client_token": SECRETS["HOTEL_CLIENT_TOKEN"],
                        "access_token": SECRETS["HOTEL_ACCESS_TOKEN"],
                        "enterprise_ids": [HOTEL_ENTERPRISE],
                    },
                ),
                (
                    "/mews/_sim/tenants/group",
                    {
                        "client_token": SECRETS["GROUP_CLIENT_TOKEN"],
                        "access_token": SECRETS["GROUP_ACCESS_TOKEN"],
                        "enterprise_ids": [GROUP_A, GROUP_B],
                        "portfolio": True,
                    },
                ),
                (
                    "/paynow/_sim/shops/shop-b",
                    {
                        "api_key": SECRETS["SHOP_B_API_KEY"],
                        "signature_key": SECRETS["SHOP_B_SIGNATURE_KEY"],
                    },
                ),
            ]
            for path, body in tenants:
                response = await http.put(path, json=body)
                assert response.status_code == 200, response.text
            yield ProfilesStack(stack, client, http, secrets_dir)


async def mews_request(
    stack: ProfilesStack, merchant: str, enterprise: str | None, *, name_enterprise: bool = True
) -> RefundRequest:
    fields = {"enterprise_id": enterprise} if enterprise else {}
    payment = await stack.new_payment(ProviderName.MEWS, "succeeds_immediately", **fields)
    return RefundRequest(
        idempotency_key=f"profiles-{merchant}-{uuid.uuid4().hex[:10]}",
        provider=ProviderName.MEWS,
        payment_id=payment["payment_id"],
        account_id=payment["account_id"],
        enterprise_id=enterprise if name_enterprise else None,
        reason="profiles e2e",
        merchant=merchant,
    )


async def paynow_request(stack: ProfilesStack, merchant: str, shop: str) -> RefundRequest:
    payment = await stack.new_payment(ProviderName.PAYNOW, "succeeds_immediately", shop=shop)
    return RefundRequest(
        idempotency_key=f"profiles-{merchant}-{uuid.uuid4().hex[:10]}",
        provider=ProviderName.PAYNOW,
        payment_id=payment["payment_id"],
        amount_minor=1000,
        currency="PLN",
        reason="profiles e2e",
        merchant=merchant,
    )


async def run(stack: ProfilesStack, *requests: RefundRequest) -> list[RefundStatus]:
    async def one(request: RefundRequest) -> RefundStatus:
        await stack.client.start(request)
        return await asyncio.wait_for(stack.client.wait(request.idempotency_key), FINAL_TIMEOUT_S)

    return list(await asyncio.gather(*(one(r) for r in requests)))


def readable(node: Any) -> str:
    """A history's JSON with every payload's base64 ``data`` decoded, so a secret in any
    input, result, memo or failure would show."""
    if isinstance(node, dict):
        parts = []
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                parts.append(base64.b64decode(value).decode(errors="replace"))
            else:
                parts.append(f"{key}: {readable(value)}")
        return "\n".join(parts)
    if isinstance(node, list):
        return "\n".join(readable(item) for item in node)
    return str(node)


def made_by(journal: dict[str, Any], refund_id: str | None) -> dict[str, Any]:
    records: list[dict[str, Any]] = [r for r in journal["refunds"] if r["refund_id"] == refund_id]
    assert len(records) == 1, records
    return records[0]


async def test_five_profiles_refund_in_one_worker_each_under_its_credentials(
    profiles: ProfilesStack,
) -> None:
    requests = [
        await mews_request(profiles, "default", None),
        await mews_request(profiles, "hotel", HOTEL_ENTERPRISE, name_enterprise=False),
        await mews_request(profiles, "group", GROUP_B),
        await paynow_request(profiles, "default", "default"),
        await paynow_request(profiles, "shop-b", "shop-b"),
    ]
    statuses = await run(profiles, *requests)
    assert [s.state for s in statuses] == [RefundState.SUCCEEDED] * 5, [
        (s.merchant, s.message) for s in statuses
    ]

    mews, paynow = (
        await profiles.journal(ProviderName.MEWS),
        await profiles.journal(ProviderName.PAYNOW),
    )
    expected = [
        (mews, "default", None),
        (mews, "hotel", SECRETS["HOTEL_ACCESS_TOKEN"]),
        (mews, "group", SECRETS["GROUP_ACCESS_TOKEN"]),
        (paynow, "default", None),
        (paynow, "shop-b", SECRETS["SHOP_B_API_KEY"]),
    ]
    for status, (journal, tenant, credential) in zip(statuses, expected, strict=True):
        record = made_by(journal, status.provider_refund_id)
        assert record["tenant"] == tenant, status.merchant
        if credential is not None:
            assert record["credential"] == credential_digest(credential)
    # Every provider call carried a tenant's credentials: none was refused as unknown.
    for journal in (mews, paynow):
        assert all(e["tenant"] is not None for e in journal["requests"])

    # The history holds the profile's name, never its secrets.
    history = await profiles.client.handle(requests[1].idempotency_key).fetch_history()
    text = readable(json.loads(history.to_json()))
    assert '"merchant":"hotel"' in text
    for secret in SECRETS.values():
        assert secret not in text


async def test_rotated_secret_file_is_used_without_restart(profiles: ProfilesStack) -> None:
    pid = profiles.stack.worker_pid
    rotated = SECRETS["HOTEL_ACCESS_TOKEN_ROTATED"]
    write_secret(profiles.secrets_dir / "hotel-access-token", rotated)
    # From now on the simulator accepts only the new token for the hotel.
    response = await profiles.http.put(
        "/mews/_sim/tenants/hotel",
        json={
            "client_token": SECRETS["HOTEL_CLIENT_TOKEN"],
            "access_token": rotated,
            "enterprise_ids": [HOTEL_ENTERPRISE],
        },
    )
    assert response.status_code == 200, response.text

    request = await mews_request(profiles, "hotel", HOTEL_ENTERPRISE, name_enterprise=False)
    (status,) = await run(profiles, request)
    assert status.state is RefundState.SUCCEEDED, status.message
    record = made_by(await profiles.journal(ProviderName.MEWS), status.provider_refund_id)
    assert record == {**record, "tenant": "hotel", "credential": credential_digest(rotated)}
    assert profiles.stack.worker_pid == pid  # the same worker process throughout


async def test_requests_a_profile_cannot_take_are_rejected_before_any_provider_call(
    profiles: ProfilesStack,
) -> None:
    before = len((await profiles.journal(ProviderName.MEWS))["requests"])
    unknown = await mews_request(profiles, "nowhere", None)
    closed = await mews_request(profiles, "closed", None)
    no_enterprise = await mews_request(profiles, "group", GROUP_A, name_enterprise=False)
    stray_enterprise = await mews_request(profiles, "hotel", HOTEL_ENTERPRISE)
    statuses = await run(profiles, unknown, closed, no_enterprise, stray_enterprise)

    assert [s.state for s in statuses] == [RefundState.REJECTED] * 4
    messages = [s.message or "" for s in statuses]
    assert "'nowhere' is not configured for mews" in messages[0]
    assert "mews: default, group, hotel, closed (disabled)" in messages[0]
    assert "paynow: default, shop-b" in messages[0]
    assert "'closed' is disabled" in messages[1]
    assert "enterprise_id is required" in messages[2]
    assert "enterprise_id must be left unset" in messages[3]
    for message in messages:
        for secret in SECRETS.values():
            assert secret not in message
    # Refused offline: no request reached the simulator.
    assert len((await profiles.journal(ProviderName.MEWS))["requests"]) == before
