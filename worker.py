"""The refund worker: runs `RefundWorkflow` and its activities on ``REFUNDS_TASK_QUEUE``,
and the handler of the `refunds` Nexus service (``nexus_service``) on the same task queue.

It holds the provider credentials (the workflows never see them), checks the search
attributes exist, and stops gracefully on SIGTERM / SIGINT: running activities get
``GRACEFUL_SHUTDOWN`` to finish; anything cut short is retried by Temporal on another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities import RefundActivities
from activities.events import EventActivities
from activities.lane_activities import LaneActivities
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
    events = events or EventActivities(settings)
    return Worker(
        client,
        task_queue=settings.refunds_task_queue,
        workflows=[RefundWorkflow, RefundLaneWorkflow, RefundEventWorkflow],
        activities=[*activities.all, *lane.all, events.deliver],
        # The `refunds` Nexus service (docs/nexus.md), for callers in other namespaces.
        nexus_service_handlers=[RefundsNexusHandler.from_settings(settings)],
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_cached_workflows=settings.refunds_worker_max_cached_workflows,
        max_concurrent_activities=settings.refunds_worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.refunds_worker_max_concurrent_workflow_tasks,
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when no event is given)."""
    # Missing credentials fail first, before anything is set up.
    directory = ProviderDirectory.from_settings(settings)
    setup_logging(logging.INFO)
    tracer_provider = setup_tracing(SERVICE_NAME)
    runtime = metrics_runtime(settings.refunds_metrics_port)
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
        async with worker:
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
