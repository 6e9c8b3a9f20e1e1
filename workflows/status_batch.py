"""`RefundStatusBatchWorkflow`: one status read per batch of pending refunds (issue 12, item 3).

A pending Mews refund used to read its status on its own: one ``payments/getAll`` per refund
per check, 2,000 pending refunds on one access token costing 2,000 requests of its budget of
200 per 30 s each round. Instead, refunds whose provider reads in batches (Mews: up to 1,000
``PaymentIds`` in one getAll) register with the batch workflow of their budget queue (one per
access token: :func:`status_batch_id`), which reads every refund that is due in one activity
per 1,000 (``check_refund_statuses``, run on the budget queue, where the server's task-queue
rate limit spends the token's budget) and signals each refund its result.

**Schedule.** Each refund keeps its own backoff, exactly :meth:`RefundWorkflow._next_delay`
(:func:`poll_delay_s`: ``poll_initial_s`` doubling up to ``poll_max_s``, by the checks made so
far). A check is due its delay after the previous check was due *and* after the round that
read it started, rounded *up* to a multiple of that delay since the epoch
(:func:`next_due_ms`). The rounding is what lets one read serve many refunds: refunds at the
same delay fall due at the same moments, whenever each started (without it, 2,000 refunds at
a 300 s cap, started at different times, would fall due at 2,000 different moments and cost
about as many reads as before). So two reads of a refund are never closer than its own delay
(less :data:`WINDOW`); at the cap, rounds that start on time read it exactly every cap; the
first check after registering, and checks while the delay still doubles, may come up to one
delay (the first) or half a delay (the doubling) later than an unbatched refund's would, and a
round that starts more than :data:`WINDOW` late moves its refunds to a later multiple. A round
takes every refund due within :data:`WINDOW` of its start: of the earliest due time when it
starts on time, of the moment it starts when it starts late (patch
:data:`CATCH_UP_PATCH`; before it, a late round took only the :data:`WINDOW` after the
earliest due time, so a batch that fell behind read thin slices of its backlog, one round
each, and fell further behind: 1,000 pending refunds cost about 40 reads a round).

**Results.** Each refund of a round is told its result by the ``provider_status`` signal
(with patch :data:`ON_CHANGE_PATCH`, not a pending result it was told already: below)
(:data:`PROVIDER_STATUS_SIGNAL`, payload :class:`ProviderStatus`): ``found`` with the
provider's :class:`ProviderRefund`, ``not_found`` (what ``get_refund`` raises as
``NotFoundError``), or ``failed`` (the read failed: the activity's error, ``final_error`` when
it was non-retryable), with ``checks`` counted as :class:`RefundWorkflow` counts them (found,
not found and final failures count; a spent call budget does not) and ``next_check_at`` (when
the batch reads it next, for a pending result under the patch its keep-alive read; ``None``:
no longer watched). A ``found`` result whose status is final
ends the watch; anything else keeps it: a refund the provider does not show, or whose reads
fail, is never dropped, and failed reads back off (:func:`failure_backoff_s`, at least the
refund's own delay). A refund that no longer exists (the signal fails: external workflow not
found) is dropped. ``declined``: the batch is full (:data:`MAX_WATCHED`); the refund polls
on its own.

**Only what changed** (patch :data:`ON_CHANGE_PATCH`). A pending result that is exactly the
one the refund was told last is not signalled again before its keep-alive read
(:func:`untold`), so a refund pending for days costs its reads and no workflow task of its
own each round. A pending result that is told names as its ``next_check_at`` not the next
read but the keep-alive read (:func:`keep_alive_ms`: the last of its reads within ``quiet_s``,
an hour, of the next one, at most :data:`QUIET_READS` reads on, as rounds go when on time):
the refund hears by then (and a read's call budget), so its watchdog waits for that. A read
after which the next one would come later than that (late rounds) tells. The refund hears
every other result at once: its first after each registration, a change (in any field
:func:`fingerprint` lists), a final status, not found, a failed read. A signal that fails is
told again at the next read; what was told is carried through continue-as-new. The refund
checks its attention deadline at each result it hears: so a refund pending past it is
flagged at its next keep-alive, within the hour; and its watchdog notices a lost batch after
the keep-alive read, up to an hour later than before.

**The refund's side (the contract).**

1. *Register* when it starts watching a provider refund of a provider with a batched read
   (Mews), in each run (continue-as-new included: registering again is harmless), and again
   whenever its provider refund id changes (an operator's adopt): signal ``watch``
   (:class:`WatchRefund`: its workflow id, provider refund id, provider, merchant, account and
   enterprise ids, ``poll_initial_s``/``poll_max_s`` from its options and ``checks_so_far`` =
   its checks counter) to the external workflow :func:`status_batch_id` ``(budget_queue)``. If
   that signal fails because the batch workflow does not exist (it ended when idle, or never
   ran), start it as a child: ``workflow.start_child_workflow(RefundStatusBatchWorkflow.run,
   StatusBatchInput(task_queue=budget_queue), id=status_batch_id(budget_queue),
   task_queue=<the refunds' own task queue>, parent_close_policy=ParentClosePolicy.ABANDON,
   id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)`` (a new run after the old one
   completed), tolerate ``WorkflowAlreadyStartedError`` (another refund started it first), then
   signal ``watch`` again. Registering again is idempotent: it merges with the entry kept
   (checks: the larger; due: the earlier).
2. *Receive* ``provider_status``: ignore a payload whose ``refund_id`` is not its current
   provider refund id; otherwise play it out as ``_check_status`` does: ``found`` ->
   ``_adopt(refund)`` (a final status ends the refund); ``not_found`` and ``failed`` with
   ``final_error`` -> flag attention with the ``message`` (as a refused check); ``failed``
   otherwise -> note the error and check the attention deadline; take ``checks`` (the larger
   of its own and this) and ``next_check_at`` into its status.
3. *Watchdog*: wait for the next result until :func:`expected_by` (``next_check_at`` of the last
   result, or the due time of a fresh registration, plus :data:`WATCHDOG_SLACK`, longer than a
   read's whole call budget). No result by then: register again (step 1). So a batch workflow
   that was lost (terminated, reset) never leaves a refund silently unwatched.
4. ``check_now`` (a provider webhook) -> signal ``watch`` with ``due_in_s=0``: the next round
   reads it (at once, with whatever falls due within :data:`WINDOW`).
5. ``declined`` -> poll on its own, as before, until its next run.
6. Ending for another reason than a final result (cancel at the provider, an operator's
   close): signal ``unwatch`` (best effort; a refund gone is dropped at its next result anyway).

Continue-as-new carries the registry in a compact, columnar form (:class:`CarriedWatches`:
each field name once, then about 120-260 bytes a refund, its ids and what it was told; at
most about 1.3 MB at :data:`MAX_WATCHED`, below the 2 MB payload limit), after
:data:`EVENTS_PER_RUN` events, :data:`BYTES_PER_RUN` of history or when the server suggests
it, once every handler has finished. A round costs two events per refund signalled (about
400 bytes each), three per read (about 130 bytes in and 300 bytes out per refund) and a
timer: a round of 2,000 refunds that tells each one (every round before the patch) is about
4,000 events and 1.7 MB, so a run holds two or three such rounds; a round that tells none is
its reads' events and a timer. The workflow ends
after :data:`IDLE` with nobody watched. Everything here is deterministic: the registry
(:class:`WatchRegistry`) and the schedule are pure functions of the workflow's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.status_batch import (
        MAX_BATCH,
        CheckedStatuses,
        CheckStatusesInput,
        StatusBatchActivities,
        StatusTarget,
        not_found_sentence,
    )
    from core.models import ProviderName, ProviderRefund, ProviderRefundStatus, forward_compatible
    from providers.errors import provider_title
    from workflows.policies import CALL_BUDGET, RETRY

STATUS_BATCH_PREFIX = "refund-status-batch:"
# The refund workflow's signal that carries a result (its handler is registered under it).
PROVIDER_STATUS_SIGNAL = "provider_status"
# Refunds falling due within this of a round's start are read in that round.
WINDOW = timedelta(seconds=1)
# A round that starts late reads everything due by then (see the module docstring).
CATCH_UP_PATCH = "status-batch-catch-up"
# With nobody watched this long, the workflow ends (a refund registering later starts it).
IDLE = timedelta(minutes=10)
# Continue-as-new past either (or when the server suggests it), checked between rounds.
EVENTS_PER_RUN = 10_000
BYTES_PER_RUN = 4_000_000
# Refunds one batch watches at most; more are declined (they poll on their own).
MAX_WATCHED = 5_000
# External signals in flight at once: the server allows 2,000 pending per workflow.
SIGNALS_AT_ONCE = 500
# One read's timeout; its call budget and retry policy are a refund's own status read's
# (workflows/policies.py; the timeout is RefundOptions.call_timeout_s's default).
CALL_TIMEOUT = timedelta(seconds=60)
# Failed reads: the next one waits at least this, doubling per failed round, capped.
FAILURE_BACKOFF_FIRST_S = 10.0
FAILURE_BACKOFF_MAX_S = 600.0
# A refund hears nothing this long after the next_check_at it was told (a read's due time;
# under ON_CHANGE_PATCH, for a pending result, its keep-alive read): it registers again.
# Longer than a read's whole call budget (a failed read is reported only when it is spent).
WATCHDOG_SLACK = CALL_BUDGET + timedelta(minutes=5)
# A pending result the refund was told already is not signalled again until a keep-alive
# read, the last of its reads within QUIET (at most QUIET_READS reads) of the next one, whose
# time the told result names as its next_check_at (before the patch, every round signalled
# every refund it read: 2,000 pending refunds cost 2,000 signals, their 2,000 workflow tasks
# and 4,000 of the batch's events a round).
ON_CHANGE_PATCH = "status-batch-on-change"
QUIET = timedelta(hours=1)
QUIET_READS = 100

# The failure type of a signal to an external workflow that does not exist or has ended.
EXTERNAL_NOT_FOUND = "ExternalWorkflowExecutionNotFound"
_T = TypeVar("_T")
_WINDOW_MS = int(WINDOW.total_seconds() * 1000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def status_batch_id(budget_queue: str) -> str:
    """The batch workflow of a budget queue (one per provider access token)."""
    return f"{STATUS_BATCH_PREFIX}{budget_queue}"


# ----------------------------------------------------------------------------- messages


class WatchRefund(BaseModel):
    """`watch` signal: a refund asks to have its status read in batches."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workflow_id: Annotated[str, Field(min_length=1)]
    refund_id: Annotated[str, Field(min_length=1, max_length=100)]
    provider: ProviderName = ProviderName.MEWS
    merchant: Annotated[str, Field(min_length=1, max_length=64)] = "default"
    account_id: str | None = None
    enterprise_id: str | None = None
    poll_initial_s: Annotated[float, Field(gt=0)]
    poll_max_s: Annotated[float, Field(gt=0)]
    # The refund's checks counter (RefundWorkflow._checks): its backoff goes on from there.
    checks_so_far: Annotated[int, Field(ge=0)] = 0
    # None: due after the refund's own delay; a number: due that soon (0: `check_now`).
    due_in_s: Annotated[float, Field(ge=0)] | None = None


