"""One embedded stack for the fault tests: the real dev server (file-backed), the simulators
and a worker process that the tests SIGKILL and restart.

Timings are short on both sides so a fault costs seconds, not minutes: the worker's HTTP
calls give up after 1 s and an activity attempt after 3 s (a killed worker's activity is
retried about 3 s after it started); the starter's options carry the same call timeout and
status checks every 0.3-1 s.

Every test uses fresh payments (``POST /_sim/payments``) and ends by reading the simulator's
journal: refunds made for that payment (and, at Paynow, for that idempotency key).
Faults are cleared before and after each test, so one test's leftovers never hit the next.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from core.models import ProviderName, RefundOptions, RefundRequest, RefundStatus
from core.settings import Settings
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient
from tests.support.simulators import SimulatorControl
from tests.support.stacks import started

HTTP_TIMEOUT_S = 1.0
CALL_TIMEOUT_S = 3.0
POLL_INITIAL_S = 0.3
POLL_MAX_S = 1.0
WORKER_ENV = {
    "REFUNDS_HTTP_TIMEOUT_S": str(HTTP_TIMEOUT_S),
    "REFUNDS_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S),
}
# Longest a single refund of these tests may take: a Mews reconciliation alone waits 2 x 30 s.
FINAL_TIMEOUT_S = 120.0
JOURNAL_POLL_S = 0.05

PAYNOW_SUBMIT = "/refunds"
PAYNOW_PAYMENT_STATUS = "/status"
MEWS_REFUND = "payments/refund"
MEWS_GET_ALL = "payments/getAll"

Journal = dict[str, Any]
JournalEntry = dict[str, Any]


def new_key(label: str) -> str:
    return f"faults-{label}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ActivityRun:
    """One activity call as the history shows it: the attempt that finished, and the
    failure of the attempt before it (the retry's reason)."""

    activity_type: str
    attempt: int
    last_failure: str | None
    timed_out_before: bool
    result: str
    # The worker that ran that attempt (its identity, ``<pid>@<host>``).
    worker: str


@dataclass
class FaultStack(SimulatorControl):
    stack: EmbeddedStack
    client: RefundClient
    http: httpx.AsyncClient

    # --------------------------------------------------------------- simulators

    async def refunds_made(self, request: RefundRequest) -> int:
        """Refunds the provider made for this request's payment; at Paynow the count per
        idempotency key must agree (Mews has no keys)."""
        journal = await self.journal(request.provider)
        per_payment = int(journal["refunds_per_payment"].get(request.payment_id, 0))
        if request.provider is ProviderName.PAYNOW:
            per_key = int(journal["refunds_per_key"].get(request.idempotency_key, 0))
            assert per_key == per_payment, journal["refunds_per_key"]
        return per_payment

    async def provider_refund_ids(self, request: RefundRequest) -> list[str]:
        journal = await self.journal(request.provider)
        return [
            str(r["refund_id"]) for r in journal["refunds"] if r["payment_id"] == request.payment_id
        ]

    async def wait_for_journal(
        self,
        provider: ProviderName,
        found: Callable[[Journal], bool],
        what: str,
        timeout_s: float = 20.0,
    ) -> Journal:
        """Poll the journal until ``found`` holds; fast enough to act inside a 1 s window."""
        deadline = time.monotonic() + timeout_s
        while True:
            journal = await self.journal(provider)
            if found(journal):
                return journal
            assert time.monotonic() < deadline, f"never saw {what}"
            await asyncio.sleep(JOURNAL_POLL_S)

    async def wait_in_flight(
        self, provider: ProviderName, path_contains: str, method: str, fault: str
    ) -> JournalEntry:
        """The first request with ``fault`` on that path that has not been answered yet."""

        def pending(journal: Journal) -> JournalEntry | None:
            for entry in journal["requests"]:
                if (
                    path_contains in entry["path"]
                    and entry["method"] == method
                    and entry["fault"] == fault
                    and entry["status"] is None
                ):
                    return dict(entry)
            return None

        journal = await self.wait_for_journal(
            provider, lambda j: pending(j) is not None, f"{method} *{path_contains}* in flight"
        )
        entry = pending(journal)
        assert entry is not None
        return entry

    # ----------------------------------------------------------------- refunds

    def request(
        self,
        provider: ProviderName,
        payment: dict[str, Any],
        *,
        label: str,
        amount_minor: int | None = None,
    ) -> RefundRequest:
        fields: dict[str, Any] = {
            "idempotency_key": new_key(label),
            "provider": provider,
            "payment_id": payment["payment_id"],
            "amount_minor": amount_minor or max(100, payment["amount_minor"] // 4),
            "currency": payment["currency"],
            "reason": f"fault test: {label}",
        }
        if provider is ProviderName.MEWS:
            fields["account_id"] = payment["account_id"]
        return RefundRequest.model_validate(fields)

    async def new_refund(
        self, provider: ProviderName, scenario: str, *, label: str, start: bool = True
    ) -> RefundRequest:
        payment = await self.new_payment(provider, scenario)
        request = self.request(provider, payment, label=label)
        if start:
            started = await self.client.start(request)
            assert started.created
        return request

    async def wait_final(self, key: str, timeout_s: float = FINAL_TIMEOUT_S) -> RefundStatus:
        """The workflow's result (a long poll: no worker needed while waiting)."""
        return await asyncio.wait_for(self.client.wait(key), timeout_s)

    async def activity_runs(self, key: str, activity_type: str) -> list[ActivityRun]:
        """Every call of ``activity_type`` in the refund's history, in order."""
        history = await self.client.handle(key).fetch_history()
        runs: list[ActivityRun] = []
        for event in history.events:
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                continue
            started = event.activity_task_started_event_attributes
            scheduled = _event(history.events, started.scheduled_event_id)
            name = scheduled.activity_task_scheduled_event_attributes.activity_type.name
            if name != activity_type:
                continue
            failure = started.last_failure if started.HasField("last_failure") else None
            runs.append(
                ActivityRun(
                    activity_type=name,
                    attempt=started.attempt,
                    last_failure=failure.message if failure is not None else None,
                    timed_out_before=failure is not None
                    and failure.HasField("timeout_failure_info"),
                    result=_outcome(history.events, started.scheduled_event_id),
                    worker=started.identity,
                )
            )
        return runs

    # ------------------------------------------------------------------ stack

    async def restart_temporal(self) -> None:
        """Stop and start the dev server. The starter keeps its connection made before: the
        client reconnects by itself, as the worker does."""
        await self.stack.restart_temporal()

    async def kill_and_restart_worker(self, down_s: float = 0.0) -> float:
        """SIGKILL the worker, stay down ``down_s``, start a new one; the seconds it took."""
        began = time.monotonic()
        self.stack.kill_worker()
        if down_s:
            await asyncio.sleep(down_s)
        await self.stack.start_worker()
        return time.monotonic() - began


def _event(events: Any, event_id: int) -> HistoryEvent:
    for event in events:
        if event.event_id == event_id:
            assert isinstance(event, HistoryEvent)
            return event
    raise AssertionError(f"no event {event_id} in the history")


def _outcome(events: Any, scheduled_id: int) -> str:
    """How the activity scheduled as ``scheduled_id`` ended, from its closing event."""
    closing = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "timed_out",
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "canceled",
    }
    for event in events:
        kind = closing.get(event.event_type)
        if kind is None:
            continue
        attributes = {
            "completed": event.activity_task_completed_event_attributes,
            "failed": event.activity_task_failed_event_attributes,
            "timed_out": event.activity_task_timed_out_event_attributes,
            "canceled": event.activity_task_canceled_event_attributes,
        }[kind]
        if attributes.scheduled_event_id == scheduled_id:
            return kind
    return "open"


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def faults(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            state_dir=tmp_path_factory.mktemp("faults-state"),
            poll_initial_s=POLL_INITIAL_S,
            poll_max_s=POLL_MAX_S,
            extra_worker_env=WORKER_ENV,
        )
    )
    async with started(stack):
        settings: Settings = stack.settings()
        options = RefundOptions(
            poll_initial_s=POLL_INITIAL_S, poll_max_s=POLL_MAX_S, call_timeout_s=CALL_TIMEOUT_S
        )
        assert stack.client is not None
        client = RefundClient(stack.client, task_queue=settings.refunds_task_queue, options=options)
        async with httpx.AsyncClient(base_url=stack.sim_url, timeout=10) as http:
            yield FaultStack(stack, client, http)


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def no_leftover_faults(faults: FaultStack) -> AsyncIterator[None]:
    await faults.clear_faults()
    yield
    await faults.clear_faults()
