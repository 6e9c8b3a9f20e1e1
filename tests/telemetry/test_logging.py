"""JSON-lines logs: Temporal's context flattened, the refund key added, no credentials."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

import pytest
from temporalio import activity, workflow

from benchmarks.refund_throughput import shape_of
from core.models import RefundState
from telemetry.logging import JsonFormatter, setup_logging
from tests.telemetry.conftest import refund_stack


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "temporalio.activity", logging.INFO, __file__, 1, "submit at %s: done", ("paynow",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_activity_record_is_flattened() -> None:
    record = _record(
        temporal_activity={
            "activity_id": "3",
            "activity_type": "submit_refund",
            "attempt": 2,
            "namespace": "default",
            "task_queue": "refunds",
            "workflow_id": "refund:order-1001",
            "workflow_run_id": "run-1",
            "workflow_type": "RefundWorkflow",
        },
        provider="paynow",
        outcome="ok",
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "submit at paynow: done"
    assert line["level"] == "INFO"
    assert line["logger"] == "temporalio.activity"
    assert line["timestamp"].endswith("Z")
    assert line["refund_key"] == "order-1001"
    assert line["workflow_id"] == "refund:order-1001"
    assert line["run_id"] == "run-1"
    assert line["activity_type"] == "submit_refund"
    assert line["attempt"] == 2
    assert (line["provider"], line["outcome"]) == ("paynow", "ok")
    assert "temporal_activity" not in line


def test_workflow_record_and_odd_values() -> None:
    record = _record(
        temporal_workflow={"workflow_id": "refund-lane:paynow:x", "run_id": "r", "attempt": 1},
        refund_state=RefundState.PENDING,
        blob=object(),
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    # Only refund workflows have a refund key.
    assert "refund_key" not in line
    assert line["workflow_id"] == "refund-lane:paynow:x"
    assert line["refund_state"] == "PENDING"
    assert line["blob"].startswith("<object object")
    assert "RuntimeError: boom" in line["exception"]


def test_a_plain_record_has_the_four_fields() -> None:
    record = logging.LogRecord("refunds.worker", logging.WARNING, __file__, 1, "hi", None, None)
    assert set(json.loads(JsonFormatter().format(record))) == {
        "timestamp",
        "level",
        "logger",
        "message",
    }


def test_setup_logging_writes_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setattr(activity.logger, "activity_info_on_message", True)
    monkeypatch.setattr(workflow.logger, "workflow_info_on_message", True)
    stream = io.StringIO()
    try:
        setup_logging(logging.INFO, stream=stream)
        logging.getLogger("refunds.worker").info("worker %s", "up", extra={"providers": "paynow"})
        logging.getLogger("httpx").info("HTTP Request: GET https://x/?token=1")
        assert not activity.logger.activity_info_on_message
        assert not workflow.logger.workflow_info_on_message
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "worker up"
    assert json.loads(line)["providers"] == "paynow"


async def test_refund_logs_carry_key_and_workflow_id_and_no_credentials(
    temporal_address: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As setup_logging leaves them (it is not called here: it would replace caplog's handler).
    monkeypatch.setattr(activity.logger, "activity_info_on_message", False)
    monkeypatch.setattr(workflow.logger, "workflow_info_on_message", False)
    caplog.set_level(logging.DEBUG)
    async with refund_stack(temporal_address) as stack:
        request = await stack.paynow_request()
        await stack.refunds.start(request)
        final = await stack.refunds.wait(request.idempotency_key)
    assert final.state is RefundState.SUCCEEDED

    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(record)) for record in caplog.records]
    mine = [line for line in lines if line.get("refund_key") == request.idempotency_key]
    assert all(line["workflow_id"] == request.workflow_id for line in mine)

    submit_lines = [line for line in mine if line.get("operation") == "submit"]
    assert [line["message"] for line in submit_lines] == [
        "submit at paynow: started",
        "submit at paynow: done",
    ]
    assert [line.get("outcome") for line in submit_lines] == [None, "ok"]
    assert all(line["activity_type"] == "submit_refund" for line in submit_lines)
    assert all(line["attempt"] == 1 and line["provider"] == "paynow" for line in submit_lines)

    states = [line["refund_state"] for line in mine if "refund_state" in line]
    assert states == ["VALIDATING", "SUBMITTING", "SUCCEEDED"]

    # Every record of the run, formatted or raw, is free of credentials and signatures.
    assert stack.signatures
    everything = "\n".join(
        [json.dumps(line) for line in lines] + [record.getMessage() for record in caplog.records]
    )
    for secret in stack.secrets:
        assert secret not in everything


async def test_a_refund_logs_a_state_once_however_many_checks_find_it(
    temporal_address: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three status checks find the refund pending twice, then done: PENDING is logged when
    the refund enters it, not again at each check (thousands of pending refunds would
    otherwise log a line each per round)."""
    monkeypatch.setattr(workflow.logger, "workflow_info_on_message", False)
    caplog.set_level(logging.INFO)
    async with refund_stack(temporal_address) as stack:
        request = await stack.paynow_request("three_checks")
        await stack.refunds.start(request)
        final = await stack.refunds.wait(request.idempotency_key)
        history = await stack.refunds.handle(request.idempotency_key).fetch_history()
    assert final.state is RefundState.SUCCEEDED
    assert shape_of(history).checks == 3

    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(record)) for record in caplog.records]
    mine = [line for line in lines if line.get("refund_key") == request.idempotency_key]
    states = [line["refund_state"] for line in mine if "refund_state" in line]
    assert states == ["VALIDATING", "SUBMITTING", "PENDING", "SUCCEEDED"]