class UnwatchRefund(BaseModel):
    """`unwatch` signal: the refund no longer needs its status read."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workflow_id: str


class StatusOutcome(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    DECLINED = "declined"


class ProviderStatus(BaseModel):
    """`provider_status` signal to a refund: one read of its provider refund (see the module
    docstring for how the refund plays it out)."""

    model_config = forward_compatible()

    refund_id: str
    outcome: StatusOutcome
    refund: ProviderRefund | None = None
    # not_found, failed, declined: the operator's sentence (credential-free).
    message: str | None = None
    # failed: the read was refused for good (non-retryable), as a refused single check.
    final_error: bool = False
    # The checks counted so far, as RefundWorkflow counts them.
    checks: int = 0
    # When the batch reads it next (ON_CHANGE_PATCH, a pending result: its keep-alive read,
    # the latest the refund hears next; reads before it that find nothing new are not told);
    # None: it is no longer watched.
    next_check_at: datetime | None = None


class WatchSchedule(BaseModel):
    """What refunds share: whose adapter reads them, and their backoff."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    provider: ProviderName
    merchant: str
    poll_initial_s: float
    poll_max_s: float


class CarriedWatches(BaseModel):
    """The registry, column by column (row i of each column is one refund), so that the
    continue-as-new input holds each field name once, not once per refund."""

    model_config = forward_compatible()

    schedules: tuple[WatchSchedule, ...] = ()
    workflow_ids: tuple[str, ...] = ()
    refund_ids: tuple[str, ...] = ()
    account_ids: tuple[str | None, ...] = ()
    enterprise_ids: tuple[str | None, ...] = ()
    # Index into `schedules`.
    schedule: tuple[int, ...] = ()
    checks: tuple[int, ...] = ()
    # Epoch milliseconds.
    due_ms: tuple[int, ...] = ()
    failures: tuple[int, ...] = ()
    # What each refund was told (Watched.told, .keep_alive_ms); empty: nothing (a run before
    # ON_CHANGE_PATCH carried neither).
    told: tuple[str | None, ...] = ()
    keep_alive_ms: tuple[int | None, ...] = ()

    @model_validator(mode="after")
    def _rectangular(self) -> Self:
        rows = len(self.workflow_ids)
        columns = (
            self.refund_ids,
            self.account_ids,
            self.enterprise_ids,
            self.schedule,
            self.checks,
            self.due_ms,
            self.failures,
        )
        if any(len(column) != rows for column in columns):
            raise ValueError("every column holds one value per watched refund")
        if len(self.told) not in (0, rows) or len(self.keep_alive_ms) != len(self.told):
            raise ValueError("what was told is carried for every watched refund or for none")
        if any(not 0 <= i < len(self.schedules) for i in self.schedule):
            raise ValueError("a schedule index points at no schedule")
        return self


