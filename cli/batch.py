"""`refunds batch`: start many refunds from a JSON Lines file, a few at a time.

Each non-blank line is one :class:`~core.models.RefundRequest` under the model's own field
names (the same JSON other services send). Every line is checked offline first; a line that
fails is reported with its number and nothing is started for it. Lines that pass are started
with at most ``concurrency`` calls in flight; the same key twice attaches (same request) or
conflicts (different request), exactly as with `refunds start`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from cli.output import amount, render_table
from cli.runner import EXIT_CONFLICT, EXIT_ERROR, EXIT_INVALID, EXIT_OK, describe_validation
from core.models import RefundRequest, RefundStatus
from providers.errors import InvalidRequestError
from providers.registry import check_request
from starter.client import IdempotencyConflictError, RefundClient, RefundClientError


class Outcome(StrEnum):
    CREATED = "created"
    ATTACHED = "attached"
    INVALID = "invalid"
    CONFLICT = "conflict"
    ERROR = "error"


@dataclass(frozen=True)
class BatchLine:
    number: int
    request: RefundRequest | None
    problem: str | None = None


@dataclass
class BatchResult:
    line: int
    key: str | None
    outcome: Outcome
    request: RefundRequest | None = None
    detail: str | None = None
    status: RefundStatus | None = None


def parse_lines(text: str) -> list[BatchLine]:
    """Every non-blank line, parsed and checked offline (nothing is sent anywhere)."""
    lines: list[BatchLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            request = RefundRequest.model_validate_json(raw)
            check_request(request)
        except ValidationError as err:
            lines.append(BatchLine(number, None, describe_validation(err)))
            continue
        except InvalidRequestError as err:
            lines.append(BatchLine(number, None, err.message))
            continue
        lines.append(BatchLine(number, request))
    return lines


Progress = Callable[[str], None]


async def run_batch(
    client: RefundClient | None,
    lines: list[BatchLine],
    *,
    concurrency: int,
    wait: bool,
    progress: Progress,
    traceparent: str | None = None,
) -> list[BatchResult]:
    """Start every valid line (``concurrency`` at a time); ``wait`` also awaits outcomes.
    ``progress`` gets a line per start: ``[12/200] line 14 key k-14 created``. ``client`` may
    be None only when no line is valid. Each start is a span under ``traceparent`` (else the
    current span): one batch, one trace."""
    total = len(lines)
    done = 0
    gate = asyncio.Semaphore(concurrency)

    def report(result: BatchResult) -> None:
        nonlocal done
        done += 1
        detail = f": {result.detail}" if result.detail else ""
        progress(
            f"[{done}/{total}] line {result.line} key {result.key or '-'} "
            f"{result.outcome.value}{detail}"
        )

    async def one(line: BatchLine) -> BatchResult:
        if line.request is None:
            result = BatchResult(line.number, None, Outcome.INVALID, detail=line.problem)
            report(result)
            return result
        request = line.request
        key = request.idempotency_key
        assert client is not None, "a valid line needs a client"
        async with gate:
            try:
                started = await client.start(request, traceparent=traceparent)
                outcome = Outcome.CREATED if started.created else Outcome.ATTACHED
                result = BatchResult(line.number, key, outcome, request)
            except IdempotencyConflictError as err:
                result = BatchResult(line.number, key, Outcome.CONFLICT, request, str(err))
            except InvalidRequestError as err:
                result = BatchResult(line.number, key, Outcome.INVALID, request, err.message)
            except RefundClientError as err:
                result = BatchResult(line.number, key, Outcome.ERROR, request, str(err))
        report(result)
        if wait and result.outcome in (Outcome.CREATED, Outcome.ATTACHED):
            # Waiting holds no slot: the gate limits calls in flight, not refunds running.
            try:
                result.status = await client.wait(key)
            except RefundClientError as err:
                result.outcome, result.detail = Outcome.ERROR, str(err)
            final = result.status.state.value if result.status else f"error: {result.detail}"
            progress(f"      line {result.line} key {key} -> {final}")
        return result

    results = await asyncio.gather(*(one(line) for line in lines))
    return sorted(results, key=lambda r: r.line)


def exit_code(results: list[BatchResult]) -> int:
    """0 when every line started or attached; else 1 (errors), 3 (conflicts), 2 (invalid)."""
    outcomes = {r.outcome for r in results}
    if Outcome.ERROR in outcomes:
        return EXIT_ERROR
    if Outcome.CONFLICT in outcomes:
        return EXIT_CONFLICT
    if Outcome.INVALID in outcomes:
        return EXIT_INVALID
    return EXIT_OK


def summary(results: list[BatchResult]) -> str:
    """A table of every line, then the count per outcome."""
    rows = []
    for r in results:
        req = r.request
        rows.append(
            [
                r.line,
                r.key,
                req.provider.value if req else None,
                req.payment_id if req else None,
                amount(req.amount_minor, req.currency) if req else None,
                r.outcome.value,
                r.status.state.value if r.status else None,
                r.detail,
            ]
        )
    table = render_table(
        ["LINE", "KEY", "PROVIDER", "PAYMENT", "AMOUNT", "OUTCOME", "STATE", "DETAIL"],
        rows,
        right=[0, 4],
    )
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    totals = ", ".join(f"{n} {name}" for name, n in counts.items())
    return f"{table}\n\n{len(results)} lines: {totals or 'nothing to do'}"


def to_json(results: list[BatchResult]) -> list[dict[str, object]]:
    return [
        {
            "line": r.line,
            "key": r.key,
            "outcome": r.outcome.value,
            "detail": r.detail,
            "status": r.status.model_dump(mode="json") if r.status else None,
        }
        for r in results
    ]
