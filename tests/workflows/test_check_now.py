"""The `check_now` signal (sent when a provider's webhook says a refund changed) and the
`RefundProviderRefundId` search attribute that lets the webhook find the refund.

On the dev server (real time): the next scheduled check is ten minutes away, so only the
signal can make the refund end within the test.
"""

from __future__ import annotations

import asyncio

from temporalio.testing import WorkflowEnvironment

from core.models import (
    REFUND_PROVIDER_REFUND_ID,
    ProviderRefundStatus,
    RefundOptions,
    RefundState,
)
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_refund_workflow import harness, mews_request, wait_for
from workflows.models import CheckNow
from workflows.refund import RefundWorkflow

SLOW_POLLS = RefundOptions(poll_initial_s=600, poll_max_s=600)


async def test_check_now_reads_the_status_at_once_and_ends_the_refund(
    dev_env: WorkflowEnvironment,
) -> None:
    # Pending at the first check, succeeded at the next.
    fake = FakeProvider(
        poll_step=lambda n, _: (
            refund(ProviderRefundStatus.PENDING, "M-REFUND-1")
            if n == 1
            else refund(ProviderRefundStatus.SUCCEEDED, "M-REFUND-1")
        )
    )
    async with harness(dev_env, fake) as h:
        handle = await h.start(mews_request(), SLOW_POLLS)
        # Checked once (pending), the next check ten minutes away.
        await wait_for(handle, lambda s: s.next_check_at is not None)
        assert fake.count("poll") == 1
        await handle.signal(RefundWorkflow.check_now, CheckNow())
        final = await asyncio.wait_for(handle.result(), 10)
    assert final.state is RefundState.SUCCEEDED
    assert fake.count("poll") == 2


async def test_check_now_before_the_refund_exists_or_after_it_ended_changes_nothing(
    dev_env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider()
    async with harness(dev_env, fake) as h:
        handle = await h.start(mews_request(), SLOW_POLLS)
        await handle.signal(RefundWorkflow.check_now, CheckNow(reason="early"))
        final = await asyncio.wait_for(handle.result(), 10)
    assert final.state is RefundState.SUCCEEDED
    assert fake.count("submit") == 1


async def test_the_provider_refund_id_is_a_search_attribute(
    dev_env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(ProviderRefundStatus.PENDING, "M-IDX-7"))
    async with harness(dev_env, fake) as h:
        handle = await h.start(mews_request(), SLOW_POLLS)
        await wait_for(handle, lambda s: s.provider_refund_id == "M-IDX-7")
        described = await handle.describe()
        await handle.terminate("test over")
    assert described.typed_search_attributes.get(REFUND_PROVIDER_REFUND_ID) == "M-IDX-7"
