"""Provider budgets end to end: two real worker processes share one Mews budget through
Temporal's task queue rate limit, so a burst of calls well above Mews' limit gets no 429.

The Mews simulator runs in this process with its rate limit small (``LIMIT`` requests per
access token in any ``WINDOW_S``, then 429 with ``Retry-After``); the worker processes run on
the real dev server (`temporal server start-dev`: four partitions per task queue, as a real
cluster by default). A test-only workflow (``tests/budgets/burst.py``) asks a worker for the
refund's route (``route_refund`` on the main task queue), then schedules ``CALLS`` payment
checks at once on the budget queue it names.

* With ``REFUNDS_MEWS_BUDGET`` set to the simulator's limit: no 429 in the simulator's
  journal, every call done at its first attempt, on both workers, no window of ``WINDOW_S``
  holding more than ``LIMIT`` requests, at about the budget's rate.
* The control, ``REFUNDS_MEWS_BUDGET=none``: the same burst gets 429s (so the first test
  could fail), and every call still completes, retried after its ``Retry-After``.

Wall time: about 30 s on the 2-core machine, most of it the budgeted burst (60 calls at 4/s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.budgets import PARTITIONS, Budget
from core.models import ProviderName, RefundRequest
from simulators.mews import MewsSimulator
from simulators.mews.seed import DEFAULT_ACCESS_TOKEN, DEFAULT_CLIENT_TOKEN
from simulators.serving import BackgroundServer
from tests.budgets.burst import BudgetBurstWorkflow, BurstInput, BurstResult
from tests.workflows.conftest import venv_binary

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
LIMIT = 20
WINDOW_S = 2.0
BUDGET = Budget(LIMIT, WINDOW_S)
# Three times what the simulator takes in a window.
CALLS = 60
WORKERS = 2
MEWS_GET_ALL = "payments/getAll"


@pytest.fixture(scope="module")
def mews() -> Iterator[tuple[MewsSimulator, str]]:
    simulator = MewsSimulator(rate_limit=LIMIT, rate_window_s=WINDOW_S)
    server = BackgroundServer(simulator.app)
    server.start()
    try:
        yield simulator, server.base_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=venv_binary("temporal"),
        dev_server_extra_args=["--log-level", "error"],
    )
    async with environment:
        yield environment


class WorkerProcess:
    """``refunds worker`` in its own session, run from an empty directory (no .env)."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.log_path = directory / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker"],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def identity_prefix(self) -> str:
        return f"{self.popen.pid}@"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, 20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


@dataclass(frozen=True)
class Workers:
    task_queue: str
    processes: list[WorkerProcess]
    # What each process asked the server for on the Mews budget queue.
    rates: list[float]


@asynccontextmanager
async def refund_workers(
    temporal: WorkflowEnvironment, sim_url: str, directory: Path, budget: str
) -> AsyncIterator[Workers]:
    """``WORKERS`` refund worker processes on a fresh task queue, yielded once each polls
    the Mews budget queue; stopped with SIGTERM after, each must exit 0."""
    task_queue = f"budgets-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": temporal.client.namespace,
        "REFUNDS_TASK_QUEUE": task_queue,
        "MEWS_BASE_URL": sim_url,
        "MEWS_CLIENT_TOKEN": DEFAULT_CLIENT_TOKEN,
        "MEWS_ACCESS_TOKEN": DEFAULT_ACCESS_TOKEN,
        "REFUNDS_MEWS_BUDGET": budget,
    }
    processes = [WorkerProcess(f"worker-{n}", env, directory) for n in range(1, WORKERS + 1)]
    try:
        queue = f"{task_queue}.budget.mews.default"
        rates = await wait_for_pollers(temporal.client, queue, processes)
        yield Workers(task_queue, processes, rates)
    finally:
        await asyncio.gather(*(p.stop() for p in processes))
    for process in processes:
        assert process.popen.returncode == 0, process.log_tail()


