"""`refunds demo`: every refund outcome, end to end, on an embedded stack.

Starts Temporal, the simulators and a worker (short poll timings), creates a fresh payment per
case through the simulators' control route, runs the cases side by side with keys unique to
this run (``demo-<run id>-<n>``), prints a line per state change, then a table of outcomes.
Exit 0 only when every refund ended in the state its case expects.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import httpx

from cli.output import amount, render_table
from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from devstack.stack import DEFAULT_STATE_DIR, HOST, EmbeddedStack, StackConfig
from starter.client import RefundClient, RefundClientError, summary_line

POLL_INITIAL_S = 0.5
POLL_MAX_S = 2.0
# Every case ends within a few polls; this only catches a stuck demo.
CASE_TIMEOUT_S = 90.0
WATCH_EVERY_S = 0.25
QUERY_PATIENCE_S = 10.0
REASON = "demo: goods returned by the customer"


@dataclass(frozen=True)
class DemoCase:
    name: str
    provider: ProviderName
    scenario: str
    expected: RefundState
    # "whole" (Mews only), or the share of the payment to refund, in percent.
    share: int | None = None
    # None, "before_submit" (signal-with-start) or "while_new" (after it is PENDING).
    cancel: str | None = None


CASES: tuple[DemoCase, ...] = (
    DemoCase("mews full refund", ProviderName.MEWS, "succeeds", RefundState.SUCCEEDED),
    DemoCase("mews partial refund", ProviderName.MEWS, "succeeds", RefundState.SUCCEEDED, 40),
    DemoCase("paynow partial refund", ProviderName.PAYNOW, "succeeds", RefundState.SUCCEEDED, 25),
    DemoCase("paynow fails at provider", ProviderName.PAYNOW, "fails", RefundState.FAILED, 100),
    DemoCase(
        "mews payment not refundable",
        ProviderName.MEWS,
        "not_refundable_type",
        RefundState.REJECTED,
    ),
    DemoCase(
        "paynow canceled before submit",
        ProviderName.PAYNOW,
        "succeeds",
        RefundState.CANCELED,
        50,
        cancel="before_submit",
    ),
    DemoCase(
        "paynow canceled while NEW",
        ProviderName.PAYNOW,
        "awaiting",
        RefundState.CANCELED,
        30,
        cancel="while_new",
    ),
)


@dataclass
class DemoRun:
    case: DemoCase
    key: str
    request: RefundRequest
    final: RefundStatus | None = None
    last: RefundStatus | None = None
    error: str | None = None
    seen: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.final is not None and self.final.state is self.case.expected

    @property
    def actual(self) -> str:
        if self.final is not None:
            return self.final.state.value
        if self.error is not None:
            return f"error: {self.error}"
        where = self.last.state.value if self.last else "?"
        return f"not final ({where})"


def build_request(case: DemoCase, key: str, payment: dict[str, Any]) -> RefundRequest:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "provider": case.provider,
        "payment_id": payment["payment_id"],
        "reason": REASON,
        "requester": "refunds demo",
        "metadata": {"case": case.name},
    }
    if case.provider is ProviderName.MEWS:
        fields["account_id"] = payment["account_id"]
    if case.share is not None:
        fields["amount_minor"] = max(1, payment["amount_minor"] * case.share // 100)
        fields["currency"] = payment["currency"]
    return RefundRequest.model_validate(fields)


class Demo:
    def __init__(
        self, stack: EmbeddedStack, client: RefundClient, out: TextIO, began: float
    ) -> None:
        self.stack = stack
        self.client = client
        self.out = out
        self.began = began
        self.width = max(len(c.name) for c in CASES)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, run: DemoRun, text: str) -> None:
        elapsed = time.monotonic() - self.began
        self.say(f"  {elapsed:6.1f}s  {run.case.name:<{self.width}}  {run.key:<20} {text}")

    async def prepare(self, run_id: str) -> list[DemoRun]:
        runs: list[DemoRun] = []
        async with httpx.AsyncClient(base_url=self.stack.sim_url, timeout=10) as http:
            for number, case in enumerate(CASES, start=1):
                response = await http.post(
                    f"/{case.provider.value}/_sim/payments", json={"scenario": case.scenario}
                )
                response.raise_for_status()
                key = f"demo-{run_id}-{number}"
                runs.append(DemoRun(case, key, build_request(case, key, response.json())))
        return runs

    async def drive(self, run: DemoRun) -> None:
        try:
            if run.case.cancel == "before_submit":
                await self.client.start_canceled(run.request, "demo: customer changed their mind")
                self.note(run, f"started, cancel already delivered: {summary_line(run.request)}")
            else:
                await self.client.start(run.request)
                self.note(run, f"started: {summary_line(run.request)}")
            await asyncio.wait_for(self.follow(run), CASE_TIMEOUT_S)
        except TimeoutError:
            self.note(run, f"still not final after {CASE_TIMEOUT_S:.0f}s")
        except Exception as err:
            # One broken case must not hide the others' outcomes: it shows in the table.
            run.error = " ".join(str(err).split()) or type(err).__name__
            self.note(run, f"error: {run.error}")

    async def follow(self, run: DemoRun) -> None:
        """Poll the status query; a line per change; cancel a `while_new` case once PENDING."""
        cancel_sent = False
        failures = 0
        while True:
            try:
                status = await self.client.status(run.key)
                failures = 0
            except RefundClientError:
                # A query can fail while the worker is busy; a run of failures is real.
                failures += 1
                if failures * WATCH_EVERY_S > QUERY_PATIENCE_S:
                    raise
                await asyncio.sleep(WATCH_EVERY_S)
                continue
            run.last = status
            seen = (
                f"{status.state.value} ({status.provider_status})"
                if status.provider_status
                else status.state.value
            )
            if not run.seen or run.seen[-1] != seen:
                run.seen.append(seen)
                detail = f": {status.message}" if status.is_final and status.message else ""
                self.note(run, seen + detail)
            if status.is_final:
                run.final = status
                return
            wants_cancel = run.case.cancel == "while_new" and not cancel_sent
            if wants_cancel and status.state is RefundState.PENDING:
                await self.client.cancel(run.key, "demo: customer changed their mind")
                cancel_sent = True
                self.note(run, "cancel sent")
            await asyncio.sleep(WATCH_EVERY_S)

    def table(self, runs: list[DemoRun]) -> str:
        rows = [
            [
                run.key,
                run.case.name,
                run.case.provider.value,
                amount(run.request.amount_minor, run.request.currency),
                run.case.expected.value,
                run.actual,
                run.final.provider_status if run.final else None,
                "ok" if run.ok else "MISMATCH",
            ]
            for run in runs
        ]
        return render_table(
            [
                "KEY",
                "CASE",
                "PROVIDER",
                "AMOUNT",
                "EXPECTED",
                "ACTUAL",
                "PROVIDER STATUS",
                "RESULT",
            ],
            rows,
            right=[3],
        )


async def run_demo(
    config: StackConfig,
    *,
    keep: bool = False,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Run every case; 0 when each ended as expected, else 1."""
    out = out or sys.stdout
    config = replace(config, poll_initial_s=POLL_INITIAL_S, poll_max_s=POLL_MAX_S)
    stack = EmbeddedStack(config)
    run_id = secrets.token_hex(3)
    began = time.monotonic()
    print(
        f"refunds demo {run_id}: starting Temporal ({stack.temporal_address}), the simulators "
        f"({stack.sim_url}) and a worker; logs in {stack.log_dir}/",
        file=out,
        flush=True,
    )
    async with stack:
        # Connected as any starter would be, with the demo's short poll options.
        client = await RefundClient.connect(stack.settings(), environ=stack.connection_environ())
        demo = Demo(stack, client, out, began)
        demo.say(
            f"stack ready in {time.monotonic() - demo.began:.1f}s; Temporal UI: {stack.ui_url}"
        )
        if stack.codec_url:
            demo.say(f"payloads encrypted; the UI decrypts them through {stack.codec_url}")
        if stack.api_url:
            key = f" (dev key: Bearer {stack.api_token})" if stack.api_token else ""
            demo.say(f"HTTP API: {stack.api_url}{key}")
        runs = await demo.prepare(run_id)
        demo.say(f"\nrunning {len(runs)} refunds (poll every {POLL_INITIAL_S}-{POLL_MAX_S}s):")
        demo.began = time.monotonic()
        await asyncio.gather(*(demo.drive(run) for run in runs))
        passed = sum(run.ok for run in runs)
        demo.say("\nOutcomes:")
        demo.say(demo.table(runs))
        verdict = (
            f"all {len(runs)} refunds ended as expected"
            if passed == len(runs)
            else f"{len(runs) - passed} of {len(runs)} refunds did NOT end as expected"
        )
        demo.say(f"\n{verdict} in {time.monotonic() - demo.began:.1f}s.")
        if keep:
            demo.say(
                f"\nThe stack stays up (--keep): every step in the Temporal UI at "
                f"{stack.ui_url}/namespaces/default/workflows, or "
                f"`TEMPORAL_ADDRESS={stack.temporal_address} refunds status {runs[0].key}`. "
                "Ctrl-C to stop it."
            )
            await (stop or asyncio.Event()).wait()
        demo.say("stopping the stack...")
    # Last, once the stack (and its UI) is gone: how to look at what the demo did.
    demo.say(look_again(config, runs, kept=keep))
    return 0 if passed == len(runs) else 1


