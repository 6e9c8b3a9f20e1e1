"""The refund throughput benchmark stays runnable: a tiny run through the real worker process
prints every kind against the bare baseline (the figures themselves are not asserted)."""

from __future__ import annotations

import re

import pytest

from benchmarks import refund_throughput

pytestmark = pytest.mark.e2e


def test_a_small_run_prints_each_kind_against_the_bare_workflow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert refund_throughput.main(["--count", "2", "--rounds", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    # Then each worker's CPU ms per workflow and its ratio to bare's, the server's and the
    # simulators' CPU ms, and the ratio their sums allow (each ? if unreadable).
    cpu = r"\s+([\d.]+|\?)\s+([\d.]+x|\?)\s+([\d.]+|\?)\s+([\d.]+|\?)\s+([\d.]+x|\?)"
    assert re.search(
        rf"^bare\s+[\d.]+\s+1\.00x\s+\d+\s+\d+\s+0\s+0\s+0\s+0\.0s{cpu}$", out, re.M
    ), out
    rows = {
        label: re.search(
            rf"^{label}\s+[\d.]+\s+[\d.]+x\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)"
            rf"\s+([\d.]+)s{cpu}$",
            out,
            re.M,
        )
        for label in ("paynow", "mews", "3 checks")
    }
    assert all(rows.values()), out
    # Shapes read from the histories: a Mews refund has a lane, and the 3-check refund
    # checked three times.
    three, mews = rows["3 checks"], rows["mews"]
    assert three is not None
    assert three.group(5) == "3"
    # Its two waits are timers (a Paynow refund created SUCCESSFUL waits on none).
    assert float(three.group(6)) > 0, out
    paynow = rows["paynow"]
    assert paynow is not None
    assert paynow.group(6) == "0.0", out
    assert mews is not None
    assert int(mews.group(3)) > 0
    # Mews refunds went to the hotels' tokens, and the simulator's 429s are counted.
    assert re.search(r"^Mews refunds over 10 hotels .* Mews simulator 429s: \d+$", out, re.M), out
    # The server did work for every kind (its CPU was read on this Linux machine).
    for row in rows.values():
        assert row is not None
        assert row.group(9) != "?", out
        assert float(row.group(9)) > 0, out
    assert "refund worker peak RSS:" in out
