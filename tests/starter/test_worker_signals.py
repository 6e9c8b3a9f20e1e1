"""`refunds worker` hears SIGTERM from its first moment: one stopped while Temporal is still
being reached (a server that accepts and never answers) exits at once, 0, instead of waiting
for the orchestrator's SIGKILL (it is PID 1 in its container)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_while_connecting_stops_the_worker_at_once(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never speaks gRPC
    port = silent.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "PAYNOW_API_KEY": "97a55694-5478-43b5-b406-fb49ebfdd2b5",
        "PAYNOW_SIGNATURE_KEY": "b305b996-bca5-4404-a0b7-2ccea3d2b64b",
        "PAYNOW_BASE_URL": "http://127.0.0.1:9",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(3)  # well into the connection attempt
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if worker.poll() is None:
            worker.kill()
        silent.close()
    output = worker.stdout.read().decode() if worker.stdout else ""
    assert code == 0, output
    assert took < 5, f"took {took:.1f}s to stop"
    assert "stopped while connecting to Temporal" in output, output
