"""The Mews Connector API simulator (see :mod:`simulators.mews.app` for its choices)."""

from __future__ import annotations

from simulators.mews.app import MewsSimulator
from simulators.mews.seed import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_TOKEN,
    DEFAULT_PORTFOLIO_TOKEN,
    SEEDED_PAYMENTS,
    Scenario,
)

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_CLIENT_TOKEN",
    "DEFAULT_PORTFOLIO_TOKEN",
    "SEEDED_PAYMENTS",
    "MewsSimulator",
    "Scenario",
]
