"""One embedded stack for the Nexus tests (its real worker process serves the `refunds`
endpoint) and, beside it, the caller side: a second namespace, ``callers``, on the same dev
server, with a worker in this process running the caller workflows of tests/nexus/callers.py.

Module scope, so the stack stops before other packages' tests run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient
from starter.connection import connect
from tests.nexus.callers import RefundCallerWorkflow, RefundStatusCallerWorkflow
from tests.support.simulators import SimulatorControl
from tests.support.stacks import started

CALLER_NAMESPACE = "callers"
CALLER_TASK_QUEUE = "refund-callers"
READY_TIMEOUT_S = 30.0


@dataclass
class NexusStack(SimulatorControl):
    stack: EmbeddedStack
    refunds: RefundClient
    """A client of the refunds' own namespace, to check what the callers did."""
    callers: Client
    """A client of the callers' namespace, where the caller workflows run."""
    http: httpx.AsyncClient


async def _register_namespace(client: Client, name: str) -> None:
    """Register ``name`` and wait until the dev server serves it."""
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=name)
            )
            return
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def nexus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NexusStack]:
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            state_dir=tmp_path_factory.mktemp("nexus-state"),
            poll_initial_s=0.3,
            poll_max_s=1.0,
        )
    )
    async with started(stack):
        settings = stack.settings()
        assert stack.client is not None
        await _register_namespace(stack.client, CALLER_NAMESPACE)
        callers = await connect(
            settings.model_copy(update={"temporal_namespace": CALLER_NAMESPACE})
        )
        worker = Worker(
            callers,
            task_queue=CALLER_TASK_QUEUE,
            workflows=[RefundCallerWorkflow, RefundStatusCallerWorkflow],
        )
        async with (
            worker,
            httpx.AsyncClient(base_url=stack.sim_url, timeout=10) as http,
        ):
            yield NexusStack(stack, await RefundClient.connect(settings), callers, http)


def caller_timeout() -> timedelta:
    """A caller workflow that does not end by then has hung (e.g. no endpoint)."""
    return timedelta(seconds=READY_TIMEOUT_S)
