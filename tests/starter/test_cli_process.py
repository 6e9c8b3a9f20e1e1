"""`refunds` as a script meets it: the real process (``python -m cli``), no Temporal server.

One prefix for every error, argparse's too; `--json` makes every outcome one JSON document on
stdout; a reader that leaves early (`| head`) ends the command quietly; values in any case;
the flag to blame; keys checked before any connection; one friendly line (exit 7) when
Temporal is not there; progress with counts and elapsed time on a terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The environment of a command whose Temporal is not there (a free port)."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_NAMESPACE": "default",
    }


def refunds(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


PAYNOW = ["start", "--provider", "paynow", "--payment-id", "NOLV-8F9-08K-WGD"]
PAYNOW += ["--reason", "returned", "--key", "order-1"]


def invalid_lines(count: int) -> str:
    return "".join(f'{{"idempotency_key": "k-{n}", "provider": "paynow"}}\n' for n in range(count))


@pytest.mark.parametrize(
    "argv",
    [
        ["start", "--provider", "paynow"],  # argparse: a required flag missing
        ["list", "--limit", "0"],  # argparse: a bad value
        ["nope"],  # argparse: no such command
        [*PAYNOW, "--amount", "12.345", "--currency", "PLN"],  # ours: an inexact amount
        ["status", "order-1"],  # ours: Temporal unreachable
    ],
)
def test_every_error_starts_with_the_same_prefix(env: dict[str, str], argv: list[str]) -> None:
    done = refunds(env, *argv)
    assert done.returncode in (2, 7), done.stderr
    assert one_line(done).startswith("refunds: error: ")
    assert done.stdout == ""


def test_an_unreachable_temporal_is_one_friendly_line_and_exit_7(env: dict[str, str]) -> None:
    start = [*PAYNOW, "--amount", "1.00", "--currency", "PLN", "--wait"]
    for argv in (["status", "order-1"], ["list"], start):
        done = refunds(env, *argv)
        assert done.returncode == 7, done.stderr
        assert one_line(done) == (
            f"refunds: error: cannot reach Temporal at {env['TEMPORAL_ADDRESS']} (namespace "
            "default): is the server running? `refunds dev` starts one, or set "
            "TEMPORAL_ADDRESS (or TEMPORAL_PROFILE) to yours"
        )


@pytest.mark.parametrize(
    ("argv", "code", "kind", "fragment"),
    [
        (["status", "order-1", "--json"], 7, "unreachable", "cannot reach Temporal"),
        ([*PAYNOW, "--amount", "1.234", "--currency", "PLN", "--json"], 2, "invalid", "--amount"),
        (["start", "--json", "--provider", "paynow"], 2, "invalid", "arguments are required"),
        (["list", "--json", "--limit", "0"], 2, "invalid", "--limit"),
        (["status", "a b", "--json"], 2, "invalid", "is not a refund key"),
    ],
)
def test_json_errors_are_one_document_on_stdout(
    env: dict[str, str], argv: list[str], code: int, kind: str, fragment: str
) -> None:
    done = refunds(env, *argv)
    assert done.returncode == code, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"error"}
    assert document["error"]["code"] == code
    assert document["error"]["kind"] == kind
    assert fragment in document["error"]["message"]
    # The line for people is still on stderr, and says the same.
    assert one_line(done) == f"refunds: error: {document['error']['message']}"


def test_batch_json_with_nothing_valid_is_one_document(env: dict[str, str]) -> None:
    done = refunds(env, "batch", "-", "--json", stdin=invalid_lines(2))
    assert done.returncode == 2
    assert [r["outcome"] for r in json.loads(done.stdout)] == ["invalid", "invalid"]


def test_a_reader_that_leaves_early_ends_the_command_quietly(env: dict[str, str]) -> None:
    """`refunds batch - --json | head`: the reader closes the pipe before the document
    (far bigger than a pipe's buffer) is written."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader has left
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "batch", "-", "--json"],
            cwd=REPO,
            env=env,
            input=invalid_lines(300).encode(),
            stdout=writer,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT_S,
            check=False,
        )
    finally:
        os.close(writer)
    err = done.stderr.decode()
    assert "BrokenPipe" not in err
    assert "error" not in err.replace("invalid", "")
    assert done.returncode == 0, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["list", "--state", "rejected"], "list"),
        (["list", "--state", "Needs_Attention", "--provider", "MEWS"], "list"),
        ([*PAYNOW, "--amount", "1.00", "--currency", "pln", "--reason-code", "rma"], "start"),
        (["resolve", "k-1", "--close", "FAILED", "--reason", "r"], "resolve"),
        (
            ["start", "--provider", "Paynow", *PAYNOW[3:], "--amount", "1", "--currency", "PLN"],
            "start",
        ),
    ],
)
def test_values_are_accepted_in_any_case(
    env: dict[str, str], argv: list[str], fragment: str
) -> None:
    """Parsed and checked offline, these fail only for want of a server (exit 7)."""
    done = refunds(env, *argv)
    assert done.returncode == 7, (fragment, done.stderr)
    assert "cannot reach Temporal" in done.stderr


