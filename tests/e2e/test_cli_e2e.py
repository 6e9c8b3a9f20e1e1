"""`refunds` against the real stack: exactly one refund per key at the provider, attach and
conflict, exit codes, cancel, listing, raw starts from the Temporal CLI, and no secrets in
the history."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from core.models import ProviderName, RefundRequest, RefundState
from devstack.stack import find_temporal_cli
from tests.e2e.conftest import E2E
from tests.support.refunds import wait_for_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def new_key(label: str) -> str:
    return f"e2e-{label}-{uuid.uuid4().hex[:10]}"


def start_args(provider: ProviderName, payment: dict[str, Any], key: str, amount: str) -> list[str]:
    args = ["start", "--provider", provider.value, "--payment-id", payment["payment_id"]]
    if provider is ProviderName.MEWS:
        args += ["--account-id", payment["account_id"]]
    args += ["--amount", amount, "--currency", payment["currency"]]
    return [*args, "--reason", "e2e: goods returned", "--key", key]


def refund_posts(journal: dict[str, Any], provider: ProviderName, payment_id: str) -> int:
    if provider is ProviderName.PAYNOW:
        path = f"/v3/payments/{payment_id}/refunds"
        return sum(1 for r in journal["requests"] if r["method"] == "POST" and r["path"] == path)
    return sum(
        1
        for r in journal["requests"]
        if r["method"] == "POST" and r["path"].endswith("/payments/refund")
    )


@pytest.mark.parametrize("provider", [ProviderName.MEWS, ProviderName.PAYNOW])
async def test_start_wait_attach_conflict_status(e2e: E2E, provider: ProviderName) -> None:
    payment = await e2e.new_payment(provider, "succeeds")
    payment_id = payment["payment_id"]
    key = new_key(provider.value)
    argv = start_args(provider, payment, key, "12.34")

    first = await e2e.cli(*argv, "--wait", "--json")
    assert first.code == 0, first.err
    answer = json.loads(first.out)
    assert answer["created"] is True
    assert answer["workflow_id"] == f"refund:{key}"
    assert answer["status"]["state"] == "SUCCEEDED"
    assert answer["status"]["amount_minor"] == 1234
    journal = await e2e.journal(provider)
    assert journal["refunds_per_payment"] == {**journal["refunds_per_payment"], payment_id: 1}
    posts = refund_posts(journal, provider, payment_id)

    again = await e2e.cli(*argv, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["created"] is False
    journal = await e2e.journal(provider)
    assert journal["refunds_per_payment"][payment_id] == 1
    assert refund_posts(journal, provider, payment_id) == posts

    conflict = await e2e.cli(*start_args(provider, payment, key, "12.35"))
    assert conflict.code == 3
    assert conflict.out == ""
    assert "idempotency conflict" in conflict.err
    assert len(conflict.err.strip().splitlines()) == 1

    shown = await e2e.cli("status", key, "--json")
    assert shown.code == 0, shown.err
    status = json.loads(shown.out)
    assert status["key"] == key
    assert status["workflow_id"] == f"refund:{key}"
    assert status["provider"] == provider.value
    assert status["payment_id"] == payment_id
    assert status["state"] == "SUCCEEDED"
    assert status["amount_minor"] == 1234
    assert status["currency"] == payment["currency"]
    assert status["provider_refund_id"]
    assert status["provider_status"] in ("Charged", "SUCCESSFUL")

    human = await e2e.cli("status", key)
    assert human.code == 0
    assert "SUCCEEDED" in human.out
    assert f"12.34 {payment['currency']}" in human.out


async def test_unknown_key_exits_4(e2e: E2E) -> None:
    for argv in (["status", new_key("absent")], ["cancel", new_key("absent"), "--reason", "x"]):
        result = await e2e.cli(*argv)
        assert result.code == 4, result.err
        assert "no refund with key" in result.err


@pytest.mark.parametrize("provider", [ProviderName.MEWS, ProviderName.PAYNOW])
async def test_invalid_input_exits_2_and_reaches_no_provider(
    e2e: E2E, provider: ProviderName
) -> None:
    payment = await e2e.new_payment(provider, "succeeds")
    before = await e2e.journal(provider)
    key = new_key("invalid")
    bad_amount = await e2e.cli(*start_args(provider, payment, key, "12.345"))
    assert bad_amount.code == 2
    assert "invalid --amount" in bad_amount.err
    wrong_id = start_args(provider, payment, key, "12.34")
    wrong_id[wrong_id.index(payment["payment_id"])] = "0000"
    bad_id = await e2e.cli(*wrong_id)
    assert bad_id.code == 2
    assert "invalid request" in bad_id.err
    assert await e2e.journal(provider) == before
    missing = await e2e.cli("status", key)
    assert missing.code == 4, "nothing may have started for invalid input"


async def test_list_shows_succeeded_refund(e2e: E2E) -> None:
    payment = await e2e.new_payment(ProviderName.PAYNOW, "succeeds_immediately")
    key = new_key("list")
    request = RefundRequest(
        idempotency_key=key,
        provider=ProviderName.PAYNOW,
        payment_id=payment["payment_id"],
        amount_minor=500,
        currency="PLN",
        reason="e2e: listing",
    )
    await e2e.client.start(request)
    assert (await e2e.client.wait(key)).state is RefundState.SUCCEEDED
    # Visibility is eventually consistent: give the index a few seconds.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        listed = await e2e.cli("list", "--state", "SUCCEEDED", "--provider", "paynow", "--json")
        assert listed.code == 0, listed.err
        items = {item["key"]: item for item in json.loads(listed.out)}
        if key in items:
            break
        assert asyncio.get_running_loop().time() < deadline, f"{key} never listed"
        await asyncio.sleep(0.5)
    assert items[key]["state"] == "SUCCEEDED"
    assert items[key]["amount"] == "5.00 PLN"
    table = await e2e.cli("list", "--state", "SUCCEEDED")
    assert table.code == 0
    assert key in table.out


async def test_cancel_while_new_cancels_at_paynow(e2e: E2E) -> None:
    payment = await e2e.new_payment(ProviderName.PAYNOW, "awaiting")
    key = new_key("cancel")
    started = await e2e.cli(*start_args(ProviderName.PAYNOW, payment, key, "10.00"))
    assert started.code == 0, started.err
    pending = await wait_for_state(e2e.client, key, RefundState.PENDING)
    assert pending.provider_status == "NEW"

    canceled = await e2e.cli("cancel", key, "--reason", "customer changed their mind", "--json")
    assert canceled.code == 0, canceled.err
    assert json.loads(canceled.out)["cancel_requested"] is True
    final = await e2e.client.wait(key)
    assert final.state is RefundState.CANCELED
    assert final.cancel_reason == "customer changed their mind"
    journal = await e2e.journal(ProviderName.PAYNOW)
    cancel_path = f"/v3/refunds/{pending.provider_refund_id}/cancel"
    assert [r["method"] for r in journal["requests"] if r["path"] == cancel_path] == ["POST"]

    too_late = await e2e.cli("cancel", key, "--reason", "again")
    assert too_late.code == 1
    assert "too late to cancel" in too_late.err


async def test_raw_start_from_the_temporal_cli(e2e: E2E) -> None:
    """The README's raw start (as another language would): plain JSON input, no memo, no
    search attributes, default
    options (5 s first poll: the payment's refunds succeed at once, so no poll is needed)."""
    payment = await e2e.new_payment(ProviderName.PAYNOW, "succeeds_immediately")
    key = new_key("raw")
    request = {
        "idempotency_key": key,
        "provider": "paynow",
        "payment_id": payment["payment_id"],
        "amount_minor": 700,
        "currency": "PLN",
        "reason": "e2e: goods returned",
    }
    raw = await e2e.run(
        str(find_temporal_cli()),
        "workflow",
        "start",
        "--address",
        e2e.settings.temporal_address,
        "--namespace",
        e2e.settings.temporal_namespace,
        "--type",
        "RefundWorkflow",
        "--task-queue",
        e2e.settings.refunds_task_queue,
        "--workflow-id",
        f"refund:{key}",
        "--id-reuse-policy",
        "RejectDuplicate",
        "--input",
        json.dumps({"request": request}),
    )
    assert raw.code == 0, raw.err
    final = await e2e.client.wait(key)
    assert final.state is RefundState.SUCCEEDED
    assert final.amount_minor == 700

    # Our starter recognises the same request in that history (no memo) and attaches.
    same = await e2e.cli(*start_args(ProviderName.PAYNOW, payment, key, "7.00"), "--json")
    assert same.code == 0, same.err
    assert json.loads(same.out)["created"] is False
    journal = await e2e.journal(ProviderName.PAYNOW)
    assert journal["refunds_per_payment"][payment["payment_id"]] == 1


async def test_history_and_logs_hold_no_credentials(e2e: E2E) -> None:
    async def refund_and_show(provider: ProviderName) -> str:
        payment = await e2e.new_payment(provider, "succeeds")
        key = new_key(f"secret-{provider.value}")
        result = await e2e.cli(*start_args(provider, payment, key, "1.00"), "--wait")
        assert result.code == 0, result.err
        shown = await e2e.run(
            str(find_temporal_cli()),
            "workflow",
            "show",
            "--address",
            e2e.settings.temporal_address,
            "--namespace",
            e2e.settings.temporal_namespace,
            "--workflow-id",
            f"refund:{key}",
            "--output",
            "json",
        )
        assert shown.code == 0, shown.err
        assert key in shown.out
        return shown.out

    histories = await asyncio.gather(
        refund_and_show(ProviderName.MEWS), refund_and_show(ProviderName.PAYNOW)
    )
    for history in histories:
        for secret in e2e.secrets:
            assert secret not in history, "a credential is in a refund's event history"
    worker_log = (e2e.stack.log_dir / "worker.log").read_text()
    for secret in e2e.secrets:
        assert secret not in worker_log
