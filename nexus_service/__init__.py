"""The `refunds` Nexus service: start a refund from a workflow in another namespace and await
its final status durably, or read a refund's status (docs/nexus.md).

Callers import the service definition from here; it needs only ``core`` and ``nexusrpc``.
The handler the worker runs is :mod:`nexus_service.handler` (imported by the worker only).
"""

from nexus_service.service import (
    DEFAULT_ENDPOINT,
    IDEMPOTENCY_CONFLICT,
    INVALID_REFUND_REQUEST,
    REFUND_NOT_FOUND,
    REFUND_NOT_READABLE,
    SERVICE_NAME,
    RefundsNexusService,
    RefundStatusInput,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "IDEMPOTENCY_CONFLICT",
    "INVALID_REFUND_REQUEST",
    "REFUND_NOT_FOUND",
    "REFUND_NOT_READABLE",
    "SERVICE_NAME",
    "RefundStatusInput",
    "RefundsNexusService",
]
