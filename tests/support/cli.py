"""Running CLI commands in-process against a stand-in for Temporal."""

from __future__ import annotations

from typing import TypeVar

import pytest

from cli import runner

Client = TypeVar("Client")


def serve(monkeypatch: pytest.MonkeyPatch, client: Client) -> Client:
    """Every command connects to ``client`` instead of Temporal; returns it."""

    async def connect(settings: object) -> Client:
        return client

    monkeypatch.setattr(runner, "connect", connect)
    return client


def refuse_connections(monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    """Any attempt to reach Temporal fails the test with ``why``."""

    async def connect(settings: object) -> object:
        raise AssertionError(why)

    monkeypatch.setattr(runner, "connect", connect)
