"""JSON Schema of what other services send and read: the workflow input and the status.

``schemas/*.schema.json`` are generated from the models and checked in, so callers in other
languages can validate against them. ``python -m starter.schemas --write`` (``make schemas``)
regenerates them; ``--check`` exits 1 when a file differs from the models (CI and
``tests/starter/test_schemas.py`` run it), so the files can never silently drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from core.models import RefundStatus
from workflows.models import RefundWorkflowInput

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

Mode = Literal["validation", "serialization"]

# File name -> (model, mode): inputs are described as accepted, outputs as produced.
SCHEMAS: dict[str, tuple[type[BaseModel], Mode]] = {
    "refund_workflow_input.schema.json": (RefundWorkflowInput, "validation"),
    "refund_status.schema.json": (RefundStatus, "serialization"),
}


def schema_of(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
    schema = model.model_json_schema(mode=mode)
    return {"$schema": DIALECT, **schema}


def render(model: type[BaseModel], mode: Mode) -> str:
    """Sorted keys, two-space indent, trailing newline: stable diffs."""
    return json.dumps(schema_of(model, mode), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    return {name: render(model, mode) for name, (model, mode) in SCHEMAS.items()}


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    stale: list[str] = []
    for name, text in expected_files().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema file; returns the names that changed."""
    changed = drifted(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in expected_files().items():
        (directory / name).write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m starter.schemas", description="Generate or check schemas/*.schema.json"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="(re)write the schema files")
    action.add_argument("--check", action="store_true", help="exit 1 if a file has drifted")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="default: schemas/")
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.dir)
        print(f"wrote {len(SCHEMAS)} schemas to {args.dir}/ ({len(changed)} changed)")
        return 0
    stale = drifted(args.dir)
    if stale:
        print(
            f"schemas out of date with the models: {', '.join(stale)}; run `make schemas`",
            file=sys.stderr,
        )
        return 1
    print(f"{len(SCHEMAS)} schemas match the models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
