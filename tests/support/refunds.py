"""Waiting on refunds, for tests that run against a stack."""

from __future__ import annotations

import asyncio
import time

from core.models import RefundState, RefundStatus
from starter.client import RefundClient


async def wait_for_state(
    client: RefundClient, key: str, state: RefundState, *, timeout_s: float = 30.0
) -> RefundStatus:
    """The refund's status once it is in ``state``; fails if it ends elsewhere or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await client.status(key)
        if status.state is state:
            return status
        assert not status.is_final, f"{key} ended {status.state} waiting for {state}"
        assert time.monotonic() < deadline, f"{key} never {state}: {status}"
        await asyncio.sleep(0.1)
