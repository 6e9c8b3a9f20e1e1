"""`refunds batch`: JSON Lines parsing, per-line reports, the summary and the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import batch
from cli import main as cli
from starter.client import IdempotencyConflictError
from tests.starter.test_cli_run import FakeClient
from tests.support.cli import refuse_connections, serve

GOOD = {
    "idempotency_key": "b-1",
    "provider": "paynow",
    "payment_id": "NOLV-8F9-08K-WGD",
    "amount_minor": 1234,
    "currency": "PLN",
    "reason": "returned",
}


def jsonl(*rows: dict[str, object] | str) -> str:
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"


def test_lines_are_parsed_and_checked_offline() -> None:
    text = jsonl(
        GOOD,
        "",
        {**GOOD, "idempotency_key": "b-2", "amount_minor": 0},
        "{not json",
        {**GOOD, "idempotency_key": "b-3", "payment_id": "bad"},
        {**GOOD, "idempotency_key": "b-4", "currency": None},
    )
    lines = batch.parse_lines(text)
    assert [line.number for line in lines] == [1, 3, 4, 5, 6]
    assert lines[0].request is not None
    assert lines[0].request.amount_minor == 1234
    assert lines[1].problem == "amount_minor: Input should be greater than 0"
    assert lines[2].problem is not None
    assert "Invalid JSON" in lines[2].problem
    assert lines[3].problem is not None
    assert "is not a Paynow payment id" in lines[3].problem
    assert lines[4].problem == (
        "request: amount_minor and currency go together: give both or neither"
    )


def test_run_reports_progress_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = serve(monkeypatch, FakeClient())
    source = tmp_path / "refunds.jsonl"
    source.write_text(
        jsonl(GOOD, {**GOOD, "idempotency_key": "b-2"}, {**GOOD, "idempotency_key": "b 3"})
    )
    assert cli.run(["batch", str(source), "--concurrency", "2", "--wait"]) == 2
    out = capsys.readouterr().out
    assert "[1/3]" in out
    assert "[3/3]" in out
    assert "line 3 key - invalid: idempotency_key: String should match pattern" in out
    assert "-> SUCCEEDED" in out
    assert "3 lines: 2 created, 1 invalid" in out
    assert sorted(r.idempotency_key for r in fake.started) == ["b-1", "b-2"]


def test_json_output_and_conflicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conflict = IdempotencyConflictError("b-1")
    serve(monkeypatch, FakeClient(error=conflict))
    source = tmp_path / "refunds.jsonl"
    source.write_text(jsonl(GOOD))
    assert cli.run(["batch", str(source), "--json"]) == 3
    captured = capsys.readouterr()
    assert "[1/1] line 1 key b-1 conflict" in captured.err
    results = json.loads(captured.out)
    assert results == [
        {
            "line": 1,
            "key": "b-1",
            "outcome": "conflict",
            "detail": str(conflict),
            "status": None,
        }
    ]


def test_only_invalid_lines_need_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refuse_connections(monkeypatch, "nothing valid: no connection")
    source = tmp_path / "refunds.jsonl"
    source.write_text(jsonl({"provider": "paynow"}))
    assert cli.run(["batch", str(source)]) == 2
    assert "idempotency_key: Field required" in capsys.readouterr().out


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.run(["batch", str(tmp_path / "absent.jsonl")]) == 2
    assert "invalid FILE: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([], 0),
        ([batch.Outcome.CREATED, batch.Outcome.ATTACHED], 0),
        ([batch.Outcome.CREATED, batch.Outcome.INVALID], 2),
        ([batch.Outcome.INVALID, batch.Outcome.CONFLICT], 3),
        ([batch.Outcome.CONFLICT, batch.Outcome.ERROR], 1),
    ],
)
def test_exit_code(outcomes: list[batch.Outcome], code: int) -> None:
    results = [batch.BatchResult(i, f"k{i}", o) for i, o in enumerate(outcomes)]
    assert batch.exit_code(results) == code


def test_every_start_of_a_batch_continues_one_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = serve(monkeypatch, FakeClient())
    source = tmp_path / "refunds.jsonl"
    source.write_text(jsonl(GOOD, {**GOOD, "idempotency_key": "b-2"}))
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert cli.run(["batch", str(source), "--traceparent", traceparent]) == 0
    assert fake.traceparents == [traceparent, traceparent]
