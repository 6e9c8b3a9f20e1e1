"""Several worker processes on one task queue (issue 13, part 3), as
``docker-compose up --scale worker=N`` or a Deployment's replicas run them: refunds spread
over the workers, a worker SIGKILLed mid-call leaves its refunds to the others, and a worker
given SIGTERM finishes its calls and exits 0 within its grace period. Every refund ends
``SUCCEEDED`` with exactly one refund at the provider.

Three real ``refunds worker`` processes poll in each test: the fault stack's own and workers
added beside it (``EmbeddedStack.add_worker``: same settings, same task queue), one more
after a test took one down. At the end of the module the added ones are stopped and the
stack's first worker is started again if a test took it down. No test restarts the worker
it took down: the others must do its work.

Wall time: 56 s for the module with the stack's start, measured on the 2-core machine at a
load average of 12; most of it is the kill test (the 3 s call timeout, then the SDK's 10 s
sticky-queue timeout before the dead worker's workflows move) and starting workers.

Which worker runs what is the server's choice, so the tests find out rather than arrange it:
the history names the worker of each activity attempt (``identity``, ``<pid>@<host>``), and
while a provider call is held at a simulator, describing the workflow names the worker
running it (``pending_activities[].last_worker_identity``). The worker killed or stopped is
the one running the most of the held calls.

Mews refunds here reconcile after 1 s instead of 30 s (``reconcile_settle_s``), so a lost
Mews answer costs seconds; the rest of the timing is the fault stack's (conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType, PendingActivityState

from core.models import ProviderName, RefundOptions, RefundRequest, RefundState
from devstack.process import ChildProcess
from devstack.stack import STOP_GRACE_S
from starter.client import RefundClient
from tests.faults.conftest import (
    CALL_TIMEOUT_S,
    MEWS_REFUND,
    PAYNOW_SUBMIT,
    POLL_INITIAL_S,
    POLL_MAX_S,
    FaultStack,
    Journal,
)
from worker import GRACEFUL_SHUTDOWN

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PROVIDERS = [ProviderName.MEWS, ProviderName.PAYNOW]
WORKERS = 3
# Refunds per provider for the spread test: enough that each of three workers gets some.
SPREAD_PER_PROVIDER = 4
# Refunds per provider whose submit is held while a worker goes away.
HELD_PER_PROVIDER = 2
# process_then_hang: longer than the workers' 1 s HTTP timeout, so the answer is lost.
HANG_S = 5.0
# latency: shorter than that timeout, so a worker left to finish gets its answer.
LATENCY_S = 0.7
# How long the held calls may take to reach the simulator once the refunds are started.
ARRIVAL_S = 0.5


def identity_of(worker: ChildProcess) -> str:
    """The prefix of a worker's Temporal identity (``<pid>@<host>``)."""
    return f"{worker.pid}@"


def name_of(identity: str, workers: list[ChildProcess]) -> str:
    for worker in workers:
        if identity.startswith(identity_of(worker)):
            return worker.name
    return identity


class WorkerPool:
    """The stack's worker and those this module adds; after a test took one down, the next
    test gets a new one, and at the end the stack is left as it was (its first worker up)."""

    def __init__(self, faults: FaultStack) -> None:
        self.stack = faults.stack
        self.added: list[ChildProcess] = []

    async def top_up(self, count: int) -> list[ChildProcess]:
        missing = count - len(self.stack.workers)
        self.added += await asyncio.gather(*(self.stack.add_worker() for _ in range(missing)))
        return self.stack.workers

    async def close(self) -> None:
        await asyncio.gather(*(worker.stop(STOP_GRACE_S["worker"]) for worker in self.added))
        if self.stack.worker_pid is None:
            await self.stack.start_worker()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(faults: FaultStack) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(faults)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def workers(pool: WorkerPool) -> list[ChildProcess]:
    """Three live workers on the stack's task queue: its own and added ones."""
    return await pool.top_up(WORKERS)


