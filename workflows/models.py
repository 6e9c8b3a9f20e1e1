"""The workflow's own messages: its input (with what continue-as-new carries) and the
`cancel` signal's payload. No aliases, no credentials."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from activities.models import ValidatedRefund
from core.models import ProviderRefund, RefundOptions, RefundRequest, RefundState


class CancelRequest(BaseModel):
    """Payload of the `cancel` signal: ``{"reason": "..."}``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class CancelAnswer(BaseModel):
    """Answer of the `request_cancel` update, once the cancel has played out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    canceled: bool
    state: RefundState
    note: str


class CarriedState(BaseModel):
    """What one run hands to the next on continue-as-new. Not for callers to set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: RefundState
    validated: ValidatedRefund
    refund: ProviderRefund
    started_at: datetime
    submitted_at: datetime
    attempts: int = 0
    checks: int = 0
    last_error: str | None = None
    attention_reason: str | None = None
    cancel_requested: bool = False
    cancel_reason: str | None = None
    cancel_handled: bool = False
    cancel_note: str | None = None


class RefundWorkflowInput(BaseModel):
    """The workflow's one input: ``{"request": {...}}``; ``options`` defaults are sane."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: RefundRequest
    options: RefundOptions = Field(default_factory=RefundOptions)
    carried: CarriedState | None = None


def lane_id_for(request: RefundRequest, task_queue: str) -> str:
    """One lane per payment (and merchant profile): its refunds are admitted one at a time.

    The task queue is part of the id: the lane runs on the refunds' own task queue, so
    workers of another deployment in the same namespace never wait on it."""
    return (
        f"refund-lane:{task_queue}:{request.provider.value}:{request.merchant}:{request.payment_id}"
    )


class LaneEntry(BaseModel):
    """`enqueue` signal: a refund workflow asks to be admitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow_id: str


class LaneExit(BaseModel):
    """`release` signal: the holder is done with the critical section, or a queued refund
    leaves. ``refund_ids`` are the provider refunds it made (or may have made): they are
    claimed, and no later sibling may adopt them while reconciling."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow_id: str
    refund_ids: tuple[str, ...] = ()


class LaneGrant(BaseModel):
    """`admitted` signal to a refund workflow: its turn, with the refunds siblings claimed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lane_id: str
    claimed_refund_ids: tuple[str, ...] = ()


class LaneInput(BaseModel):
    """The lane's input; continue-as-new carries the queue and the claims."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: tuple[str, ...] = ()
    holder: str | None = None
    claimed_refund_ids: tuple[str, ...] = ()


class LaneStatus(BaseModel):
    holder: str | None
    queue: list[str]
    claimed_refund_ids: list[str]
