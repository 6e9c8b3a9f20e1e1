"""Rendering for people (aligned tables, key/value blocks) and for programs (JSON).

No dependencies: a table is a list of rows of strings; widths come from the longest cell.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.models import RefundStatus
from core.money import MoneyError, format_minor

EMPTY = "-"


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
    indent: str = "",
) -> str:
    """An aligned text table with a dashed rule under the headers; ``right`` indexes columns
    to right-align (amounts). ``None`` cells print as ``-``."""
    body = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for index, text in enumerate(row):
            widths[index] = max(widths[index], len(text))
    right_aligned = set(right)

    def line(cells: Sequence[str]) -> str:
        parts = [
            text.rjust(widths[i]) if i in right_aligned else text.ljust(widths[i])
            for i, text in enumerate(cells)
        ]
        return (indent + "  ".join(parts)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in body)
    return "\n".join(out)


def render_pairs(pairs: Iterable[tuple[str, object]], *, indent: str = "") -> str:
    """``label  value`` lines with the labels padded to one width; ``None`` values skipped."""
    kept = [(label, _cell(value)) for label, value in pairs if value is not None]
    if not kept:
        return ""
    width = max(len(label) for label, _ in kept)
    return "\n".join(f"{indent}{label.ljust(width)}  {value}" for label, value in kept)


def amount(amount_minor: int | None, currency: str | None) -> str:
    """``12.34 PLN``; ``whole payment`` when no amount was asked for."""
    if amount_minor is None or currency is None:
        return "whole payment"
    try:
        return format_minor(amount_minor, currency)
    except MoneyError:
        return f"{amount_minor} (minor units) {currency}"


def status_pairs(status: RefundStatus) -> list[tuple[str, object]]:
    """The status fields worth reading, in reading order."""
    return [
        ("key", status.key),
        ("workflow id", status.workflow_id),
        ("state", status.state.value),
        ("provider", status.provider.value),
        ("payment", status.payment_id),
        ("amount", amount(status.amount_minor, status.currency)),
        ("provider refund", status.provider_refund_id),
        ("provider status", status.provider_status),
        ("message", status.message),
        ("attempts", status.attempts or None),
        ("last error", status.last_error),
        ("attention", status.attention_reason),
        ("cancel reason", status.cancel_reason),
        ("cancel note", status.cancel_note),
        ("next check", status.next_check_at),
        ("started", status.started_at),
        ("updated", status.updated_at),
        ("finished", status.finished_at),
    ]


def render_status(status: RefundStatus) -> str:
    return render_pairs(status_pairs(status))


def to_json(value: Any) -> str:
    """Indented JSON of models, dataclasses, lists and dicts of them."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: object) -> str:
    if value is None:
        return EMPTY
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def render_env(env: dict[str, str], *, indent: str = "  ") -> str:
    return "\n".join(f"{indent}export {name}={value}" for name, value in env.items())


def render_sim_payments(info: dict[str, Any]) -> str:
    """Per provider, a table of the simulator's payments (``GET /`` of `refunds sim`)."""
    blocks: list[str] = []
    for provider, described in info.get("providers", {}).items():
        payments: list[dict[str, Any]] = described.get("payments", [])
        rows = [
            [
                p.get("scenario"),
                p.get("payment_id"),
                p.get("account_id"),
                amount(p.get("amount_minor"), p.get("currency")),
                p.get("type") or p.get("method"),
                p.get("state") or p.get("status"),
            ]
            for p in payments
        ]
        headers = ["SCENARIO", "PAYMENT ID", "ACCOUNT ID", "AMOUNT", "TYPE", "STATE"]
        if all(row[2] is None for row in rows):
            headers.pop(2)
            rows = [row[:2] + row[3:] for row in rows]
        table = render_table(headers, rows, right=[headers.index("AMOUNT")], indent="  ")
        blocks.append(f"{provider.capitalize()} payments ({described.get('base_url')}):\n{table}")
    return "\n\n".join(blocks)
