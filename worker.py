"""The refund worker: runs `RefundWorkflow` and its activities on ``REFUNDS_TASK_QUEUE``,
and the handler of the `refunds` Nexus service (``nexus_service``) on the same task queue.

Beside it, one activities-only worker per **budget queue** (``core.budgets``,
``<task queue>.budget.<provider>.<group>``): the provider calls of the profiles sharing one
credential, dispatched by the Temporal server at most at the budget's rate, counted over
every worker polling that queue. The main worker keeps every activity too, so refunds that
scheduled their calls on the main task queue (before budget queues) still run.

It holds the provider credentials (the workflows never see them), checks the search
attributes exist, and stops gracefully on SIGTERM / SIGINT: running activities get
``GRACEFUL_SHUTDOWN`` to finish; anything cut short is retried by Temporal on another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

import workflows
from activities import RefundActivities
from activities.events import EventActivities
from activities.lane_activities import LaneActivities
from activities.status_batch import StatusBatchActivities
from activities.status_watch import StatusWatchActivities
from core.budgets import BudgetGroup
from core.bytecode import ensure_bytecode
from core.settings import Settings
from nexus_service.handler import RefundsNexusHandler
from providers.registry import ProviderDirectory
from starter.connection import connect, ensure_search_attributes
from telemetry.logging import setup_logging
from telemetry.metrics import metrics_runtime
from telemetry.tracing import setup_tracing, tracing_interceptor
from workflows.events import RefundEventWorkflow
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import RefundWorkflow
from workflows.status_batch import RefundStatusBatchWorkflow

log = logging.getLogger("refunds.worker")
T = TypeVar("T")

GRACEFUL_SHUTDOWN = timedelta(seconds=15)
# Traces' service.name unless OTEL_SERVICE_NAME says otherwise.
SERVICE_NAME = "refund-worker"


def build_worker(
    client: Client,
    settings: Settings,
    directory: ProviderDirectory,
    events: EventActivities | None = None,
) -> Worker:
    activities = RefundActivities(directory)
    lane = LaneActivities(client)
    watches = StatusWatchActivities(client)
    events = events or EventActivities(settings)
    return Worker(
        client,
        task_queue=settings.refunds_task_queue,
        workflows=[
            RefundWorkflow,
            RefundLaneWorkflow,
            RefundEventWorkflow,
            RefundStatusBatchWorkflow,
        ],
        activities=[*activities.all, *lane.all, *watches.all, events.deliver],
        # The `refunds` Nexus service (docs/nexus.md), for callers in other namespaces.
        nexus_service_handlers=[RefundsNexusHandler.from_settings(settings)],
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_cached_workflows=settings.refunds_worker_max_cached_workflows,
        max_concurrent_activities=settings.refunds_worker_max_concurrent_activities,
        # Reads tried in the workflow task (patch local-provider-reads): a pool of their own,
        # of the activities' size.
        max_concurrent_local_activities=settings.refunds_worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.refunds_worker_max_concurrent_workflow_tasks,
    )


def build_budget_workers(
    client: Client, settings: Settings, directory: ProviderDirectory
) -> list[Worker]:
    """One activities-only worker per budget queue, asking the server to dispatch at most
    the group's budget rate from it (``max_task_queue_activities_per_second``, enforced for
    every worker of the queue together; ``core.budgets`` says how the rate is chosen so that
    no window of the budget's length sees more than its N calls). A group without a budget
    gets its queue without a limit. The queues differ from the workflows' task queue, so no
    call bypasses the server's limit as an eager activity."""
    activities = RefundActivities(directory)
    # The status batches' reads (RefundStatusBatchWorkflow) run on the budget queues too.
    batches = StatusBatchActivities(directory)
    return [
        Worker(
            client,
            task_queue=group.queue(settings.refunds_task_queue),
            activities=[*activities.provider_calls, *batches.all],
            max_task_queue_activities_per_second=(
                group.budget.tasks_per_second if group.budget is not None else None
            ),
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            max_concurrent_activities=settings.refunds_worker_max_concurrent_activities,
        )
        for group in directory.budget_groups
    ]


def describe_budget_queues(groups: Sequence[BudgetGroup], task_queue: str) -> str:
    """One line for the log: each budget queue, its profiles and budget (names only)."""
    parts = []
    for group in groups:
        if group.budget is None:
            limit = "no budget"
        else:
            rate = group.budget.tasks_per_second
            limit = f"budget {group.budget}, at most {rate:.3f} calls/s dispatched"
        parts.append(f"{group.queue(task_queue)} (profiles {', '.join(group.profiles)}; {limit})")
    return "; ".join(parts) if parts else "none"


@contextlib.asynccontextmanager
async def running(workers: Sequence[Worker]) -> AsyncIterator[None]:
    """Run ``workers`` together; on the way out all stop at once, each with its grace period
    to finish running activities (one after the other could take the sum of them)."""
    async with contextlib.AsyncExitStack() as stack:
        for each in workers:
            await stack.enter_async_context(each)
        try:
            yield
        finally:
            await asyncio.gather(*(each.shutdown() for each in workers))


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when no event is given)."""
    # Missing credentials fail first, before anything is set up.
    directory = ProviderDirectory.from_settings(settings)
    setup_logging(logging.INFO)
    tracer_provider = setup_tracing(SERVICE_NAME)
    runtime = metrics_runtime(settings.refunds_metrics_port)
    # The sandbox imports a workflow's module for each workflow it loads: from bytecode, not
    # compiled from source each time (core/bytecode.py).
    ensure_bytecode(workflows)
    events: EventActivities | None = None
    if settings.refunds_metrics_port is not None:
        log.info("metrics on :%d/metrics", settings.refunds_metrics_port)
    # Signals are heard from the start: a SIGTERM while Temporal is still being reached (the
    # worker is PID 1 in its container) stops it at once, with nothing in flight.
    stop = stop or _stop_on_signals()
    try:
        client = await _until_stopped(
            _connect_and_register(settings, runtime), stop, "connecting to Temporal"
        )
        if client is None:
            return
        events = EventActivities(settings)
        worker = build_worker(client, settings, directory, events)
        budget_workers = build_budget_workers(client, settings, directory)
        log.info(
            "worker connected to %s namespace=%s task_queue=%s providers=%s",
            # As resolved from the settings and the SDK's TEMPORAL_* configuration.
            client.service_client.config.target_host,
            client.namespace,
            settings.refunds_task_queue,
            ",".join(p.value for p in directory.enabled),
        )
        # Profile names only: their credentials never reach a log.
        log.info("merchant profiles: %s", directory.describe())
        log.info(
            "budget queues: %s",
            describe_budget_queues(directory.budget_groups, settings.refunds_task_queue),
        )
        async with running([worker, *budget_workers]):
            await stop.wait()
            log.info("stopping: letting running activities finish")
    finally:
        if events is not None:
            await events.aclose()
        await directory.aclose()
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the spans not yet exported
    log.info("worker stopped")


async def _connect_and_register(settings: Settings, runtime: Runtime | None) -> Client:
    client = await connect(settings, interceptors=[tracing_interceptor()], runtime=runtime)
    added = await ensure_search_attributes(client, client.namespace)
    if added:
        log.info("registered search attributes %s", ", ".join(added))
    return client


async def _until_stopped(work: Awaitable[T], stop: asyncio.Event, doing: str) -> T | None:
    """``work``'s result, or None when ``stop`` is set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    log.info("stopped while %s", doing)
    return None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
