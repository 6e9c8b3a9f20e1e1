"""`refunds chaos` in small: twenty refunds under random faults, one worker kill, a short
outage of one provider's refund call and a shared Mews account, on the fault tests' stack.
Every refund must end final and correct: none made twice, unknown to its workflow, of the
wrong amount, lost, or parked in NEEDS_ATTENTION."""

from __future__ import annotations

import pytest

from core.models import ProviderName
from devstack.chaos import ChaosConfig, ChaosRun
from devstack.chaos_report import render_report
from tests.faults.conftest import FaultStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_chaos_smoke(faults: FaultStack) -> None:
    config = ChaosConfig(
        count=20, seed=20_251_122, kills=1, storm_after_starts_s=5.0, deadline_s=150.0
    )
    lines: list[str] = []
    report = await ChaosRun(faults.stack, faults.client, config, progress=lines.append).run()
    print("\n".join(lines), "\n", render_report(report), sep="\n")

    assert report.started == 20
    assert report.worker_kills == 1
    assert sum(report.faults_injected.values()) > 0
    assert report.duplicates == 0, report.problems
    assert report.orphans == 0, report.problems
    assert report.lost == 0, report.problems
    assert report.money_mismatches == 0, report.problems
    assert report.needs_attention == 0, report.problems
    assert report.start_errors == 0, report.problems
    finished = report.succeeded + report.failed + report.canceled + report.rejected
    assert finished == 20
    assert report.ok
    assert report.faults_injected.get("outage") == 1
    assert report.outage is not None
    assert report.shared_accounts >= 1
    assert report.shared_account_refunds >= 2
    assert faults.stack.worker_pid is not None
    # The next tests count requests and 429s: give them Mews' rate-limit window afresh.
    for provider in ProviderName:
        (await faults.http.post(f"/{provider.value}/_sim/reset")).raise_for_status()
