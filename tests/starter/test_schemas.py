"""The checked-in JSON Schemas match the models (run `make schemas` after changing them)."""

from __future__ import annotations

import json
from pathlib import Path

from starter import schemas


def test_checked_in_schemas_match_the_models() -> None:
    stale = schemas.drifted()
    assert not stale, f"schemas/ drifted from the models: {stale}; run `make schemas`"


def test_check_detects_drift(tmp_path: Path) -> None:
    assert schemas.main(["--write", "--dir", str(tmp_path)]) == 0
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "refund_status.schema.json"
    document = json.loads(target.read_text())
    del document["properties"]["provider_status"]
    target.write_text(json.dumps(document, sort_keys=True, indent=2) + "\n")
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1
    assert schemas.drifted(tmp_path) == ["refund_status.schema.json"]


def test_files_are_stable_json() -> None:
    for name in schemas.SCHEMAS:
        text = (schemas.SCHEMA_DIR / name).read_text()
        assert text.endswith("}\n")
        document = json.loads(text)
        assert json.dumps(document, sort_keys=True, indent=2) + "\n" == text
        assert document["$schema"] == schemas.DIALECT


def test_input_schema_describes_the_request() -> None:
    document = schemas.schema_of(*schemas.SCHEMAS["refund_workflow_input.schema.json"])
    assert document["required"] == ["request"]
    request = document["$defs"]["RefundRequest"]
    assert {"idempotency_key", "provider", "payment_id", "reason"} <= set(request["required"])
    assert request["additionalProperties"] is False