def test_an_unknown_currency_blames_currency(env: dict[str, str]) -> None:
    done = refunds(env, *PAYNOW, "--amount", "12.34", "--currency", "xyz")
    assert done.returncode == 2
    assert one_line(done) == (
        "refunds: error: invalid --currency: unknown or unsupported ISO 4217 currency code 'XYZ'"
    )


@pytest.mark.parametrize("command", ["status", "cancel", "resolve"])
def test_a_key_that_cannot_be_one_exits_2_before_any_connection(
    env: dict[str, str], command: str
) -> None:
    extra = {"status": [], "cancel": ["--reason", "r"], "resolve": ["--resend", "--reason", "r"]}
    done = refunds(env, command, "a b", *extra[command])
    assert done.returncode == 2, done.stderr
    line = one_line(done)
    assert line.startswith("refunds: error: argument key: 'a b' is not a refund key")
    assert f"(see `refunds {command} --help`)" in line


def test_counts_are_in_words(env: dict[str, str]) -> None:
    done = refunds(env, "batch", "-", stdin=invalid_lines(1))
    assert done.returncode == 2
    assert "1 line: 1 invalid" in done.stdout
    assert "1 lines" not in done.stdout
    done = refunds(env, "batch", "-", stdin=invalid_lines(2))
    assert "2 lines: 2 invalid" in done.stdout


def test_start_help_shows_the_exit_code_table(env: dict[str, str]) -> None:
    done = refunds(env, "start", "--help")
    assert done.returncode == 0
    table = done.stdout[done.stdout.index("exit codes:") :].splitlines()
    codes = [line.split()[0] for line in table[1:] if line.startswith("  ")]
    assert codes == ["0", "1", "2", "3", "4", "5", "6", "7", "130"]
    assert "FAILED, CANCELED or REJECTED" in done.stdout
    assert "NEEDS_ATTENTION" in done.stdout


def _on_a_terminal(env: dict[str, str], *args: str, stdin: str) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; the exit code and all it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env={**env, "TERM": "xterm"},
        stdin=subprocess.PIPE,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    assert process.stdin is not None
    process.stdin.write(stdin.encode())
    process.stdin.close()
    written = b""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: everything was read
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    return process.wait(timeout=TIMEOUT_S), written.decode()


def test_batch_progress_on_a_terminal_has_counts_and_elapsed_time(env: dict[str, str]) -> None:
    code, written = _on_a_terminal(env, "batch", "-", stdin=invalid_lines(3))
    assert code == 2, written
    assert "\r" in written, "a terminal's progress line is redrawn in place"
    last = written.split("\r\x1b[K")[-1].splitlines()[0]
    assert last.startswith("[3/3] 3 invalid | "), last
    assert last.endswith("s"), "the elapsed time ends the line"
    assert "line 2 key - invalid: payment_id: Field required" in written, "problems above it"
    assert "3 lines: 3 invalid" in written


def test_batch_progress_elsewhere_is_plain_lines(env: dict[str, str]) -> None:
    done = refunds(env, "batch", "-", stdin=invalid_lines(3))
    assert "\r" not in done.stdout
    assert "[3/3] line 3 key - invalid: reason: Field required" in done.stdout.replace(
        "payment_id: Field required; ", ""
    )
