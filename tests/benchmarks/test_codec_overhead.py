"""The codec benchmark runs and reports both converters (its figures are not asserted)."""

from __future__ import annotations

import re

import pytest

from benchmarks import codec_overhead


def test_the_benchmark_reports_both_converters_against_the_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert codec_overhead.main(["--rounds", "10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^plain\s+[\d.]+\s+[\d.]+\s+1\.00x\s+\d+$", out, re.MULTILINE), out
    encrypted = re.search(r"^encrypted\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+(\d+)$", out, re.MULTILINE)
    plain = re.search(r"^plain\s+.*\s(\d+)$", out, re.MULTILINE)
    assert encrypted, out
    assert plain, out
    # Nonce, tag and key id make every encrypted payload larger than the plain one.
    assert int(encrypted.group(1)) > int(plain.group(1))
    assert "encryption adds" in out


def test_rounds_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leaving:
        codec_overhead.main(["--rounds", "0"])
    assert leaving.value.code == 2
    assert "--rounds must be 1 or more" in capsys.readouterr().err
