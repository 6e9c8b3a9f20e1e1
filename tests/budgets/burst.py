"""A test-only workflow for the budget end-to-end test: ask the refund worker for a
refund's route (``route_refund`` on the main task queue), then run many provider calls
(``validate_refund``) at once on the budget queue it names."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities import RefundActivities
    from activities.models import ValidateInput
    from core.models import RefundRequest


class BurstInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request: RefundRequest
    # Where the refund workers run route_refund (their REFUNDS_TASK_QUEUE).
    main_task_queue: str
    calls: int


class BurstResult(BaseModel):
    task_queue: str
    # Per call, the attempt that succeeded: any retry (a 429 among them) shows as 2 or more.
    attempts: list[int]


@workflow.defn
class BudgetBurstWorkflow:
    @workflow.run
    async def run(self, params: BurstInput) -> BurstResult:
        route = await workflow.execute_activity_method(
            RefundActivities.route,
            params.request,
            task_queue=params.main_task_queue,
            start_to_close_timeout=timedelta(seconds=10),
        )
        results = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    RefundActivities.validate,
                    ValidateInput(request=params.request),
                    task_queue=route.task_queue,
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
                )
                for _ in range(params.calls)
            )
        )
        return BurstResult(task_queue=route.task_queue, attempts=[r.attempt for r in results])
