"""Many refunds pending at once: worker memory, status-check load, and how fast they drain.

``python -m benchmarks.pending_scale --count N --workers W --provider mews|paynow`` starts an
embedded stack (dev server, both simulators, ``W`` real refund worker processes, and the
:mod:`benchmarks.bare_worker` process for the baseline) and then, in one run:

1. **start**: makes ``N`` payments of the simulator's ``held`` scenario (a held refund stays
   pending at every status read until it is settled) and starts ``N`` refunds on them through
   ``RefundClient``, at most ``--concurrency`` at once;
2. **to pending**: waits until visibility counts all ``N`` in ``RefundState`` ``PENDING``;
3. **hold**: keeps them pending for the ramp (the status checks' backoff from
   ``REFUNDS_POLL_INITIAL_S`` up to ``REFUNDS_POLL_MAX_S``) and then ``--rounds`` poll rounds,
   counting the simulator's status-check requests of those rounds from its journal;
4. **drain**: settles every held refund at once (``POST /_sim/refunds/settle``) and times
   until visibility counts all ``N`` final;
5. **bare**: starts ``N`` ``BenchBareWorkflow`` (three no-op activities) on the same server,
   at most ``--concurrency`` at once, and times until visibility counts all ``N`` completed.

A **poll round** is ``REFUNDS_POLL_MAX_S`` seconds: once its backoff has ramped up, each
pending refund checks its status once per round, so one status check per refund per round
(1000 per 1000 refunds) is what one check per refund costs. The figure printed is the
status-check requests the simulator saw during the measured rounds, divided by the rounds and
by ``N / 1000``. Status checks are ``payments/getAll`` for Mews and ``GET
/v3/refunds/{id}/status`` for Paynow; every request sent counts, answered or refused (429).

Throughout, every worker process's resident set is sampled (``/proc``, each second) and its
kernel-kept peak (``VmHWM``) read at the end; the CPU time of each process (dev server,
simulators, workers) is read at each phase's end. The Mews simulator keeps its rate limit on
(200 requests per access token per sliding 30 s, then 429), and every Mews refund uses its one
demo access token. No HTTP API runs, so no provider webhooks: refunds learn of the settle
from their next status check, up to ``REFUNDS_POLL_MAX_S`` later, which the drain includes.
The drain rate is ``N`` over the time from the settle until the last refund is final; the
bare rate ``N`` over the time from the first start until the last bare workflow completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from benchmarks.bare_worker import BARE_TASK_QUEUE
from benchmarks.refund_throughput import (
    CLOCK_TICKS,
    bare_worker,
    cpu_ticks,
    fresh_refund_request,
    peak_rss_mb,
    rss_mb,
    stat_fields,
)
from core.models import FINAL_STATES, ProviderName, RefundRequest, RefundState
from devstack.stack import EmbeddedStack, StackConfig
from simulators.mews import MewsSimulator
from simulators.serving import free_port
from starter.client import WORKFLOW_TYPE, RefundClient

DEFAULT_COUNT = 200
DEFAULT_WORKERS = 1
DEFAULT_CONCURRENCY = 50
DEFAULT_POLL_INITIAL_S = 5.0
DEFAULT_POLL_MAX_S = 30.0
DEFAULT_ROUNDS = 2
# Give up when no count moves for this long (a stuck run must not hang forever).
DEFAULT_STALL_S = 600.0
SCENARIO = "held"
PHASES = ("start", "to pending", "hold", "drain", "bare")
BARE_TYPE = "BenchBareWorkflow"
BARE_WARMUP = 10
# What the simulators count as a status check, by provider: (method, path pattern).
STATUS_CHECK: dict[ProviderName, tuple[str, re.Pattern[str]]] = {
    ProviderName.MEWS: ("POST", re.compile(r"^/api/connector/v1/payments/getAll$")),
    ProviderName.PAYNOW: ("GET", re.compile(r"^/v3/refunds/[^/]+/status$")),
}


# ------------------------------------------------------------------------------- processes


def group_pids(pgid: int) -> list[int]:
    """Every live process of the process group (a stack child is its group's leader)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        # fields[2] is the process group (field 5 of stat).
        if fields is not None and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the group's live processes."""
    total = 0
    for pid in group_pids(pgid):
        fields = stat_fields(pid)
        if fields is not None:
            total += cpu_ticks(fields)
    return total / CLOCK_TICKS


def stack_children() -> dict[str, int]:
    """This process's children, by a short name: the stack's and the bare worker."""
    named: dict[str, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if words and Path(words[0]).name == "temporal":
            named["temporal"] = int(entry.name)
        elif "sim" in words:
            named["sim"] = int(entry.name)
    return named


@dataclass
class Sampler:
    """Each worker's resident set, sampled every ``every_s``; the maximum per phase."""

    workers: dict[str, int]
    every_s: float = 1.0
    phase: str = "start"
    peaks: dict[tuple[str, str], float] = field(default_factory=dict)

    def sample(self) -> None:
        for name, pid in self.workers.items():
            now = rss_mb(pid)
            if now is not None:
                key = (self.phase, name)
                self.peaks[key] = max(self.peaks.get(key, 0.0), now)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)


# ---------------------------------------------------------------------------------- counts


def refunds_query(states: Iterable[RefundState]) -> str:
    values = ", ".join(f'"{s.value}"' for s in states)
    return f'WorkflowType = "{WORKFLOW_TYPE}" AND RefundState IN ({values})'


RUNNING = 'ExecutionStatus = "Running"'
BARE_DONE = f'WorkflowType = "{BARE_TYPE}" AND ExecutionStatus = "Completed"'


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def breakdown(client: Client) -> dict[str, int]:
    """How many refunds are in each RefundState (one count each, states with none left out)."""
    counts = {s.value: await count(client, refunds_query([s])) for s in RefundState}
    return {state: n for state, n in counts.items() if n}


async def wait_for_count(
    client: Client,
    query: str,
    target: int,
    *,
    label: str,
    stall_s: float,
    every_s: float,
) -> float:
    """Seconds until the count of ``query`` reaches ``target``; progress every 10 s; exits
    the run (with the refunds' states) when the count has not moved for ``stall_s``."""
    began = last_move = last_print = time.monotonic()
    seen = -1
    while True:
        now_count = await count(client, query)
        now = time.monotonic()
        if now_count >= target:
            return now - began
        if now_count != seen:
            seen, last_move = now_count, now
        if now - last_move > stall_s:
            states = await breakdown(client)
            raise SystemExit(
                f"{label}: stuck at {now_count} of {target} for {stall_s:.0f} s; refunds by "
                f"state: {states}"
            )
        if now - last_print >= 10:
            print(f"  {label}: {now_count}/{target} after {now - began:.0f} s", flush=True)
            last_print = now
        await asyncio.sleep(every_s)


async def start_bare(client: Client, n: int, concurrency: int) -> list[str]:
    """Start ``n`` bare workflows, at most ``concurrency`` at once; their ids."""
    ids = [f"bench-bare-{uuid.uuid4().hex[:16]}" for _ in range(n)]
    await bounded(
        [
            functools.partial(
                client.start_workflow, BARE_TYPE, wid, id=wid, task_queue=BARE_TASK_QUEUE
            )
            for wid in ids
        ],
        concurrency,
    )
    return ids


async def bounded(jobs: Iterable[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run the jobs, at most ``limit`` at once; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


# ------------------------------------------------------------------------------------ run


@dataclass(frozen=True)
class Plan:
    count: int
    workers: int
    provider: ProviderName
    concurrency: int = DEFAULT_CONCURRENCY
    poll_initial_s: float = DEFAULT_POLL_INITIAL_S
    poll_max_s: float = DEFAULT_POLL_MAX_S
    rounds: int = DEFAULT_ROUNDS
    stall_s: float = DEFAULT_STALL_S
    # Settings for the refund workers only, e.g. REFUNDS_WORKER_MAX_CACHED_WORKFLOWS.
    worker_env: tuple[tuple[str, str], ...] = ()

    @property
    def ramp_s(self) -> float:
        """From a refund's first wait until its waits are ``poll_max_s`` long: the sum of
        the shorter waits (5 + 10 + 20 s for 5 s doubling to 30 s)."""
        total, wait = 0.0, self.poll_initial_s
        while wait < self.poll_max_s:
            total += wait
            wait *= 2
        return total

    @property
    def every_s(self) -> float:
        """How often visibility is counted: finer for small runs, whose phases are short."""
        return 0.25 if self.count <= 1000 else 1.0


@dataclass
class Figures:
    phases: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    states_pending: dict[str, int] = field(default_factory=dict)
    # Open workflows when all were pending: every kind (lanes too), and the refunds.
    running: tuple[int, int] = (0, 0)
    states_final: dict[str, int] = field(default_factory=dict)
    window: tuple[datetime, datetime] | None = None
    # When each phase ended (the journal's clock: the same machine's UTC).
    ends: dict[str, datetime] = field(default_factory=dict)
    settle_at: datetime | None = None
    journal: list[dict[str, Any]] = field(default_factory=list)
    peak_rss: dict[str, float | None] = field(default_factory=dict)
    # (phase, worker) -> the largest resident set sampled, MB.
    sampled_rss: dict[tuple[str, str], float] = field(default_factory=dict)


async def run(plan: Plan) -> int:
    with tempfile.TemporaryDirectory(prefix="refunds-pending-") as state:
        stack = EmbeddedStack(
            StackConfig(
                temporal_port=free_port(),
                ui_port=free_port(),
                sim_port=free_port(),
                state_dir=Path(state),
                poll_initial_s=plan.poll_initial_s,
                poll_max_s=plan.poll_max_s,
                extra_worker_env=dict(plan.worker_env),
            )
        )
        async with stack:
            for _ in range(plan.workers - 1):
                await stack.add_worker()
            async with bare_worker(stack):
                figures = await measure(stack, plan)
    report(plan, figures)
    return 0


async def measure(stack: EmbeddedStack, plan: Plan) -> Figures:
    figures = Figures()
    workers = {f"worker-{i + 1}": w.pid for i, w in enumerate(stack.workers) if w.pid}
    groups = {**stack_children(), **workers}
    sampler = Sampler(workers)
    sampling = asyncio.create_task(sampler.run())
    client = await RefundClient.connect(stack.settings())
    raw = client.client
    # Uncounted: the bare worker's first workflows are slow (its caches, the new task queue).
    warm = await start_bare(raw, BARE_WARMUP, plan.concurrency)
    await asyncio.gather(*(raw.get_workflow_handle(wid).result() for wid in warm))
    provider = plan.provider.value
    began = time.monotonic()

    def phase_done(name: str, seconds: float) -> None:
        sampler.sample()
        figures.phases[name] = seconds
        figures.ends[name] = datetime.now(UTC)
        figures.cpu[name] = {group: cpu_seconds(pgid) for group, pgid in groups.items()}
        following = PHASES[PHASES.index(name) + 1 :]
        sampler.phase = following[0] if following else name

    try:
        async with httpx.AsyncClient(base_url=stack.sim_url, timeout=120) as http:

            async def request() -> RefundRequest:
                return await fresh_refund_request(http, plan.provider, SCENARIO, "pending")

            print(f"making {plan.count} {provider} payments ({SCENARIO})...", flush=True)
            requests: list[RefundRequest] = await bounded([request] * plan.count, plan.concurrency)
            print(f"starting {plan.count} refunds...", flush=True)
            began = time.monotonic()
            await bounded([functools.partial(client.start, r) for r in requests], plan.concurrency)
            phase_done("start", time.monotonic() - began)

            pending = refunds_query([RefundState.PENDING])
            waited = await wait_for_count(
                raw,
                pending,
                plan.count,
                label="pending",
                stall_s=plan.stall_s,
                every_s=plan.every_s,
            )
            phase_done("to pending", waited)
            figures.states_pending = await breakdown(raw)
            figures.running = (
                await count(raw, RUNNING),
                await count(raw, f'{RUNNING} AND WorkflowType = "{WORKFLOW_TYPE}"'),
            )

            hold_s = plan.ramp_s + plan.rounds * plan.poll_max_s
            print(
                f"all pending; holding {hold_s:.0f} s (ramp {plan.ramp_s:.0f} s, then "
                f"{plan.rounds} rounds of {plan.poll_max_s:g} s counted)...",
                flush=True,
            )
            await asyncio.sleep(plan.ramp_s)
            window_from = datetime.now(UTC)
            await asyncio.sleep(plan.rounds * plan.poll_max_s)
            figures.window = (window_from, datetime.now(UTC))
            phase_done("hold", hold_s)

            figures.settle_at = datetime.now(UTC)
            settled = await http.post(f"/{provider}/_sim/refunds/settle")
            settled.raise_for_status()
            if settled.json()["settled"] != plan.count:
                raise SystemExit(f"the simulator settled {settled.json()} of {plan.count}")
            print("settled; draining...", flush=True)
            drained = await wait_for_count(
                raw,
                refunds_query(FINAL_STATES),
                plan.count,
                label="final",
                stall_s=plan.stall_s,
                every_s=plan.every_s,
            )
            phase_done("drain", drained)
            figures.states_final = await breakdown(raw)
            journal = await http.get(f"/{provider}/_sim/journal")
            journal.raise_for_status()
            figures.journal = journal.json()["requests"]
            figures.peak_rss = {name: peak_rss_mb(pid) for name, pid in workers.items()}

        print(f"starting {plan.count} bare workflows...", flush=True)
        began = time.monotonic()
        await start_bare(raw, plan.count, plan.concurrency)
        await wait_for_count(
            raw,
            BARE_DONE,
            BARE_WARMUP + plan.count,
            label="bare",
            stall_s=plan.stall_s,
            every_s=plan.every_s,
        )
        phase_done("bare", time.monotonic() - began)
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        figures.sampled_rss = dict(sampler.peaks)
    return figures


# --------------------------------------------------------------------------------- report


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"])


def status_checks(
    journal: Sequence[dict[str, Any]], provider: ProviderName, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The journal's status-check requests made in ``[start, end)``."""
    method, path = STATUS_CHECK[provider]
    return [
        e
        for e in journal
        if e["method"] == method and path.match(e["path"]) and start <= _at(e) < end
    ]


def mews_rate_limit() -> str:
    """The Mews simulator's rate limit, as it is configured by default (the stack's)."""
    parameters = inspect.signature(MewsSimulator).parameters
    limit = parameters["rate_limit"].default
    window = parameters["rate_window_s"].default
    return f"{limit} requests per access token per {window:g} s"


def report(plan: Plan, f: Figures) -> None:
    n = plan.count
    ph = f.phases
    drain_rate = n / ph["drain"]
    bare_rate = n / ph["bare"]
    assert f.window is not None
    assert f.settle_at is not None
    window_s = (f.window[1] - f.window[0]).total_seconds()
    rounds = window_s / plan.poll_max_s
    checks = status_checks(f.journal, plan.provider, *f.window)
    refused = sum(1 for e in checks if e["status"] == 429)
    per_round = len(checks) / rounds / (n / 1000)
    after_settle = [e for e in f.journal if _at(e) >= f.settle_at]
    too_many = sum(1 for e in f.journal if e["status"] == 429)

    print()
    print(
        f"pending_scale: {n} {plan.provider.value} refunds ({SCENARIO} at the simulator), "
        f"{plan.workers} worker process(es), one dev server, at most {plan.concurrency} "
        "starts at once"
    )
    print(
        f"status checks every {plan.poll_initial_s:g} s doubling to {plan.poll_max_s:g} s "
        "(REFUNDS_POLL_INITIAL_S / REFUNDS_POLL_MAX_S); no webhooks (polling only)"
    )
    if plan.worker_env:
        print("worker settings: " + ", ".join(f"{k}={v}" for k, v in plan.worker_env))
    if plan.provider is ProviderName.MEWS:
        print(f"Mews simulator rate limit: on, {mews_rate_limit()}; one access token")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"start: {ph['start']:.1f} s ({n / ph['start']:.1f} refunds started/s)")
    print(f"to pending: {ph['to pending']:.1f} s more until all {n} PENDING")
    print(f"states when all pending: {f.states_pending}")
    print(
        f"open workflows when all pending: {f.running[0]} ({f.running[1]} refunds, "
        f"{f.running[0] - f.running[1]} others: lanes, bare)"
    )
    print(
        f"poll round: REFUNDS_POLL_MAX_S = {plan.poll_max_s:g} s, counted over "
        f"{window_s:.0f} s ({rounds:.2f} rounds) after a {plan.ramp_s:.0f} s ramp"
    )
    print(
        f"status checks while pending: {len(checks)} requests ({refused} answered 429) = "
        f"{per_round:.1f} per poll round per 1000 refunds"
    )
    print(f"drain: {ph['drain']:.1f} s from the settle to all {n} final")
    print(f"final states: {f.states_final}")
    print(f"drain rate: {drain_rate:.1f} refunds/s")
    print(f"bare: {ph['bare']:.1f} s for {n} {BARE_TYPE} ({bare_rate:.1f} workflows/s)")
    print(f"drain / bare: {drain_rate / bare_rate:.2f}x")
    print(
        f"HTTP 429 at the simulator: {too_many} in the whole run "
        f"({sum(1 for e in after_settle if e['status'] == 429)} after the settle); "
        f"provider requests: {len(f.journal)}"
    )
    print("provider requests by phase (429s): " + "; ".join(_requests_line(f)))
    for name, peak in f.peak_rss.items():
        phases = ", ".join(
            f"{phase} {value:.0f}"
            for phase in ("start", "to pending", "hold", "drain")
            if (value := f.sampled_rss.get((phase, name))) is not None
        )
        shown = f"{peak:.0f} MB" if peak is not None else "unknown"
        print(f"peak RSS {name}: {shown} (sampled max by phase, MB: {phases})")
    print("CPU seconds by phase: " + "; ".join(_cpu_line(f)))


_PAYNOW_ID = re.compile(r"/[A-Za-z0-9]{4}(-[A-Za-z0-9]{3}){3}(?=/|$)")


def _requests_line(f: Figures) -> list[str]:
    """Per phase up to the drain's end, each kind of provider request: count (429s)."""
    parts, before = [], datetime.min.replace(tzinfo=UTC)
    for phase in PHASES[:-1]:
        end = f.ends[phase]
        kinds: dict[str, list[int]] = {}
        for e in f.journal:
            if before <= _at(e) < end:
                seen = kinds.setdefault(
                    f"{e['method']} {_PAYNOW_ID.sub('/{id}', e['path'])}", [0, 0]
                )
                seen[0] += 1
                seen[1] += e["status"] == 429
        listed = ", ".join(
            f"{kind} {n} ({refused})" for kind, (n, refused) in sorted(kinds.items())
        )
        parts.append(f"{phase}: {listed or 'none'}")
        before = end
    return parts


def _cpu_line(f: Figures) -> list[str]:
    lines, before = [], dict.fromkeys(next(iter(f.cpu.values()), {}), 0.0)
    for phase, now in f.cpu.items():
        spent = ", ".join(f"{group} {now[group] - before[group]:.0f}" for group in now)
        lines.append(f"{phase}: {spent}")
        before = now
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pending_scale")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument(
        "--provider", choices=[p.value for p in ProviderName], default=ProviderName.PAYNOW.value
    )
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--poll-initial", type=float, default=DEFAULT_POLL_INITIAL_S)
    parser.add_argument("--poll-max", type=float, default=DEFAULT_POLL_MAX_S)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--stall", type=float, default=DEFAULT_STALL_S)
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the refund workers, e.g. REFUNDS_WORKER_MAX_CACHED_WORKFLOWS=500",
    )
    args = parser.parse_args(argv)
    if any("=" not in pair for pair in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    if min(args.count, args.workers, args.concurrency, args.rounds) < 1:
        parser.error("--count, --workers, --concurrency and --rounds must be 1 or more")
    if not 0 < args.poll_initial <= args.poll_max:
        parser.error("0 < --poll-initial <= --poll-max")
    plan = Plan(
        count=args.count,
        workers=args.workers,
        provider=ProviderName(args.provider),
        concurrency=args.concurrency,
        poll_initial_s=args.poll_initial,
        poll_max_s=args.poll_max,
        rounds=args.rounds,
        stall_s=args.stall,
        worker_env=tuple((k, v) for k, _, v in (p.partition("=") for p in args.worker_env)),
    )
    return asyncio.run(run(plan))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown (temporalio issue #300)
