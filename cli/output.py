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

from core.models import EventDelivery, OutcomeEvent, RefundStatus, Resolution
from core.money import MoneyError, describe_amount, exponent, minor_to_decimal

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


def count(n: int, noun: str) -> str:
    """``1 refund``, ``2 refunds``, ``0 lines``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render_pairs(pairs: Iterable[tuple[str, object]], *, indent: str = "") -> str:
    """``label  value`` lines with the labels padded to one width; ``None`` values skipped."""
    kept = [(label, _cell(value)) for label, value in pairs if value is not None]
    if not kept:
        return ""
    width = max(len(label) for label, _ in kept)
    return "\n".join(f"{indent}{label.ljust(width)}  {value}" for label, value in kept)


def amount(amount_minor: int | None, currency: str | None) -> str:
    """``12.34 PLN``; ``whole payment`` when no amount was asked for."""
    return describe_amount(amount_minor, currency)


def attempts_line(attempts: int) -> str | None:
    """What ``attempts`` counts, said next to it (2 on a clean run: one check, one call)."""
    if not attempts:
        return None
    return f"{attempts} (tries of the payment check and the refund call, retries included)"


def event_line(event: OutcomeEvent) -> str:
    """``refund.succeeded delivered (1 attempt)``; a failing one with its last error."""
    attempts = f"{event.attempts} attempt{'' if event.attempts == 1 else 's'}"
    line = f"{event.type} {event.delivery.value.replace('_', ' ')} ({attempts})"
    if event.delivery is not EventDelivery.DELIVERED and event.last_error:
        line += f": {event.last_error}"
    if event.next_attempt_at is not None:
        line += f"; next attempt {event.next_attempt_at.isoformat(timespec='seconds')}"
    return line


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
        ("confirmed", confirmed_money(status)),
        ("split", money_split(status)),
        ("message", status.message),
        ("attempts", attempts_line(status.attempts)),
        ("last error", status.last_error),
        ("attention", status.attention_reason),
        ("what to do", status.attention_actions),
        ("cancel reason", status.cancel_reason),
        ("cancel note", status.cancel_note),
        *(("resolution", resolution_line(r)) for r in status.resolutions),
        *(("event", event_line(e)) for e in status.events),
        ("next check", status.next_check_at),
        ("started", status.started_at),
        ("updated", status.updated_at),
        ("finished", status.finished_at),
    ]


NO_CURRENCY = "currency not stated by the provider"


def _provider_amount(
    amount_minor: int, currency: str | None, payment_currency: str | None
) -> tuple[str, bool]:
    """Money as the provider stated it, and whether it stated the currency: ``12.34 PLN``;
    without one (Paynow states none for a refund), the number in the payment's currency's
    units (``12.34``), else in minor units."""
    if currency is not None:
        return amount(amount_minor, currency), True
    if payment_currency is not None:
        try:
            places = exponent(payment_currency)
        except MoneyError:
            pass
        else:
            return f"{minor_to_decimal(amount_minor, payment_currency):.{places}f}", False
    return f"{amount_minor} minor units", False


def confirmed_money(status: RefundStatus) -> str | None:
    """What the provider confirmed for the refund; None when it confirmed no amount."""
    if status.confirmed_amount_minor is None:
        return None
    text, stated = _provider_amount(
        status.confirmed_amount_minor, status.confirmed_currency, status.currency
    )
    return text if stated else f"{text} ({NO_CURRENCY})"


def money_split(status: RefundStatus) -> str | None:
    """Where the confirmed money went (Paynow vouchers): ``payer 10.00 PLN, voucher 2.34 PLN``."""
    parts: list[str] = []
    unstated = False
    for label, value in (
        ("payer", status.payer_amount_minor),
        ("voucher", status.voucher_amount_minor),
    ):
        if value is None:
            continue
        text, stated = _provider_amount(value, status.confirmed_currency, status.currency)
        parts.append(f"{label} {text}")
        unstated = unstated or not stated
    if not parts:
        return None
    return ", ".join(parts) + (f" ({NO_CURRENCY})" if unstated else "")


def resolution_line(resolution: Resolution) -> str:
    """One operator decision: when, what, who, the outcome and why."""
    who = resolution.by or "unknown operator"
    return (
        f"{_cell(resolution.at)} {resolution.action.value} by {who}: {resolution.outcome} "
        f"(reason: {resolution.reason})"
    )


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
