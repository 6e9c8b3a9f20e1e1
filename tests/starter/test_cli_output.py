"""The tiny table renderer and the status block."""

from __future__ import annotations

from datetime import UTC, datetime

from cli.output import amount, render_pairs, render_table, to_json
from tests.starter.test_cli_run import status_of


def test_table_columns_align() -> None:
    table = render_table(
        ["KEY", "AMOUNT"], [["a", "1.00 PLN"], ["longer-key", None]], right=[1]
    ).splitlines()
    assert table == [
        "KEY           AMOUNT",
        "----------  --------",
        "a           1.00 PLN",
        "longer-key         -",
    ]


def test_pairs_skip_none_and_pad() -> None:
    assert render_pairs([("a", 1), ("skip", None), ("long label", "x")]) == (
        "a           1\nlong label  x"
    )


def test_amount_formats_per_currency() -> None:
    assert amount(1234, "PLN") == "12.34 PLN"
    assert amount(500, "JPY") == "500 JPY"
    assert amount(None, None) == "whole payment"


def test_json_of_models_and_datetimes() -> None:
    text = to_json({"status": status_of("k"), "at": datetime(2025, 1, 1, tzinfo=UTC)})
    assert '"state": "SUCCEEDED"' in text
    assert '"at": "2025-01-01T00:00:00+00:00"' in text
