"""`refunds resolve` against the real stack: a Mews refund whose answer was lost and whose
lookup failed waits in NEEDS_ATTENTION for an operator, who adopts the provider refund,
re-sends, or closes it; every refusal changes nothing and exits 1.

How a refund gets there: the simulator answers the refund call with a dropped connection
(``drop``: the refund is made, ``drop_before``: nothing is made), and the reconciliation's
lookup (``payments/getAll``) gets a 403, which is final: the workflow cannot tell whether a
refund exists and waits for the operator. The validation's own ``getAll`` comes first and is
let through by a zero-second latency fault queued before the 403.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from core.models import (
    ProviderName,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
    ResolveAction,
)
from starter.client import RefundClient
from tests.e2e.conftest import E2E, CliResult
from tests.support.refunds import wait_for_state
from workflows.models import ResolveRequest

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

MEWS = ProviderName.MEWS
REFUND_PATH = "payments/refund"
GET_ALL_PATH = "payments/getAll"
# What a starter sets from REFUNDS_RECONCILE_SETTLE_S / REFUNDS_RECONCILE_LOOKUPS: one
# lookup a second after the lost answer, so a refund reaches the operator in seconds.
SHORT_RECONCILE = {"REFUNDS_RECONCILE_SETTLE_S": "1", "REFUNDS_RECONCILE_LOOKUPS": "1"}


def new_key(label: str) -> str:
    return f"e2e-resolve-{label}-{uuid.uuid4().hex[:10]}"


async def cli(e2e: E2E, *args: str) -> CliResult:
    """``refunds ARGS`` with the stack's environment and the short reconciliation."""
    return await e2e.cli(*args, env=SHORT_RECONCILE)


async def status_json(e2e: E2E, key: str) -> dict[str, Any]:
    shown = await cli(e2e, "status", key, "--json")
    assert shown.code == 0, shown.err
    status: dict[str, Any] = json.loads(shown.out)
    return status


