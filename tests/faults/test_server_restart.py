"""The Temporal dev server (file-backed) is stopped and started again while refunds wait at
the provider: the workflows, their timers, the worker process and the starter's connection
survive, and the refunds finish."""

from __future__ import annotations

import asyncio

import pytest

from core.models import ProviderName, RefundState
from tests.faults.conftest import FaultStack
from tests.support.refunds import wait_for_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_dev_server_restarted_while_refunds_are_pending(faults: FaultStack) -> None:
    requests = [
        await faults.new_refund(provider, "slow", label=f"restart-{provider.value}")
        for provider in (ProviderName.MEWS, ProviderName.PAYNOW)
    ]
    for request in requests:
        await wait_for_state(faults.client, request.idempotency_key, RefundState.PENDING)
    worker = faults.stack.worker_pid

    await faults.restart_temporal()

    finals = await asyncio.gather(*(faults.wait_final(r.idempotency_key) for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert final.state is RefundState.SUCCEEDED, final
        assert await faults.refunds_made(request) == 1
        assert final.provider_refund_id in await faults.provider_refund_ids(request)
    # The same worker process carried on: it reconnected by itself.
    assert faults.stack.worker_pid == worker
