"""Mews refunds of several payments on one customer account.

Mews links no refund to the payment it refunded: a lookup by account returns every refund on
it. So a refund of payment B must never take a sibling's refund of payment A (same account,
same amount) for its own, and validating B must not count A's refund against B.

The refunds here use short reconcile settings (``reconcile_settle_s`` 1 s, two lookups); these
are carried in each refund's options by the starter, so the worker needs no other environment.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from core.models import ProviderName, RefundOptions, RefundRequest, RefundState, RefundStatus
from simulators.mews.seed import SHARED_ACCOUNT_ID, SHARED_PAYMENT_A_ID, SHARED_PAYMENT_B_ID
from starter.client import RefundClient
from tests.faults.conftest import (
    CALL_TIMEOUT_S,
    MEWS_REFUND,
    POLL_INITIAL_S,
    POLL_MAX_S,
    FaultStack,
    new_key,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

QUICK = RefundOptions(
    poll_initial_s=POLL_INITIAL_S,
    poll_max_s=POLL_MAX_S,
    call_timeout_s=CALL_TIMEOUT_S,
    reconcile_settle_s=1,
    reconcile_lookups=2,
)
# Far more than a quick refund needs (a reconcile here is ~2 s), far less than a hang.
SETTLE_TIMEOUT_S = 90.0
HALF = 5_000


def quick_client(faults: FaultStack) -> RefundClient:
    return RefundClient(faults.client.client, task_queue=faults.client.task_queue, options=QUICK)


def mews_request(payment: dict[str, Any], amount_minor: int, label: str) -> RefundRequest:
    return RefundRequest.model_validate(
        {
            "idempotency_key": new_key(label),
            "provider": ProviderName.MEWS,
            "payment_id": payment["payment_id"],
            "account_id": payment["account_id"],
            "amount_minor": amount_minor,
            "currency": payment["currency"],
            "reason": f"fault test: {label}",
        }
    )


async def settle(
    client: RefundClient, key: str, timeout_s: float = SETTLE_TIMEOUT_S
) -> RefundStatus:
    """The refund once it is final, or parked in NEEDS_ATTENTION waiting for an operator
    (still RUNNING: nothing moves it on but a `resolve`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await client.status(key)
        if status.is_final:
            return status
        parked = status.state is RefundState.NEEDS_ATTENTION and status.provider_refund_id is None
        if parked and status.attention_actions:
            return status
        assert time.monotonic() < deadline, f"refund {key} neither final nor parked: {status}"
        await asyncio.sleep(0.3)


async def shared_account(faults: FaultStack) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh account holding two Charged EUR payments (250.50 and 100.00)."""
    first = await faults.new_payment(
        ProviderName.MEWS, "succeeds", amount_minor=25_050, currency="EUR"
    )
    second = await faults.new_payment(
        ProviderName.MEWS,
        "succeeds",
        amount_minor=10_000,
        currency="EUR",
        account_id=first["account_id"],
    )
    assert second["account_id"] == first["account_id"]
    return first, second


async def account_refunds(faults: FaultStack, *payment_ids: str) -> list[dict[str, Any]]:
    """The refunds the simulator made for these payments (it knows which payment each one
    refunded, though Mews never says)."""
    journal = await faults.journal(ProviderName.MEWS)
    return [dict(r) for r in journal["refunds"] if r["payment_id"] in payment_ids]


async def run_to_success(client: RefundClient, request: RefundRequest) -> RefundStatus:
    assert (await client.start(request)).created
    final = await settle(client, request.idempotency_key)
    assert final.state is RefundState.SUCCEEDED, final
    return final


async def test_two_payments_of_the_seeded_shared_account(faults: FaultStack) -> None:
    """A full refund of payment A, then a refund of payment B on the same account: B's check
    must not subtract A's refund from B (before the account lanes it was REJECTED)."""
    response = await faults.http.get("/mews/_sim/payments")
    response.raise_for_status()
    seeded = {p["payment_id"]: p for p in response.json()}
    a, b = seeded[SHARED_PAYMENT_A_ID], seeded[SHARED_PAYMENT_B_ID]
    assert a["account_id"] == b["account_id"] == SHARED_ACCOUNT_ID
    assert (a["amount_minor"], a["currency"], b["amount_minor"], b["currency"]) == (
        25_050,
        "EUR",
        10_000,
        "EUR",
    )
    assert a["refunded_minor"] == b["refunded_minor"] == 0, "the seeded account was used before"
    client = quick_client(faults)

    final_a = await run_to_success(client, mews_request(a, 25_050, "shared-full-a"))
    final_b = await run_to_success(client, mews_request(b, 10_000, "shared-b"))

    made = await account_refunds(faults, SHARED_PAYMENT_A_ID, SHARED_PAYMENT_B_ID)
    assert sorted((r["payment_id"], r["amount_minor"]) for r in made) == sorted(
        [(SHARED_PAYMENT_A_ID, 25_050), (SHARED_PAYMENT_B_ID, 10_000)]
    )
    by_payment = {r["payment_id"]: r["refund_id"] for r in made}
    assert final_a.provider_refund_id == by_payment[SHARED_PAYMENT_A_ID]
    assert final_b.provider_refund_id == by_payment[SHARED_PAYMENT_B_ID]
    assert (final_a.amount_minor, final_b.amount_minor) == (25_050, 10_000)


@pytest.mark.parametrize("lost", ["drop_before", "drop"])
async def test_same_amount_sibling_is_never_adopted(faults: FaultStack, lost: str) -> None:
    """50.00 of payment A goes through; then 50.00 of payment B on the same account, whose
    refund call's answer is lost (``drop_before``: nothing made; ``drop``: made, answer lost).
    A lookup by account shows A's refund, of the very same amount: B must never take it.

    Either B ends SUCCEEDED with its own refund (made by the re-send after ``drop_before``,
    or adopted after ``drop``), or it parks in NEEDS_ATTENTION naming the candidates for an
    operator; never with A's refund id."""
    payment_a, payment_b = await shared_account(faults)
    ids = (payment_a["payment_id"], payment_b["payment_id"])
    client = quick_client(faults)
    final_a = await run_to_success(client, mews_request(payment_a, HALF, f"sibling-a-{lost}"))
    refund_a = final_a.provider_refund_id
    assert refund_a is not None
    assert [r["refund_id"] for r in await account_refunds(faults, *ids)] == [refund_a]

    request_b = mews_request(payment_b, HALF, f"sibling-b-{lost}")
    # The journal is the whole package's: earlier tests met faults of this kind too.
    since = datetime.now(UTC)
    await faults.inject(
        ProviderName.MEWS, {"kind": lost, "path_contains": MEWS_REFUND, "method": "POST"}
    )
    assert (await client.start(request_b)).created
    outcome = await settle(client, request_b.idempotency_key)
    print(f"{lost}: B {outcome.state.value} {outcome.provider_refund_id} (A {refund_a})")

    made = await account_refunds(faults, *ids)
    made_for_b = [r["refund_id"] for r in made if r["payment_id"] == payment_b["payment_id"]]
    journal = await faults.journal(ProviderName.MEWS)
    hit = [
        r
        for r in journal["requests"]
        if MEWS_REFUND in r["path"]
        and r["fault"] == lost
        and datetime.fromisoformat(r["at"]) >= since
    ]
    assert len(hit) == 1, "the fault never met B's refund call"
    assert outcome.provider_refund_id != refund_a, outcome
    # A's refund is still A's only refund.
    assert [r["refund_id"] for r in made if r["payment_id"] == payment_a["payment_id"]] == [
        refund_a
    ]
    if outcome.state is RefundState.SUCCEEDED:
        # Exactly one refund made for B: the re-send's (drop_before) or the lost answer's
        # (drop, adopted, never re-sent); two on the account in all.
        assert len(made) == 2, made
        assert made_for_b == [outcome.provider_refund_id], (made, outcome)
        assert outcome.amount_minor == HALF
        submits = await faults.activity_runs(request_b.idempotency_key, "submit_refund")
        assert len(submits) == (2 if lost == "drop_before" else 1), submits
        assert await faults.activity_runs(request_b.idempotency_key, "find_submitted_refunds")
    else:
        # Parked for an operator, still running, with the candidates named; no refund
        # adopted, and none made twice.
        assert outcome.state is RefundState.NEEDS_ATTENTION, outcome
        assert outcome.provider_refund_id is None, outcome
        reason = outcome.attention_reason or ""
        assert "refunds of this amount exist" in reason, outcome
        assert refund_a not in reason, "a sibling's claimed refund is offered"
        assert len(made_for_b) == (0 if lost == "drop_before" else 1), made
        description = await client.handle(request_b.idempotency_key).describe()
        assert description.status is WorkflowExecutionStatus.RUNNING
        await client.handle(request_b.idempotency_key).terminate("test over: parked as expected")
