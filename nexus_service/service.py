"""The `refunds` Nexus service as callers see it: its operations and their types.

A workflow in another namespace imports this module (inside
``workflow.unsafe.imports_passed_through()``), makes a client with
``workflow.create_nexus_client(service=RefundsNexusService, endpoint=...)`` and calls
``start_refund`` or ``get_status`` by reference, so a misspelt operation fails mypy instead
of a run. It imports only ``core`` and ``nexusrpc``: nothing of the worker, no Temporal
client, no provider code. docs/nexus.md shows a caller.

Idempotency is the refunds' own (starter/client.py): ``start_refund`` with a key already used
for the same request attaches to that refund (running: the operation completes when it does;
already final: at once, with its status); with a different request it fails with
:data:`IDEMPOTENCY_CONFLICT`. Every failure of an operation is final: retrying it unchanged
cannot succeed, so the handler never leaves it to Nexus' retries.
"""

from __future__ import annotations

import nexusrpc
from pydantic import BaseModel, ConfigDict

from core.models import IdempotencyKey, RefundRequest, RefundStatus

SERVICE_NAME = "refunds"
# The endpoint name `refunds dev` creates; on a real cluster the operator chooses it.
DEFAULT_ENDPOINT = "refunds"

# ApplicationError types a caller finds in a failed operation's cause chain.
IDEMPOTENCY_CONFLICT = "IdempotencyConflict"
INVALID_REFUND_REQUEST = "InvalidRefundRequest"
REFUND_NOT_FOUND = "RefundNotFound"
REFUND_NOT_READABLE = "RefundNotReadable"


class RefundStatusInput(BaseModel):
    """`get_status`'s input: the refund's idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey


@nexusrpc.service(name=SERVICE_NAME)
class RefundsNexusService:
    """Start a refund and await its final status; read a refund's status."""

    # A workflow-run operation: completes with the refund's final status (SUCCEEDED, FAILED,
    # CANCELED or REJECTED), however long the refund takes, NEEDS_ATTENTION included.
    start_refund: nexusrpc.Operation[RefundRequest, RefundStatus]
    # Synchronous: the status now (the `status` query, or the result once final).
    get_status: nexusrpc.Operation[RefundStatusInput, RefundStatus]
