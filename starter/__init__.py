"""Starting and following refunds: the Python API (:mod:`starter.client`) other services
import, and the connection to Temporal it shares with the worker (:mod:`starter.connection`).
The `refunds` command line over it is :mod:`cli`."""

from starter.client import (
    IdempotencyConflictError,
    RefundClient,
    RefundClientError,
    RefundNotFoundError,
    RefundPage,
    RefundTooLateError,
    ResolutionRefusedError,
    StartedRefund,
    TemporalUnavailableError,
)

__all__ = [
    "IdempotencyConflictError",
    "RefundClient",
    "RefundClientError",
    "RefundNotFoundError",
    "RefundPage",
    "RefundTooLateError",
    "ResolutionRefusedError",
    "StartedRefund",
    "TemporalUnavailableError",
]
