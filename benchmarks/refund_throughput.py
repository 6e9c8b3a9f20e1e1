"""What a refund costs against the least a workflow can cost, on one Temporal server.

``python -m benchmarks.refund_throughput [--count N] [--rounds R]`` (part of ``make bench``)
starts an embedded stack (dev server, simulators, the real refund worker process) and a
second worker process running :class:`benchmarks.bare_worker.BareWorkflow` (three no-op
activities: the baseline). Each round starts ``N`` workflows of each kind at once and times
them from the first start to the last completion, the kinds alternating within the round:

* ``bare``: the baseline workflow;
* ``paynow``: a Paynow refund whose refund is created SUCCESSFUL (validate, submit, status);
* ``mews``: a Mews refund charged at once;
* ``3 checks``: a Paynow refund pending at two status checks, SUCCESSFUL at the third.

Refunds are started through ``RefundClient`` as any starter does, each on a fresh payment
(made before the clock starts), with status checks asked 10 ms apart. The dev server fires a
timer of less than a second after about a second, so a 3-check refund waits about 2 s however
little it costs: rounds are large (``N`` = 100 by default) so that a round times what the
refunds cost, not that wait. Mews refunds are spread over ten hotels, each a simulator tenant
with its own AccessToken and a merchant profile of the refund worker, so Mews' limit of 200
requests per token per 30 s (the simulator's, on as always) is not what a round times.
Printed per kind: workflows/s (median of the rounds), the ratio to ``bare``, and
from one workflow of the last round the history events and workflow tasks (the refund's own
and its lane's), the status checks, the worker's CPU time per workflow (the refund worker's,
lanes included; the bare worker's for ``bare``: the most stable figure on a busy machine),
the dev server's and the simulators' CPU time per workflow, then the refund worker's peak
RSS. The figures are for the machine they were taken on; the ratios, measured in one run,
are what to compare.

The CPU columns say where a kind's cost lies: on 2 cores shared by the server, the worker
and the simulators, a kind's best rate against bare is about the ratio of their summed CPU
per workflow (bare's sum over the kind's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError

from benchmarks.bare_worker import BARE_TASK_QUEUE
from core.budgets import NO_BUDGET, BudgetError, parse_budget
from core.models import ProviderName, RefundRequest, RefundState
from devstack.process import ChildProcess
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient
from workflows.models import lane_id_for

# Enough refunds a round that the round is what the kind costs, not its latency: the dev
# server fires a timer asked for less than a second after about a second (measured: 10 ms,
# 200 ms and 600 ms timers all fired after 1.0 s), so a 3-check refund, which waits twice,
# takes over 2 s however little it costs, and a round of 30 of them timed mostly those waits.
DEFAULT_COUNT = 100
# Mews refunds are spread over this many hotels, each a tenant of the Mews simulator (its own
# AccessToken and enterprise) and a merchant profile of the refund worker. A round of Mews
# refunds on one token meets Mews' documented limit (200 requests per AccessToken per 30 s):
# the provider's limit, which `benchmarks.pending_scale` measures on one token, not what a
# refund costs. The simulator's rate limit stays on, and its 429s are printed.
MEWS_HOTELS = 10
MEWS_CLIENT_TOKEN_ENV = "BENCH_MEWS_CLIENT_TOKEN"  # noqa: S105 (a variable name)
DEFAULT_ROUNDS = 3
POLL_S = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# The marker the SDK records for each local activity.
LOCAL_ACTIVITY_MARKER = "core_local_activity"


@dataclass(frozen=True)
class Kind:
    label: str
    provider: ProviderName | None  # None: the bare workflow
    scenario: str = ""


KINDS = (
    Kind("bare", None),
    Kind("paynow", ProviderName.PAYNOW, "succeeds_immediately"),
    Kind("mews", ProviderName.MEWS, "succeeds_immediately"),
    Kind("3 checks", ProviderName.PAYNOW, "three_checks"),
)


@dataclass(frozen=True)
class Hotel:
    """A Mews property of the benchmark: a simulator tenant and a merchant profile."""

    merchant: str
    access_token_env: str
    access_token: str
    enterprise_id: str


def bench_hotels(count: int) -> tuple[Hotel, ...]:
    return tuple(
        Hotel(
            merchant=f"bench-hotel-{i}",
            access_token_env=f"BENCH_HOTEL_{i}_ACCESS_TOKEN",
            access_token=f"bench-hotel-{i}-{uuid.uuid4().hex}",
            enterprise_id=str(uuid.uuid4()),
        )
        for i in range(count)
    )


def hotels_toml(sim_url: str, hotels: Sequence[Hotel]) -> str:
    """The refund worker's profiles file: one Mews profile per hotel, its tokens named by
    environment variable (never in the file); budget unset, so ``REFUNDS_MEWS_BUDGET``."""
    return "".join(
        f"""
