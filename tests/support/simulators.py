"""The combined simulator's control routes, for tests that run against a stack."""

from __future__ import annotations

from typing import Any

import httpx

from core.models import ProviderName


class SimulatorControl:
    """Mixin for a test stack object with ``http``: a client on the simulators' root URL."""

    http: httpx.AsyncClient

    async def new_payment(
        self, provider: ProviderName, scenario: str, **fields: Any
    ) -> dict[str, Any]:
        """A fresh payment of ``scenario`` (refunds of one payment are serialized)."""
        response = await self.http.post(
            f"/{provider.value}/_sim/payments", json={"scenario": scenario, **fields}
        )
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        return payment

    async def inject(self, provider: ProviderName, *faults: dict[str, Any]) -> None:
        response = await self.http.post(f"/{provider.value}/_sim/faults", json=list(faults))
        assert response.status_code == 201, response.text

    async def clear_faults(self) -> None:
        for provider in ProviderName:
            response = await self.http.delete(f"/{provider.value}/_sim/faults")
            assert response.status_code == 204, response.text

    async def journal(self, provider: ProviderName) -> dict[str, Any]:
        response = await self.http.get(f"/{provider.value}/_sim/journal")
        response.raise_for_status()
        journal: dict[str, Any] = response.json()
        return journal
