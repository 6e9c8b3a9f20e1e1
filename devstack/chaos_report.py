"""`refunds chaos`'s verdict: the refunds of a run as it watched them, judged against the
simulators' journals, and the table (or JSON) it prints. A run is OK only when every refund
was started and ended final and correct (see :mod:`devstack.chaos`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cli.output import render_table
from core.models import RefundRequest, RefundState, RefundStatus
from workflows.refund import RESOLVE_HINT


@dataclass
class ChaosRefund:
    number: int
    scenario: str
    request: RefundRequest
    cancel_after_s: float | None
    twin: bool
    # Refunds of payments on the same shared Mews account have the same number here.
    account_group: int | None = None
    started: bool = False
    attached: int = 0
    start_error: str | None = None
    final: RefundStatus | None = None
    attention: RefundStatus | None = None
    error: str | None = None
    # The status last seen of a refund neither final nor parked (for the report).
    last_seen: RefundStatus | None = None
    made: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.request.idempotency_key

    @property
    def settled(self) -> bool:
        return self.final is not None or self.attention is not None or self.error is not None


@dataclass
class ChaosReport:
    run_id: str
    seed: int
    count: int
    started: int
    attached: int
    start_errors: int
    succeeded: int
    failed: int
    canceled: int
    rejected: int
    needs_attention: int
    refunds_at_provider: int
    duplicates: int
    orphans: int
    lost: int
    faults_injected: dict[str, int]
    worker_kills: int
    elapsed_s: float
    problems: list[dict[str, Any]]
    money_mismatches: int = 0
    # Refunds of payments on shared Mews accounts, and how many such accounts.
    shared_account_refunds: int = 0
    shared_accounts: int = 0
    # The long outage, in words (None: none this run).
    outage: str | None = None

    @property
    def ok(self) -> bool:
        """Every refund started and ended final and correct: nothing parked for an operator,
        unstarted, made twice, unknown to its workflow, of the wrong amount, or lost."""
        return (
            self.started == self.count
            and self.start_errors == 0
            and self.needs_attention == 0
            and self.duplicates == 0
            and self.orphans == 0
            and self.money_mismatches == 0
            and self.lost == 0
        )

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("started", self.started),
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("canceled", self.canceled),
            ("rejected", self.rejected),
            ("needs attention (parked for an operator)", self.needs_attention),
            ("start errors", self.start_errors),
            ("refunds made at the provider", self.refunds_at_provider),
            ("duplicates (more than one refund at the provider)", self.duplicates),
            ("orphans (refund unknown to its workflow)", self.orphans),
            ("money mismatches (amount differs from the request)", self.money_mismatches),
            ("lost (not final by the deadline)", self.lost),
        ]

    def table(self) -> str:
        return render_table(["RESULT", "COUNT"], self.rows(), right=[1])

    def to_dict(self) -> dict[str, Any]:
        names = (
            "started",
            "succeeded",
            "failed",
            "canceled",
            "rejected",
            "needs_attention",
            "start_errors",
            "refunds_at_provider",
            "duplicates",
            "orphans",
            "money_mismatches",
            "lost",
        )
        return {
            "run_id": self.run_id,
            "seed": self.seed,
            "count": self.count,
            **dict(zip(names, (value for _, value in self.rows()), strict=True)),
            "attached": self.attached,
            "shared_account_refunds": self.shared_account_refunds,
            "shared_accounts": self.shared_accounts,
            "outage": self.outage,
            "faults_injected": self.faults_injected,
            "worker_kills": self.worker_kills,
            "elapsed_s": round(self.elapsed_s, 1),
            "ok": self.ok,
            "problems": self.problems,
        }


def awaits_operator(status: RefundStatus | None) -> bool:
    """Parked in NEEDS_ATTENTION with its outcome unknown: only an operator's `resolve`
    moves it on (a refund flagged while still watched may yet end by itself)."""
    return (
        status is not None
        and status.state is RefundState.NEEDS_ATTENTION
        and status.attention_actions == RESOLVE_HINT
    )


def judge(refund: ChaosRefund, records: list[dict[str, Any]]) -> tuple[str | None, str]:
    """What is wrong with one refund, worst first: (kind, words), or (None, "") when it was
    started and ended final and correct. Kinds: duplicate, lost, orphan, money mismatch,
    needs attention, start error."""
    final = refund.final
    if len(records) > 1:
        return "duplicate", "duplicate"
    if not refund.started:
        return "start error", f"start error: {refund.start_error or 'never started'}"
    if refund.error is not None:
        return "lost", f"workflow error: {refund.error}"
    if final is None and refund.attention is None:
        return "lost", "lost"
    made = str(records[0]["refund_id"]) if records else None
    # The provider made one the workflow does not report, or the workflow reports one the
    # provider never made.
    if final is not None and final.provider_refund_id != made:
        return "orphan", "orphan"
    if records:
        mismatch = _money_mismatch(refund, int(records[0]["amount_minor"]))
        if mismatch is not None:
            return "money mismatch", f"money mismatch: {mismatch}"
    if final is None:
        return "needs attention", "needs attention"
    return None, ""


def _money_mismatch(refund: ChaosRefund, refunded_minor: int) -> str | None:
    """Why the amount refunded at the provider is not the one asked, or None."""
    asked = refund.request.amount_minor
    status = refund.final or refund.attention
    if asked is not None and refunded_minor != asked:
        return f"asked {asked}, the provider refunded {refunded_minor}"
    if status is None:
        return None
    if status.amount_minor is not None and status.amount_minor != refunded_minor:
        return f"the workflow says {status.amount_minor}, the provider refunded {refunded_minor}"
    confirmed = status.confirmed_amount_minor
    if confirmed is not None and confirmed != refunded_minor:
        return f"the provider confirmed {confirmed} but refunded {refunded_minor}"
    return None


def render_report(report: ChaosReport) -> str:
    faults = ", ".join(f"{kind} {n}" for kind, n in report.faults_injected.items()) or "none"
    lines = [
        report.table(),
        "",
        f"run {report.run_id}, seed {report.seed}: {report.count} refunds "
        f"({report.attached} second starts attached to the first; "
        f"{report.shared_account_refunds} on {report.shared_accounts} shared Mews accounts), "
        f"{report.worker_kills} worker kills, faults injected: {faults}; "
        f"{report.elapsed_s:.1f}s",
        f"long outage: {report.outage or 'none'}",
    ]
    if report.problems:
        lines.append("")
        lines.append(
            render_table(
                ["KEY", "PROVIDER", "SCENARIO", "ISSUE", "STATE", "AT PROVIDER", "NOTE"],
                [
                    [
                        p["key"],
                        p["provider"],
                        p["scenario"],
                        p["issue"],
                        p["state"],
                        ", ".join(p["refunds_at_provider"]) or None,
                        p["note"],
                    ]
                    for p in report.problems
                ],
            )
        )
    verdict = (
        "OK: every refund final and correct (none parked, unstarted, duplicated, orphaned, "
        "mismatched or lost)"
        if report.ok
        else "FAILED: not every refund ended final and correct (see above)"
    )
    lines += ["", verdict]
    return "\n".join(lines)
