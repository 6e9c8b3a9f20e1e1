"""Every shell and Python snippet of the README runs as written against a real stack, or is
checked for real otherwise (the test names how). A new snippet fails
`test_every_snippet_is_checked` until it is given a check here."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from simulators.serving import free_port
from tests.e2e.conftest import E2E, REPO

pytestmark = pytest.mark.e2e
session_loop = pytest.mark.asyncio(loop_scope="session")

README = REPO / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)


def block_starting(command: str) -> str:
    found = [b for b in blocks("sh") if b.startswith(command)]
    assert len(found) == 1, f"one README sh block must start with {command!r}: {found}"
    return found[0]


# How each sh block is checked, by the command it starts with.
MAKE = "make demo"
CLI = ".venv/bin/refunds start"
RAW_START = ".venv/bin/temporal workflow start"
SIM = ".venv/bin/refunds sim"
HTTP = "A=http://"  # run by tests/api/test_readme_http.py, on the API's stack
CHECKED = (MAKE, CLI, RAW_START, SIM, HTTP)


def test_every_snippet_is_checked() -> None:
    unchecked = [b for b in blocks("sh") if not b.startswith(CHECKED)]
    assert not unchecked, f"README sh blocks no test runs: {unchecked}"
    assert len(blocks("python")) == 1, "a new python block needs its own test here"


def in_a_user_dir(tmp_path: Path) -> Path:
    """A working directory like the clone's top (``.venv/bin/...`` resolves), whose files
    (``refunds.jsonl``) are the test's own."""
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    return tmp_path


async def run_shell(e2e: E2E, script: str, cwd: Path) -> tuple[int, str, str]:
    result = await e2e.run("bash", "-e", "-c", f"cd {shlex.quote(str(cwd))}\n{script}")
    return result.code, result.out, result.err


@session_loop
async def test_the_cli_snippet_runs_as_written(e2e: E2E, tmp_path: Path) -> None:
    script = block_starting(CLI)
    code, out, err = await run_shell(e2e, script, in_a_user_dir(tmp_path))
    assert code == 0, f"{out}\n{err}"
    # start --wait, then status --json of the same refund.
    assert re.search(r"state\s+SUCCEEDED", out), out
    status = json.loads(out[out.index("{") : out.index("\n}\n") + 2])
    assert status["key"] == "order-1001-refund"
    assert status["state"] == "SUCCEEDED"
    # The second refund is cancelled, the batch line ends SUCCEEDED.
    assert (await e2e.client.status("order-1002-refund")).cancel_reason == (
        "customer kept the item"
    )
    assert (await e2e.client.status("order-1003-refund")).state.value == "SUCCEEDED"


@session_loop
async def test_the_raw_temporal_start_runs_as_written(e2e: E2E) -> None:
    script = block_starting(RAW_START)
    assert e2e.settings.refunds_task_queue == "refunds"  # the snippet names the default
    # The temporal CLI reads TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE from the environment.
    code, out, err = await run_shell(e2e, script, REPO)
    assert code == 0, f"{out}\n{err}"
    final = await e2e.client.wait("order-1005-refund")
    assert final.state.value == "SUCCEEDED"
    assert final.amount_minor == 1234


@session_loop
async def test_the_sim_snippet_starts_the_simulators(e2e: E2E) -> None:
    """Run as written but on a free port (8700 is `refunds dev`'s): it prints the base URLs
    the snippet's comment names."""
    argv = shlex.split(block_starting(SIM).split("#", 1)[0])
    port = free_port()
    assert argv[-2:] == ["--port", "8700"]
    argv[-1] = str(port)
    result = await e2e.run("timeout", "-s", "INT", "8", *[str(REPO / argv[0]), *argv[1:]])
    assert f"http://127.0.0.1:{port}/mews" in result.out, result
    assert f"http://127.0.0.1:{port}/paynow" in result.out, result


@session_loop
async def test_the_make_snippet_names_real_targets(e2e: E2E) -> None:
    """`make demo` and `make test` themselves are not run here (the demo's own test runs
    `refunds demo`; `make test` is this run): their recipes exist and call what they say."""
    script = block_starting(MAKE)
    targets = [line.split()[1] for line in script.splitlines() if line.startswith("make ")]
    assert targets == ["demo", "test"]
    result = await e2e.run("make", "-n", "-C", str(REPO), *targets)
    assert result.code == 0, result.err
    assert "refunds demo" in result.out
    assert "pytest" in result.out


def python_snippet(section: str) -> str:
    readme = README.read_text()
    start = readme.index(f"### {section}\n")
    match = re.search(r"```python\n(.*?)```", readme[start:], re.DOTALL)
    assert match, f"no python block under {section!r}"
    return match.group(1)


@session_loop
async def test_the_python_api_snippet_runs_as_written(e2e: E2E) -> None:
    code = python_snippet("Python API")
    first = await e2e.run(sys.executable, "-c", code)
    assert first.code == 0, first.err
    created, state, refund_id = first.out.split()
    assert state == "SUCCEEDED"
    again = await e2e.run(sys.executable, "-c", code)
    assert again.code == 0, again.err
    # The same key attaches to the first refund: nothing is refunded twice.
    assert again.out.split() == ["False", "SUCCEEDED", refund_id]
    assert created in ("True", "False")
