"""Fifty callers start the same refund at the same moment: one workflow, one refund at the
provider, every caller attached to it; the same key with another amount is refused."""

from __future__ import annotations

import asyncio

import pytest

from core.models import ProviderName, RefundState
from starter.client import IdempotencyConflictError
from tests.faults.conftest import FaultStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CALLERS = 50


@pytest.mark.parametrize("provider", [ProviderName.MEWS, ProviderName.PAYNOW])
async def test_concurrent_starts_with_one_key(faults: FaultStack, provider: ProviderName) -> None:
    request = await faults.new_refund(provider, "succeeds", label="same-key", start=False)

    started = await asyncio.gather(*(faults.client.start(request) for _ in range(CALLERS)))
    assert sum(s.created for s in started) == 1
    assert {s.workflow_id for s in started} == {request.workflow_id}

    other_amount = request.model_copy(update={"amount_minor": (request.amount_minor or 0) + 1})
    with pytest.raises(IdempotencyConflictError):
        await faults.client.start(other_amount)

    final = await faults.wait_final(request.idempotency_key)
    assert final.state is RefundState.SUCCEEDED, final
    assert final.amount_minor == request.amount_minor
    assert await faults.refunds_made(request) == 1
    runs = await faults.client.client.count_workflows(f'WorkflowId = "{request.workflow_id}"')
    assert runs.count == 1
    # Finished: the same request still attaches, another one is still refused.
    assert not (await faults.client.start(request)).created
    with pytest.raises(IdempotencyConflictError):
        await faults.client.start(other_amount)
    assert await faults.refunds_made(request) == 1
