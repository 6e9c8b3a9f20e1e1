"""`refunds dev` and `refunds demo` as people run them: the flags, the polling banner, and the
demo's last lines about looking at what it did."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.dev import FAST_POLL_INITIAL_S, FAST_POLL_MAX_S
from core.models import ProviderName, RefundRequest
from devstack.demo import CASES, DemoRun, look_again
from devstack.stack import StackConfig
from simulators.serving import free_port

REPO = Path(__file__).resolve().parents[2]
REFUNDS = [sys.executable, "-m", "cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REFUNDS, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_dev_help_offers_fast_and_tells_the_polling_settings() -> None:
    done = run_cli("dev", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--fast" in text
    assert f"every {FAST_POLL_INITIAL_S:g}s doubling to {FAST_POLL_MAX_S:g}s" in text
    assert "REFUNDS_POLL_INITIAL_S" in text
    assert "REFUNDS_POLL_MAX_S" in text


def test_fast_polling_is_short() -> None:
    assert FAST_POLL_INITIAL_S <= 1 < FAST_POLL_MAX_S <= 5


def demo_runs() -> list[DemoRun]:
    request = RefundRequest(
        idempotency_key="demo-abc123-1",
        provider=ProviderName.PAYNOW,
        payment_id="SUCC-EED-S00-001",
        reason="demo",
    )
    return [
        DemoRun(CASES[0], "demo-abc123-1", request),
        DemoRun(CASES[1], "demo-abc123-7", request),
    ]


def test_demo_ends_saying_how_to_look_at_its_refunds() -> None:
    text = look_again(StackConfig(state_dir=Path(".refunds/demo")), demo_runs(), kept=False)
    lines = text.splitlines()
    assert lines[0].startswith("stopped. The demo's refunds stay in .refunds/demo/")
    assert "  refunds dev --state-dir .refunds/demo" in lines
    assert "http://127.0.0.1:8233/namespaces/default/workflows" in text
    assert "demo-abc123-1 to demo-abc123-7" in text
    assert "  refunds demo --keep" in lines


def test_demo_names_its_own_ports_for_refunds_dev() -> None:
    config = StackConfig(
        state_dir=Path("/tmp/my demo"), temporal_port=17233, ui_port=18233, sim_port=8700
    )
    text = look_again(config, demo_runs(), kept=True)
    assert "refunds dev --state-dir '/tmp/my demo' --temporal-port 17233 --ui-port 18233\n" in (
        text + "\n"
    )
    assert "http://127.0.0.1:18233/namespaces/default/workflows" in text
    # It already kept its stack: no advice to run with --keep.
    assert "--keep" not in text


@pytest.mark.e2e
def test_dev_banner_shows_the_polling_timing(tmp_path: Path) -> None:
    argv = [
        *REFUNDS,
        "dev",
        "--fast",
        "--temporal-port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        "--sim-port",
        str(free_port()),
        "--api-port",
        str(free_port()),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    # As a developer's shell has it: the stack decides whether receivers may be private.
    env = {k: v for k, v in os.environ.items() if k != "REFUNDS_EVENTS_ALLOW_PRIVATE"}
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C to stop") or time.monotonic() > deadline:
                break
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    banner = "\n".join(lines)
    assert process.returncode == 0, banner + rest
    # The HTTP API with a dev key for the run, and how to call it.
    assert any(line.startswith("HTTP API      http://127.0.0.1:") for line in lines), banner
    assert "export TOKEN=rfk_" in banner
    # The simulator's Mews webhooks reach the API; the URL's token is never printed.
    webhooks = next(line for line in lines if line.startswith("Mews webhooks"))
    assert "/webhooks/mews/*** " in webhooks + " ", banner
    assert len(re.findall(r"/webhooks/mews/", banner)) == 1, banner
    polling = next(line for line in lines if line.startswith("Polling"))
    assert f"after {FAST_POLL_INITIAL_S:g}s" in polling
    assert f"up to {FAST_POLL_MAX_S:g}s" in polling
    assert "REFUNDS_POLL_INITIAL_S" in polling
    # A starter in another shell decides its refunds' polling: the exports say how.
    starter = banner.split("Point a starter at it:\n", 1)[1].split("\n\n", 1)[0]
    assert f"export REFUNDS_POLL_INITIAL_S={FAST_POLL_INITIAL_S:g}" in starter
    assert f"export REFUNDS_POLL_MAX_S={FAST_POLL_MAX_S:g}" in starter
    # The banner allows notify_urls on localhost: so must a starter pointed at the stack.
    assert "export REFUNDS_EVENTS_ALLOW_PRIVATE=true" in starter
