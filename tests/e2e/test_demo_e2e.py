"""`refunds demo` as people run it: its own stack on free ports, every case as expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import port_in_use
from simulators.serving import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[str]:
    """Pids of live processes whose command line or environment contains ``text`` (Linux)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(proc.name)
    return found


def test_demo_runs_every_case_to_its_expected_outcome(tmp_path: Path) -> None:
    ports = [free_port(), free_port(), free_port()]
    state_dir = tmp_path / "state"
    argv = [
        sys.executable,
        "-m",
        "cli",
        "demo",
        "--temporal-port",
        str(ports[0]),
        "--ui-port",
        str(ports[1]),
        "--sim-port",
        str(ports[2]),
        "--api-port",
        str(free_port()),
        "--state-dir",
        str(state_dir),
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert "Outcomes:" in out
    header = next(line for line in out.splitlines() if line.startswith("KEY "))
    assert header.split() == [
        "KEY",
        "CASE",
        "PROVIDER",
        "AMOUNT",
        "EXPECTED",
        "ACTUAL",
        "PROVIDER",
        "STATUS",
        "RESULT",
    ]
    assert out.count(" ok\n") == 7
    assert "all 7 refunds ended as expected" in out
    assert "Temporal UI: http://127.0.0.1:" in out
    assert "HTTP API: http://127.0.0.1:" in out
    # The last lines, once the stack is gone, say how to look at what the demo did.
    last = out.splitlines()[-5:]
    assert last[0] == f"stopped. The demo's refunds stay in {state_dir}/, apart from " + (
        "`refunds dev`'s .refunds/. To look at them:"
    )
    assert last[1].startswith(f"  refunds dev --state-dir {state_dir} --temporal-port {ports[0]}")
    assert f"http://127.0.0.1:{ports[1]}/namespaces/default/workflows" in last[2]
    assert last[3] == "  refunds demo --keep"
    for state in ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED"):
        assert f"{state}  " in out
    logs = state_dir / "logs"
    assert {p.name for p in logs.iterdir()} == {
        "temporal.log",
        "sim.log",
        "worker.log",
        "api.log",
    }
    # The stack is gone: no process left, nothing listening on its ports.
    assert processes_mentioning(str(state_dir)) == []  # temporal
    assert processes_mentioning(f"TEMPORAL_ADDRESS=127.0.0.1:{ports[0]}") == []  # worker
    assert [port for port in ports if port_in_use(port)] == []
