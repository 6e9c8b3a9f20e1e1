"""The rooms stay apart: the product never imports the simulators or the dev harness, and the
CLI imports the harness only inside the commands that run it (`refunds start` never does).
Each check runs in a fresh interpreter, so nothing imported by other tests counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli import dev
from devstack import stack

REPO = Path(__file__).resolve().parents[2]
PRODUCT = (
    "worker",
    "workflows",
    "activities",
    "providers",
    "starter",
    "codec",
    "telemetry",
    "core",
)
DEV_ONLY = ("simulators", "devstack")

# Imports every module of the given packages (and top-level modules), then prints the
# dev-only packages that ended up loaded.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
"""


def loaded_dev_packages(script: str, *argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_the_product_never_imports_the_simulators_or_the_dev_harness() -> None:
    assert loaded_dev_packages(IMPORT_ALL % (DEV_ONLY,), *PRODUCT) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["start", "--help"],
        ["start", "--provider", "paynow", "--payment-id", "X", "--reason", "r", "--key", "k"],
        ["status", "--help"],
        ["batch", "/nonexistent.jsonl"],
    ],
)
def test_the_cli_loads_the_dev_harness_only_for_its_commands(argv: list[str]) -> None:
    script = f"""
import json, sys
from cli.main import run
run(sys.argv[1:])
print()
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({DEV_ONLY!r}))))
"""
    assert loaded_dev_packages(script, *argv) == []


def test_the_cli_names_the_stacks_default_state_dir() -> None:
    assert dev.STATE_DIR == stack.DEFAULT_STATE_DIR
