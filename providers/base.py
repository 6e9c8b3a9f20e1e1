"""The provider-neutral interface activities call.

A provider adapter answers five questions in neutral terms; activities and workflows never see
wire formats, status vocabularies or credentials. A third provider implements this protocol
and registers in :mod:`providers.registry`; above this package only its name
(``core.models.ProviderName``), its settings and the regenerated JSON Schemas change
(CONTRIBUTING.md, "Adding a provider").
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from core.models import ProviderName, ProviderRefund, RefundRequest


class RefundableCheck(BaseModel):
    """What the provider says about a payment before anything is refunded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payment_id: str
    currency: str
    # What will be refunded: the requested amount, or the whole payment when none was asked.
    amount_minor: int
    payment_amount_minor: int | None = None
    # Still refundable after earlier refunds, when the provider lets us compute it.
    refundable_minor: int | None = None
    raw_payment_state: str | None = None


@runtime_checkable
class RefundProvider(Protocol):
    """One payment provider, seen through neutral eyes."""

    @property
    def name(self) -> ProviderName: ...

    @property
    def supports_idempotency_key(self) -> bool:
        """True when re-sending a submit with the same key can never refund twice."""
        ...

    def check_request(self, request: RefundRequest) -> None:
        """Pure, offline checks of the request's shape; raises ``InvalidRequestError``."""
        ...

    async def check_refundable(
        self, request: RefundRequest, *, known_refunded_minor: int = 0
    ) -> RefundableCheck:
        """Pre-checks at the provider: the payment exists, may be refunded, amount fits.

        ``known_refunded_minor`` is what this service itself knows it refunded on this very
        payment lately. The check uses only that and what the provider says about *this*
        payment; where the remainder cannot be known the provider decides on submit."""
        ...

    async def submit(self, request: RefundRequest) -> ProviderRefund:
        """The provider's refund call. Sends ``request.idempotency_key`` where supported."""
        ...

    async def get_refund(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """Current state of a submitted refund."""
        ...

    async def cancel(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        """Cancel at the provider; ``RefundNotCancellableError`` when it is too late."""
        ...

    async def find_refunds(
        self, request: RefundRequest, *, created_from: datetime, created_to: datetime
    ) -> list[ProviderRefund]:
        """Refunds of ``request``'s payment created in the window (to reconcile unknowns)."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""
        ...
