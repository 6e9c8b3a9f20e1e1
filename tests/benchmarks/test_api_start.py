"""The API start benchmark runs on its own stack and reports both ways against the direct
client (its figures are not asserted)."""

from __future__ import annotations

import re

import pytest

from benchmarks import api_start


# A real stack (dev server, simulators, worker, API): end to end, as `make unit` counts it.
@pytest.mark.e2e
def test_the_benchmark_reports_http_starts_against_direct_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert api_start.main(["--rounds", "1", "--starts", "3", "--clients", "2"]) == 0
    out = capsys.readouterr().out
    number = r"[\d.]+"
    direct = rf"^RefundClient\.start\s+{number}\s+{number}\s+{number}\s+1\.00x\s+1\.00x\s+1\.00x$"
    assert re.search(direct, out, re.MULTILINE), out
    http = rf"^POST /v1/refunds(\s+{number}){{3}}(\s+{number}x){{3}}$"
    assert re.search(http, out, re.MULTILINE), out
    assert "the HTTP API adds" in out


@pytest.mark.parametrize("option", ["--rounds", "--starts", "--clients"])
def test_counts_must_be_positive(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leaving:
        api_start.main([option, "0"])
    assert leaving.value.code == 2
    assert f"{option} must be 1 or more" in capsys.readouterr().err


def test_percentiles_are_measured_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert api_start.percentile(values, 0.50) == 50.0
    assert api_start.percentile(values, 0.99) == 99.0
    assert api_start.percentile([7.0], 0.99) == 7.0