async def wait_for_pollers(
    client: Client, queue: str, processes: list[WorkerProcess]
) -> list[float]:
    """Once every process polls ``queue``: the rate each asked for (what `temporal
    task-queue describe` shows as a poller's RatePerSecond).

    A poll goes to one of the queue's partitions and waits there, so each partition is
    described (as `--partitions-legacy 4` does): the root alone may not see a worker for
    a minute."""
    deadline = time.monotonic() + 45
    requests = [
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue if n == 0 else f"/_sys/{queue}/{n}"),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
        for n in range(PARTITIONS)
    ]
    while True:
        described = await asyncio.gather(
            *(client.workflow_service.describe_task_queue(r) for r in requests)
        )
        pollers = {p.identity: p for partition in described for p in partition.pollers}
        rates = [
            poller.rate_per_second
            for process in processes
            for identity, poller in pollers.items()
            if identity.startswith(process.identity_prefix)
        ]
        if len(rates) == len(processes):
            return rates
        for process in processes:
            assert process.popen.poll() is None, process.log_tail()
        assert time.monotonic() < deadline, "\n".join(p.log_tail() for p in processes)
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Burst:
    result: BurstResult
    # The simulator's journal entries of the calls, in order.
    calls: list[dict[str, Any]]
    # The identity of the worker of each activity attempt that started.
    ran_on: list[str]
    took_s: float


async def burst(client: Client, simulator: MewsSimulator, workers: Workers) -> Burst:
    payment = next(
        p for p in simulator.payments() if p["state"] == "Charged" and p["scenario"] == "succeeds"
    )
    request = RefundRequest(
        idempotency_key=f"budget-{uuid.uuid4().hex[:12]}",
        provider=ProviderName.MEWS,
        payment_id=payment["payment_id"],
        account_id=payment["account_id"],
        amount_minor=100,
        currency=payment["currency"],
        reason="budget test",
    )
    burst_queue = f"{workers.task_queue}-burst"
    simulator.reset()
    began = time.monotonic()
    async with Worker(client, task_queue=burst_queue, workflows=[BudgetBurstWorkflow]):
        handle = await client.start_workflow(
            BudgetBurstWorkflow.run,
            BurstInput(request=request, main_task_queue=workers.task_queue, calls=CALLS),
            id=f"budget-burst-{uuid.uuid4().hex[:8]}",
            task_queue=burst_queue,
        )
        result = await asyncio.wait_for(handle.result(), 60)
    took_s = time.monotonic() - began
    ran_on = [
        event.activity_task_started_event_attributes.identity
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    calls = [r for r in simulator.core.journal()["requests"] if MEWS_GET_ALL in r["path"]]
    return Burst(result, calls, ran_on, took_s)


def most_in_a_window(times: list[datetime], window_s: float) -> int:
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while (at - ordered[start]).total_seconds() >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_a_burst_over_the_mews_limit_gets_no_429_from_two_workers_sharing_a_budget(
    temporal: WorkflowEnvironment,
    mews: tuple[MewsSimulator, str],
    tmp_path: Path,
) -> None:
    simulator, sim_url = mews
    async with refund_workers(temporal, sim_url, tmp_path, str(BUDGET)) as workers:
        assert workers.rates == pytest.approx([BUDGET.tasks_per_second] * WORKERS)
        ran = await burst(temporal.client, simulator, workers)

    assert ran.result.task_queue == f"{workers.task_queue}.budget.mews.default"
    statuses = [call["status"] for call in ran.calls]
    assert statuses.count(429) == 0, f"{statuses.count(429)} of {len(statuses)} calls got a 429"
    assert statuses == [200] * CALLS
    assert ran.result.attempts == [1] * CALLS
    times = [datetime.fromisoformat(call["at"]) for call in ran.calls]
    assert most_in_a_window(times, WINDOW_S) <= LIMIT
    # Both workers made calls: the budget held across them, not inside one.
    for process in workers.processes:
        assert any(i.startswith(process.identity_prefix) for i in ran.ran_on), ran.ran_on
    # At the budget's rate, not far slower.
    assert ran.took_s < CALLS / BUDGET.tasks_per_second + 10, ran.took_s


async def test_without_the_budget_the_same_burst_gets_429s_and_retry_after_still_works(
    temporal: WorkflowEnvironment,
    mews: tuple[MewsSimulator, str],
    tmp_path: Path,
) -> None:
    simulator, sim_url = mews
    async with refund_workers(temporal, sim_url, tmp_path, "none") as workers:
        # No limit asked for: the pollers show the server's default (100000/s).
        assert min(workers.rates) > 1000, workers.rates
        ran = await burst(temporal.client, simulator, workers)

    statuses = [call["status"] for call in ran.calls]
    assert statuses.count(429) >= CALLS - LIMIT, statuses
    # Each 429 retried after its Retry-After, until all went through.
    assert statuses.count(200) == CALLS
    assert max(ran.result.attempts) > 1
