"""One embedded stack (Temporal dev server, simulators, worker process) for the whole session.

Ports are free ones and the state directory is temporary, so the suite runs beside a
`refunds dev` on the default ports. CLI calls run the real entry point in a child process
with the stack's environment.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from core.settings import Settings
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient
from tests.support.simulators import SimulatorControl
from tests.support.stacks import started

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@dataclass
class E2E(SimulatorControl):
    stack: EmbeddedStack
    settings: Settings
    sim_url: str
    client: RefundClient
    http: httpx.AsyncClient

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env()

    @property
    def secrets(self) -> list[str]:
        """The four simulator credentials the worker holds."""
        env = self.stack.settings_env()
        names = ("MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN", "PAYNOW_API_KEY", "PAYNOW_SIGNATURE_KEY")
        return [env[name] for name in names]

    async def run(
        self, *argv: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> CliResult:
        """Run any program with the stack's environment (plus ``env``), fed ``stdin``."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        feed = stdin.encode() if stdin is not None else None
        out, err = await asyncio.wait_for(process.communicate(feed), CLI_TIMEOUT_S)
        assert process.returncode is not None
        return CliResult(process.returncode, out.decode(), err.decode())

    async def cli(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> CliResult:
        """``refunds ARGS`` through the real entry point (``main`` and its ``os._exit``)."""
        return await self.run(sys.executable, "-m", "cli", *args, env=env, stdin=stdin)


# Package scope: the stack stops before other packages' tests (a live dev server during the
# time-skipping workflow tests has been seen to stall them).
@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def e2e(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[E2E]:
    state_dir = tmp_path_factory.mktemp("refunds-state")
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            state_dir=state_dir,
            poll_initial_s=0.3,
            poll_max_s=1.0,
        )
    )
    async with started(stack):
        settings = stack.settings()
        client = await RefundClient.connect(settings)
        async with httpx.AsyncClient(base_url=stack.sim_url, timeout=10) as http:
            yield E2E(stack, settings, stack.sim_url, client, http)
