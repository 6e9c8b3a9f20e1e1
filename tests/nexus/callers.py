"""Caller workflows of another service: they run in their own namespace and reach refunds
only through the `refunds` Nexus endpoint, as docs/nexus.md shows."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.models import RefundRequest, RefundStatus
    from nexus_service import DEFAULT_ENDPOINT, RefundsNexusService, RefundStatusInput

# How long a caller lets one refund take (the operation's schedule-to-close timeout).
REFUND_DEADLINE = timedelta(days=7)


@workflow.defn
class RefundCallerWorkflow:
    """Starts a refund (or attaches to its key's) and waits, durably, for its final status."""

    @workflow.run
    async def run(self, request: RefundRequest) -> RefundStatus:
        refunds = workflow.create_nexus_client(
            service=RefundsNexusService, endpoint=DEFAULT_ENDPOINT
        )
        return await refunds.execute_operation(
            RefundsNexusService.start_refund,
            request,
            schedule_to_close_timeout=REFUND_DEADLINE,
        )


@workflow.defn
class RefundStatusCallerWorkflow:
    """Reads a refund's status through the endpoint."""

    @workflow.run
    async def run(self, query: RefundStatusInput) -> RefundStatus:
        refunds = workflow.create_nexus_client(
            service=RefundsNexusService, endpoint=DEFAULT_ENDPOINT
        )
        return await refunds.execute_operation(RefundsNexusService.get_status, query)
