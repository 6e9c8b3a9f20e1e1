"""The timeout budget and retry policy of every provider call, shared by `RefundWorkflow` and
`RefundStatusBatchWorkflow` (a batched status read is retried exactly as a refund's own).

Imported passed through: plain values, no state."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# How long the server keeps retrying one activity before the workflow looks up again.
CALL_BUDGET = timedelta(minutes=10)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=0,
)
