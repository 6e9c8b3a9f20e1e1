"""`--wait`: follow a refund until it has an outcome, and the exit code of that outcome.

An outcome is a final state, or ``NEEDS_ATTENTION``: a refund waiting for an operator would
otherwise keep a waiting script (or a batch) forever. The workflow's result ends the wait as
soon as it is there; meanwhile the refund's ``RefundState`` search attribute is read from the
server every ``poll_s`` (no query, so no worker is needed to keep waiting).
"""

from __future__ import annotations

import asyncio
import contextlib

from cli.runner import EXIT_NEEDS_ATTENTION, EXIT_NOT_SUCCEEDED, EXIT_OK
from core.models import REFUND_STATE, RefundState, RefundStatus
from starter.client import RefundClient

POLL_S = 1.0


def outcome_code(status: RefundStatus) -> int:
    """0 SUCCEEDED; 5 FAILED, CANCELED or REJECTED; 6 anything still open (NEEDS_ATTENTION)."""
    if status.state is RefundState.SUCCEEDED:
        return EXIT_OK
    if status.is_final:
        return EXIT_NOT_SUCCEEDED
    return EXIT_NEEDS_ATTENTION


async def wait_for_outcome(
    client: RefundClient, key: str, *, poll_s: float = POLL_S
) -> RefundStatus:
    """The refund's status once it is final or in ``NEEDS_ATTENTION``."""
    result = asyncio.ensure_future(client.wait(key))
    try:
        while True:
            done, _ = await asyncio.wait({result}, timeout=poll_s)
            if done:
                return result.result()
            if await _needs_attention(client, key):
                status = await client.status(key)
                if status.state is RefundState.NEEDS_ATTENTION or status.is_final:
                    return status
    finally:
        result.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await result


async def _needs_attention(client: RefundClient, key: str) -> bool:
    """Whether the server's copy of the refund's state says NEEDS_ATTENTION. A failed look
    is no answer: the wait goes on (the result still ends it)."""
    try:
        description = await client.handle(key).describe()
    except Exception:
        return False
    state = description.typed_search_attributes.get(REFUND_STATE)
    return state == RefundState.NEEDS_ATTENTION.value
