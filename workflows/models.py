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
