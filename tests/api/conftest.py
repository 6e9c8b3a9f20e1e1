"""One embedded stack with the HTTP API (`refunds api` as a real process) for the package:
the Temporal dev server, both simulators, the worker and the API on free ports, with three
API keys of different scopes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from api.keys import Scope, hash_token, new_token
from core.models import ProviderName
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient
from tests.support.simulators import SimulatorControl
from tests.support.stacks import started

# name -> scopes; each gets a fresh token per session.
KEYS = {
    "operator": (Scope.READ, Scope.WRITE, Scope.OPERATE),
    "checkout": (Scope.READ, Scope.WRITE),
    "viewer": (Scope.READ,),
}
# What the stack's starters set (REFUNDS_RECONCILE_*): a lost Mews answer is looked up once,
# a second later, so a refund reaches NEEDS_ATTENTION in seconds.
SHORT_RECONCILE = {"REFUNDS_RECONCILE_SETTLE_S": "1", "REFUNDS_RECONCILE_LOOKUPS": "1"}


@dataclass
class ApiStack(SimulatorControl):
    stack: EmbeddedStack
    api_url: str
    tokens: dict[str, str]
    client: RefundClient
    http: httpx.AsyncClient

    def auth(self, name: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    async def journal_size(self) -> dict[str, int]:
        """How many requests each simulator has seen."""
        return {
            provider.value: len((await self.journal(provider))["requests"])
            for provider in ProviderName
        }


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def api_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    tokens = {name: new_token() for name in KEYS}
    keys = [
        {"name": name, "sha256": hash_token(tokens[name]), "scopes": [s.value for s in scopes]}
        for name, scopes in KEYS.items()
    ]
    api_port = free_port()
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            api_port=api_port,
            state_dir=tmp_path_factory.mktemp("api-state"),
            poll_initial_s=0.3,
            poll_max_s=1.0,
            secret_env={"REFUNDS_API_KEYS": json.dumps(keys), **SHORT_RECONCILE},
        )
    )
    async with started(stack):
        assert stack.api_token is None, "configured keys: no dev key is made"
        client = await RefundClient.connect(stack.settings())
        async with httpx.AsyncClient(base_url=stack.sim_url, timeout=10) as http:
            yield ApiStack(stack, f"http://127.0.0.1:{api_port}", tokens, client, http)


@pytest_asyncio.fixture(loop_scope="session")
async def api(api_stack: ApiStack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the API (no credentials: each test sends its own)."""
    async with httpx.AsyncClient(base_url=api_stack.api_url, timeout=90) as client:
        yield client
