"""The `refunds` Nexus service against the real stack: a caller workflow in a second
namespace starts refunds through the endpoint the stack creates and waits for their final
status; the worker process handles the operations; the simulator's journal shows what reached
the provider.

Each test fails without the endpoint (the caller's operation never starts, the caller
workflow times out) and without the handler's rules (attach, conflict, offline checks).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.nexus.v1 import EndpointSpec
from temporalio.api.operatorservice.v1 import ListNexusEndpointsRequest, UpdateNexusEndpointRequest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, NexusOperationError
from temporalio.service import RPCError, RPCStatusCode

from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from nexus_service import (
    DEFAULT_ENDPOINT,
    IDEMPOTENCY_CONFLICT,
    INVALID_REFUND_REQUEST,
    REFUND_NOT_FOUND,
    RefundStatusInput,
)
from tests.nexus.callers import RefundCallerWorkflow, RefundStatusCallerWorkflow
from tests.nexus.conftest import CALLER_NAMESPACE, CALLER_TASK_QUEUE, NexusStack, caller_timeout

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PAYNOW = ProviderName.PAYNOW
# A refused operation must come back at once, not after retries.
REFUSAL_WITHIN_S = 10.0


def new_key(label: str) -> str:
    return f"nexus-{label}-{uuid.uuid4().hex[:10]}"


def paynow_request(payment: dict[str, Any], key: str, **changes: Any) -> RefundRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "provider": PAYNOW,
        "payment_id": payment["payment_id"],
        "amount_minor": 1234,
        "currency": payment["currency"],
        "reason": "nexus e2e: goods returned",
    }
    return RefundRequest(**{**fields, **changes})


async def start_caller(
    nexus: NexusStack, request: RefundRequest
) -> WorkflowHandle[RefundCallerWorkflow, RefundStatus]:
    return await nexus.callers.start_workflow(
        RefundCallerWorkflow.run,
        request,
        id=f"caller-{uuid.uuid4().hex[:12]}",
        task_queue=CALLER_TASK_QUEUE,
        execution_timeout=caller_timeout(),
    )


async def call_refund(nexus: NexusStack, request: RefundRequest) -> RefundStatus:
    return await (await start_caller(nexus, request)).result()


async def call_status(nexus: NexusStack, key: str) -> RefundStatus:
    return await nexus.callers.execute_workflow(
        RefundStatusCallerWorkflow.run,
        RefundStatusInput(idempotency_key=key),
        id=f"status-caller-{uuid.uuid4().hex[:12]}",
        task_queue=CALLER_TASK_QUEUE,
        execution_timeout=caller_timeout(),
    )


def causes(err: BaseException) -> Iterator[BaseException]:
    cause: BaseException | None = err
    while cause is not None:
        yield cause
        cause = cause.__cause__


async def refused(handle: WorkflowHandle[Any, RefundStatus]) -> ApplicationError:
    """The typed cause of the caller's failed Nexus operation; it fails at once."""
    began = time.monotonic()
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert time.monotonic() - began < REFUSAL_WITHIN_S
    operation = failed.value.cause
    assert isinstance(operation, NexusOperationError), repr(operation)
    assert operation.endpoint == DEFAULT_ENDPOINT
    typed = [c for c in causes(operation) if isinstance(c, ApplicationError) and c.type]
    assert typed, f"no typed cause in {list(causes(operation))!r}"
    return typed[-1]


async def event_types(handle: WorkflowHandle[Any, Any]) -> list[EventType.ValueType]:
    return [event.event_type async for event in handle.fetch_history_events()]


async def test_a_caller_in_another_namespace_starts_a_refund_and_awaits_it(
    nexus: NexusStack,
) -> None:
    payment = await nexus.new_payment(PAYNOW, "succeeds")
    request = paynow_request(payment, new_key("one"))

    handle = await start_caller(nexus, request)
    status = await handle.result()

    assert status.state is RefundState.SUCCEEDED
    assert status.key == request.idempotency_key
    assert status.amount_minor == 1234
    journal = await nexus.journal(PAYNOW)
    assert journal["refunds_per_payment"][payment["payment_id"]] == 1
    # Asynchronous: started, then completed by the refund workflow's callback.
    events = await event_types(handle)
    assert EventType.EVENT_TYPE_NEXUS_OPERATION_STARTED in events
    assert EventType.EVENT_TYPE_NEXUS_OPERATION_COMPLETED in events
    # Started as RefundClient starts every refund: fingerprint and who started it.
    memo = await (await nexus.refunds.handle(request.idempotency_key).describe()).memo()
    assert memo["fingerprint"] == request.fingerprint()
    assert memo["started_by"] == f"nexus:{DEFAULT_ENDPOINT}"
    # The refund's history links back to the workflow that asked for it.
    history = nexus.refunds.handle(request.idempotency_key).fetch_history_events()
    started = await anext(aiter(history))
    linked = {
        (link.workflow_event.namespace, link.workflow_event.workflow_id) for link in started.links
    }
    assert (CALLER_NAMESPACE, handle.id) in linked