class StatusBatchInput(BaseModel):
    """The batch workflow's input: its budget queue, and what continue-as-new carries."""

    model_config = forward_compatible()

    # The task queue its reads run on (the access token's budget queue).
    task_queue: Annotated[str, Field(min_length=1)]
    # Registered at start, as if signalled.
    watches: tuple[WatchRefund, ...] = ()
    carried: CarriedWatches | None = None
    rounds: int = 0
    reads: int = 0
    # Knobs (tests lower them).
    events_per_run: Annotated[int, Field(ge=100)] = EVENTS_PER_RUN
    idle_s: Annotated[float, Field(gt=0)] = IDLE.total_seconds()
    max_watched: Annotated[int, Field(ge=1)] = MAX_WATCHED
    call_timeout_s: Annotated[float, Field(ge=1, le=600)] = CALL_TIMEOUT.total_seconds()
    # How long an unchanged pending result may go untold (ON_CHANGE_PATCH); 0: every read is
    # told, as before the patch.
    quiet_s: Annotated[float, Field(ge=0, le=86_400)] = QUIET.total_seconds()


class StatusBatchStatus(BaseModel):
    """`status_batch` query answer."""

    model_config = forward_compatible(frozen=False)

    watched: int
    next_round_at: datetime | None
    rounds: int
    reads: int
    last_error: str | None = None


