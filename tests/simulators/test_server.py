"""`refunds sim`: both simulators behind one port, served by the real command.

The root answers a combined journal; a busy port is one line on stderr and a non-zero exit,
with nothing from uvicorn before it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulators.server import CombinedSimulators
from simulators.serving import BackgroundServer, PortInUseError, free_port

REPO = Path(__file__).resolve().parents[2]
SIM = [sys.executable, "-m", "cli", "sim", "--host", "127.0.0.1"]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.fixture
def sim_url() -> Iterator[str]:
    """A `refunds sim` process on a free port, until the test ends."""
    port = free_port()
    process = subprocess.Popen(
        [*SIM, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "refunds sim did not answer in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)


def test_the_root_journal_holds_both_providers(sim_url: str) -> None:
    # A request to each simulator's API (unauthenticated: refused, and journaled).
    for path in ("/mews/api/connector/v1/payments/getAll", "/paynow/v3/payments/X/status"):
        httpx.post(sim_url + path, json={}, timeout=5)

    response = httpx.get(f"{sim_url}/_sim/journal", timeout=5)

    assert response.status_code == 200
    journal = response.json()
    assert set(journal) == {"mews", "paynow"}
    for provider in ("mews", "paynow"):
        # Each part is what the provider's own route answers.
        own = httpx.get(f"{sim_url}/{provider}/_sim/journal", timeout=5).json()
        assert journal[provider] == own
        assert journal[provider]["requests"], provider
        assert {"requests", "refunds", "refunds_per_payment"} <= set(own)


def test_the_combined_journal_follows_each_simulator() -> None:
    sims = CombinedSimulators()
    assert sims.journal() == {
        "mews": sims.mews.core.journal(),
        "paynow": sims.paynow.core.journal(),
    }


def test_sim_on_a_busy_port_prints_one_line(busy_port: int) -> None:
    done = subprocess.run(
        [*SIM, "--port", str(busy_port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("refunds: error: cannot serve the simulators on 127.0.0.1:")
    assert f":{busy_port} " in lines[0]
    assert "--port" in lines[0]


def test_background_server_refuses_a_busy_port_before_serving(busy_port: int) -> None:
    server = BackgroundServer(CombinedSimulators().app, port=busy_port)
    with pytest.raises(PortInUseError):
        server.start()
