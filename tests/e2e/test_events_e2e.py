"""Outcome events through the real processes: `refunds start --notify-url` on the embedded
stack (its worker signs with the secret the stack made for the run), a receiver on this
machine that checks each event with the Standard Webhooks library, and `refunds status`
showing how the delivery went."""

from __future__ import annotations

import asyncio

import pytest

from core.models import ProviderName
from tests.e2e.conftest import E2E
from tests.e2e.test_cli_e2e import new_key, start_args
from tests.support.receivers import Receiver, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_start_with_a_notify_url_tells_the_outcome_signed(e2e: E2E) -> None:
    secret = e2e.stack.events_secret
    assert secret is not None, "the stack makes a signing secret when none is configured"
    payment = await e2e.new_payment(ProviderName.PAYNOW, "succeeds_immediately")
    key = new_key("events")
    with receiving(Receiver()) as receiver:
        started = await e2e.cli(
            *start_args(ProviderName.PAYNOW, payment, key, "3.00"),
            "--notify-url",
            receiver.url,
            "--wait",
        )
        assert started.code == 0, started.err
        for _ in range(100):
            shown = await e2e.cli("status", key)
            if "refund.succeeded delivered (1 attempt)" in shown.out:
                break
            await asyncio.sleep(0.1)
    assert "event            refund.succeeded delivered (1 attempt)" in shown.out, shown.out
    [event] = receiver.verified(secret)
    assert event["type"] == "refund.succeeded"
    assert event["data"]["key"] == key
    assert event["data"]["state"] == "SUCCEEDED"


async def test_a_notify_url_that_is_not_http_is_refused_before_anything_starts(
    e2e: E2E,
) -> None:
    payment = await e2e.new_payment(ProviderName.PAYNOW, "succeeds_immediately")
    key = new_key("events-bad")
    refused = await e2e.cli(
        *start_args(ProviderName.PAYNOW, payment, key, "3.00"),
        "--notify-url",
        "file:///etc/passwd",
    )
    assert refused.code == 2
    assert "--notify-url" in refused.err
    assert "http:// or https://" in refused.err
    missing = await e2e.cli("status", key)
    assert missing.code == 4
