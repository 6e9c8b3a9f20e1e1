"""The `request_cancel` update, on the dev server (real update support, real time)."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from core.models import ProviderRefundStatus, RefundOptions, RefundState
from starter.client import RefundClient, RefundClientError
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_refund_workflow import harness, mews_request, paynow_request, wait_for

# Poll every few seconds so the refund is still pending when the cancel arrives.
SLOW = RefundOptions(poll_initial_s=2, poll_max_s=2)


async def test_update_answers_canceled_at_the_provider(dev_env: WorkflowEnvironment) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(ProviderRefundStatus.PENDING, raw="NEW"))
    async with harness(dev_env, fake) as h:
        client = RefundClient(dev_env.client, task_queue=h.queue, options=SLOW)
        request = paynow_request()
        await client.start(request)
        await wait_for(client.handle(request.idempotency_key), lambda s: s.provider_status == "NEW")
        answer = await client.request_cancel(request.idempotency_key, "duplicate order")
    assert answer.canceled
    assert answer.state is RefundState.CANCELED
    assert fake.count("cancel") == 1


async def test_update_says_why_the_provider_could_not_cancel(
    dev_env: WorkflowEnvironment,
) -> None:
    from activities.models import CancelAtProviderResult

    fake = FakeProvider(
        poll_step=lambda n, _: refund(ProviderRefundStatus.PENDING, raw="Pending"),
        cancel_step=lambda n, _: CancelAtProviderResult(
            canceled=False, note="mews has no refund cancel"
        ),
    )
    async with harness(dev_env, fake) as h:
        client = RefundClient(dev_env.client, task_queue=h.queue, options=SLOW)
        request = mews_request()
        await client.start(request)
        await wait_for(
            client.handle(request.idempotency_key), lambda s: s.provider_status == "Pending"
        )
        answer = await client.request_cancel(request.idempotency_key, "please stop")
        await client.handle(request.idempotency_key).terminate("test done")
    assert not answer.canceled
    assert answer.state is RefundState.PENDING
    assert "mews has no refund cancel" in answer.note


async def test_update_after_the_end_is_refused_as_too_late(dev_env: WorkflowEnvironment) -> None:
    fake = FakeProvider()
    async with harness(dev_env, fake) as h:
        client = RefundClient(dev_env.client, task_queue=h.queue, options=SLOW)
        request = paynow_request()
        await client.start(request)
        await client.wait(request.idempotency_key)
        with pytest.raises(RefundClientError, match="too late to cancel: the refund is already"):
            await client.request_cancel(request.idempotency_key, "oops")
    assert fake.count("cancel") == 0
