"""`refunds chaos`: many refunds at once while the providers misbehave and the worker dies.

On an embedded stack (its own, on free ports, unless given one) it creates a fresh payment
per refund at the simulators, starts ``count`` refunds (both providers, random scenarios and
amounts, some started twice with the same key, some canceled along the way) and, while they
run, injects random simulator faults (5xx bursts, 429 with ``Retry-After``, latency,
"processed then the answer is held", dropped answers) and SIGKILLs and restarts the worker a
few times, each time while a refund call it made has been processed by the provider and its
answer is held (Mews and Paynow in turn: where re-sending would refund twice).

Two harder cases are part of every run:

* **Shared accounts.** Some Mews payments sit on one customer account, two to four per
  account, in one currency and often refunded by the same amount (a Mews lookup by account
  cannot tell such refunds apart); the refunds of one account are started at the same moment.
* **A long outage.** One provider's refund call answers 503 for a long stretch (a timed
  simulator fault: as long as the starts and the storm together, at most
  :data:`OUTAGE_MAX_S`), beginning while refunds are being started. Refunds ride it out.

Then it waits for every refund to end, up to a deadline, reads the simulators' journals and
prints one table:

* started, succeeded, failed, canceled, rejected;
* **needs attention**: parked in NEEDS_ATTENTION for an operator (still running: a workflow
  that waits for ``resolve`` never ends by itself, so the run stops waiting for it once every
  other refund has ended or the deadline passed);
* **start errors**: refunds that could not be started;
* refunds made at the provider for the run's payments;
* **duplicates**: refunds with more than one refund at the provider (per idempotency key at
  Paynow; per payment at Mews, which has no keys but whose simulator knows which payment each
  refund refunded, shared accounts included);
* **orphans**: the provider made one refund but the workflow reports another, or none;
* **money mismatches**: the refund made (or the amount the workflow reports, or the provider
  confirmed) differs from the amount asked;
* **lost**: neither final nor parked by the deadline, or the workflow failed.

A run is OK, exit 0, only when every refund was started and ended final and correct: no
refund parked, unstarted, duplicated, orphaned, mismatched or lost; else exit 1 (the verdict
and its table: :mod:`devstack.chaos_report`). The seed is printed: the same seed makes the
same refunds, accounts, faults, outage and kill times (the interleaving still varies).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from temporalio.service import RPCError

from cli.output import to_json
from core.models import ProviderName, RefundOptions, RefundRequest, RefundState
from devstack.chaos_report import ChaosRefund, ChaosReport, awaits_operator, judge, render_report
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient, RefundClientError
from workflows.models import CancelRequest
from workflows.refund import RefundWorkflow

# Short timings, so a killed worker's activity is retried within seconds.
POLL_INITIAL_S = 0.5
POLL_MAX_S = 2.0
HTTP_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 5.0
WORKER_ENV = {
    "REFUNDS_HTTP_TIMEOUT_S": str(HTTP_TIMEOUT_S),
    "REFUNDS_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S),
}
# A Mews refund whose answer was lost waits this long before each of its lookups (the
# simulator shows a refund at once; the default, 30 s, is for the real Mews).
RECONCILE_SETTLE_S = 5.0
# The longest outage a run injects, however long the run.
OUTAGE_MAX_S = 120.0
OUTAGE_STATUS = 503
REASON = "chaos run: goods returned"
# How long a kill waits for a refund call to hold before it kills anyway.
HOLD_WAIT_S = 10.0

# (scenario, weight) per provider; the weights favour refunds that go through.
SCENARIOS: dict[ProviderName, tuple[tuple[str, int], ...]] = {
    ProviderName.PAYNOW: (
        ("succeeds", 45),
        ("succeeds_immediately", 10),
        ("slow", 15),
        ("fails", 10),
        ("awaiting", 12),
        ("not_confirmed", 8),
    ),
    ProviderName.MEWS: (
        ("succeeds", 50),
        ("succeeds_immediately", 10),
        ("slow", 15),
        ("fails", 10),
        ("not_refundable_type", 8),
        ("not_charged", 7),
    ),
}
# Paynow's smallest card refund is 1.00 PLN.
MIN_AMOUNT_MINOR = {ProviderName.PAYNOW: 100, ProviderName.MEWS: 1}
# Where a fault may be aimed: (path fragment, method); None hits any call.
FAULT_TARGETS: dict[ProviderName, tuple[tuple[str | None, str | None], ...]] = {
    ProviderName.PAYNOW: (("/refunds", "POST"), ("/status", "GET"), (None, None)),
    ProviderName.MEWS: (("payments/refund", "POST"), ("payments/getAll", "POST"), (None, None)),
}
FAULT_KINDS: tuple[tuple[str, int], ...] = (
    ("status", 30),
    ("rate_limit", 20),
    ("latency", 20),
    ("process_then_hang", 15),
    ("drop", 15),
)


@dataclass(frozen=True)
class ChaosConfig:
    count: int = 200
    seed: int | None = None
    concurrency: int = 16
    # Worker SIGKILLs (each followed by a restart) during the storm.
    kills: int = 3
    # Mean pause between two injected faults.
    fault_every_s: float = 1.0
    # Faults and kills go on this long after the last start.
    storm_after_starts_s: float = 60.0
    # After the storm, how long refunds may take to end before the rest count as lost.
    deadline_s: float = 300.0
    cancel_share: float = 0.08
    twin_share: float = 0.1
    progress_every_s: float = 5.0
    # Share of the Mews refunds whose payment sits on a shared account (2-4 per account).
    shared_share: float = 0.35
    # Of those accounts, the share whose refunds all ask the same amount.
    same_amount_share: float = 0.5
    # The long outage of one provider's refund call: None scales it to the run (the starts
    # and the storm, at most OUTAGE_MAX_S); 0 for none.
    outage_s: float | None = None


class ChaosRun:
    """One run against a running stack; :meth:`run` returns the report."""

    def __init__(
        self,
        stack: EmbeddedStack,
        client: RefundClient,
        config: ChaosConfig,
        *,
        progress: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.client = client
        self.config = config
        self.progress = progress
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().randrange(10**6)
        )
        self.rng = random.Random(self.seed)
        self.run_id = secrets.token_hex(3)
        self.refunds: list[ChaosRefund] = []
        self.faults = Counter[str]()
        self.kills = 0
        self.outage: str | None = None
        self.began = time.monotonic()
        self._starts_done = asyncio.Event()

    def say(self, text: str) -> None:
        self.progress(f"{time.monotonic() - self.began:7.1f}s  {text}")

    async def run(self) -> ChaosReport:
        async with httpx.AsyncClient(base_url=self.stack.sim_url, timeout=30) as http:
            await self._prepare(http)
            groups = {r.account_group for r in self.refunds if r.account_group is not None}
            shared = sum(1 for r in self.refunds if r.account_group is not None)
            self.say(
                f"chaos {self.run_id} (seed {self.seed}): {len(self.refunds)} refunds "
                f"({shared} on {len(groups)} shared Mews accounts), "
                f"{self.config.kills} worker kills, a fault every ~{self.config.fault_every_s}s"
            )
            storm_over = asyncio.Event()
            watchers: list[asyncio.Task[None]] = []
            chaos = [
                asyncio.create_task(self._inject_faults(http, storm_over)),
                asyncio.create_task(self._kill_workers(http)),
                asyncio.create_task(self._long_outage(http)),
            ]
            reporter = asyncio.create_task(self._report_progress())
            try:
                await self._start_all(watchers)
                await asyncio.sleep(self.config.storm_after_starts_s)
                storm_over.set()
                await asyncio.gather(*chaos)
                await self._clear_faults(http)
                self.say("storm over: faults cleared, worker up; waiting for every refund")
                await self._wait()
            finally:
                storm_over.set()
                for task in [*chaos, *watchers, reporter]:
                    task.cancel()
                await asyncio.gather(*chaos, *watchers, reporter, return_exceptions=True)
            await self._collect_unfinished()
            journals = {p: await self._journal(http, p) for p in ProviderName}
        return self.report(journals)

    # ------------------------------------------------------------------ refunds

    async def _prepare(self, http: httpx.AsyncClient) -> None:
        plans: list[tuple[int, ProviderName, str]] = []
        for number in range(1, self.config.count + 1):
            provider = self.rng.choice(list(ProviderName))
            names, weights = zip(*SCENARIOS[provider], strict=True)
            plans.append((number, provider, self.rng.choices(names, weights)[0]))
        groups = self._shared_groups(plans)
        limit = asyncio.Semaphore(self.config.concurrency)

        async def create(provider: ProviderName, scenario: str, **extra: Any) -> dict[str, Any]:
            async with limit:
                response = await http.post(
                    f"/{provider.value}/_sim/payments", json={"scenario": scenario, **extra}
                )
                response.raise_for_status()
                payment: dict[str, Any] = response.json()
                return payment

        async def create_group(members: list[int]) -> list[dict[str, Any]]:
            """The first payment opens a new account; the others join it, in its currency."""
            _, provider, scenario = plans[members[0]]
            first = await create(provider, scenario)
            rest = [
                await create(
                    plans[i][1],
                    plans[i][2],
                    account_id=first["account_id"],
                    currency=first["currency"],
                )
                for i in members[1:]
            ]
            return [first, *rest]

        grouped = {index for members in groups for index in members}
        singles = [i for i in range(len(plans)) if i not in grouped]
        payments: dict[int, dict[str, Any]] = dict(
            zip(
                singles,
                await asyncio.gather(*(create(plans[i][1], plans[i][2]) for i in singles)),
                strict=True,
            )
        )
        for members, made in zip(
            groups, await asyncio.gather(*(create_group(m) for m in groups)), strict=True
        ):
            payments.update(zip(members, made, strict=True))
        group_of = {i: g for g, members in enumerate(groups, start=1) for i in members}
        for index, (number, provider, scenario) in enumerate(plans):
            self.refunds.append(
                self._plan(number, provider, scenario, payments[index], group_of.get(index))
            )
        # On an account refunded by one amount, every refund asks the same (when it fits).
        for members in groups:
            if self.rng.random() >= self.config.same_amount_share:
                continue
            refunds = [self.refunds[i] for i in members]
            amounts = [r.request.amount_minor for r in refunds if r.request.amount_minor]
            if not amounts:
                continue
            same = min(amounts)
            for refund in refunds:
                if refund.request.amount_minor is not None:
                    refund.request = refund.request.model_copy(update={"amount_minor": same})

    def _shared_groups(self, plans: list[tuple[int, ProviderName, str]]) -> list[list[int]]:
        """Which Mews refunds (indexes into ``plans``) share an account: runs of 2-4."""
        mews = [i for i, (_, provider, _) in enumerate(plans) if provider is ProviderName.MEWS]
        groups: list[list[int]] = []
        at = 0
        while at < len(mews) - 1:
            # A group starts here this often, so that about shared_share end up in one.
            share = self.config.shared_share
            if self.rng.random() < share / (3 - 2 * share):
                size = min(self.rng.randint(2, 4), len(mews) - at)
                groups.append(mews[at : at + size])
                at += size
            else:
                at += 1
        return groups

    def _plan(
        self,
        number: int,
        provider: ProviderName,
        scenario: str,
        payment: dict[str, Any],
        account_group: int | None = None,
    ) -> ChaosRefund:
        fields: dict[str, Any] = {
            "idempotency_key": f"chaos-{self.run_id}-{number}",
            "provider": provider,
            "payment_id": payment["payment_id"],
            "reason": REASON,
            "requester": "refunds chaos",
            "metadata": {"scenario": scenario},
        }
        if provider is ProviderName.MEWS:
            fields["account_id"] = payment["account_id"]
        whole = provider is ProviderName.MEWS and self.rng.random() < 0.1
        if not whole:
            low = MIN_AMOUNT_MINOR[provider]
            fields["amount_minor"] = self.rng.randint(low, max(low, payment["amount_minor"]))
            fields["currency"] = payment["currency"]
        cancel = self.rng.random() < self.config.cancel_share
        return ChaosRefund(
            number=number,
            scenario=scenario,
            request=RefundRequest.model_validate(fields),
            cancel_after_s=self.rng.uniform(0.0, 4.0) if cancel else None,
            twin=self.rng.random() < self.config.twin_share,
            account_group=account_group,
        )

    async def _start_all(self, watchers: list[asyncio.Task[None]]) -> None:
        """Starts spread over a ramp (a twentieth of a second per refund)."""
        ramp_s = self._ramp_s()
        delays = sorted(self.rng.uniform(0, ramp_s) for _ in self.refunds)
        # The refunds of one shared account start together, at the first one's moment.
        group_delay: dict[int, float] = {}
        for index, refund in enumerate(self.refunds):
            if refund.account_group is not None:
                delays[index] = group_delay.setdefault(refund.account_group, delays[index])
        limit = asyncio.Semaphore(self.config.concurrency)
        began = time.monotonic()

        async def start(refund: ChaosRefund, delay: float) -> None:
            await asyncio.sleep(max(0.0, began + delay - time.monotonic()))
            async with limit:
                calls = [self.client.start(refund.request) for _ in range(2 if refund.twin else 1)]
                results = await asyncio.gather(*calls, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    refund.start_error = f"{type(result).__name__}: {result}"
                elif result.created:
                    refund.started = True
                else:
                    refund.attached += 1
            if refund.started:
                watchers.append(asyncio.create_task(self._watch(refund)))

        await asyncio.gather(*(start(r, d) for r, d in zip(self.refunds, delays, strict=True)))
        self._starts_done.set()
        self.say(f"all {len(self.refunds)} refunds started")

    async def _watch(self, refund: ChaosRefund) -> None:
        if refund.cancel_after_s is not None:
            await asyncio.sleep(refund.cancel_after_s)
            handle = self.client.handle(refund.key)
            # Already finished: too late to cancel, nothing to do.
            with contextlib.suppress(RPCError):
                await handle.signal(
                    RefundWorkflow.cancel, CancelRequest(reason="chaos: customer changed mind")
                )
        try:
            refund.final = await self.client.wait(refund.key)
        except (RefundClientError, RPCError) as err:
            refund.error = f"{type(err).__name__}: {err}"
        except Exception as err:  # a workflow that failed is a bug: report it, go on
            refund.error = f"{type(err).__name__}: {err}"

    async def _wait(self) -> None:
        """Until every started refund is final, or parked waiting for an operator's `resolve`
        (nothing else moves it on), or the deadline passes. A refund still in NEEDS_ATTENTION
        then counts as parked; anything else not final as lost."""
        deadline = time.monotonic() + self.config.deadline_s
        while time.monotonic() < deadline:
            await self._scan_attention()
            unfinished = [r for r in self.refunds if r.started and r.final is None]
            if all(r.error is not None or awaits_operator(r.attention) for r in unfinished):
                if unfinished:
                    self.say(f"{len(unfinished)} refund(s) wait for an operator; not waiting")
                return
            await asyncio.sleep(1.0)
        self.say(f"deadline of {self.config.deadline_s:.0f}s reached")

    async def _scan_attention(self) -> None:
        """Running refunds of this run in NEEDS_ATTENTION (from the visibility store), with
        their status."""
        by_id = {r.request.workflow_id: r for r in self.refunds if r.final is None}
        query = (
            'WorkflowType="RefundWorkflow" AND RefundState="NEEDS_ATTENTION" '
            'AND ExecutionStatus="Running"'
        )
        parked: set[str] = set()
        try:
            async for execution in self.client.client.list_workflows(query):
                parked.add(execution.id)
        except RPCError:
            return
        for workflow_id, refund in by_id.items():
            if workflow_id not in parked:
                refund.attention = None
                continue
            try:
                status = await asyncio.wait_for(self.client.status(refund.key), 10)
            except (TimeoutError, RefundClientError):
                continue
            if status.is_final:
                refund.final = status
                refund.attention = None
            elif status.state is RefundState.NEEDS_ATTENTION:
                refund.attention = status
            else:
                refund.attention = None

    async def _collect_unfinished(self) -> None:
        """The last status of every started refund that is not final (the watcher gave up
        on it): final after all, parked in NEEDS_ATTENTION, or still on its way (lost)."""
        for refund in self.refunds:
            if not refund.started or refund.final is not None or refund.error is not None:
                continue
            try:
                status = await asyncio.wait_for(self.client.status(refund.key), 10)
            except (TimeoutError, RefundClientError) as err:
                refund.last_seen = refund.last_seen or refund.attention
                refund.attention = None
                refund.error = refund.error or f"status unknown: {type(err).__name__}: {err}"
                continue
            if status.is_final:
                refund.final, refund.attention = status, None
            elif status.state is RefundState.NEEDS_ATTENTION:
                refund.attention = status
            else:
                refund.attention, refund.last_seen = None, status

    # ------------------------------------------------------------------- chaos

    async def _inject_faults(self, http: httpx.AsyncClient, over: asyncio.Event) -> None:
        while not over.is_set():
            await asyncio.sleep(self.rng.expovariate(1 / self.config.fault_every_s))
            if over.is_set():
                return
            provider = self.rng.choice(list(ProviderName))
            spec = self._random_fault(provider)
            try:
                response = await http.post(f"/{provider.value}/_sim/faults", json=spec)
                response.raise_for_status()
            except httpx.HTTPError:
                continue
            self.faults[str(spec["kind"])] += 1

    def _random_fault(self, provider: ProviderName) -> dict[str, Any]:
        kinds, weights = zip(*FAULT_KINDS, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        path, method = self.rng.choice(FAULT_TARGETS[provider])
        if kind in ("process_then_hang", "drop") and self.rng.random() < 0.7:
            # Mostly where it matters: the refund call itself.
            path, method = FAULT_TARGETS[provider][0]
        spec: dict[str, Any] = {"kind": kind}
        if path is not None:
            spec["path_contains"] = path
        if method is not None:
            spec["method"] = method
        if kind == "status":
            spec.update(status=self.rng.choice((500, 502, 503, 504)), count=self.rng.randint(1, 4))
        elif kind == "rate_limit":
            spec.update(retry_after=self.rng.choice(("1", "2")), count=self.rng.randint(1, 4))
        elif kind == "latency":
            spec.update(seconds=round(self.rng.uniform(0.2, 3.0), 2), count=self.rng.randint(1, 3))
        elif kind == "process_then_hang":
            spec.update(seconds=round(self.rng.uniform(3.0, 6.0), 2))
        return spec

    def _ramp_s(self) -> float:
        """Starts are spread over this long (a twentieth of a second per refund)."""
        return len(self.refunds) * 0.05

    def _outage_plan(self) -> tuple[float, float]:
        """(when after the start of the run, how long) the long outage comes; 0 s: none."""
        at = self.rng.uniform(0.0, self._ramp_s() / 2)
        length = self.config.outage_s
        if length is None:
            length = min(OUTAGE_MAX_S, self._ramp_s() + self.config.storm_after_starts_s - at)
        return at, max(0.0, length)

    async def _long_outage(self, http: httpx.AsyncClient) -> None:
        """One provider's refund call answers 503 for a long stretch (a timed fault), from
        early in the starts: refunds started before and during it ride it out."""
        provider = self.rng.choice(list(ProviderName))
        at, length = self._outage_plan()
        if length <= 0:
            return
        await asyncio.sleep(max(0.0, self.began + at - time.monotonic()))
        path, method = FAULT_TARGETS[provider][0]
        spec = {
            "kind": "status",
            "status": OUTAGE_STATUS,
            "duration_s": round(length, 1),
            "path_contains": path,
            "method": method,
        }
        (await http.post(f"/{provider.value}/_sim/faults", json=spec)).raise_for_status()
        self.faults["outage"] += 1
        self.outage = f"{provider.value} refund calls answered {OUTAGE_STATUS} for {length:.0f}s"
        self.say(f"long outage: {self.outage}")

    async def _kill_workers(self, http: httpx.AsyncClient) -> None:
        """SIGKILL the worker at random moments, each time while a refund call it made is
        held by the provider after processing (Mews and Paynow in turn): the moment where
        re-sending would refund twice."""
        horizon = self._ramp_s() + self.config.storm_after_starts_s
        moments = sorted(self.rng.uniform(2.0, max(2.0, horizon)) for _ in range(self.config.kills))
        for index, moment in enumerate(moments):
            await asyncio.sleep(max(0.0, self.began + moment - time.monotonic()))
            provider = (ProviderName.MEWS, ProviderName.PAYNOW)[index % 2]
            held = await self._hold_a_refund_call(http, provider)
            self.stack.kill_worker()
            self.kills += 1
            down = self.rng.uniform(0.5, 2.0)
            during = (
                f"while a {provider.value} refund call it made was held after processing"
                if held
                else "(no refund call in flight)"
            )
            self.say(f"worker killed (SIGKILL) {during}; restarting in {down:.1f}s")
            await asyncio.sleep(down)
            await self.stack.start_worker()
            self.say("worker restarted")

    async def _hold_a_refund_call(self, http: httpx.AsyncClient, provider: ProviderName) -> bool:
        """Have the provider process the next refund call and hold its answer; True once one
        is held (within the worker's HTTP timeout, so the worker is still waiting for it)."""
        path, method = FAULT_TARGETS[provider][0]
        seen = len((await self._journal(http, provider))["requests"])
        spec = {
            "kind": "process_then_hang",
            "seconds": HTTP_TIMEOUT_S + 3.0,
            "path_contains": path,
            "method": method,
        }
        (await http.post(f"/{provider.value}/_sim/faults", json=spec)).raise_for_status()
        self.faults["process_then_hang"] += 1
        deadline = time.monotonic() + HOLD_WAIT_S
        while time.monotonic() < deadline:
            for entry in (await self._journal(http, provider))["requests"][seen:]:
                held = entry["fault"] == "process_then_hang" and entry["status"] is None
                if held and path in entry["path"]:
                    return True
            await asyncio.sleep(0.05)
        return False

    async def _clear_faults(self, http: httpx.AsyncClient) -> None:
        for provider in ProviderName:
            await http.delete(f"/{provider.value}/_sim/faults")

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_every_s)
            started = [r for r in self.refunds if r.started]
            states = Counter(r.final.state.value.lower() for r in self.refunds if r.final)
            parked = sum(1 for r in started if r.final is None and r.attention is not None)
            open_ = sum(1 for r in started if not r.settled)
            detail = ", ".join(f"{name} {n}" for name, n in sorted(states.items()))
            self.say(
                f"started {len(started)}/{len(self.refunds)}  final {states.total()}"
                f"{f' ({detail})' if detail else ''}  needs attention {parked}  "
                f"in flight {open_}  faults {self.faults.total()}  worker kills {self.kills}"
            )

    # ------------------------------------------------------------------ report

    async def _journal(self, http: httpx.AsyncClient, provider: ProviderName) -> dict[str, Any]:
        response = await http.get(f"/{provider.value}/_sim/journal")
        response.raise_for_status()
        journal: dict[str, Any] = response.json()
        return journal

    def report(self, journals: dict[ProviderName, dict[str, Any]]) -> ChaosReport:
        """The run's verdict from its refunds (as watched) and the simulators' journals."""
        made: dict[tuple[ProviderName, str], list[dict[str, Any]]] = {}
        by_key: dict[str, list[dict[str, Any]]] = {}
        for provider, journal in journals.items():
            for record in journal["refunds"]:
                made.setdefault((provider, record["payment_id"]), []).append(record)
                if record.get("idempotency_key"):
                    by_key.setdefault(record["idempotency_key"], []).append(record)
        states = Counter(r.final.state for r in self.refunds if r.final is not None)
        problems: list[dict[str, Any]] = []
        issues = Counter[str]()
        at_provider = 0
        for refund in self.refunds:
            request = refund.request
            records = list(made.get((request.provider, request.payment_id), []))
            # Paynow also counts per idempotency key (the same as per payment here, where
            # every refund has a payment of its own; a refund under the key elsewhere counts).
            records += [r for r in by_key.get(refund.key, []) if r not in records]
            refund.made = [str(r["refund_id"]) for r in records]
            at_provider += len(records)
            kind, issue = judge(refund, records)
            if kind is None:
                continue
            issues[kind] += 1
            status = refund.final or refund.attention or refund.last_seen
            problems.append(
                {
                    "key": refund.key,
                    "provider": request.provider.value,
                    "scenario": refund.scenario,
                    "payment_id": request.payment_id,
                    "account_group": refund.account_group,
                    "issue": issue,
                    "state": status.state.value if status else None,
                    "provider_refund_id": status.provider_refund_id if status else None,
                    "refunds_at_provider": refund.made,
                    "note": (status.attention_reason or status.last_error) if status else None,
                }
            )
        groups = {r.account_group for r in self.refunds if r.account_group is not None}
        return ChaosReport(
            run_id=self.run_id,
            seed=self.seed,
            count=len(self.refunds),
            started=sum(1 for r in self.refunds if r.started),
            attached=sum(r.attached for r in self.refunds),
            start_errors=sum(1 for r in self.refunds if not r.started),
            succeeded=states[RefundState.SUCCEEDED],
            failed=states[RefundState.FAILED],
            canceled=states[RefundState.CANCELED],
            rejected=states[RefundState.REJECTED],
            needs_attention=issues["needs attention"],
            refunds_at_provider=at_provider,
            duplicates=issues["duplicate"],
            orphans=issues["orphan"],
            lost=issues["lost"],
            money_mismatches=issues["money mismatch"],
            faults_injected=dict(sorted(self.faults.items())),
            worker_kills=self.kills,
            elapsed_s=time.monotonic() - self.began,
            problems=problems,
            shared_account_refunds=sum(1 for r in self.refunds if r.account_group is not None),
            shared_accounts=len(groups),
            outage=self.outage,
        )


