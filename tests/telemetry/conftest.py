"""A real refund path for the telemetry tests: dev server, the real worker, the real activities
and the Paynow adapter talking to the Paynow simulator in-process (ASGI).

Every test gets its own task queue and idempotency key; the dev server is shared.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from core.models import ProviderName, RefundOptions, RefundRequest
from core.settings import Settings
from providers.paynow import PaynowAdapter
from providers.paynow.signature import SIGNATURE_HEADER
from providers.registry import ProviderDirectory
from simulators.paynow import PaynowSimulator
from simulators.paynow.seed import DEFAULT_API_KEY, DEFAULT_SIGNATURE_KEY
from starter.client import RefundClient
from starter.connection import connect, ensure_search_attributes
from telemetry.http import TracedTransport
from telemetry.tracing import tracing_interceptor
from worker import build_budget_workers, build_worker, running

# Refunds of one payment queue in a lane workflow shared by the whole server, so every test
# refunds its own payment (a lane left on a finished test's task queue would never admit it).
SCENARIO = "succeeds_immediately"


@dataclass
class RefundStack:
    client: Client
    refunds: RefundClient
    sim: PaynowSimulator
    task_queue: str
    signatures: list[str] = field(default_factory=list)
    """Every ``Signature`` header the adapter sent: none may show up in telemetry."""

    @property
    def secrets(self) -> list[str]:
        return [DEFAULT_API_KEY, DEFAULT_SIGNATURE_KEY, *self.signatures]

    async def paynow_request(self, scenario: str = SCENARIO) -> RefundRequest:
        """A request refunding a new payment of the simulator's ``scenario`` (by default,
        refunds succeed at once)."""
        transport = httpx.ASGITransport(app=self.sim.app)
        async with httpx.AsyncClient(base_url="http://paynow.sim", transport=transport) as http:
            created = await http.post("_sim/payments", json={"scenario": scenario})
        assert created.status_code == 201, created.text
        return paynow_request(created.json()["payment_id"])


def paynow_request(payment_id: str) -> RefundRequest:
    return RefundRequest(
        idempotency_key=f"telemetry-{uuid.uuid4().hex[:12]}",
        provider=ProviderName.PAYNOW,
        payment_id=payment_id,
        amount_minor=1500,
        currency="PLN",
        reason="customer returned the goods",
    )


# Package scope: a dev server left running while the time-skipping tests of
# tests/workflows run has been seen to stall them.
@pytest.fixture(scope="package")
async def temporal_address() -> AsyncIterator[str]:
    binary = Path(sys.executable).parent / "temporal"
    if not binary.exists():
        pytest.fail(f"temporal not found next to {sys.executable}: run `make install`")
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(binary),
        dev_server_extra_args=["--log-level", "error"],
    )
    async with env:
        await ensure_search_attributes(env.client, env.client.namespace)
        yield env.client.service_client.config.target_host


@pytest.fixture(scope="session")
def session_spans() -> InMemorySpanExporter:
    """Spans of every test in the session; tests read only their own trace."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(session_spans: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    session_spans.clear()
    yield session_spans
    session_spans.clear()


@asynccontextmanager
async def refund_stack(
    address: str, *, runtime: Runtime | None = None
) -> AsyncIterator[RefundStack]:
    """A running worker on a fresh task queue, and a RefundClient to start refunds with."""
    task_queue = f"telemetry-{uuid.uuid4().hex}"
    settings = Settings(
        _env_file=None,
        temporal_address=address,
        refunds_task_queue=task_queue,
        paynow_api_key=SecretStr(DEFAULT_API_KEY),
        paynow_signature_key=SecretStr(DEFAULT_SIGNATURE_KEY),
    )
    client = await connect(settings, interceptors=[tracing_interceptor()], runtime=runtime)
    sim = PaynowSimulator()
    stack = RefundStack(
        client=client,
        refunds=RefundClient(
            client,
            task_queue=task_queue,
            options=RefundOptions(poll_initial_s=1, poll_max_s=1),
        ),
        sim=sim,
        task_queue=task_queue,
    )

    async def keep_signature(request: httpx.Request) -> None:
        if SIGNATURE_HEADER in request.headers:
            stack.signatures.append(request.headers[SIGNATURE_HEADER])

    http = httpx.AsyncClient(
        base_url="http://paynow.sim",
        transport=TracedTransport(httpx.ASGITransport(app=sim.app)),
        event_hooks={"request": [keep_signature]},
    )
    adapter = PaynowAdapter(
        client=http,
        api_key=SecretStr(DEFAULT_API_KEY),
        signature_key=SecretStr(DEFAULT_SIGNATURE_KEY),
    )
    directory = ProviderDirectory({ProviderName.PAYNOW: adapter})
    try:
        # The main worker and the budget queue's (where the provider calls run), as run_worker.
        workers = [build_worker(client, settings, directory)]
        async with running([*workers, *build_budget_workers(client, settings, directory)]):
            yield stack
    finally:
        await directory.aclose()