def look_again(config: StackConfig, runs: list[DemoRun], *, kept: bool) -> str:
    """The demo's last lines: its refunds stay in ``config.state_dir``; `refunds dev` on that
    directory serves them in its UI (with the demo's own ports when they are not the
    defaults), and `--keep` keeps a demo's stack up."""
    defaults = StackConfig()
    flags = [
        f"{flag} {value}"
        for flag, value, default in (
            ("--temporal-port", config.temporal_port, defaults.temporal_port),
            ("--ui-port", config.ui_port, defaults.ui_port),
            ("--sim-port", config.sim_port, defaults.sim_port),
        )
        if value != default
    ]
    dev = " ".join(["refunds dev", "--state-dir", shlex.quote(str(config.state_dir)), *flags])
    ui = f"http://{HOST}:{config.ui_port}/namespaces/default/workflows"
    keys = f"{runs[0].key} to {runs[-1].key}" if runs else "its keys"
    apart = ""
    if config.state_dir != DEFAULT_STATE_DIR:
        apart = f", apart from `refunds dev`'s {DEFAULT_STATE_DIR}/"
    lines = [
        f"stopped. The demo's refunds stay in {config.state_dir}/{apart}. To look at them:",
        f"  {dev}",
        f"      then the Temporal UI at {ui} shows them ({keys})",
    ]
    if not kept:
        lines.append("  refunds demo --keep")
        lines.append("      runs a new demo and keeps its stack and UI up until Ctrl-C")
    return "\n".join(lines)