def chaos_options() -> RefundOptions:
    return RefundOptions(
        poll_initial_s=POLL_INITIAL_S,
        poll_max_s=POLL_MAX_S,
        call_timeout_s=CALL_TIMEOUT_S,
        reconcile_settle_s=RECONCILE_SETTLE_S,
    )


async def run_chaos(
    config: ChaosConfig,
    *,
    state_dir: Path | None = None,
    keep: bool = False,
    stop: asyncio.Event | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """Start a stack on free ports, run, print the table (or JSON); 0 when all is well."""
    out = out or sys.stdout
    progress_to = sys.stderr if as_json else out
    directory = state_dir or Path(tempfile.mkdtemp(prefix="refunds-chaos-"))
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            state_dir=directory,
            poll_initial_s=POLL_INITIAL_S,
            poll_max_s=POLL_MAX_S,
            extra_worker_env=WORKER_ENV,
        )
    )

    def progress(line: str) -> None:
        print(line, file=progress_to, flush=True)

    progress(f"starting the stack (state and logs in {directory}/)...")
    async with stack:
        assert stack.client is not None
        client = RefundClient(
            stack.client, task_queue=stack.config.task_queue, options=chaos_options()
        )
        progress(f"stack ready; Temporal UI {stack.ui_url}")
        report = await ChaosRun(stack, client, config, progress=progress).run()
        if as_json:
            print(to_json(report.to_dict()), file=out, flush=True)
        else:
            print("\n" + render_report(report), file=out, flush=True)
        if keep:
            progress(f"--keep: the stack stays up ({stack.ui_url}); Ctrl-C to stop it.")
            await (stop or asyncio.Event()).wait()
    return 0 if report.ok else 1
