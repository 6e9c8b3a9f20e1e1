"""Search attributes are written only when they change (patch lean-upserts): a refund that
stays PENDING through many status checks writes PENDING once, and what the starter set at
the start is not written again. Each upsert is a history event and a visibility write, so a
refund polling for days wrote one per check before."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from core.models import (
    REFUND_PAYMENT_ID,
    REFUND_PROVIDER,
    REFUND_STATE,
    ProviderRefundStatus,
    RefundOptions,
    RefundState,
)
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_refund_workflow import harness, paynow_request
from workflows.models import RefundWorkflowInput
from workflows.refund import RefundWorkflow

CHECKS = 6
OPTIONS = RefundOptions(poll_initial_s=1, poll_max_s=2)


def upserted(history: Any) -> list[dict[str, Any]]:
    """Each upsert's values, our attributes only (the SDK's patch versions left out)."""
    found = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            continue
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        values = {
            name: json.loads(payload.data)
            for name, payload in fields.indexed_fields.items()
            if name.startswith("Refund")
        }
        if values:
            found.append(values)
    return found


async def test_a_long_pending_refund_writes_each_attribute_once(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(
        poll_step=lambda n, _: refund(
            ProviderRefundStatus.PENDING if n < CHECKS else ProviderRefundStatus.SUCCEEDED
        )
    )
    request = paynow_request()
    async with harness(env, fake) as h:
        # Started as RefundClient starts refunds: its search attributes set at the start.
        handle = await env.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=OPTIONS),
            id=request.workflow_id,
            task_queue=h.queue,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(REFUND_STATE, RefundState.VALIDATING.value),
                    SearchAttributePair(REFUND_PROVIDER, request.provider.value),
                    SearchAttributePair(REFUND_PAYMENT_ID, request.payment_id),
                ]
            ),
        )
        final = await asyncio.wait_for(handle.result(), 30)
        history = await handle.fetch_history()
    assert final.state is RefundState.SUCCEEDED
    assert fake.count("poll") == CHECKS
    writes = upserted(history)
    states = [w["RefundState"] for w in writes if "RefundState" in w]
    assert states == ["SUBMITTING", "PENDING", "SUCCEEDED"], writes
    # The refund id travels with the state it came with; provider and payment are the
    # starter's, never written again.
    assert {"RefundProviderRefundId": "R-1", "RefundState": "PENDING"} in writes
    assert not [w for w in writes if "RefundProvider" in w or "RefundPaymentId" in w]
