"""The README's HTTP API snippet runs as written (on this stack's API port, with a key that
may start and read) and does what the README says of it."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.api.conftest import ApiStack
from tests.e2e.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

HTTP_SNIPPET_START = "A=http://127.0.0.1:8240"


def http_snippet() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    found = [b for b in blocks if b.startswith(HTTP_SNIPPET_START)]
    assert len(found) == 1, "the README's HTTP API snippet starts with A=..."
    return str(found[0])


async def test_the_readme_http_snippet_runs_as_written(api_stack: ApiStack) -> None:
    script = http_snippet().replace(HTTP_SNIPPET_START, f"A={api_stack.api_url}", 1)
    env = {"TOKEN": api_stack.tokens["checkout"], "PATH": "/usr/bin:/bin"}
    code, out, err = await _run(script, env)
    assert code == 0, f"{out}\n{err}"
    documents = [json.loads(line) for line in _documents(out)]
    created, final, listing = documents
    assert created["key"] == "order-1006-refund"
    # The long poll answered once the refund moved on from where the start left it.
    assert final["key"] == "order-1006-refund"
    assert final["state"] in ("SUBMITTING", "PENDING", "SUCCEEDED"), final
    assert "items" in listing
    # Again: the first answer, unchanged, and still one refund.
    again = await _run(script, env)
    assert again[0] == 0, again
    assert json.loads(_documents(again[1])[0]) == created
    status = await api_stack.client.wait("order-1006-refund")
    assert status.state.value == "SUCCEEDED"


def _documents(out: str) -> list[str]:
    """curl prints each JSON answer without a newline after it: split them."""
    decoder = json.JSONDecoder()
    found, index = [], 0
    while index < len(out):
        _, end = decoder.raw_decode(out, index)
        found.append(out[index:end])
        index = end
        while index < len(out) and out[index].isspace():
            index += 1
    return found


async def _run(script: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-c",
        script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
