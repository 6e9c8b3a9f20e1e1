"""The worker's memory and concurrency limits come from the settings (docs/performance.md)."""

from __future__ import annotations

from typing import Any

import pytest

import worker
from core.settings import Settings
from providers.registry import ProviderDirectory


class Recorder:
    """Stands in for temporalio's Worker: keeps what it was built with."""

    built: dict[str, Any] = {}

    def __init__(self, client: object, **options: Any) -> None:
        Recorder.built = options


def build(monkeypatch: pytest.MonkeyPatch, **values: Any) -> dict[str, Any]:
    monkeypatch.setattr(worker, "Worker", Recorder)
    settings = Settings(
        _env_file=None,
        paynow_api_key="97a55694-5478-43b5-b406-fb49ebfdd2b5",
        paynow_signature_key="b305b996-bca5-4404-a0b7-2ccea3d2b64b",
        **values,
    )
    worker.build_worker(object(), settings, ProviderDirectory.from_settings(settings))  # type: ignore[arg-type]
    return Recorder.built


def test_defaults_bound_the_cache_and_leave_concurrency_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = build(monkeypatch)
    assert built["max_cached_workflows"] == 250
    assert built["max_concurrent_activities"] is None
    assert built["max_concurrent_workflow_tasks"] is None


def test_settings_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    built = build(
        monkeypatch,
        refunds_worker_max_cached_workflows=600,
        refunds_worker_max_concurrent_activities=20,
        refunds_worker_max_concurrent_workflow_tasks=10,
    )
    assert built["max_cached_workflows"] == 600
    assert built["max_concurrent_activities"] == 20
    assert built["max_concurrent_workflow_tasks"] == 10
