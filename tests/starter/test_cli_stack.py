"""The embedded stack's parts that need no server: ports, the CLI lookup, settings, and
stopping a child's whole process group."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from devstack.process import ChildProcess
from devstack.stack import EmbeddedStack, StackConfig, StackError, find_temporal_cli
from simulators.serving import free_port


def test_temporal_cli_is_found_next_to_python() -> None:
    found = find_temporal_cli()
    assert found.name == "temporal"
    assert os.access(found, os.X_OK)


KEYS = {"REFUNDS_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=", "REFUNDS_ENCRYPTION_KEY_ID": "k1"}


@pytest.mark.parametrize(
    ("field", "what", "flag", "secret_env"),
    [
        ("sim_port", "the simulators", "--sim-port", {}),
        ("codec_port", "the codec server", "--codec-port", KEYS),
        ("api_port", "the HTTP API", "--api-port", {}),
    ],
)
async def test_a_busy_port_is_refused_naming_the_flag(
    tmp_path: Path, field: str, what: str, flag: str, secret_env: dict[str, str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"temporal_port": free_port(), "ui_port": free_port(), "sim_port": free_port()}
        config = StackConfig(state_dir=tmp_path, secret_env=secret_env, **{**ports, field: port})
        stack = EmbeddedStack(config)
        with pytest.raises(StackError, match=f"port {port} for {what} .* {flag}"):
            await stack.start()
    assert not (tmp_path / "logs").exists(), "nothing may start when a port is taken"


def test_a_codec_server_runs_only_with_encryption_and_a_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("REFUNDS_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("REFUNDS_ENCRYPTION_KEY_ID", raising=False)
    keys = KEYS

    plain = EmbeddedStack(StackConfig(state_dir=tmp_path, codec_port=8234))
    assert not plain.encrypted
    assert plain.codec_url is None

    no_port = EmbeddedStack(StackConfig(state_dir=tmp_path, secret_env=keys))
    assert no_port.encrypted
    assert no_port.codec_url is None

    both = EmbeddedStack(StackConfig(state_dir=tmp_path, codec_port=8299, secret_env=keys))
    assert both.codec_url == "http://127.0.0.1:8299"
    # The keys reach the stack's processes and its client, never what `refunds dev` prints.
    assert both.env()["REFUNDS_ENCRYPTION_KEYS"] == keys["REFUNDS_ENCRYPTION_KEYS"]
    secret = both.settings().refunds_encryption_keys
    assert secret is not None
    assert secret.get_secret_value() == keys["REFUNDS_ENCRYPTION_KEYS"]
    assert "REFUNDS_ENCRYPTION_KEYS" not in both.settings_env()

    # Keys from the environment (or .env) count too: `REFUNDS_ENCRYPTION_KEYS=... refunds dev`.
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    assert EmbeddedStack(StackConfig(state_dir=tmp_path, codec_port=8299)).runs_codec


def test_settings_point_at_the_stack(tmp_path: Path) -> None:
    stack = EmbeddedStack(
        StackConfig(temporal_port=7300, state_dir=tmp_path, poll_initial_s=0.5, poll_max_s=2)
    )
    stack.sim_info = {
        "providers": {
            "paynow": {
                "env": {
                    "PAYNOW_BASE_URL": "http://127.0.0.1:8700/paynow",
                    "PAYNOW_API_KEY": "k",
                    "PAYNOW_SIGNATURE_KEY": "s",
                }
            }
        }
    }
    settings = stack.settings()
    assert settings.temporal_address == "127.0.0.1:7300"
    assert settings.paynow_base_url == "http://127.0.0.1:8700/paynow"
    assert settings.paynow_api_key is not None
    assert settings.paynow_api_key.get_secret_value() == "k"
    assert settings.refunds_poll_initial_s == 0.5
    assert settings.refunds_poll_max_s == 2
    assert stack.env()["REFUNDS_POLL_MAX_S"] == "2"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    script = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
    script += "print(p.pid, flush=True); time.sleep(60)"
    log = tmp_path / "child.log"
    child = ChildProcess("child", [sys.executable, "-c", script], env=os.environ, log_path=log)
    child.start()
    assert child.pid is not None
    for _ in range(100):
        lines = [line for line in log.read_text().splitlines() if line.isdigit()]
        if lines:
            break
        await asyncio.sleep(0.05)
    grandchild = int(lines[0])
    assert pid_alive(grandchild)
    await child.stop(grace_s=2)
    assert not child.alive
    # A signal is delivered when its target next runs: on a loaded machine the grandchild can
    # still show as running just after stop() returned (CI saw it). Left out of the group's
    # signals, it would sleep its whole minute.
    for _ in range(100):
        if not pid_alive(grandchild):
            break
        await asyncio.sleep(0.05)
    assert not pid_alive(grandchild)