async def test_the_same_key_twice_attaches_to_one_refund(nexus: NexusStack) -> None:
    payment = await nexus.new_payment(PAYNOW, "succeeds")
    request = paynow_request(payment, new_key("twice"))

    # Two callers while the refund runs, one more once it has ended.
    first, second = await start_caller(nexus, request), await start_caller(nexus, request)
    running = [await first.result(), await second.result()]
    late = await start_caller(nexus, request)
    ended = await late.result()

    refund_ids = {s.provider_refund_id for s in [*running, ended]}
    assert len(refund_ids) == 1
    assert None not in refund_ids
    assert {s.state for s in [*running, ended]} == {RefundState.SUCCEEDED}
    journal = await nexus.journal(PAYNOW)
    assert journal["refunds_per_payment"][payment["payment_id"]] == 1
    # The refund was final already: the late caller got its status at once.
    assert EventType.EVENT_TYPE_NEXUS_OPERATION_STARTED not in await event_types(late)


async def test_a_different_request_with_the_same_key_is_a_final_conflict(
    nexus: NexusStack,
) -> None:
    payment = await nexus.new_payment(PAYNOW, "succeeds")
    key = new_key("conflict")
    first = await start_caller(nexus, paynow_request(payment, key))

    other = await start_caller(nexus, paynow_request(payment, key, amount_minor=1235))
    cause = await refused(other)

    assert cause.type == IDEMPOTENCY_CONFLICT
    assert cause.non_retryable
    assert "idempotency conflict" in cause.message
    assert "amount_minor" in cause.message
    assert (await first.result()).amount_minor == 1234
    journal = await nexus.journal(PAYNOW)
    assert journal["refunds_per_payment"][payment["payment_id"]] == 1


async def test_an_invalid_request_fails_before_any_provider_call(nexus: NexusStack) -> None:
    payment = await nexus.new_payment(PAYNOW, "succeeds")
    # Valid as a model, refused by Paynow's offline checks: a Mews-only field.
    request = paynow_request(payment, new_key("invalid"), account_id="ACC-1")

    cause = await refused(await start_caller(nexus, request))

    assert cause.type == INVALID_REFUND_REQUEST
    assert "account_id" in cause.message
    journal = await nexus.journal(PAYNOW)
    assert not [r for r in journal["requests"] if payment["payment_id"] in r["path"]]
    with pytest.raises(RPCError) as missing:
        await nexus.refunds.handle(request.idempotency_key).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_get_status_answers_for_a_refund_and_refuses_an_unknown_key(
    nexus: NexusStack,
) -> None:
    payment = await nexus.new_payment(PAYNOW, "succeeds")
    request = paynow_request(payment, new_key("status"))
    await nexus.refunds.start(request)
    final = await nexus.refunds.wait(request.idempotency_key)

    status = await call_status(nexus, request.idempotency_key)

    assert status.state is RefundState.SUCCEEDED
    assert status.provider_refund_id == final.provider_refund_id
    unknown = await nexus.callers.start_workflow(
        RefundStatusCallerWorkflow.run,
        RefundStatusInput(idempotency_key=new_key("unknown")),
        id=f"status-caller-{uuid.uuid4().hex[:12]}",
        task_queue=CALLER_TASK_QUEUE,
        execution_timeout=caller_timeout(),
    )
    assert (await refused(unknown)).type == REFUND_NOT_FOUND


async def test_the_stack_keeps_its_endpoint_across_starts(nexus: NexusStack) -> None:
    """What a restart on the same state dir does: the endpoint is found and left as it is,
    or pointed back at the stack's task queue if an earlier run used another one."""
    assert nexus.stack.client is not None
    operator = nexus.stack.client.operator_service
    by_name = ListNexusEndpointsRequest(name=DEFAULT_ENDPOINT)
    [before] = (await operator.list_nexus_endpoints(by_name)).endpoints

    await nexus.stack.ensure_nexus_endpoint()
    [same] = (await operator.list_nexus_endpoints(by_name)).endpoints
    assert (same.id, same.version) == (before.id, before.version)

    moved = EndpointSpec()
    moved.CopyFrom(before.spec)
    moved.target.worker.task_queue = "elsewhere"
    await operator.update_nexus_endpoint(
        UpdateNexusEndpointRequest(id=before.id, version=before.version, spec=moved)
    )
    await nexus.stack.ensure_nexus_endpoint()
    [back] = (await operator.list_nexus_endpoints(by_name)).endpoints
    assert back.id == before.id
    assert back.spec.target == before.spec.target
    assert back.spec.target.worker.task_queue == nexus.stack.config.task_queue
