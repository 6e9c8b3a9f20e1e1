"""The workflow tests' server fixtures (time-skipping and dev server), for the status batch
tests."""

from tests.workflows.conftest import dev_env, env

__all__ = ["dev_env", "env"]
