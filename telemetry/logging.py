"""Structured logs: one JSON object per line.

Every line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, then the
record's ``extra`` fields. Records from the SDK's ``workflow.logger`` and ``activity.logger``
carry a ``temporal_workflow`` / ``temporal_activity`` dict in ``extra``; it is flattened into
``workflow_id``, ``run_id``, ``workflow_type``, ``activity_type``, ``activity_id``,
``attempt``, ``task_queue`` and ``namespace``, and a refund's ``workflow_id``
(``refund:<key>``) also gives ``refund_key``. Example::

    {"timestamp": "2025-05-02T10:15:03.120Z", "level": "INFO", "logger": "temporalio.activity",
     "message": "submit at paynow: done", "provider": "paynow", "operation": "submit",
     "outcome": "ok", "workflow_id": "refund:order-1001", "refund_key": "order-1001",
     "activity_type": "submit_refund", "attempt": 1, ...}

Nothing here adds request data: log lines carry what the code logging them chose to say.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from temporalio import activity, workflow

from core.models import WORKFLOW_ID_PREFIX

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_TEMPORAL_EXTRA = ("temporal_workflow", "temporal_activity")
# Whole info objects (``full_*_info_on_extra``): too big for a line, flattened fields suffice.
_SKIPPED_EXTRA = frozenset({*_TEMPORAL_EXTRA, "workflow_info", "activity_info"})
_ACTIVITY_FIELDS = {
    "workflow_id": "workflow_id",
    "workflow_run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_type": "activity_type",
    "activity_id": "activity_id",
    "attempt": "attempt",
    "task_queue": "task_queue",
    "namespace": "namespace",
}
_WORKFLOW_FIELDS = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "workflow_type": "workflow_type",
    "attempt": "attempt",
    "task_queue": "task_queue",
    "namespace": "namespace",
    "update_id": "update_id",
    "update_name": "update_name",
}


def temporal_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The flat Temporal fields of a record (empty for records from outside Temporal)."""
    fields: dict[str, Any] = {}
    for extra_name, names in (
        ("temporal_workflow", _WORKFLOW_FIELDS),
        ("temporal_activity", _ACTIVITY_FIELDS),
    ):
        details = getattr(record, extra_name, None)
        if isinstance(details, Mapping):
            for source, target in names.items():
                if details.get(source) is not None:
                    fields[target] = details[source]
    workflow_id = fields.get("workflow_id")
    if isinstance(workflow_id, str) and workflow_id.startswith(WORKFLOW_ID_PREFIX):
        fields["refund_key"] = workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
    return fields


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON; values JSON cannot hold are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(temporal_fields(record))
        for key, value in vars(record).items():
            if key in _STANDARD or key in _SKIPPED_EXTRA or key.startswith("_"):
                continue
            # Fields the caller set explicitly win over the flattened Temporal ones.
            line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(level: int | str = logging.INFO, *, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines, replacing other handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every request at INFO; the HTTP spans and provider_calls cover them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The details the SDK appends to messages are fields of their own here.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
