"""Shared fixtures, and the deliberate exit that sidesteps temporalio issue #300.

The Temporal SDK's Rust core can abort the interpreter during finalization
(``PyGILState_Release``, exit code 134) after every test has passed. Once pytest has printed
its summary we flush and leave with ``os._exit`` and pytest's own exit status, so the code CI
sees is exactly the test outcome: a failure stays a failure, a pass stays a pass.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _exit_status or os.environ.get("REFUNDS_NORMAL_EXIT") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])
