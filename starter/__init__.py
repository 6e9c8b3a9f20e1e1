"""Starting and following refunds: the Python API (:mod:`starter.client`) and the `refunds` CLI."""

from starter.client import (
    IdempotencyConflictError,
    RefundClient,
    RefundClientError,
    RefundNotFoundError,
    StartedRefund,
)

__all__ = [
    "IdempotencyConflictError",
    "RefundClient",
    "RefundClientError",
    "RefundNotFoundError",
    "StartedRefund",
]