[mews.{h.merchant}]
base_url = "{sim_url}/mews"
portfolio = false
client_token_env = "{MEWS_CLIENT_TOKEN_ENV}"
access_token_env = "{h.access_token_env}"
"""
        for h in hotels
    )


async def add_hotels(http: httpx.AsyncClient, hotels: Sequence[Hotel], client_token: str) -> None:
    """Each hotel as a tenant of the Mews simulator (``http`` at the simulators' root)."""
    for h in hotels:
        answer = await http.put(
            f"/mews/_sim/tenants/{h.merchant}",
            json={
                "client_token": client_token,
                "access_token": h.access_token,
                "enterprise_ids": [h.enterprise_id],
            },
        )
        answer.raise_for_status()


@dataclass(frozen=True)
class Shape:
    """One workflow's history: events and workflow tasks, its lane's, its status checks."""

    events: int
    tasks: int
    lane_events: int = 0
    lane_tasks: int = 0
    checks: int = 0
    # Seconds between each timer's start and its firing, summed: the waits of the status
    # checks (the dev server fires a timer of less than a second after about a second).
    waited_s: float = 0.0


def local_activity_types(history: WorkflowHistory) -> list[str]:
    """The activity type of each local activity the history records (the SDK's
    ``core_local_activity`` markers, whose ``data`` detail is JSON), in order."""
    types = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
            continue
        data = json.loads(marker.details["data"].payloads[0].data)
        types.append(str(data["activity_type"]))
    return types


def shape_of(history: WorkflowHistory, lane: WorkflowHistory | None = None) -> Shape:
    def count(h: WorkflowHistory, kind: EventType.ValueType) -> int:
        return sum(1 for e in h.events if e.event_type == kind)

    completed = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    # Status checks as activities, and as local activities (patch local-provider-reads).
    checks = sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "poll_refund_status"
    ) + local_activity_types(history).count("poll_refund_status")
    return Shape(
        events=len(history.events),
        tasks=count(history, completed),
        lane_events=len(lane.events) if lane else 0,
        lane_tasks=count(lane, completed) if lane else 0,
        checks=checks,
        waited_s=timer_waits_s(history),
    )


def timer_waits_s(history: WorkflowHistory) -> float:
    """Seconds from each fired timer's start to its firing, summed (event times)."""
    started = {
        e.event_id: e.event_time.ToDatetime()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    }
    return sum(
        (
            e.event_time.ToDatetime() - started[e.timer_fired_event_attributes.started_event_id]
        ).total_seconds()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
        and e.timer_fired_event_attributes.started_event_id in started
    )


async def fresh_refund_request(
    http: httpx.AsyncClient,
    provider: ProviderName,
    scenario: str,
    key_prefix: str,
    hotel: Hotel | None = None,
) -> RefundRequest:
    """A request refunding 1.00 of a fresh simulator payment of ``scenario`` (``http`` at the
    simulators' root), under a new idempotency key; of ``hotel`` (a Mews tenant and profile)
    when given, else of the provider's ``default`` profile."""
    fields = {"enterprise_id": hotel.enterprise_id} if hotel else {}
    answer = await http.post(
        f"/{provider.value}/_sim/payments", json={"scenario": scenario, **fields}
    )
    answer.raise_for_status()
    payment = answer.json()
    return RefundRequest(
        idempotency_key=f"{key_prefix}-{uuid.uuid4().hex[:20]}",
        provider=provider,
        payment_id=payment["payment_id"],
        account_id=payment.get("account_id"),
        amount_minor=100,
        currency=payment["currency"],
        reason="benchmark",
        merchant=hotel.merchant if hotel else "default",
    )


def stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (field 3 on), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def cpu_ticks(fields: list[str]) -> int:
    """User + system CPU time of a ``stat_fields`` line, in clock ticks (fields 14, 15)."""
    return int(fields[11]) + int(fields[12])


def cpu_s(pid: int | None) -> float | None:
    """The process's CPU time so far (user + system), in seconds; None if it cannot be read."""
    fields = stat_fields(pid) if pid is not None else None
    if fields is None:
        return None
    return cpu_ticks(fields) / CLOCK_TICKS


class Bench:
    def __init__(
        self,
        stack: EmbeddedStack,
        client: RefundClient,
        http: httpx.AsyncClient,
        bare_pid: int | None,
        hotels: Sequence[Hotel] = (),
    ):
        self.stack = stack
        # Mews refunds take the hotels in turn (none: the default profile).
        self.hotels = itertools.cycle(hotels) if hotels else None
        self.client = client
        self.raw: Client = client.client
        self.http = http
        self.bare_pid = bare_pid
        # CPU seconds per workflow, per round, by process: "worker" is the refund worker for
        # refunds (their lanes included), the bare worker for the baseline; "server" the dev
        # server; "sim" the simulators.
        self.cpu: dict[str, dict[str, list[float]]] = {}

    async def timed_round(self, kind: Kind, count: int) -> tuple[float, str | RefundRequest]:
        pids = {
            "worker": self.bare_pid if kind.provider is None else self.stack.worker_pid,
            "server": self.stack.server_pid,
            "sim": self.stack.sim_pid,
        }
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        rate, sample = await self.round(kind, count)
        for name, pid in pids.items():
            start, end = before[name], cpu_s(pid)
            if start is not None and end is not None:
                per_kind = self.cpu.setdefault(kind.label, {})
                per_kind.setdefault(name, []).append((end - start) / count)
        return rate, sample

    def cpu_per_workflow(self, label: str, process: str) -> float | None:
        """Median CPU seconds per workflow of ``label`` in ``process``; None if unread."""
        samples = self.cpu.get(label, {}).get(process)
        return statistics.median(samples) if samples else None

    async def request(self, kind: Kind) -> RefundRequest:
        assert kind.provider is not None
        hotel = next(self.hotels) if self.hotels and kind.provider is ProviderName.MEWS else None
        return await fresh_refund_request(self.http, kind.provider, kind.scenario, "bench", hotel)

    async def round(self, kind: Kind, count: int) -> tuple[float, str | RefundRequest]:
        """Workflows/s for ``count`` of ``kind`` started at once; one of them to read."""
        if kind.provider is None:
            ids = [f"bench-bare-{uuid.uuid4().hex[:16]}" for _ in range(count)]
            began = time.perf_counter()
            handles = await asyncio.gather(
                *(
                    self.raw.start_workflow(
                        "BenchBareWorkflow", wid, id=wid, task_queue=BARE_TASK_QUEUE
                    )
                    for wid in ids
                )
            )
            await asyncio.gather(*(h.result() for h in handles))
            return count / (time.perf_counter() - began), ids[-1]
        requests = await asyncio.gather(*(self.request(kind) for _ in range(count)))
        began = time.perf_counter()
        await asyncio.gather(*(self.client.start(r) for r in requests))
        finals = await asyncio.gather(*(self.client.wait(r.idempotency_key) for r in requests))
        elapsed = time.perf_counter() - began
        wrong = [f.key for f in finals if f.state is not RefundState.SUCCEEDED]
        if wrong:
            raise SystemExit(f"benchmark refunds did not succeed: {wrong[:5]}")
        return count / elapsed, requests[-1]

    async def shape(self, sample: str | RefundRequest) -> Shape:
        if isinstance(sample, str):
            return shape_of(await self.raw.get_workflow_handle(sample).fetch_history())
        history = await self.client.handle(sample.idempotency_key).fetch_history()
        try:
            lane_id = lane_id_for(sample, self.client.task_queue)
            lane = await self.raw.get_workflow_handle(lane_id).fetch_history()
        except RPCError:
            lane = None
        return shape_of(history, lane)