# ----------------------------------------------------------------------------- schedule


def poll_delay_s(poll_initial_s: float, poll_max_s: float, checks: int) -> float:
    """The wait after ``checks`` checks: :meth:`RefundWorkflow._next_delay`, in seconds."""
    exponent = min(max(checks - 1, 0), 30)
    return float(min(poll_initial_s * 2**exponent, poll_max_s))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def align_up_ms(at_ms: int, step_ms: int) -> int:
    """The first multiple of ``step_ms`` (since the epoch) at or after ``at_ms``."""
    return -(-at_ms // step_ms) * step_ms


def first_due_ms(
    now_ms: int, poll_initial_s: float, poll_max_s: float, checks: int, due_in_s: float | None
) -> int:
    """When a refund registering now is first due: ``due_in_s`` from now if given, else its
    own delay after ``checks`` checks, rounded up to a multiple of that delay."""
    if due_in_s is not None:
        return now_ms + round(due_in_s * 1000)
    delay = _ms(poll_delay_s(poll_initial_s, poll_max_s, checks))
    return align_up_ms(now_ms + delay, delay)


def next_due_ms(previous_due_ms: int, read_at_ms: int, delay_s: float) -> int:
    """The next check of a refund whose check was due at ``previous_due_ms`` and read in a
    round that started at ``read_at_ms``: its delay after the previous due time and after the
    read (up to :data:`WINDOW` less: a round a moment late keeps its place), rounded up to a
    multiple of the delay. So reads of a refund are never closer than its own delay (the
    window aside), and a round that started late moves its refunds to a later multiple."""
    delay = _ms(delay_s)
    after_read = read_at_ms + delay - min(_WINDOW_MS, delay // 2)
    return align_up_ms(max(previous_due_ms + delay, after_read), delay)


def failure_backoff_s(failures: int) -> float:
    """The least wait after ``failures`` failed reads in a row (0 after none)."""
    if failures <= 0:
        return 0.0
    doubled: float = FAILURE_BACKOFF_FIRST_S * 2.0 ** min(failures - 1, 30)
    return min(doubled, FAILURE_BACKOFF_MAX_S)


def fingerprint(refund: ProviderRefund) -> str:
    """A short digest of what a provider refund says (what the batch compares). Carried
    through continue-as-new and compared with one the code of a later run makes, possibly
    on replay: so it is built from this fixed list of fields in plain formats, never from
    the model's JSON (a field added later, with its default, would change every digest and
    with it the signals a replay sends). Changing the list needs a patch."""
    fields = (
        refund.refund_id,
        refund.status.value,
        refund.raw_status,
        refund.amount_minor,
        refund.currency,
        refund.failure_reason,
        refund.created_at.isoformat() if refund.created_at else None,
        refund.payer_amount_minor,
        refund.voucher_amount_minor,
        refund.pending_may_last_s,
    )
    text = "\x1f".join("" if value is None else str(value) for value in fields)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def untold(entry: Watched, refund: ProviderRefund | None) -> bool:
    """Whether a result (``refund``; None: not found) of ``entry``'s read, recorded (its
    ``due_ms`` is the next read), may go untold (patch ON_CHANGE_PATCH): it is pending,
    exactly what the refund was told last, and the next read still comes no later than the
    keep-alive read that told result named. So the read after which the next one would pass
    the keep-alive read tells, whether rounds ran on time or not: the refund hears by then."""
    return (
        refund is not None
        and refund.status is ProviderRefundStatus.PENDING
        and entry.keep_alive_ms is not None
        and entry.due_ms <= entry.keep_alive_ms
        and fingerprint(refund) == entry.told
    )


def keep_alive_ms(entry: Watched, quiet_ms: int) -> int:
    """The keep-alive read of a refund told a pending result now (``entry`` recorded: its
    ``due_ms`` is the next read): the last of its reads, as its schedule goes when rounds
    start on time, due within ``quiet_ms`` of the next one and at most :data:`QUIET_READS`
    after it. The refund hears again then at the latest (a change: at once)."""
    at, checks = entry.due_ms, entry.checks
    for _ in range(QUIET_READS):
        checks += 1
        following = next_due_ms(at, at, entry.schedule.delay_s(checks))
        if following > entry.due_ms + quiet_ms:
            break
        at = following
    return at


def expected_by(next_check_at: datetime) -> datetime:
    """The refund's watchdog: no result by then, it registers again."""
    return next_check_at + WATCHDOG_SLACK


def registered_due_at(now: datetime, watch: WatchRefund) -> datetime:
    """When a refund registering now (``watch``) is first due, as the batch computes it (the
    refund's watchdog starts from it: :func:`expected_by`)."""
    due = first_due_ms(
        _epoch_ms(now), watch.poll_initial_s, watch.poll_max_s, watch.checks_so_far, watch.due_in_s
    )
    return _from_ms(due)


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def chunked(items: Sequence[Watched], size: int) -> Iterator[list[Watched]]:
    """``items`` in consecutive runs of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Schedule:
    provider: ProviderName
    merchant: str
    poll_initial_s: float
    poll_max_s: float

    def delay_s(self, checks: int) -> float:
        return poll_delay_s(self.poll_initial_s, self.poll_max_s, checks)


@dataclass
class Watched:
    """One refund the batch reads."""

    workflow_id: str
    refund_id: str
    account_id: str | None
    enterprise_id: str | None
    schedule: Schedule
    checks: int
    due_ms: int
    failures: int = 0
    # Bumped by each `watch`: a round's result for an older registration must not undo it.
    generation: int = field(default=0, compare=False)
    # The pending refund last told (its :func:`fingerprint`; None: none) and the keep-alive
    # read that result named (ON_CHANGE_PATCH); keep_alive_ms None: tell the next result
    # whatever it is (never told a pending one, a signal that failed, the refund asked again).
    told: str | None = None
    keep_alive_ms: int | None = None

    def target(self) -> StatusTarget:
        return StatusTarget(
            refund_id=self.refund_id, account_id=self.account_id, enterprise_id=self.enterprise_id
        )


@dataclass(frozen=True)
class Ticket:
    """A watched refund as a round took it: its result applies only to that registration."""

    workflow_id: str
    refund_id: str
    generation: int
    due_ms: int
    # When the round that reads it started.
    read_at_ms: int


class WatchRegistry:
    """The watched refunds and their schedule; pure (times are passed in), so both the
    workflow and unit tests drive it."""

    def __init__(self, max_watched: int = MAX_WATCHED) -> None:
        self.max_watched = max_watched
        self.entries: dict[str, Watched] = {}
        self._schedules: dict[Schedule, Schedule] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _schedule(self, schedule: Schedule) -> Schedule:
        return self._schedules.setdefault(schedule, schedule)

    def watch(self, request: WatchRefund, now_ms: int) -> bool:
        """Register (or refresh) a refund; False when the batch is full (declined)."""
        schedule = self._schedule(
            Schedule(request.provider, request.merchant, request.poll_initial_s, request.poll_max_s)
        )
        entry = self.entries.get(request.workflow_id)
        same_refund = entry is not None and entry.refund_id == request.refund_id
        # A refresh never forgets checks made: its backoff goes on from the larger count.
        checks = max(entry.checks, request.checks_so_far) if entry and same_refund else None
        if checks is None:
            checks = request.checks_so_far
        due = first_due_ms(
            now_ms, request.poll_initial_s, request.poll_max_s, checks, request.due_in_s
        )
        if entry is None:
            if len(self.entries) >= self.max_watched:
                return False
            self.entries[request.workflow_id] = Watched(
                workflow_id=request.workflow_id,
                refund_id=request.refund_id,
                account_id=request.account_id,
                enterprise_id=request.enterprise_id,
                schedule=schedule,
                checks=request.checks_so_far,
                due_ms=due,
            )
            return True
        entry.refund_id = request.refund_id
        entry.account_id = request.account_id
        entry.enterprise_id = request.enterprise_id
        entry.schedule = schedule
        entry.generation += 1
        # The refund asked (its watchdog, a new run, check_now): its next result is told.
        entry.keep_alive_ms = None
        entry.checks = checks
        if same_refund:
            # A refresh (the refund's watchdog, a new run, check_now): never later.
            entry.due_ms = min(entry.due_ms, due)
        else:
            entry.due_ms = due
            entry.failures = 0
        return True

    def unwatch(self, workflow_id: str) -> None:
        self.entries.pop(workflow_id, None)

    def earliest_due_ms(self) -> int | None:
        return min((e.due_ms for e in self.entries.values()), default=None)

    def due(self, round_ms: int, window_ms: int = _WINDOW_MS) -> list[Watched]:
        """Every refund due by ``round_ms`` + ``window_ms``, in registration order."""
        return [e for e in self.entries.values() if e.due_ms <= round_ms + window_ms]

    def current(self, ticket: Ticket) -> Watched | None:
        """The entry a ticket was taken from, if it still watches the same refund."""
        entry = self.entries.get(ticket.workflow_id)
        if entry is None or entry.refund_id != ticket.refund_id:
            return None
        return entry

    def record(self, ticket: Ticket, *, counted: bool, failed: bool, now_ms: int) -> Watched | None:
        """Advance a refund's schedule after a round's read of it; None when the entry is
        gone or watches another refund now (nothing to tell it, nothing to advance).

        ``counted``: the read counts as a check (RefundWorkflow's rules). ``failed``: the
        read failed (``now_ms``: when that was known; the backoff starts then). An entry
        whose status is final stays until :meth:`unwatch` (after delivery), due as if
        pending, in case its delivery fails."""
        entry = self.current(ticket)
        if entry is None:
            return None
        if counted:
            entry.checks += 1
        entry.failures = entry.failures + 1 if failed else 0
        delay_s = entry.schedule.delay_s(entry.checks)
        if failed:
            wait = max(delay_s, failure_backoff_s(entry.failures))
            due = align_up_ms(now_ms + _ms(wait), _ms(delay_s))
        else:
            due = next_due_ms(ticket.due_ms, ticket.read_at_ms, delay_s)
        # Registered again meanwhile (check_now, a refresh): that registration's due time
        # stands if it is earlier.
        entry.due_ms = min(entry.due_ms, due) if entry.generation != ticket.generation else due
        return entry

    def carry(self) -> CarriedWatches:
        schedules: dict[Schedule, int] = {}
        rows = list(self.entries.values())
        for entry in rows:
            schedules.setdefault(entry.schedule, len(schedules))
        return CarriedWatches(
            schedules=tuple(
                WatchSchedule(
                    provider=s.provider,
                    merchant=s.merchant,
                    poll_initial_s=s.poll_initial_s,
                    poll_max_s=s.poll_max_s,
                )
                for s in schedules
            ),
            workflow_ids=tuple(e.workflow_id for e in rows),
            refund_ids=tuple(e.refund_id for e in rows),
            account_ids=tuple(e.account_id for e in rows),
            enterprise_ids=tuple(e.enterprise_id for e in rows),
            schedule=tuple(schedules[e.schedule] for e in rows),
            checks=tuple(e.checks for e in rows),
            due_ms=tuple(e.due_ms for e in rows),
            failures=tuple(e.failures for e in rows),
            told=tuple(e.told for e in rows),
            keep_alive_ms=tuple(e.keep_alive_ms for e in rows),
        )

    @classmethod
    def from_carried(cls, carried: CarriedWatches | None, max_watched: int) -> WatchRegistry:
        registry = cls(max_watched)
        if carried is None:
            return registry
        schedules = [
            registry._schedule(Schedule(s.provider, s.merchant, s.poll_initial_s, s.poll_max_s))
            for s in carried.schedules
        ]
        # Carried entries are kept even beyond max_watched: they were accepted.
        for row in zip(
            carried.workflow_ids,
            carried.refund_ids,
            carried.account_ids,
            carried.enterprise_ids,
            carried.schedule,
            carried.checks,
            carried.due_ms,
            carried.failures,
            strict=True,
        ):
            workflow_id, refund_id, account_id, enterprise_id, index, checks, due, failures = row
            registry.entries[workflow_id] = Watched(
                workflow_id=workflow_id,
                refund_id=refund_id,
                account_id=account_id,
                enterprise_id=enterprise_id,
                schedule=schedules[index],
                checks=checks,
                due_ms=due,
                failures=failures,
            )
        if carried.told:
            for workflow_id, told, keep_alive in zip(
                carried.workflow_ids, carried.told, carried.keep_alive_ms, strict=True
            ):
                entry = registry.entries[workflow_id]
                entry.told, entry.keep_alive_ms = told, keep_alive
        return registry


def read_groups(due: Iterable[Watched]) -> list[tuple[ProviderName, str, list[Watched]]]:
    """A round's reads: the due refunds by provider and merchant profile, at most
    :data:`MAX_BATCH` a read."""
    groups: dict[tuple[ProviderName, str], list[Watched]] = {}
    for entry in due:
        groups.setdefault((entry.schedule.provider, entry.schedule.merchant), []).append(entry)
    return [
        (provider, merchant, chunk)
        for (provider, merchant), entries in groups.items()
        for chunk in chunked(entries, MAX_BATCH)
    ]


def round_start_ms(earliest_due_ms: int, now_ms: int) -> int:
    """The moment a round due at ``earliest_due_ms`` and starting at ``now_ms`` reads from (it
    takes every refund due within :data:`WINDOW` of it): the earliest due time, or now when
    the round is late and the run has taken :data:`CATCH_UP_PATCH`."""
    if now_ms > earliest_due_ms and workflow.patched(CATCH_UP_PATCH):
        return now_ms
    return earliest_due_ms


# ----------------------------------------------------------------------------- workflow


@dataclass(frozen=True)
class _Delivery:
    ticket: Ticket
    status: ProviderStatus
    # Stop watching once delivered (a final status).
    done: bool


@workflow.defn(name="RefundStatusBatch")
class RefundStatusBatchWorkflow:
    @workflow.init
    def __init__(self, params: StatusBatchInput) -> None:
        self._params = params
        self._registry = WatchRegistry.from_carried(params.carried, params.max_watched)
        self._rounds = params.rounds
        # Whether an unchanged pending result goes untold (ON_CHANGE_PATCH; set by run()).
        self._on_change = False
        self._reads = params.reads
        self._last_error: str | None = None
        self._declined: list[WatchRefund] = []
        self._next_round_ms: int | None = None
        # A registration earlier than the round being waited for wakes the wait.
        self._wake = False
        now_ms = _epoch_ms(workflow.now())
        for request in params.watches:
            self._accept(request, now_ms)

    # ----------------------------------------------------------------- messages

    @workflow.signal(name="watch")
    def watch(self, request: WatchRefund) -> None:
        self._accept(request, _epoch_ms(workflow.now()))

    @workflow.signal(name="unwatch")
    def unwatch(self, request: UnwatchRefund) -> None:
        self._registry.unwatch(request.workflow_id)
        if len(self._registry) == 0:
            # Nobody left: the idle time starts now, not at the round it waited for.
            self._wake = True

    @workflow.query(name="status_batch")
    def status(self) -> StatusBatchStatus:
        earliest = self._registry.earliest_due_ms()
        return StatusBatchStatus(
            watched=len(self._registry),
            next_round_at=_from_ms(earliest) if earliest is not None else None,
            rounds=self._rounds,
            reads=self._reads,
            last_error=self._last_error,
        )

    def _accept(self, request: WatchRefund, now_ms: int) -> None:
        if not self._registry.watch(request, now_ms):
            self._declined.append(request)
            self._wake = True
            return
        due = self._registry.entries[request.workflow_id].due_ms
        if self._next_round_ms is None or due < self._next_round_ms:
            self._wake = True

    # ----------------------------------------------------------------- main loop

    @workflow.run
    async def run(self, params: StatusBatchInput) -> None:
        # Asked in the run's first activation (a run before the patch tells every read).
        self._on_change = workflow.patched(ON_CHANGE_PATCH)
        while True:
            await self._send_declines()
            if self._should_continue_as_new():
                await self._continue_as_new()
            earliest = self._registry.earliest_due_ms()
            if earliest is None:
                self._show()
                if await self._idle_over():
                    return
                continue
            now_ms = _epoch_ms(workflow.now())
            if earliest > now_ms:
                self._next_round_ms = earliest
                self._wake = False
                self._show()
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._wake,
                        timeout=timedelta(milliseconds=earliest - now_ms),
                        timeout_summary="next status round",
                    )
                self._next_round_ms = None
                continue
            await self._round(round_start_ms(earliest, now_ms))

    async def _idle_over(self) -> bool:
        """Wait for a registration; True when none came for the idle time (end the run)."""
        self._wake = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._wake or len(self._registry) > 0,
                timeout=timedelta(seconds=self._params.idle_s),
                timeout_summary="idle",
            )
        if len(self._registry) > 0 or self._declined:
            return False
        await workflow.wait_condition(workflow.all_handlers_finished)
        return len(self._registry) == 0 and not self._declined

    async def _round(self, round_ms: int) -> None:
        due = self._registry.due(round_ms)
        started_ms = _epoch_ms(workflow.now())
        self._rounds += 1
        groups = read_groups(due)
        self._show(reading=len(due))
        outcomes = await asyncio.gather(
            *(
                self._read(provider, merchant, chunk, started_ms)
                for provider, merchant, chunk in groups
            )
        )
        deliveries = [d for batch in outcomes for d in batch]
        await self._deliver(deliveries)

    async def _read(
        self, provider: ProviderName, merchant: str, chunk: list[Watched], started_ms: int
    ) -> list[_Delivery]:
        """One read of up to MAX_BATCH refunds, and what to tell each of them."""
        tickets = [
            Ticket(e.workflow_id, e.refund_id, e.generation, e.due_ms, started_ms) for e in chunk
        ]
        self._reads += 1
        try:
            result: (
                CheckedStatuses | ApplicationError | str
            ) = await workflow.execute_activity_method(
                StatusBatchActivities.check_statuses,
                CheckStatusesInput(
                    provider=provider,
                    merchant=merchant,
                    refunds=tuple(e.target() for e in chunk),
                ),
                task_queue=self._params.task_queue,
                start_to_close_timeout=timedelta(seconds=self._params.call_timeout_s),
                schedule_to_close_timeout=CALL_BUDGET,
                retry_policy=RETRY,
                summary=f"status of {len(chunk)} {provider.value} refunds ({merchant})",
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                result = cause
            else:
                result = _describe(err, provider)
        now_ms = _epoch_ms(workflow.now())
        deliveries: list[_Delivery] = []
        for ticket in tickets:
            delivery = self._outcome(ticket, provider, result, now_ms)
            if delivery is not None:
                deliveries.append(delivery)
        return deliveries

    def _outcome(
        self,
        ticket: Ticket,
        provider: ProviderName,
        result: CheckedStatuses | ApplicationError | str,
        now_ms: int,
    ) -> _Delivery | None:
        refund: ProviderRefund | None = None
        message: str | None = None
        final_error = False
        if isinstance(result, CheckedStatuses):
            refund = result.found.get(ticket.refund_id)
            outcome = StatusOutcome.FOUND if refund is not None else StatusOutcome.NOT_FOUND
            if refund is None:
                message = not_found_sentence(provider.value, ticket.refund_id)
        else:
            outcome = StatusOutcome.FAILED
            final_error = isinstance(result, ApplicationError)
            message = result.message if isinstance(result, ApplicationError) else result
            self._last_error = message
        final = refund is not None and refund.status is not ProviderRefundStatus.PENDING
        entry = self._registry.record(
            ticket,
            # RefundWorkflow counts a read, a not-found and a refused read; not a spent budget.
            counted=outcome is not StatusOutcome.FAILED or final_error,
            failed=outcome is StatusOutcome.FAILED,
            now_ms=now_ms,
        )
        if entry is None:
            return None
        next_check_ms = entry.due_ms
        if self._on_change:
            if untold(entry, refund):
                return None
            # Told now: a pending result is told again at its keep-alive read, which it names
            # as the next check (the latest the refund hears next), or at once if it changes.
            if refund is not None and not final:
                entry.told = fingerprint(refund)
                entry.keep_alive_ms = next_check_ms = keep_alive_ms(
                    entry, _ms(self._params.quiet_s)
                )
            else:
                entry.told = entry.keep_alive_ms = None
        status = ProviderStatus(
            refund_id=ticket.refund_id,
            outcome=outcome,
            refund=refund,
            message=message,
            final_error=final_error,
            checks=entry.checks,
            next_check_at=None if final else _from_ms(next_check_ms),
        )
        return _Delivery(ticket, status, done=final)

    async def _deliver(self, deliveries: list[_Delivery]) -> None:
        """Signal each refund its result, SIGNALS_AT_ONCE at a time; a refund that no longer
        exists is dropped, and so is one told a final status."""
        for wave in _waves(deliveries, SIGNALS_AT_ONCE):
            sent = await asyncio.gather(
                *(self._signal(d.ticket.workflow_id, d.status) for d in wave)
            )
            for delivery, outcome in zip(wave, sent, strict=True):
                entry = self._registry.current(delivery.ticket)
                if outcome is _Signal.FAILED and entry is not None:
                    # Not heard: tell it again at its next read.
                    entry.keep_alive_ms = None
                gone = outcome is _Signal.GONE
                if (gone or (delivery.done and outcome is _Signal.SENT)) and entry is not None:
                    self._registry.unwatch(delivery.ticket.workflow_id)

    async def _signal(self, workflow_id: str, status: ProviderStatus) -> _Signal:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(
                PROVIDER_STATUS_SIGNAL, status
            )
        except FailureError as err:
            if _not_found(err):
                return _Signal.GONE
            workflow.logger.warning("provider_status to %s failed: %s", workflow_id, err)
            return _Signal.FAILED
        return _Signal.SENT

    async def _send_declines(self) -> None:
        while self._declined:
            waves = list(_waves(self._declined, SIGNALS_AT_ONCE))
            self._declined = []
            for wave in waves:
                await asyncio.gather(
                    *(
                        self._signal(
                            request.workflow_id,
                            ProviderStatus(
                                refund_id=request.refund_id,
                                outcome=StatusOutcome.DECLINED,
                                message=(
                                    f"the status batch watches {self._params.max_watched} "
                                    "refunds already: this one reads its status on its own"
                                ),
                                checks=request.checks_so_far,
                            ),
                        )
                        for request in wave
                    )
                )

    # ----------------------------------------------------------------- continue-as-new

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() >= self._params.events_per_run
            or info.get_current_history_size() >= BYTES_PER_RUN
            or info.is_continue_as_new_suggested()
        )

    async def _continue_as_new(self) -> None:
        # Signals that came meanwhile are in the registry before it is carried.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._send_declines()
        workflow.continue_as_new(
            self._params.model_copy(
                update={
                    "watches": (),
                    "carried": self._registry.carry(),
                    "rounds": self._rounds,
                    "reads": self._reads,
                }
            )
        )

    def _show(self, reading: int | None = None) -> None:
        """The batch's current details in the Temporal UI (not recorded in the history)."""
        lines = [
            "**Refund status batch, not a refund**: reads the status of the refunds below "
            f"in batches, on task queue {self._params.task_queue}.",
            f"watched: {len(self._registry)}; rounds: {self._rounds}; reads: {self._reads}",
        ]
        if reading is not None:
            lines.append(f"reading {reading} refunds now")
        elif self._next_round_ms is not None:
            lines.append(f"next round: {_from_ms(self._next_round_ms).isoformat()}")
        if self._last_error:
            lines.append(f"last failed read: {self._last_error}")
        lines.append('Refunds only: list with the query `WorkflowType="RefundWorkflow"`.')
        workflow.set_current_details("\n\n".join(lines))


class _Signal(StrEnum):
    SENT = "sent"
    GONE = "gone"
    FAILED = "failed"


def _waves(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _not_found(err: FailureError) -> bool:
    """The signalled workflow does not exist, or has ended: the SDK's failure of a signal to
    an external workflow the server cannot find."""
    return isinstance(err, ApplicationError) and err.type == EXTERNAL_NOT_FOUND


def _describe(err: ActivityError, provider: ProviderName) -> str:
    """A read whose call budget ran out: the innermost failure's words (the provider error's
    credential-free sentence), as RefundWorkflow describes a failed status check."""
    detail: str | None = None
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, ApplicationError):
            detail = current.message
        elif isinstance(current, ActivityTimeoutError) and detail is None:
            kind = current.type.name.lower() if current.type else "timeout"
            detail = f"no answer in time (timeout: {kind})"
        current = current.__cause__
    said = (detail or str(err)).rstrip(".")
    return (
        f"The batched status read at {provider_title(provider.value)} did not succeed within "
        f"its call budget: {said}. It is tried again automatically; nothing to do unless it "
        "lasts."
    )