def human_fields(text: str) -> dict[str, list[str]]:
    """`refunds status`'s ``label  value`` lines: each label's values, in order."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        label, _, value = line.partition("  ")
        fields.setdefault(label, []).append(value.strip())
    return fields


def refused(result: CliResult, *fragments: str) -> None:
    """Exit 1, nothing on stdout, one stderr line holding every fragment."""
    assert result.code == 1, (result.code, result.out, result.err)
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest_asyncio.fixture(loop_scope="session")
async def e2e_clean(e2e: E2E) -> AsyncIterator[E2E]:
    """The stack with no simulator faults before and after the test."""
    await e2e.clear_faults()
    yield e2e
    await e2e.clear_faults()


@pytest_asyncio.fixture(loop_scope="session")
async def starter(e2e: E2E) -> RefundClient:
    """A starter whose refunds reconcile quickly, as `refunds start` with SHORT_RECONCILE."""
    base = e2e.client.options
    options = RefundOptions(
        poll_initial_s=base.poll_initial_s,
        poll_max_s=base.poll_max_s,
        reconcile_settle_s=float(SHORT_RECONCILE["REFUNDS_RECONCILE_SETTLE_S"]),
        reconcile_lookups=int(SHORT_RECONCILE["REFUNDS_RECONCILE_LOOKUPS"]),
    )
    return RefundClient(e2e.client.client, task_queue=e2e.client.task_queue, options=options)


def mews_request(payment: dict[str, Any], key: str, amount_minor: int = 1234) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key,
        provider=MEWS,
        payment_id=payment["payment_id"],
        account_id=payment["account_id"],
        amount_minor=amount_minor,
        currency=payment["currency"],
        reason="e2e: goods returned",
    )


async def stuck_refund(
    e2e: E2E, starter: RefundClient, payment: dict[str, Any], key: str, submit_fault: str
) -> RefundStatus:
    """Start a 12.34 refund of ``payment`` whose answer is lost (``drop``: made,
    ``drop_before``: not made) and whose lookup is refused: it waits for an operator."""
    await e2e.inject(
        MEWS,
        {"kind": submit_fault, "path_contains": REFUND_PATH, "method": "POST"},
        # The validation's getAll passes; the reconciliation's lookup is refused (final).
        {"kind": "latency", "seconds": 0, "path_contains": GET_ALL_PATH},
        {"kind": "status", "status": 403, "path_contains": GET_ALL_PATH},
    )
    await starter.start(mews_request(payment, key))
    status = await wait_for_state(starter, key, RefundState.NEEDS_ATTENTION)
    assert status.attention_actions, status
    await e2e.clear_faults()
    return status


async def mews_refunds(e2e: E2E, payment_id: str) -> list[dict[str, Any]]:
    journal = await e2e.journal(MEWS)
    return [r for r in journal["refunds"] if r["payment_id"] == payment_id]


async def refund_directly(e2e: E2E, payment: dict[str, Any], amount: str) -> str:
    """A refund made at Mews outside this service (as in Mews' own UI): its id."""
    env = e2e.stack.settings_env()
    response = await e2e.http.post(
        "/mews/api/connector/v1/payments/refund",
        json={
            "ClientToken": env["MEWS_CLIENT_TOKEN"],
            "AccessToken": env["MEWS_ACCESS_TOKEN"],
            "Client": "e2e operator",
            "PaymentId": payment["payment_id"],
            "AccountId": payment["account_id"],
            "ValueToRefund": float(amount),
            "Reason": "e2e: made by hand",
        },
    )
    assert response.status_code == 200, response.text
    refund_id: str = response.json()["RefundId"]
    return refund_id


async def test_adopt_refusals_then_the_refund_made(e2e_clean: E2E, starter: RefundClient) -> None:
    e2e = e2e_clean
    payment = await e2e.new_payment(MEWS, "succeeds_immediately")
    account, currency = payment["account_id"], payment["currency"]
    sibling_payment = await e2e.new_payment(MEWS, "succeeds_immediately", account_id=account)
    other_payment = await e2e.new_payment(MEWS, "succeeds_immediately", account_id=account)

    # A sibling refund of the same amount on the same account, made by this service first.
    sibling_key = new_key("sibling")
    await starter.start(mews_request(sibling_payment, sibling_key))
    sibling = await starter.wait(sibling_key)
    assert sibling.state is RefundState.SUCCEEDED
    assert sibling.provider_refund_id

    key = new_key("adopt")
    await stuck_refund(e2e, starter, payment, key, "drop")
    made = await mews_refunds(e2e, payment["payment_id"])
    assert len(made) == 1, made
    made_id = made[0]["refund_id"]

    shown = await status_json(e2e, key)
    assert shown["state"] == "NEEDS_ATTENTION"
    assert "could not look up" in shown["attention_reason"]
    assert "--adopt" in shown["attention_actions"]
    assert shown["provider_refund_id"] is None
    assert shown["resolutions"] == []
    human = await cli(e2e, "status", key)
    assert human.code == 0, human.err
    fields = human_fields(human.out)
    assert fields["state"] == ["NEEDS_ATTENTION"]
    assert fields["attention"] == [shown["attention_reason"]]
    assert fields["what to do"] == [shown["attention_actions"]]

    # Refused: an id Mews does not know, a refund of another amount (another payment of the
    # account), and the sibling's refund. Each leaves the refund as it was.
    unknown = str(uuid.uuid4())
    refused(
        await cli(e2e, "resolve", key, "--adopt", unknown, "--reason", "e2e: guess"),
        f"refund {key!r}",
        f"cannot adopt {unknown}",
        "does not know",
    )
    other_id = await refund_directly(e2e, other_payment, "3.00")
    refused(
        await cli(e2e, "resolve", key, "--adopt", other_id, "--reason", "e2e: wrong one"),
        f"refund {key!r}: cannot adopt {other_id}: it is 3.00 {currency}, this refund is "
        f"12.34 {currency}",
    )
    refused(
        await cli(
            e2e, "resolve", key, "--adopt", sibling.provider_refund_id, "--reason", "e2e: no"
        ),
        f"provider refund {sibling.provider_refund_id} is claimed by another refund",
    )
    still = await status_json(e2e, key)
    assert still["state"] == "NEEDS_ATTENTION"
    assert still["resolutions"] == []
    assert still["attention_actions"] == shown["attention_actions"]

    adopted = await cli(
        e2e,
        "resolve",
        key,
        "--adopt",
        made_id,
        "--reason",
        "e2e: seen in Mews",
        "--by",
        "alice",
        "--json",
    )
    assert adopted.code == 0, adopted.err
    answer = json.loads(adopted.out)
    assert set(answer) == {"state", "note"}
    assert made_id in answer["note"]
    assert f"12.34 {currency}" in answer["note"]

    final = await wait_for_state(starter, key, RefundState.SUCCEEDED)
    assert final.provider_refund_id == made_id
    after = await status_json(e2e, key)
    assert after["state"] == "SUCCEEDED"
    assert after["attention_actions"] is None
    assert after["confirmed_amount_minor"] == 1234
    assert after["confirmed_currency"] == currency
    [resolution] = after["resolutions"]
    assert resolution["action"] == "adopt"
    assert resolution["by"] == "alice"
    assert resolution["reason"] == "e2e: seen in Mews"
    assert resolution["refund_id"] == made_id
    assert resolution["at"]
    human = await cli(e2e, "status", key)
    assert human.code == 0, human.err
    fields = human_fields(human.out)
    assert fields["confirmed"] == [f"12.34 {currency}"]
    [line] = fields["resolution"]
    assert f"adopt by alice: adopted provider refund {made_id} (12.34 {currency})" in line
    assert line.endswith("(reason: e2e: seen in Mews)")
    assert "what to do" not in fields
    # Exactly one refund of the payment: adopting sent nothing.
    assert [r["refund_id"] for r in await mews_refunds(e2e, payment["payment_id"])] == [made_id]

    again = await cli(e2e, "resolve", key, "--resend", "--reason", "e2e: too late")
    refused(again, "nothing to resolve", "already SUCCEEDED")


async def test_resend_looks_once_more_then_sends_once(
    e2e_clean: E2E, starter: RefundClient
) -> None:
    e2e = e2e_clean
    payment = await e2e.new_payment(MEWS, "succeeds_immediately")
    key = new_key("resend")
    await stuck_refund(e2e, starter, payment, key, "drop_before")
    assert await mews_refunds(e2e, payment["payment_id"]) == []
    before = await e2e.journal(MEWS)

    resent = await cli(e2e, "resolve", key, "--resend", "--reason", "e2e: nothing in Mews")
    assert resent.code == 0, resent.err
    assert "declared that no refund was made" in resent.out
    assert "state now " in resent.out

    final = await wait_for_state(starter, key, RefundState.SUCCEEDED)
    [made] = await mews_refunds(e2e, payment["payment_id"])
    assert final.provider_refund_id == made["refund_id"]
    assert made["amount_minor"] == 1234
    # It looked (getAll) before it sent, and sent once.
    new = (await e2e.journal(MEWS))["requests"][len(before["requests"]) :]
    paths = [r["path"] for r in new]
    posts = [i for i, p in enumerate(paths) if p.endswith(REFUND_PATH)]
    assert len(posts) == 1, paths
    assert any(p.endswith(GET_ALL_PATH) for p in paths[: posts[0]]), paths
    status = await status_json(e2e, key)
    [resolution] = status["resolutions"]
    assert resolution["action"] == "resend"
    assert resolution["reason"] == "e2e: nothing in Mews"
    assert resolution["by"]  # $USER, or "operator"


@pytest.mark.parametrize("close_as", ["failed", "canceled"])
async def test_close_ends_the_refund_and_records_who_and_why(
    e2e_clean: E2E, starter: RefundClient, close_as: str
) -> None:
    e2e = e2e_clean
    payment = await e2e.new_payment(MEWS, "succeeds_immediately")
    key = new_key(f"close-{close_as}")
    await stuck_refund(e2e, starter, payment, key, "drop_before")

    closed = await cli(
        e2e,
        "resolve",
        key,
        "--close",
        close_as,
        "--reason",
        "e2e: customer paid cash",
        "--by",
        "bob",
    )
    assert closed.code == 0, closed.err
    state = close_as.upper()
    assert f"closed as {state}" in closed.out
    assert f"state now {state}" in closed.out

    status = await status_json(e2e, key)
    assert status["state"] == state
    assert "e2e: customer paid cash" in status["message"]
    [resolution] = status["resolutions"]
    assert resolution["action"] == "close"
    assert resolution["close_as"] == state
    assert resolution["by"] == "bob"
    assert resolution["reason"] == "e2e: customer paid cash"
    assert await mews_refunds(e2e, payment["payment_id"]) == []

    for late in (["--resend"], ["--close", "failed"], ["--adopt", str(uuid.uuid4())]):
        refused(
            await cli(e2e, "resolve", key, *late, "--reason", "e2e: again"),
            "nothing to resolve",
            f"already {state}",
        )


async def test_resolve_refused_unless_needs_attention(e2e_clean: E2E) -> None:
    e2e = e2e_clean
    # Paynow's awaiting refund stays pending for days: a refund in PENDING, not in attention.
    payment = await e2e.new_payment(ProviderName.PAYNOW, "awaiting")
    key = new_key("pending")
    started = await cli(
        e2e,
        "start",
        "--provider",
        "paynow",
        "--payment-id",
        payment["payment_id"],
        "--amount",
        "10.00",
        "--currency",
        "PLN",
        "--reason",
        "e2e: pending",
        "--key",
        key,
    )
    assert started.code == 0, started.err
    await wait_for_state(e2e.client, key, RefundState.PENDING)
    refused(
        await cli(e2e, "resolve", key, "--close", "failed", "--reason", "e2e: not yet"),
        "only a refund in NEEDS_ATTENTION can be resolved; this one is PENDING",
    )
    refused(
        await cli(e2e, "resolve", key, "--resend", "--reason", "e2e: not yet"),
        "only a refund in NEEDS_ATTENTION",
    )
    assert (await e2e.client.status(key)).resolutions == []
    canceled = await cli(e2e, "cancel", key, "--reason", "e2e: done")
    assert canceled.code == 0, canceled.err
    await wait_for_state(e2e.client, key, RefundState.CANCELED)

    missing = await cli(e2e, "resolve", new_key("absent"), "--resend", "--reason", "x")
    assert missing.code == 4, missing.err
    assert "no refund with key" in missing.err


async def test_adopted_pending_refund_is_watched_as_pending(
    e2e_clean: E2E, starter: RefundClient
) -> None:
    e2e = e2e_clean
    # Mews' `slow` refunds stay Pending for about eleven reads.
    payment = await e2e.new_payment(MEWS, "slow")
    key = new_key("adopt-pending")
    await stuck_refund(e2e, starter, payment, key, "drop")
    [made] = await mews_refunds(e2e, payment["payment_id"])
    try:
        adopted = await cli(e2e, "resolve", key, "--adopt", made["refund_id"], "--reason", "e2e")
        assert adopted.code == 0, adopted.err
        assert "state now PENDING" in adopted.out  # no longer waiting for an operator
        status = await starter.status(key)
        while status.provider_refund_id is None:
            await asyncio.sleep(0.1)
            status = await starter.status(key)
        assert status.provider_status == "Pending"
        assert status.state is RefundState.PENDING, status.state
    finally:
        # Never leave it polling Mews (a later test's faults would hit its reads).
        status = await starter.status(key)
        if status.state is RefundState.NEEDS_ATTENTION:
            closed = ResolveRequest(
                action=ResolveAction.CLOSE, close_as=RefundState.FAILED, reason="e2e: cleanup"
            )
            await starter.resolve(key, closed)
        assert (await starter.wait(key)).is_final
