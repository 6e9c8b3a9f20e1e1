"""The worker's Prometheus endpoint after one refund: refund, provider and SDK metrics moved,
and replaying the refund's history moves none of them."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.worker import Replayer

from core.budgets import budget_queue
from core.models import ProviderName, RefundState
from simulators.serving import free_port
from telemetry.metrics import MetricsEndpointError, metrics_runtime
from tests.telemetry.conftest import refund_stack
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import RefundWorkflow

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples named ``name`` whose labels include ``labels``."""
    found: list[float] = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        have = dict(_LABEL.findall(match["labels"] or ""))
        if all(have.get(key) == value for key, value in labels.items()):
            found.append(float(match["value"]))
    return found


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return response.text


async def scrape_until(port: int, name: str, **labels: str) -> str:
    """The SDK exports on scrape, but metrics recorded a moment ago may lag a little."""
    text = ""
    for _ in range(50):
        text = await scrape(port)
        if samples(text, name, **labels):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} {labels} never appeared:\n{text}")


async def test_scrape_after_a_refund_shows_refund_provider_and_sdk_metrics(
    temporal_address: str,
) -> None:
    port = free_port()
    runtime = metrics_runtime(port, host="127.0.0.1")
    assert runtime is not None
    async with refund_stack(temporal_address, runtime=runtime) as stack:
        request = await stack.paynow_request()
        await stack.refunds.start(request)
        final = await stack.refunds.wait(request.idempotency_key)
        assert final.state is RefundState.SUCCEEDED
        queue = stack.task_queue
        text = await scrape_until(port, "refunds_finished", task_queue=queue)
        history = await stack.refunds.handle(request.idempotency_key).fetch_history()

    assert samples(text, "refunds_started", task_queue=queue, provider="paynow") == [1]
    assert samples(
        text, "refunds_finished", task_queue=queue, provider="paynow", outcome="SUCCEEDED"
    ) == [1]
    assert samples(
        text,
        "refund_time_to_final_seconds_count",
        task_queue=queue,
        provider="paynow",
        outcome="SUCCEEDED",
    ) == [1]
    # The refund call runs on the profile's budget queue (docs/operations.md, "Provider
    # budgets"); with no Paynow budget set, the read before it ran as a local activity, on
    # the workflow's own queue (patch local-provider-reads).
    calls_queue = budget_queue(queue, ProviderName.PAYNOW, "default")
    for operation, status, on in (
        ("check_refundable", "200", queue),
        ("submit", "201", calls_queue),
    ):
        assert samples(
            text,
            "provider_calls",
            task_queue=on,
            provider="paynow",
            operation=operation,
            status=status,
        ) == [1], operation
    assert not samples(text, "provider_call_retries", task_queue=calls_queue)
    # The SDK's own worker metrics share the endpoint.
    assert sum(samples(text, "temporal_workflow_completed", task_queue=queue)) >= 1
    assert samples(text, "temporal_activity_execution_latency_count", activity_type="submit_refund")

    # Replaying the history (a worker restart, a replay test) counts nothing again.
    replayer = Replayer(
        workflows=[RefundWorkflow, RefundLaneWorkflow],
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    await replayer.replay_workflow(history)
    again = await scrape(port)
    for name in ("refunds_started", "refunds_finished", "refund_time_to_final_seconds_count"):
        assert samples(again, name, task_queue=queue) == samples(text, name, task_queue=queue)


def test_no_port_no_endpoint() -> None:
    assert metrics_runtime(None) is None


def test_a_taken_port_names_the_setting() -> None:
    port = free_port()
    first = metrics_runtime(port, host="127.0.0.1")
    assert isinstance(first, Runtime)
    with pytest.raises(MetricsEndpointError, match="REFUNDS_METRICS_PORT"):
        metrics_runtime(port, host="127.0.0.1")
