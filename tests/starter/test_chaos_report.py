"""`refunds chaos`'s verdict: a run is OK only when every refund was started and ended final and
correct. Parked in NEEDS_ATTENTION, not started, made twice, of the wrong amount or lost all
make it fail. Built from refunds as the run watched them and the simulators' journals; no
stack runs here."""

from __future__ import annotations

import uuid
from typing import Any, cast

from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from devstack.chaos import ChaosConfig, ChaosRun
from devstack.chaos_report import ChaosRefund, ChaosReport, awaits_operator, render_report
from devstack.stack import EmbeddedStack
from starter.client import RefundClient
from workflows.refund import RESOLVE_HINT

AMOUNT = 2_500


def refund(number: int, *, amount_minor: int | None = AMOUNT) -> ChaosRefund:
    fields: dict[str, Any] = {
        "idempotency_key": f"chaos-test-{number}",
        "provider": ProviderName.MEWS,
        "payment_id": str(uuid.uuid4()),
        "account_id": str(uuid.uuid4()),
        "reason": "chaos report test",
    }
    if amount_minor is not None:
        fields.update(amount_minor=amount_minor, currency="EUR")
    return ChaosRefund(
        number=number,
        scenario="succeeds",
        request=RefundRequest.model_validate(fields),
        cancel_after_s=None,
        twin=False,
        started=True,
    )


def status(
    item: ChaosRefund,
    state: RefundState,
    refund_id: str | None = None,
    *,
    amount_minor: int = AMOUNT,
    **fields: Any,
) -> RefundStatus:
    return RefundStatus(
        key=item.key,
        workflow_id=item.request.workflow_id,
        provider=item.request.provider,
        payment_id=item.request.payment_id,
        state=state,
        amount_minor=amount_minor,
        currency="EUR",
        provider_refund_id=refund_id,
        **fields,
    )


def succeeded(item: ChaosRefund, records: list[dict[str, Any]]) -> None:
    """The refund ended SUCCEEDED with a refund of its amount at the provider."""
    refund_id = str(uuid.uuid4())
    item.final = status(item, RefundState.SUCCEEDED, refund_id, confirmed_amount_minor=AMOUNT)
    records.append(made(item, refund_id))


def made(item: ChaosRefund, refund_id: str, amount_minor: int = AMOUNT) -> dict[str, Any]:
    return {
        "payment_id": item.request.payment_id,
        "refund_id": refund_id,
        "amount_minor": amount_minor,
        "idempotency_key": None,
    }


def parked(item: ChaosRefund) -> None:
    item.attention = status(
        item,
        RefundState.NEEDS_ATTENTION,
        attention_reason="answer lost and 2 refunds of this amount exist (r1, r2)",
        attention_actions=RESOLVE_HINT,
    )


def report(refunds: list[ChaosRefund], records: list[dict[str, Any]]) -> ChaosReport:
    run = ChaosRun(
        cast(EmbeddedStack, None),
        cast(RefundClient, None),
        ChaosConfig(count=len(refunds), seed=1),
        progress=lambda _: None,
    )
    run.refunds = refunds
    journals: dict[ProviderName, dict[str, Any]] = {
        ProviderName.MEWS: {"refunds": records},
        ProviderName.PAYNOW: {"refunds": []},
    }
    return run.report(journals)


def test_all_final_and_correct_is_ok() -> None:
    refunds = [refund(n) for n in range(1, 5)]
    records: list[dict[str, Any]] = []
    for item in refunds:
        succeeded(item, records)

    result = report(refunds, records)

    assert result.ok
    assert (result.started, result.succeeded, result.refunds_at_provider) == (4, 4, 4)
    assert result.problems == []
    assert render_report(result).endswith(
        "OK: every refund final and correct (none parked, unstarted, duplicated, orphaned, "
        "mismatched or lost)"
    )


