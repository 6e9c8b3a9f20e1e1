"""`refunds batch`: start many refunds from a JSON Lines file, a few at a time.

Each non-blank line is one :class:`~core.models.RefundRequest` under the model's own field
names (the same JSON other services send). Every line is checked offline first; a line that
fails is reported with its number and nothing is started for it. Lines that pass are started
with at most ``concurrency`` calls in flight; the same key twice attaches (same request) or
conflicts (different request), exactly as with `refunds start`.

Progress goes to a :class:`BatchProgress`: plain lines (:class:`PlainProgress`, for files,
pipes and logs), or on a terminal one line rewritten in place with the counts and the elapsed
time (:class:`TerminalProgress`), problems printed above it as they happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TextIO

from pydantic import ValidationError

from cli.output import amount, count, render_table
from cli.runner import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_NEEDS_ATTENTION,
    EXIT_NOT_SUCCEEDED,
    EXIT_OK,
    describe_validation,
)
from cli.waiting import outcome_code, wait_for_outcome
from core.models import RefundRequest, RefundState, RefundStatus
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


class BatchProgress(Protocol):
    """Told of each line as it is started (or refused) and, with ``--wait``, as it ends."""

    def started(self, result: BatchResult) -> None: ...

    def ended(self, result: BatchResult) -> None: ...


def _detail(result: BatchResult) -> str:
    return f": {result.detail}" if result.detail else ""


def _ending(result: BatchResult) -> str:
    return result.status.state.value if result.status else f"error{_detail(result)}"


class PlainProgress:
    """A line per start, ``[12/200] line 14 key k-14 created``, and with ``--wait`` a line per
    outcome, ``line 14 key k-14 -> SUCCEEDED``."""

    def __init__(self, write: Callable[[str], None], total: int) -> None:
        self.write = write
        self.total = total
        self.done = 0

    def started(self, result: BatchResult) -> None:
        self.done += 1
        self.write(
            f"[{self.done}/{self.total}] line {result.line} key {result.key or '-'} "
            f"{result.outcome.value}{_detail(result)}"
        )

    def ended(self, result: BatchResult) -> None:
        self.write(f"      line {result.line} key {result.key} -> {_ending(result)}")


class TerminalProgress:
    """One line, rewritten in place: ``[12/200] 10 created, 2 invalid | ended 7: 6 SUCCEEDED,
    1 FAILED | 3.4s``. A line that did not start, and with ``--wait`` a refund that did not
    succeed, is printed above it when it happens. :meth:`ticking` keeps the time current."""

    def __init__(self, stream: TextIO, total: int, *, wait: bool) -> None:
        self.stream = stream
        self.total = total
        self.wait = wait
        self.begun = time.monotonic()
        self.outcomes: dict[str, int] = {}
        self.states: dict[str, int] = {}
        self.done = 0
        self.finished = 0

    def started(self, result: BatchResult) -> None:
        self.done += 1
        self.outcomes[result.outcome.value] = self.outcomes.get(result.outcome.value, 0) + 1
        if result.outcome not in (Outcome.CREATED, Outcome.ATTACHED):
            self._above(
                f"line {result.line} key {result.key or '-'} {result.outcome.value}"
                f"{_detail(result)}"
            )
        self.draw()

    def ended(self, result: BatchResult) -> None:
        self.finished += 1
        ending = result.status.state.value if result.status else "error"
        self.states[ending] = self.states.get(ending, 0) + 1
        if result.status is None or result.status.state is not RefundState.SUCCEEDED:
            self._above(f"line {result.line} key {result.key} -> {_ending(result)}")
        self.draw()

    def line(self) -> str:
        parts = [f"[{self.done}/{self.total}] " + _counts(self.outcomes, "started none yet")]
        if self.wait:
            parts.append(f"ended {self.finished}: " + _counts(self.states, "none yet"))
        parts.append(_elapsed(time.monotonic() - self.begun))
        return " | ".join(parts)

    def draw(self) -> None:
        self.stream.write(f"\r\x1b[K{self.line()}")
        self.stream.flush()

    def close(self) -> None:
        """The last state of the line, kept on screen."""
        self.draw()
        self.stream.write("\n")
        self.stream.flush()

    async def ticking(self, every_s: float = 0.5) -> None:
        """Redraw until cancelled, so the elapsed time moves while refunds are awaited."""
        while True:
            await asyncio.sleep(every_s)
            self.draw()

    def _above(self, text: str) -> None:
        self.stream.write(f"\r\x1b[K{text}\n")


def _counts(counts: dict[str, int], empty: str) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items()) or empty


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


async def run_batch(
    client: RefundClient | None,
    lines: list[BatchLine],
    *,
    concurrency: int,
    wait: bool,
    progress: BatchProgress,
    traceparent: str | None = None,
) -> list[BatchResult]:
    """Start every valid line (``concurrency`` at a time); ``wait`` also awaits outcomes
    (final, or NEEDS_ATTENTION). ``progress`` hears of each start and each outcome.
    ``client`` may be None only when no line is valid. Each start is a span under
    ``traceparent`` (else the current span): one batch, one trace."""
    gate = asyncio.Semaphore(concurrency)

    async def one(line: BatchLine) -> BatchResult:
        if line.request is None:
            result = BatchResult(line.number, None, Outcome.INVALID, detail=line.problem)
            progress.started(result)
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
        progress.started(result)
        if wait and result.outcome in (Outcome.CREATED, Outcome.ATTACHED):
            # Waiting holds no slot: the gate limits calls in flight, not refunds running.
            try:
                result.status = await wait_for_outcome(client, key)
            except RefundClientError as err:
                result.outcome, result.detail = Outcome.ERROR, str(err)
            progress.ended(result)
        return result

    results = await asyncio.gather(*(one(line) for line in lines))
    return sorted(results, key=lambda r: r.line)


# Worst first: a line the batch could not do outranks a refund's outcome; a refund waiting
# for an operator outranks one that ended without succeeding.
SEVERITY = (EXIT_ERROR, EXIT_CONFLICT, EXIT_INVALID, EXIT_NEEDS_ATTENTION, EXIT_NOT_SUCCEEDED)

_OUTCOME_CODE = {
    Outcome.ERROR: EXIT_ERROR,
    Outcome.CONFLICT: EXIT_CONFLICT,
    Outcome.INVALID: EXIT_INVALID,
    Outcome.CREATED: EXIT_OK,
    Outcome.ATTACHED: EXIT_OK,
}


def line_code(result: BatchResult) -> int:
    """One line's exit code: its outcome's, or (waited for) its refund's."""
    code = _OUTCOME_CODE[result.outcome]
    if code == EXIT_OK and result.status is not None:
        return outcome_code(result.status)
    return code


def exit_code(results: list[BatchResult]) -> int:
    """The worst line's code: 1 (errors), 3 (conflicts), 2 (invalid), then (with --wait)
    6 (needs attention), 5 (ended not succeeded); 0 when there is none of these."""
    codes = {line_code(r) for r in results}
    return next((code for code in SEVERITY if code in codes), EXIT_OK)


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
    return f"{table}\n\n{count(len(results), 'line')}: {totals or 'nothing to do'}"


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
