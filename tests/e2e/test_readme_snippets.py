"""The README's Python API snippet runs as written against a real stack."""

from __future__ import annotations

import re
import sys

import pytest

from tests.e2e.conftest import E2E, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def python_snippet(section: str) -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"### {section}\n")
    match = re.search(r"```python\n(.*?)```", readme[start:], re.DOTALL)
    assert match, f"no python block under {section!r}"
    return match.group(1)


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
