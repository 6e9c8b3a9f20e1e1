"""The `refunds` Nexus service's handler, run by the refund worker (worker.py).

``start_refund`` leaves every decision to :meth:`starter.client.RefundClient.start`, the one
start all callers share: offline checks first, workflow id ``refund:<key>``, ids never reused,
memo with the fingerprint, search attributes, UI summary; same key and request attaches,
another request with the key is a conflict. Then the operation attaches itself to that
refund: a second start with ``USE_EXISTING`` carries the caller's completion callback, so the
Nexus operation completes when the refund's workflow does. A refund already final takes no
callback (the server refuses the start: ids are never reused), and the operation answers at
once with its status.

Failures the caller must not retry (a conflict, a request the offline checks refuse, an
unknown key) fail the operation (``nexusrpc.OperationError``) with an ``ApplicationError`` of
a type from :mod:`nexus_service.service` as the cause. Temporal being unavailable is left to
the SDK, which reports it as retryable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import nexusrpc
import temporalio.nexus
from nexusrpc.handler import StartOperationContext, service_handler, sync_operation
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.nexus import (
    TemporalNexusClient,
    TemporalOperationResult,
    TemporalStartOperationContext,
)

from core.models import RefundOptions, RefundRequest, RefundStatus
from core.settings import Settings
from nexus_service.service import (
    IDEMPOTENCY_CONFLICT,
    INVALID_REFUND_REQUEST,
    REFUND_NOT_FOUND,
    REFUND_NOT_READABLE,
    RefundsNexusService,
    RefundStatusInput,
)
from providers.errors import InvalidRequestError
from starter.client import (
    IdempotencyConflictError,
    RefundClient,
    RefundClientError,
    RefundNotFoundError,
    TemporalUnavailableError,
    _memo,
    _search_attributes,
    options_from_settings,
    summary_line,
)
from workflows.models import RefundWorkflowInput
from workflows.refund import RefundWorkflow


@service_handler(service=RefundsNexusService)
class RefundsNexusHandler:
    """Starts refunds on ``task_queue`` with ``options``, as the worker's settings say;
    ``allow_private_notify_urls`` as ``REFUNDS_EVENTS_ALLOW_PRIVATE`` (RefundClient's check)."""

    def __init__(
        self, *, task_queue: str, options: RefundOptions, allow_private_notify_urls: bool = False
    ) -> None:
        self.task_queue = task_queue
        self.options = options
        self.allow_private_notify_urls = allow_private_notify_urls

    @classmethod
    def from_settings(cls, settings: Settings) -> RefundsNexusHandler:
        return cls(
            task_queue=settings.refunds_task_queue,
            options=options_from_settings(settings),
            allow_private_notify_urls=settings.refunds_events_allow_private,
        )

    def _refunds(self, client: Client) -> RefundClient:
        """The starters' own client, over the worker's connection."""
        return RefundClient(
            client,
            task_queue=self.task_queue,
            options=self.options,
            allow_private_notify_urls=self.allow_private_notify_urls,
        )

    # A Temporal operation rather than a plain workflow-run one: a refund already final is
    # answered synchronously, which a workflow-run operation cannot do.
    @temporalio.nexus.temporal_operation
    async def start_refund(
        self,
        ctx: TemporalStartOperationContext,
        client: TemporalNexusClient,
        request: RefundRequest,
    ) -> TemporalOperationResult[RefundStatus]:
        refunds = self._refunds(client.client)
        started_by = f"nexus:{temporalio.nexus.info().endpoint}"
        with _operation_errors():
            await refunds.start(request, started_by=started_by)
        try:
            # The refund exists and is this request's: attach the caller's callback to it.
            # Every argument is the one RefundClient.start gives, so this start could never
            # make a different refund, even if it were the one to create it.
            return await client.start_workflow(
                RefundWorkflow.run,
                RefundWorkflowInput(request=request, options=self.options),
                id=request.workflow_id,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                memo=_memo(request, started_by),
                search_attributes=_search_attributes(request),
                static_summary=summary_line(request),
            )
        except WorkflowAlreadyStartedError:
            # Closed already: ids are never reused, so it is the refund just checked.
            with _operation_errors():
                status = await refunds.status(request.idempotency_key)
            return TemporalOperationResult.sync(status)

    @sync_operation
    async def get_status(
        self, ctx: StartOperationContext, request: RefundStatusInput
    ) -> RefundStatus:
        with _operation_errors():
            return await self._refunds(temporalio.nexus.client()).status(request.idempotency_key)


@contextmanager
def _operation_errors() -> Iterator[None]:
    """The refunds' final refusals as failed operations, each with its typed cause;
    Temporal not answering as a retryable handler error."""
    try:
        yield
    except IdempotencyConflictError as err:
        _refuse(str(err), IDEMPOTENCY_CONFLICT)
    except InvalidRequestError as err:
        _refuse(f"invalid refund request: {err}", INVALID_REFUND_REQUEST)
    except RefundNotFoundError as err:
        _refuse(str(err), REFUND_NOT_FOUND)
    except TemporalUnavailableError as err:
        raise nexusrpc.HandlerError(str(err), type=nexusrpc.HandlerErrorType.UNAVAILABLE) from None
    except RefundClientError as err:
        _refuse(str(err), REFUND_NOT_READABLE)


def _refuse(message: str, error_type: str) -> NoReturn:
    # The worker turns the operation error into a failure whose cause is the typed one.
    raise nexusrpc.OperationError(
        message, state=nexusrpc.OperationErrorState.FAILED
    ) from ApplicationError(message, type=error_type, non_retryable=True)
