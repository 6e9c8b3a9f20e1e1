"""Paynow v3: signed requests, the refund adapter and notification checks."""

from __future__ import annotations

from providers.paynow.adapter import PaynowAdapter, check_paynow_request
from providers.paynow.signature import PaynowSignatureAuth, sign_request, verify_notification

__all__ = [
    "PaynowAdapter",
    "PaynowSignatureAuth",
    "check_paynow_request",
    "sign_request",
    "verify_notification",
]
