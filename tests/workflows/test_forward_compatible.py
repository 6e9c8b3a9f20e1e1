"""Forward-compatible models: what travels between worker versions ignores fields it does not
know (a newer worker's additions never break an older one in a rolling deploy); what callers
write stays strict. Decoded with the project's data converters, as Temporal decodes them."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from activities.models import (
    CancelAtProviderInput,
    CancelAtProviderResult,
    EnterLaneInput,
    FindRefundsInput,
    FoundRefunds,
    PolledRefund,
    PollInput,
    SubmitInput,
    SubmittedRefund,
    ValidatedRefund,
    ValidateInput,
    WorkflowRef,
)
from codec import Keyring, encrypting_converter
from core.models import (
    ProviderName,
    ProviderRefund,
    ProviderRefundStatus,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
    Resolution,
    ResolveAction,
)
from workflows.models import (
    CancelAnswer,
    CancelRequest,
    CarriedState,
    LaneClaim,
    LaneEntry,
    LaneExit,
    LaneGrant,
    LaneInput,
    LaneStatus,
    RefundWorkflowInput,
    ResolveAnswer,
    ResolveRequest,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
REQUEST = RefundRequest(
    idempotency_key="order-1:refund.1",
    provider=ProviderName.PAYNOW,
    payment_id="NOLV-8F9-08K-WGD",
    amount_minor=1234,
    currency="PLN",
    reason="returned",
)
REFUND = ProviderRefund(
    refund_id="R-1",
    status=ProviderRefundStatus.PENDING,
    raw_status="NEW",
    amount_minor=1234,
    currency="PLN",
    created_at=NOW,
)
VALIDATED = ValidatedRefund(amount_minor=1234, currency="PLN", payment_amount_minor=5000)
RESOLUTION = Resolution(
    action=ResolveAction.RESEND, reason="nothing made", by="ops", at=NOW, outcome="resent"
)
STATUS = RefundStatus(
    key="order-1:refund.1",
    workflow_id="refund:order-1:refund.1",
    provider=ProviderName.PAYNOW,
    payment_id="NOLV-8F9-08K-WGD",
    state=RefundState.PENDING,
    provider_refund_id="R-1",
    resolutions=[RESOLUTION],
    started_at=NOW,
)
CARRIED = CarriedState(
    state=RefundState.PENDING,
    validated=VALIDATED,
    refund=REFUND,
    started_at=NOW,
    submitted_at=NOW,
    checks=12,
    resolutions=(RESOLUTION,),
)
CLAIM = LaneClaim(refund_id="R-0", payment_id="P-0", amount_minor=100, currency="PLN")

# Written by one worker version, read by another: unknown fields are ignored.
TRAVELLING: list[BaseModel] = [
    STATUS,
    CARRIED,
    REFUND,
    VALIDATED,
    SubmittedRefund(refund=REFUND, attempt=2),
    PolledRefund(refund=REFUND),
    CancelAtProviderResult(canceled=True, refund=REFUND, note="cancelled"),
    FoundRefunds(refunds=(REFUND,)),
    CancelAnswer(canceled=False, state=RefundState.PENDING, note="too late"),
    ResolveAnswer(state=RefundState.PENDING, note="adopted"),
    RESOLUTION,
    LaneStatus(holder="refund:a", queue=["refund:b"], claimed_refund_ids=["R-0"], claims=[CLAIM]),
    LaneGrant(lane_id="lane", claims=(CLAIM,)),
    LaneEntry(workflow_id="refund:a"),
    LaneExit(workflow_id="refund:a", refund_ids=("R-1",), claims=(CLAIM,)),
    LaneInput(queue=("refund:b",), holder="refund:a", claims=(CLAIM,)),
    CLAIM,
    # A cancel is never dropped because a newer caller added a field (a signal whose payload
    # does not decode is dropped by the SDK).
    CancelRequest(reason="customer called"),
]

# Written by callers (or by the workflow for an activity): an unknown field is refused, never
# silently dropped (a newer instruction an older worker does not know fails loudly).
STRICT: list[BaseModel] = [
    REQUEST,
    RefundOptions(),
    RefundWorkflowInput(request=REQUEST),
    ResolveRequest(action=ResolveAction.ADOPT, reason="it is ours", refund_id="R-1"),
    ValidateInput(request=REQUEST),
    SubmitInput(request=REQUEST, resumed=True),
    PollInput(request=REQUEST, refund_id="R-1"),
    CancelAtProviderInput(request=REQUEST, refund_id="R-1", reason="stop"),
    FindRefundsInput(request=REQUEST, created_from=NOW, created_to=NOW),
    EnterLaneInput(lane_id="lane", workflow_id="refund:a"),
    WorkflowRef(workflow_id="refund:a"),
]


def _name(model: BaseModel) -> str:
    return type(model).__name__


def _converters() -> list[Any]:
    keyring = Keyring({"k1": os.urandom(32)}, "k1")
    return [
        pytest.param(pydantic_data_converter, id="plain"),
        pytest.param(encrypting_converter(keyring), id="encrypted"),
    ]


def _with_extra(document: Any) -> Any:
    """The document with a field added at every level, as a newer version might write it."""
    if isinstance(document, dict):
        return {**{k: _with_extra(v) for k, v in document.items()}, "added_later": {"x": [1]}}
    if isinstance(document, list):
        return [_with_extra(v) for v in document]
    return document


async def _round_trip(converter: DataConverter, document: Any, model: type[BaseModel]) -> Any:
    payloads = await converter.encode([document])
    [decoded] = await converter.decode(payloads, [model])
    return decoded


@pytest.mark.parametrize("converter", _converters())
@pytest.mark.parametrize("model", TRAVELLING, ids=_name)
async def test_travelling_models_ignore_fields_a_newer_version_added(
    converter: DataConverter, model: BaseModel
) -> None:
    document = _with_extra(model.model_dump(mode="json"))
    decoded = await _round_trip(converter, document, type(model))
    assert decoded == model
    assert "added_later" not in str(decoded.model_dump())


@pytest.mark.parametrize("converter", _converters())
@pytest.mark.parametrize("model", STRICT, ids=_name)
async def test_caller_inputs_refuse_unknown_fields(
    converter: DataConverter, model: BaseModel
) -> None:
    document = model.model_dump(mode="json")
    assert await _round_trip(converter, document, type(model)) == model
    with pytest.raises(ValidationError, match="added_later"):
        await _round_trip(converter, {**document, "added_later": 1}, type(model))


@pytest.mark.parametrize("converter", _converters())
async def test_a_request_inside_the_workflow_input_stays_strict(converter: DataConverter) -> None:
    document = RefundWorkflowInput(request=REQUEST).model_dump(mode="json")
    document["request"]["added_later"] = 1
    with pytest.raises(ValidationError, match="added_later"):
        await _round_trip(converter, document, RefundWorkflowInput)


@pytest.mark.parametrize("converter", _converters())
async def test_carried_state_of_a_newer_run_continues_on_an_older_worker(
    converter: DataConverter,
) -> None:
    # The request stays strict; the carried state (written by the previous run, perhaps a
    # newer worker) does not.
    params = RefundWorkflowInput(request=REQUEST, carried=CARRIED)
    document = params.model_dump(mode="json")
    document["carried"] = _with_extra(document["carried"])
    decoded = await _round_trip(converter, document, RefundWorkflowInput)
    assert decoded == params