@pytest.fixture
def client(faults: FaultStack) -> RefundClient:
    """The fault stack's starter, with Mews reconciling after 1 s."""
    options = RefundOptions(
        poll_initial_s=POLL_INITIAL_S,
        poll_max_s=POLL_MAX_S,
        call_timeout_s=CALL_TIMEOUT_S,
        reconcile_settle_s=1.0,
    )
    assert faults.stack.client is not None
    return RefundClient(
        faults.stack.client, task_queue=faults.stack.config.task_queue, options=options
    )


async def new_requests(faults: FaultStack, per_provider: int, label: str) -> list[RefundRequest]:
    """Fresh payments (so fresh Mews accounts: no two refunds share a lane), one request each."""

    async def one(provider: ProviderName) -> RefundRequest:
        payment = await faults.new_payment(provider, "succeeds")
        return faults.request(provider, payment, label=f"{label}-{provider.value}")

    return list(await asyncio.gather(*(one(p) for p in PROVIDERS for _ in range(per_provider))))


async def hold_submits(
    faults: FaultStack, requests: list[RefundRequest], fault: dict[str, Any]
) -> None:
    """Hold each request's submit at its simulator with ``fault`` (a fault spec without path)."""
    mews = sum(1 for r in requests if r.provider is ProviderName.MEWS)
    if mews:
        # Mews' refund path names no payment: the next `mews` refund calls, whichever they are.
        await faults.inject(
            ProviderName.MEWS,
            {**fault, "path_contains": MEWS_REFUND, "method": "POST", "count": mews},
        )
    for request in requests:
        if request.provider is ProviderName.PAYNOW:
            path = f"/v3/payments/{request.payment_id}{PAYNOW_SUBMIT}"
            await faults.inject(
                ProviderName.PAYNOW, {**fault, "path_contains": path, "method": "POST"}
            )


def held(journal: Journal, kind: str) -> int:
    """Requests held by a ``kind`` fault and not answered yet."""
    return sum(1 for r in journal["requests"] if r["fault"] == kind and r["status"] is None)


async def wait_held(faults: FaultStack, kind: str, expected: int) -> None:
    """Until ``expected`` calls are held at once (both simulators), or ``ARRIVAL_S`` after
    the first one was: the caller must act inside the workers' HTTP timeout."""
    first_seen: float | None = None
    deadline = time.monotonic() + 20.0
    while True:
        journals = await asyncio.gather(*(faults.journal(p) for p in PROVIDERS))
        count = sum(held(j, kind) for j in journals)
        now = time.monotonic()
        if count and first_seen is None:
            first_seen = now
        if count >= expected or (first_seen is not None and now - first_seen > ARRIVAL_S):
            return
        assert now < deadline, f"no {kind} call reached a simulator"
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Running:
    """An activity some worker has started and not finished."""

    key: str
    activity_type: str
    worker: str


async def running_activities(client: RefundClient, keys: list[str]) -> list[Running]:
    """The activity each refund is running now, and on which worker."""

    async def one(key: str) -> Running | None:
        description = await client.handle(key).describe()
        for activity in description.raw_description.pending_activities:
            if activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                return Running(key, activity.activity_type.name, activity.last_worker_identity)
        return None

    found = await asyncio.gather(*(one(key) for key in keys))
    return [running for running in found if running is not None]


def busiest(running: list[Running], workers: list[ChildProcess]) -> ChildProcess:
    """The worker running the most of the ``running`` activities."""
    counts = Counter(name_of(r.worker, workers) for r in running)
    assert counts, "no activity was running when the worker was to go"
    name = counts.most_common(1)[0][0]
    return next(w for w in workers if w.name == name)


