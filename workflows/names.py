"""Registered Temporal names, read from the workflow classes' own definitions.

Signals, updates, queries and workflow starts are referenced through the classes' methods
(``handle.signal(RefundWorkflow.cancel, ...)``), so a rename is caught by mypy. The few SDK
calls that take only a name (``start_signal`` of signal-with-start) get it from here, never
from a second literal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow


def signal_name(handler: Callable[..., Any]) -> str:
    """The name a ``@workflow.signal`` method is registered under."""
    definition = workflow._SignalDefinition.from_fn(handler)
    if definition is None or definition.name is None:
        raise TypeError(f"{handler.__qualname__} is not a named @workflow.signal handler")
    return definition.name


def workflow_type_name(cls: type) -> str:
    """The workflow type a ``@workflow.defn`` class is registered under."""
    name = workflow._Definition.must_from_class(cls).name
    if name is None:
        raise TypeError(f"{cls.__qualname__} is a dynamic workflow: it has no type name")
    return name
