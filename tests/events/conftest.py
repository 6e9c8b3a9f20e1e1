"""The workflow tests' dev server fixture, for the outcome-event tests."""

from tests.workflows.conftest import dev_env

__all__ = ["dev_env"]