async def activity_workers(client: RefundClient, key: str) -> list[str]:
    """The worker identity of every activity that ran in the refund's history."""
    history = await client.handle(key).fetch_history()
    return [
        event.activity_task_started_event_attributes.identity
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


async def assert_each_made_once(
    faults: FaultStack, client: RefundClient, requests: list[RefundRequest]
) -> None:
    finals = await asyncio.gather(*(client.wait(r.idempotency_key) for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert final.state is RefundState.SUCCEEDED, final
        assert await faults.refunds_made(request) == 1, request.idempotency_key
        assert final.provider_refund_id in await faults.provider_refund_ids(request)


async def test_refunds_spread_over_the_workers_each_made_once(
    faults: FaultStack, client: RefundClient, workers: list[ChildProcess]
) -> None:
    requests = await new_requests(faults, SPREAD_PER_PROVIDER, "spread")
    await asyncio.gather(*(client.start(r) for r in requests))

    await asyncio.wait_for(assert_each_made_once(faults, client, requests), 30.0)
    histories = await asyncio.gather(
        *(activity_workers(client, r.idempotency_key) for r in requests)
    )
    ran = Counter(name_of(identity, workers) for ran_by in histories for identity in ran_by)
    idle = [worker.name for worker in workers if ran[worker.name] == 0]
    assert not idle, f"{idle} ran no activity; activities per worker: {dict(ran)}"


async def test_a_worker_stopped_with_sigterm_finishes_its_calls_and_exits_0(
    faults: FaultStack, client: RefundClient, workers: list[ChildProcess]
) -> None:
    """Submits answer after a delay (within the HTTP timeout); the worker running the most
    of them gets SIGTERM with the calls in flight. It lets them finish (each completed at
    its first attempt, on that worker) and exits 0 well within ``GRACEFUL_SHUTDOWN``,
    before the stack's stop would SIGKILL it."""
    requests = await new_requests(faults, HELD_PER_PROVIDER, "sigterm")
    await hold_submits(faults, requests, {"kind": "latency", "seconds": LATENCY_S})
    await asyncio.gather(*(client.start(r) for r in requests))
    await wait_held(faults, "latency", len(requests))
    running = await running_activities(client, [r.idempotency_key for r in requests])
    victim = busiest(running, workers)
    began = time.monotonic()
    await victim.stop(STOP_GRACE_S["worker"])
    stopped_in_s = time.monotonic() - began

    assert victim.returncode == 0, f"{victim.name} exited {victim.returncode}"
    assert stopped_in_s < GRACEFUL_SHUTDOWN.total_seconds(), stopped_in_s
    assert "worker stopped" in victim.log_path.read_text()
    await asyncio.wait_for(assert_each_made_once(faults, client, requests), 30.0)
    in_flight = [r for r in running if r.worker.startswith(identity_of(victim))]
    for call in in_flight:
        runs = await faults.activity_runs(call.key, call.activity_type)
        assert (runs[0].attempt, runs[0].result) == (1, "completed"), runs[0]
        assert runs[0].worker == call.worker, runs[0]


async def test_a_worker_killed_mid_call_leaves_its_refunds_to_the_others(
    faults: FaultStack, client: RefundClient, workers: list[ChildProcess]
) -> None:
    """Submits are processed, then their answers held past the HTTP timeout; the worker
    running the most of them is SIGKILLed and not replaced. The others retry its calls
    (Paynow: re-sent with the same Idempotency-Key; Mews: not re-sent, reconciled and
    adopted): each refund made once, none lost."""
    requests = await new_requests(faults, HELD_PER_PROVIDER, "kill")
    await hold_submits(faults, requests, {"kind": "process_then_hang", "seconds": HANG_S})
    await asyncio.gather(*(client.start(r) for r in requests))
    await wait_held(faults, "process_then_hang", len(requests))
    running = await running_activities(client, [r.idempotency_key for r in requests])
    victim = busiest(running, workers)
    victim.kill()
    survivors = [identity_of(w) for w in workers if w is not victim]

    await asyncio.wait_for(assert_each_made_once(faults, client, requests), 45.0)
    orphaned = [r for r in running if r.worker.startswith(identity_of(victim))]
    for cut_short in orphaned:
        runs = await faults.activity_runs(cut_short.key, cut_short.activity_type)
        # The attempt on the dead worker timed out; the one that counted ran elsewhere.
        assert runs[0].timed_out_before, runs[0]
        assert runs[0].worker.startswith(tuple(survivors)), runs[0]