def test_everything_parked_in_needs_attention_is_not_ok() -> None:
    """Refunds waiting for an operator are running workflows, not successes."""
    refunds = [refund(n) for n in range(1, 4)]
    for item in refunds:
        parked(item)
        assert awaits_operator(item.attention)

    result = report(refunds, [])

    assert not result.ok
    assert result.needs_attention == 3
    assert (result.succeeded, result.duplicates, result.orphans, result.lost) == (0, 0, 0, 0)
    assert {p["issue"] for p in result.problems} == {"needs attention"}
    assert {p["state"] for p in result.problems} == {"NEEDS_ATTENTION"}
    text = render_report(result)
    assert "needs attention (parked for an operator)" in text
    assert text.endswith("FAILED: not every refund ended final and correct (see above)")
    assert result.to_dict()["ok"] is False


def test_one_start_error_is_not_ok() -> None:
    refunds = [refund(n) for n in range(1, 4)]
    records: list[dict[str, Any]] = []
    for item in refunds[1:]:
        succeeded(item, records)
    refunds[0].started = False
    refunds[0].start_error = "RPCError: connection refused"

    result = report(refunds, records)

    assert not result.ok
    assert (result.start_errors, result.started, result.succeeded) == (1, 2, 2)
    assert [p["issue"] for p in result.problems] == ["start error: RPCError: connection refused"]
    assert ("start errors", 1) in result.rows()


def test_money_mismatch_is_not_ok() -> None:
    """The provider refunded another amount than asked, though the workflow says SUCCEEDED."""
    item = refund(1)
    refund_id = str(uuid.uuid4())
    item.final = status(item, RefundState.SUCCEEDED, refund_id)

    result = report([item], [made(item, refund_id, amount_minor=AMOUNT + 1)])

    assert not result.ok
    assert result.money_mismatches == 1
    assert result.problems[0]["issue"].startswith("money mismatch: asked 2500")


def test_whole_payment_refund_is_checked_against_the_workflows_amount() -> None:
    item = refund(1, amount_minor=None)
    refund_id = str(uuid.uuid4())
    item.final = status(item, RefundState.SUCCEEDED, refund_id, amount_minor=10_000)

    assert report([item], [made(item, refund_id, amount_minor=10_000)]).ok
    assert report([item], [made(item, refund_id, amount_minor=9_000)]).money_mismatches == 1


def test_duplicate_orphan_and_lost_are_not_ok() -> None:
    duplicate, orphan, lost, phantom = (refund(n) for n in range(1, 5))
    records: list[dict[str, Any]] = []
    succeeded(duplicate, records)
    records.append(made(duplicate, str(uuid.uuid4())))
    # The provider made one refund; the workflow reports another.
    orphan.final = status(orphan, RefundState.SUCCEEDED, "someone-elses")
    records.append(made(orphan, str(uuid.uuid4())))
    # Neither final nor parked when the deadline passed.
    lost.last_seen = status(lost, RefundState.SUBMITTING)
    # The workflow reports a refund the provider never made.
    phantom.final = status(phantom, RefundState.SUCCEEDED, "never-made")

    result = report([duplicate, orphan, lost, phantom], records)

    assert not result.ok
    assert (result.duplicates, result.orphans, result.lost) == (1, 2, 1)
    assert [p["state"] for p in result.problems] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "SUBMITTING",
        "SUCCEEDED",
    ]


def test_report_fields_alone_decide_ok() -> None:
    base: dict[str, Any] = {
        "run_id": "r",
        "seed": 1,
        "count": 2,
        "started": 2,
        "attached": 0,
        "start_errors": 0,
        "succeeded": 2,
        "failed": 0,
        "canceled": 0,
        "rejected": 0,
        "needs_attention": 0,
        "refunds_at_provider": 2,
        "duplicates": 0,
        "orphans": 0,
        "lost": 0,
        "faults_injected": {},
        "worker_kills": 0,
        "elapsed_s": 1.0,
        "problems": [],
    }
    assert ChaosReport(**base).ok
    for field in ("needs_attention", "start_errors", "money_mismatches", "duplicates", "lost"):
        assert not ChaosReport(**{**base, field: 1}).ok, field
    assert not ChaosReport(**{**base, "started": 1, "succeeded": 1}).ok
