"""Mews Connector API: refunds through ``payments/refund``, read back with ``payments/getAll``."""

from __future__ import annotations

from providers.mews.adapter import MewsAdapter, check_mews_request

__all__ = ["MewsAdapter", "check_mews_request"]
