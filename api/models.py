"""What the API reads and writes, built on the service's own models.

The bodies are the request models minus what the API sets itself: a refund's body is
:class:`core.models.RefundRequest` without ``idempotency_key`` (sent as the
``Idempotency-Key`` header), a resolution's is :class:`workflows.models.ResolveRequest`
without ``by`` (the API key's name). :func:`fields_of` copies the fields, constraints and
descriptions, so the OpenAPI document and the first validation follow the models; the
handlers then validate the whole request through the model itself (its cross-field rules,
the provider's offline checks), exactly as the CLI and ``RefundClient`` do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from core.models import RefundRequest
from workflows.models import ResolveRequest


def fields_of(model: type[BaseModel], *, without: set[str], name: str, doc: str) -> Any:
    """A strict model with ``model`` 's fields except ``without`` (an API body)."""
    fields: dict[str, Any] = {
        field_name: (info.annotation, info)
        for field_name, info in model.model_fields.items()
        if field_name not in without
    }
    return create_model(
        name,
        __config__=ConfigDict(frozen=True, extra="forbid"),
        __doc__=doc,
        __module__=__name__,
        **fields,
    )


_RefundFields: Any = fields_of(
    RefundRequest, without={"idempotency_key"}, name="RefundFields", doc="A refund's fields."
)
_ResolveFields: Any = fields_of(
    ResolveRequest, without={"by"}, name="ResolveFields", doc="A resolution's fields."
)


class RefundCreate(_RefundFields):  # type: ignore[misc]
    """`POST /v1/refunds`: a refund request; its idempotency key is the `Idempotency-Key`
    header. Amounts are integer minor units with their ISO 4217 currency (both, or neither
    for a whole Mews payment)."""


class ResolveBody(_ResolveFields):  # type: ignore[misc]
    """`POST /v1/refunds/{key}/resolve`: an operator's decision for a refund in
    NEEDS_ATTENTION: `adopt` (with `refund_id`), `resend`, or `close` (with `close_as`
    FAILED or CANCELED), and why. Recorded with the API key's name as who decided."""


# The caller's reason plus " (by <key name>)" (names are at most 64 chars) fits the 500
# characters of the workflow's CancelRequest.
CANCEL_REASON_MAX = 400


class CancelBody(BaseModel):
    """`POST /v1/refunds/{key}/cancel`: why. Recorded as `<reason> (by <API key name>)`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=CANCEL_REASON_MAX)]

    @model_validator(mode="after")
    def _not_blank(self) -> Self:
        if not self.reason.strip():
            raise ValueError("reason must not be blank")
        return self


class RefundAccepted(BaseModel):
    """The answer to `POST /v1/refunds`, the same for the first request (201) and every
    repeat of it (200): the refund's key, its workflow id, where to follow it, and the request
    as the service holds it."""

    key: str
    workflow_id: str
    status_url: str
    request: RefundRequest


class RefundSummary(BaseModel):
    """One refund in a list, as the visibility store holds it."""

    key: str
    workflow_id: str
    state: str | None
    provider: str | None
    payment_id: str | None
    amount: str = Field(description="For people, e.g. '12.34 PLN' or 'whole payment'")
    execution_status: str
    started_at: datetime | None


class RefundList(BaseModel):
    """A page of refunds; pass `next_page_token` as `page_token` for the next (absent on the
    last page)."""

    items: list[RefundSummary]
    next_page_token: str | None = None


class Health(BaseModel):
    status: str
