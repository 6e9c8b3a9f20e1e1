"""`refunds status` says what `attempts` counts (issue 14: `attempts 2` on a clean success
read like a retry)."""

from __future__ import annotations

from cli.output import attempts_line


def test_attempts_say_what_they_count() -> None:
    line = attempts_line(2)
    assert line == "2 (tries of the payment check and the refund call, retries included)"


def test_no_attempts_no_line() -> None:
    assert attempts_line(0) is None
