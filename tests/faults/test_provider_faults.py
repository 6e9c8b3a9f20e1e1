"""The provider misbehaves: a long window of 5xx, a 429 storm with ``Retry-After``, and
"processed, then the answer is lost". Each refund still ends in a known final state, and the
provider made exactly one refund for it.

Both providers run side by side in each test. Paynow faults are aimed at one payment's path;
Mews paths name no payment, so a Mews fault hits the next matching Mews call, and each test
has only one Mews refund in the phase the fault aims at.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.models import ProviderName, RefundRequest, RefundState
from tests.faults.conftest import (
    MEWS_GET_ALL,
    MEWS_REFUND,
    PAYNOW_SUBMIT,
    FaultStack,
    Journal,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

# Failures seen before the provider recovers: with backoff 1, 2, 4 s this is a 7 s outage.
OUTAGE_FAILURES = 4
STORM_429S = 5


def calls(journal: Journal, path: str, method: str, since: datetime) -> list[dict[str, Any]]:
    """The requests to ``path`` since this test began (earlier tests' are in the journal)."""
    return [
        r
        for r in journal["requests"]
        if path in r["path"] and r["method"] == method and datetime.fromisoformat(r["at"]) >= since
    ]


def faulted(journal: Journal, path: str, since: datetime) -> list[dict[str, Any]]:
    return [r for r in calls(journal, path, "POST", since) if r["fault"] == "status"]


def failed_at_least(path: str, failures: int, since: datetime) -> Callable[[Journal], bool]:
    return lambda journal: len(faulted(journal, path, since)) >= failures


def moments(entries: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(e["at"]) for e in entries]


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


async def start_all(faults: FaultStack, requests: list[RefundRequest]) -> None:
    started = await asyncio.gather(*(faults.client.start(r) for r in requests))
    assert all(s.created for s in started)


async def test_long_5xx_window_then_recovery(faults: FaultStack) -> None:
    """Paynow's refund call and Mews' payment reads answer 503 until the window closes; the
    server retries with growing gaps and both refunds go through once it recovers."""
    began = datetime.now(UTC)
    paynow = await faults.new_refund(ProviderName.PAYNOW, "succeeds", label="5xx", start=False)
    mews = await faults.new_refund(ProviderName.MEWS, "succeeds", label="5xx", start=False)
    paynow_path = f"/v3/payments/{paynow.payment_id}{PAYNOW_SUBMIT}"
    outage: dict[str, Any] = {"kind": "status", "status": 503, "count": 10_000, "method": "POST"}
    await faults.inject(ProviderName.PAYNOW, {**outage, "path_contains": paynow_path})
    await faults.inject(ProviderName.MEWS, {**outage, "path_contains": MEWS_GET_ALL})
    await start_all(faults, [paynow, mews])

    targets = ((ProviderName.PAYNOW, paynow_path), (ProviderName.MEWS, MEWS_GET_ALL))
    await asyncio.gather(
        *(
            faults.wait_for_journal(
                provider,
                failed_at_least(path, OUTAGE_FAILURES, began),
                f"{OUTAGE_FAILURES} failures at {provider.value}",
            )
            for provider, path in targets
        )
    )
    await faults.clear_faults()

    for request, (provider, path) in zip((paynow, mews), targets, strict=True):
        final = await faults.wait_final(request.idempotency_key)
        assert final.state is RefundState.SUCCEEDED, final
        assert await faults.refunds_made(request) == 1
        failures = faulted(await faults.journal(provider), path, began)
        assert len(failures) >= OUTAGE_FAILURES
        # Exponential backoff (1, 2, 4 s...), not a hammering loop.
        waits = gaps(moments(failures))
        assert all(later > earlier for earlier, later in itertools.pairwise(waits))
        step = "submit_refund" if provider is ProviderName.PAYNOW else "validate_refund"
        runs = await faults.activity_runs(request.idempotency_key, step)
        assert runs[0].attempt == len(failures) + 1, runs
        assert runs[0].last_failure is not None
        assert "503" in runs[0].last_failure


async def test_429_storm_is_retried_after_retry_after(faults: FaultStack) -> None:
    """Every refund call answers 429 with ``Retry-After: 1`` five times: each retry comes
    about one second later (not 1, 2, 4, 8, 16 s of backoff), and nothing is refunded twice.
    At Mews a 429 is a definite "not processed", so the refund is simply sent again."""
    began = datetime.now(UTC)
    paynow = await faults.new_refund(ProviderName.PAYNOW, "succeeds", label="429", start=False)
    mews = await faults.new_refund(ProviderName.MEWS, "succeeds", label="429", start=False)
    paynow_path = f"/v3/payments/{paynow.payment_id}{PAYNOW_SUBMIT}"
    storm: dict[str, Any] = {
        "kind": "rate_limit",
        "retry_after": "1",
        "count": STORM_429S,
        "method": "POST",
    }
    await faults.inject(ProviderName.PAYNOW, {**storm, "path_contains": paynow_path})
    await faults.inject(ProviderName.MEWS, {**storm, "path_contains": MEWS_REFUND})
    await start_all(faults, [paynow, mews])

    targets = ((paynow, paynow_path), (mews, MEWS_REFUND))
    for request, path in targets:
        final = await faults.wait_final(request.idempotency_key)
        assert final.state is RefundState.SUCCEEDED, final
        assert await faults.refunds_made(request) == 1
        sent = calls(await faults.journal(request.provider), path, "POST", began)
        assert [c["status"] for c in sent] == [429] * STORM_429S + [
            200 if request.provider is ProviderName.MEWS else 201
        ]
        waits = gaps(moments(sent))
        assert all(0.9 <= wait < 2.0 for wait in waits), waits
        submit = await faults.activity_runs(request.idempotency_key, "submit_refund")
        assert [(run.attempt, run.result) for run in submit] == [(STORM_429S + 1, "completed")]
        assert not await faults.activity_runs(request.idempotency_key, "find_submitted_refunds")


async def test_processed_then_answer_lost(faults: FaultStack) -> None:
    """The provider makes the refund, then the answer never arrives (held past the client's
    timeout, or the connection is dropped). Paynow: re-sent under the same Idempotency-Key
    and answered from the provider's idempotency store. Mews: never re-sent; the workflow
    looks the refund up and adopts it. One refund each, final state known."""
    requests: list[RefundRequest] = []
    for provider in (ProviderName.PAYNOW, ProviderName.MEWS):
        for kind in ("process_then_hang", "drop"):
            requests.append(
                await faults.new_refund(provider, "succeeds", label=f"lost-{kind}", start=False)
            )
    lost: list[dict[str, Any]] = [{"kind": "process_then_hang", "seconds": 3.0}, {"kind": "drop"}]
    for request, fault in zip(requests[:2], lost, strict=True):
        path = f"/v3/payments/{request.payment_id}{PAYNOW_SUBMIT}"
        await faults.inject(ProviderName.PAYNOW, {**fault, "path_contains": path})
    # Mews paths name no payment: the first refund call meets the hang, the second the drop.
    await faults.inject(ProviderName.MEWS, *({**f, "path_contains": MEWS_REFUND} for f in lost))
    await start_all(faults, requests)

    finals = await asyncio.gather(*(faults.wait_final(r.idempotency_key) for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert await faults.refunds_made(request) == 1, request
        assert final.state is RefundState.SUCCEEDED, final
        made = await faults.provider_refund_ids(request)
        assert made == [final.provider_refund_id]
        submit = await faults.activity_runs(request.idempotency_key, "submit_refund")
        found = await faults.activity_runs(request.idempotency_key, "find_submitted_refunds")
        if request.provider is ProviderName.PAYNOW:
            assert submit[0].attempt >= 2, submit
            assert not found
        else:
            assert [(run.attempt, run.result) for run in submit] == [(1, "failed")]
            assert found, "adopted without looking it up"
    mews_journal = await faults.journal(ProviderName.MEWS)
    faults_hit = [r["fault"] for r in mews_journal["requests"] if MEWS_REFUND in r["path"]]
    assert faults_hit[-2:] in (["process_then_hang", "drop"], ["drop", "process_then_hang"])