def _status_mb(pid: int | None, field: str) -> float | None:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in MB; None if unread."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def ms(seconds: float | None, width: int) -> str:
    return f"{seconds * 1000:>{width}.1f}" if seconds is not None else f"{'?':>{width}}"


def total_cpu(bench: Bench, label: str) -> float | None:
    """Worker, server and simulator CPU seconds per workflow of ``label``; None if any
    of them was not read."""
    parts = [bench.cpu_per_workflow(label, process) for process in ("worker", "server", "sim")]
    if any(part is None for part in parts):
        return None
    return sum(part for part in parts if part is not None)


def peak_rss_mb(pid: int | None) -> float | None:
    """The process's peak resident set (VmHWM), in MB; None if it cannot be read."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int | None) -> float | None:
    """The process's resident set now (VmRSS), in MB; None if it cannot be read."""
    return _status_mb(pid, "VmRSS")


async def run(count: int, rounds: int, warmup: int, mews_budget: str = NO_BUDGET) -> int:
    hotels = bench_hotels(MEWS_HOTELS)
    client_token = f"bench-mews-client-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="refunds-bench-") as state:
        profiles = Path(state) / "profiles.toml"
        stack = EmbeddedStack(
            StackConfig(
                temporal_port=free_port(),
                ui_port=free_port(),
                sim_port=free_port(),
                state_dir=Path(state),
                poll_initial_s=POLL_S,
                poll_max_s=POLL_S,
                extra_worker_env={"REFUNDS_MEWS_BUDGET": mews_budget},
                secret_env={
                    "REFUNDS_PROFILES_FILE": str(profiles),
                    MEWS_CLIENT_TOKEN_ENV: client_token,
                    **{h.access_token_env: h.access_token for h in hotels},
                },
            )
        )
        profiles.write_text(hotels_toml(stack.sim_url, hotels))
        async with stack, bare_worker(stack) as bare:
            async with httpx.AsyncClient(base_url=stack.sim_url, timeout=30) as http:
                await add_hotels(http, hotels, client_token)
            return await measure(stack, count, rounds, warmup, bare.pid, mews_budget, hotels)


@contextlib.asynccontextmanager
async def bare_worker(stack: EmbeddedStack) -> AsyncIterator[ChildProcess]:
    """The baseline's worker process (``benchmarks.bare_worker``) against ``stack``'s server,
    polling by the time this yields; stopped on the way out."""
    bare = ChildProcess(
        "bare",
        [sys.executable, "-m", "benchmarks.bare_worker"],
        env=stack.env(),
        log_path=stack.log_dir / "bare.log",
    )
    bare.start()
    try:
        await ready(bare, stack.log_dir / "bare.log")
        yield bare
    finally:
        await bare.stop(grace_s=5)


def _says_ready(log: Path) -> bool:
    return log.exists() and "bare worker ready" in log.read_text()


async def ready(bare: ChildProcess, log: Path, timeout_s: float = 60.0) -> None:
    """Until the bare worker says it polls (its first workflows must not wait for it)."""
    deadline = time.monotonic() + timeout_s
    while not _says_ready(log):
        if not bare.alive or time.monotonic() > deadline:
            raise SystemExit(f"the bare worker did not start: see {log}")
        await asyncio.sleep(0.1)


