"""`Retry-After` on the real dev server: the Java time-skipping server ignores
``ApplicationError.next_retry_delay``, so this runs in real time, after the time-skipping tests."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from core.models import RefundState
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_refund_workflow import SUCCEEDED, harness, paynow_request


async def test_429_waits_exactly_retry_after(dev_env: WorkflowEnvironment) -> None:
    # Real server and real time: the server, not the SDK, schedules the next attempt.
    seen: list[float] = []

    def submit(n: int, _: activity.Info) -> Any:
        seen.append(time.monotonic())
        if n == 1:
            raise ApplicationError(
                "rate limited", type="RateLimitedError", next_retry_delay=timedelta(seconds=3)
            )
        return None

    fake = FakeProvider(submit_step=submit, poll_step=lambda n, _: refund(SUCCEEDED))
    async with harness(dev_env, fake) as h:
        result = await h.run(paynow_request())
    assert result.state is RefundState.SUCCEEDED
    first, second = [c for c in fake.calls if c.name == "submit"]
    assert second.attempt == 2
    # The default backoff would have retried after 1 s; Retry-After said 3 s.
    assert 3.0 <= seen[1] - seen[0] < 4.0
    assert 3.0 <= (second.scheduled - first.scheduled).total_seconds() < 4.0
