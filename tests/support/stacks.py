"""Running an embedded stack for a test fixture."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from devstack.stack import EmbeddedStack, StackError

SHOW_LOGS_ENV = "REFUNDS_E2E_SHOW_LOGS"


@asynccontextmanager
async def started(stack: EmbeddedStack) -> AsyncIterator[EmbeddedStack]:
    """``stack`` started (a start failure fails the test with its log's tail) and stopped on
    the way out; with REFUNDS_E2E_SHOW_LOGS=1 the tail of each of its logs is printed then."""
    try:
        await stack.start()
    except StackError as err:
        pytest.fail(f"{err}\n{err.log_tail}")
    try:
        yield stack
    finally:
        await stack.stop()
        if os.environ.get(SHOW_LOGS_ENV) == "1":
            for log in sorted(stack.log_dir.glob("*.log")):
                print(f"\n--- {log}\n{log.read_text(errors='replace')[-4000:]}")