async def measure(
    stack: EmbeddedStack,
    count: int,
    rounds: int,
    warmup: int,
    bare_pid: int | None,
    mews_budget: str = NO_BUDGET,
    hotels: Sequence[Hotel] = (),
) -> int:
    client = await RefundClient.connect(stack.settings())
    async with httpx.AsyncClient(base_url=stack.sim_url, timeout=30) as http:
        bench = Bench(stack, client, http, bare_pid, hotels)
        rates: dict[str, list[float]] = {k.label: [] for k in KINDS}
        samples: dict[str, str | RefundRequest] = {}
        # A warm-up round of each kind, not counted: imports, caches, the first lanes.
        for kind in KINDS:
            if warmup:
                await bench.round(kind, warmup)
        for _ in range(rounds):
            for kind in KINDS:
                rate, sample = await bench.timed_round(kind, count)
                rates[kind.label].append(rate)
                samples[kind.label] = sample
        shapes = {k.label: await bench.shape(samples[k.label]) for k in KINDS}
        journal = (await http.get("/mews/_sim/journal")).raise_for_status().json()
    mews_429 = sum(1 for e in journal["requests"] if e["status"] == 429)
    baseline = statistics.median(rates["bare"])
    print(f"{count} workflows of each kind per round, {rounds} rounds, medians; one dev server")
    where = f"{len(hotels)} hotels (an AccessToken and profile each)" if hotels else "one token"
    print(
        f"Mews refunds over {where}; Mews budget of the refund worker: {mews_budget} "
        "(REFUNDS_MEWS_BUDGET; its default, 200/30s, caps a token's Mews refunds near 3 a "
        f"second: the provider's limit, not their cost); Mews simulator 429s: {mews_429}"
    )
    print(
        f"{'kind':<14} {'per s':>7} {'ratio':>6} {'events':>7} {'tasks':>6} "
        f"{'lane ev':>8} {'lane tasks':>10} {'checks':>6} {'waited':>6} {'cpu ms':>7} "
        f"{'cpu x':>6} {'server ms':>9} {'sim ms':>6} {'cpu bound':>9}"
    )
    bare_cpu = bench.cpu_per_workflow("bare", "worker")
    bare_total = total_cpu(bench, "bare")
    for kind in KINDS:
        median = statistics.median(rates[kind.label])
        s = shapes[kind.label]
        cpu = bench.cpu_per_workflow(kind.label, "worker")
        cpu_x = f"{cpu / bare_cpu:>5.2f}x" if cpu is not None and bare_cpu else f"{'?':>6}"
        total = total_cpu(bench, kind.label)
        bound = f"{bare_total / total:>8.2f}x" if bare_total and total else f"{'?':>9}"
        print(
            f"{kind.label:<14} {median:>7.1f} {median / baseline:>5.2f}x {s.events:>7} "
            f"{s.tasks:>6} {s.lane_events:>8} {s.lane_tasks:>10} {s.checks:>6} "
            f"{s.waited_s:>5.1f}s {ms(cpu, 7)} {cpu_x} "
            f"{ms(bench.cpu_per_workflow(kind.label, 'server'), 9)} "
            f"{ms(bench.cpu_per_workflow(kind.label, 'sim'), 6)} {bound}"
        )
    print("waited: the one workflow's timers, start to firing (status checks' waits);")
    print("cpu ms: the worker's CPU time per workflow (the refund worker's, lanes included;")
    print("the bare worker's for bare); cpu x: against bare's; server ms, sim ms: the dev")
    print("server's and the simulators' CPU time per workflow; cpu bound: bare's CPU per")
    print("workflow (worker + server + sim) over the kind's, the ratio if CPU alone set rates.")
    rss = peak_rss_mb(stack.worker_pid)
    print(f"refund worker peak RSS: {rss:.0f} MB" if rss is not None else "peak RSS: unknown")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refund_throughput")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--warmup", type=int, default=5, help="uncounted workflows per kind")
    # No Mews budget by default, so that the Mews rate is what a refund costs; the simulator
    # keeps its own rate limit, and its 429s are printed.
    parser.add_argument(
        "--mews-budget",
        default=NO_BUDGET,
        help="REFUNDS_MEWS_BUDGET for the refund worker (default: none; e.g. 200/30s)",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--count and --rounds must be 1 or more, --warmup 0 or more")
    try:
        parse_budget(args.mews_budget)
    except BudgetError as err:
        parser.error(str(err))
    return asyncio.run(run(args.count, args.rounds, args.warmup, args.mews_budget))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown (temporalio issue #300)
