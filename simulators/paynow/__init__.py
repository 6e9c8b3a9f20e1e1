"""A Paynow v3 refunds simulator (see :mod:`simulators.paynow.app`)."""

from __future__ import annotations

from simulators.paynow.app import PaynowSimulator

__all__ = ["PaynowSimulator"]
