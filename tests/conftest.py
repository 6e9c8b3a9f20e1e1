"""Shared fixtures, the order of a parallel run, and the deliberate exit that sidesteps
temporalio issue #300.

The Temporal SDK's Rust core can abort the interpreter during finalization
(``PyGILState_Release``, exit code 134) after every test has passed. Once pytest has printed
its summary we flush and leave with ``os._exit`` and pytest's own exit status, so the code CI
sees is exactly the test outcome: a failure stays a failure, a pass stays a pass.

Under pytest-xdist (``make test`` runs ``pytest -n 2 --dist loadfile``) this happens in every
process. A worker reaches ``pytest_unconfigure`` only after it has sent its last report and
its "finished" event to the controller, so its ``os._exit`` loses nothing; the status CI sees
is the controller's, which counts every worker's failures.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: list[int] = []


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a parallel run, the ``wall_clock`` tests come first, so their files are handed out
    first (``--no-loadscope-reorder`` keeps collection order) and their minutes of waiting
    overlap the rest of the suite on the other worker. A plain run keeps the usual order."""
    if not _xdist_worker(config):
        return
    items.sort(key=lambda item: item.get_closest_marker("wall_clock") is None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _exit_status or os.environ.get("REFUNDS_NORMAL_EXIT") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[-1])
