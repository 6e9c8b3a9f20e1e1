"""The many-pending-refunds benchmark stays runnable: a tiny run per provider through the real
worker process prints every figure (the figures themselves are not asserted), and the
status-check count it prints is read from the journal as documented."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks import pending_scale
from core.models import ProviderName

AT = datetime(2026, 1, 1, tzinfo=UTC)


def entry(method: str, path: str, seconds: float, status: int = 200) -> dict[str, object]:
    return {
        "at": (AT + timedelta(seconds=seconds)).isoformat(),
        "method": method,
        "path": path,
        "status": status,
    }


def test_status_checks_are_the_providers_status_reads_within_the_window() -> None:
    journal = [
        entry("GET", "/v3/refunds/RABC-DEF-GHI-JKL/status", 1),
        entry("GET", "/v3/refunds/RABC-DEF-GHI-JKL/status", 10),  # the window's end: out
        entry("GET", "/v3/payments/PABC-DEF-GHI-JKL/status", 2),  # a payment's: not a check
        entry("POST", "/v3/payments/PABC-DEF-GHI-JKL/refunds", 3),
        entry("POST", "/api/connector/v1/payments/getAll", 4, status=429),
        entry("POST", "/api/connector/v1/payments/refund", 5),
    ]
    window = (AT, AT + timedelta(seconds=10))
    paynow = pending_scale.status_checks(journal, ProviderName.PAYNOW, *window)
    mews = pending_scale.status_checks(journal, ProviderName.MEWS, *window)
    assert [e["path"] for e in paynow] == ["/v3/refunds/RABC-DEF-GHI-JKL/status"]
    # A refused request was still sent: it counts.
    assert [e["status"] for e in mews] == [429]


def test_the_ramp_is_the_waits_shorter_than_the_longest() -> None:
    plan = pending_scale.Plan(count=1, workers=1, provider=ProviderName.PAYNOW)
    assert plan.ramp_s == 5 + 10 + 20
    assert pending_scale.Plan(1, 1, ProviderName.MEWS, poll_initial_s=30).ramp_s == 0


FIGURES = (
    r"^start: [\d.]+ s",
    r"^to pending: [\d.]+ s more until all 20 PENDING$",
    r"^states when all pending: \{'PENDING': 20\}$",
    r"^open workflows when all pending: \d+ \(20 refunds, \d+ others: lanes, bare\)$",
    r"^poll round: REFUNDS_POLL_MAX_S = 2 s",
    r"^status checks while pending: \d+ requests \(\d+ answered 429\) = [\d.]+ per poll round "
    r"per 1000 refunds$",
    r"^final states: \{'SUCCEEDED': 20\}$",
    r"^drain rate: [\d.]+ refunds/s$",
    r"^bare: [\d.]+ s for 20 BenchBareWorkflow",
    r"^drain / bare: [\d.]+x$",
    r"^HTTP 429 at the simulator: \d+ in the whole run",
    r"^peak RSS worker-1: \d+ MB",
    r"^provider requests by phase \(429s\): start: .*; hold: .*; drain: ",
    r"^CPU seconds by phase: start: .*temporal \d+.*sim \d+.*worker-1 \d+",
)


@pytest.mark.e2e
@pytest.mark.parametrize("provider", ["paynow", "mews"])
def test_a_small_run_prints_every_figure(provider: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--count", "20", "--workers", "1", "--provider", provider]
    assert pending_scale.main([*argv, "--poll-initial", "1", "--poll-max", "2"]) == 0
    out = capsys.readouterr().out
    missing = [f for f in FIGURES if not re.search(f, out, re.M)]
    assert not missing, out
    if provider == "mews":
        assert "Mews simulator rate limit: on, 200 requests per access token per 30 s" in out
