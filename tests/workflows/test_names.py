"""The registered names are a contract (recorded histories, running workflows, other
services): code refers to handlers through the classes, and these names never change."""

from __future__ import annotations

import pytest
from temporalio import workflow

from workflows.names import signal_name
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import RefundWorkflow


def test_refund_workflow_names() -> None:
    definition = workflow._Definition.must_from_class(RefundWorkflow)
    assert definition.name == "RefundWorkflow"
    assert set(definition.signals) == {"cancel", "admitted", "check_now", "provider_status"}
    assert set(definition.updates) == {"request_cancel", "resolve"}
    assert set(definition.queries) == {"status"}


def test_lane_workflow_names() -> None:
    definition = workflow._Definition.must_from_class(RefundLaneWorkflow)
    assert definition.name == "RefundLaneWorkflow"
    assert set(definition.signals) == {"enqueue", "release"}
    assert set(definition.queries) == {"lane"}


def test_signal_name_reads_the_handlers_definition() -> None:
    assert signal_name(RefundLaneWorkflow.enqueue) == "enqueue"
    assert signal_name(RefundWorkflow.cancel) == "cancel"
    with pytest.raises(TypeError, match="not a named"):
        signal_name(RefundWorkflow.status)


def test_status_batch_workflow_names() -> None:
    from workflows.status_batch import RefundStatusBatchWorkflow

    definition = workflow._Definition.must_from_class(RefundStatusBatchWorkflow)
    assert definition.name == "RefundStatusBatch"
    assert set(definition.signals) == {"watch", "unwatch"}
    assert set(definition.queries) == {"status_batch"}
