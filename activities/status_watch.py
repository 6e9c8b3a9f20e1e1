"""A refund registers with the status batch of its budget queue (issue 12, item 3).

``watch_refund_status`` runs on the refunds' own task queue (it needs the Temporal client, not
the providers): signal-with-start of :class:`~workflows.status_batch.RefundStatusBatchWorkflow`
with the ``watch`` signal, so the batch workflow is started if it is not running (it ends when
idle) and the refund is registered in one atomic call. No child workflow: the batch outlives
every refund that registers with it. Registering again is harmless (the batch merges).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from workflows.status_batch import (
    RefundStatusBatchWorkflow,
    StatusBatchInput,
    WatchRefund,
    status_batch_id,
)


class RegisterWatchInput(BaseModel):
    """Input of ``watch_refund_status``: the budget queue whose batch reads the refund."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    budget_queue: Annotated[str, Field(min_length=1)]
    watch: WatchRefund


class StatusWatchActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="watch_refund_status")
    async def register(self, params: RegisterWatchInput) -> None:
        """Signal-with-start: register with the budget queue's batch, starting it if idle."""
        await self._client.start_workflow(
            RefundStatusBatchWorkflow.run,
            StatusBatchInput(task_queue=params.budget_queue),
            id=status_batch_id(params.budget_queue),
            task_queue=activity.info().task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            start_signal="watch",
            start_signal_args=[params.watch],
            static_summary=f"reads the status of pending refunds on {params.budget_queue}",
        )

    @property
    def all(self) -> list[Callable[..., Any]]:
        return [self.register]


__all__ = ["RegisterWatchInput", "StatusWatchActivities"]
