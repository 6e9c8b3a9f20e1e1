"""`refunds` as a script meets it, against the real stack: under `--wait` the exit code says
the outcome (0 succeeded, 5 final but not succeeded, 6 needs attention), for `start` and for
`batch` (the worst line decides); `--json` errors are one document on stdout; a conflict
names the fields that differ; values in any case; a key that cannot be one is invalid input,
not an unknown refund; a reader that leaves early (`list --json | head`) ends it quietly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from typing import Any

import pytest

from core.models import ProviderName, RefundRequest
from tests.e2e.conftest import CLI_TIMEOUT_S, E2E, REPO, CliResult

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

MEWS, PAYNOW = ProviderName.MEWS, ProviderName.PAYNOW


def new_key(label: str) -> str:
    return f"e2e-out-{label}-{uuid.uuid4().hex[:10]}"


def start_args(provider: ProviderName, payment: dict[str, Any], key: str, amount: str) -> list[str]:
    args = ["start", "--provider", provider.value, "--payment-id", payment["payment_id"]]
    if provider is MEWS:
        args += ["--account-id", payment["account_id"]]
    args += ["--amount", amount, "--currency", payment["currency"]]
    return [*args, "--reason", "e2e: goods returned", "--key", key]


def line_of(provider: ProviderName, payment: dict[str, Any], key: str) -> dict[str, Any]:
    """A `refunds batch` line: 5.00 of ``payment``."""
    line = {
        "idempotency_key": key,
        "provider": provider.value,
        "payment_id": payment["payment_id"],
        "amount_minor": 500,
        "currency": payment["currency"],
        "reason": "e2e: batch",
    }
    if provider is MEWS:
        line["account_id"] = payment["account_id"]
    return line


async def cli_with(e2e: E2E, *args: str, env: dict[str, str], stdin: str = "") -> CliResult:
    return await e2e.cli(*args, env=env, stdin=stdin)


@pytest.mark.parametrize(
    ("provider", "scenario", "state", "code"),
    [
        (PAYNOW, "succeeds_immediately", "SUCCEEDED", 0),
        (PAYNOW, "fails", "FAILED", 5),
        (MEWS, "not_refundable_type", "REJECTED", 5),
    ],
)
async def test_start_wait_exit_code_is_the_outcome(
    e2e: E2E, provider: ProviderName, scenario: str, state: str, code: int
) -> None:
    payment = await e2e.new_payment(provider, scenario)
    argv = start_args(provider, payment, new_key(scenario.replace("_", "-")), "5.00")
    human = await e2e.cli(*argv, "--wait")
    assert human.code == code, (human.out, human.err)
    assert re.search(rf"^state +{state}$", human.out, re.MULTILINE), human.out
    assert human.err == ""
    again = await e2e.cli(*argv, "--wait", "--json")  # attaches to the same refund
    assert again.code == code, again.err
    answer = json.loads(again.out)
    assert answer["created"] is False
    assert answer["status"]["state"] == state
    # Without --wait, starting (or attaching) is the whole job: exit 0.
    attached = await e2e.cli(*argv)
    assert attached.code == 0, attached.err


async def test_start_wait_stops_at_needs_attention_with_exit_6(e2e: E2E) -> None:
    """The refund's answer is lost and the lookup refused: it waits for an operator, and so
    `--wait` ends there rather than waiting for ever."""
    payment = await e2e.new_payment(MEWS, "succeeds_immediately")
    key = new_key("attention")
    await e2e.clear_faults()
    try:
        await e2e.inject(
            MEWS,
            {"kind": "drop", "path_contains": "payments/refund", "method": "POST"},
            {"kind": "latency", "seconds": 0, "path_contains": "payments/getAll"},
            {"kind": "status", "status": 403, "path_contains": "payments/getAll"},
        )
        quick = {"REFUNDS_RECONCILE_SETTLE_S": "1", "REFUNDS_RECONCILE_LOOKUPS": "1"}
        waited = await cli_with(
            e2e, *start_args(MEWS, payment, key, "5.00"), "--wait", "--json", env=quick
        )
    finally:
        await e2e.clear_faults()
    assert waited.code == 6, (waited.out, waited.err)
    assert json.loads(waited.out)["status"]["state"] == "NEEDS_ATTENTION"
    closed = await e2e.cli("resolve", key, "--close", "CANCELED", "--reason", "e2e: tidy up")
    assert closed.code == 0, closed.err


async def test_batch_wait_worst_outcome_decides(e2e: E2E) -> None:
    good = await e2e.new_payment(PAYNOW, "succeeds_immediately")
    bad = await e2e.new_payment(PAYNOW, "fails")
    keys = [new_key("batch-ok"), new_key("batch-fails")]
    lines = [line_of(PAYNOW, good, keys[0]), line_of(PAYNOW, bad, keys[1])]
    source = "".join(json.dumps(line) + "\n" for line in lines)
    waited = await cli_with(e2e, "batch", "-", "--wait", env={}, stdin=source)
    assert waited.code == 5, (waited.out, waited.err)
    assert "2 lines: 2 created" in waited.out
    # Started only (no --wait): every line started, exit 0.
    started = await cli_with(e2e, "batch", "-", env={}, stdin=source)
    assert started.code == 0, started.err
    assert "2 lines: 2 attached" in started.out
    # An invalid line outranks a refund's outcome.
    invalid = source + json.dumps({**lines[0], "idempotency_key": "a b"}) + "\n"
    worse = await cli_with(e2e, "batch", "-", "--wait", "--json", env={}, stdin=invalid)
    assert worse.code == 2, worse.err
    outcomes = [(r["outcome"], (r["status"] or {}).get("state")) for r in json.loads(worse.out)]
    assert outcomes == [("attached", "SUCCEEDED"), ("attached", "FAILED"), ("invalid", None)]


async def test_a_conflict_names_the_fields_that_differ(e2e: E2E) -> None:
    payment = await e2e.new_payment(PAYNOW, "succeeds_immediately")
    key = new_key("conflict")
    first = await e2e.cli(*start_args(PAYNOW, payment, key, "5.00"))
    assert first.code == 0, first.err
    other = start_args(PAYNOW, payment, key, "6.00")
    other[other.index("e2e: goods returned")] = "e2e: changed my mind"
    conflict = await e2e.cli(*other)
    assert conflict.code == 3
    assert conflict.out == ""
    assert conflict.err.strip() == (
        f"refunds: error: idempotency conflict: key '{key}' is already used by a refund "
        "request that differs in --amount and --reason; use a new key for a new refund (or "
        "repeat the first request exactly to attach to it)"
    )
    as_json = await e2e.cli(*other, "--json")
    assert as_json.code == 3
    document = json.loads(as_json.out)
    assert document["error"]["kind"] == "conflict"
    assert "differs in --amount and --reason" in document["error"]["message"]


async def test_json_not_found_is_a_document(e2e: E2E) -> None:
    shown = await e2e.cli("status", new_key("absent"), "--json")
    assert shown.code == 4
    assert json.loads(shown.out)["error"]["kind"] == "not_found"


async def test_a_key_that_cannot_be_one_is_invalid_not_unknown(e2e: E2E) -> None:
    shown = await e2e.cli("status", "a b")
    assert shown.code == 2, shown.err
    assert "is not a refund key" in shown.err


async def test_values_in_any_case(e2e: E2E) -> None:
    payment = await e2e.new_payment(PAYNOW, "succeeds_immediately")
    key = new_key("case")
    argv = start_args(PAYNOW, payment, key, "5.00")
    argv[argv.index("PLN")] = "pln"
    argv[argv.index("paynow")] = "PayNow"
    started = await e2e.cli(*argv, "--reason-code", "rma", "--wait")
    assert started.code == 0, started.err
    listed = await e2e.cli("list", "--state", "succeeded", "--provider", "PAYNOW", "--json")
    assert listed.code == 0, listed.err
    assert all(item["state"] == "SUCCEEDED" for item in json.loads(listed.out))


async def test_list_json_into_a_reader_that_left_ends_quietly(e2e: E2E) -> None:
    """`refunds list --json | head`: the list is bigger than a pipe's buffer."""
    payment = await e2e.new_payment(PAYNOW, "succeeds_immediately")
    for n in range(30):
        request = RefundRequest(
            idempotency_key=new_key(f"pipe-{n}"),
            provider=PAYNOW,
            payment_id=payment["payment_id"],
            amount_minor=100,
            currency="PLN",
            reason="e2e: many to list",
        )
        await e2e.client.start_canceled(request, "e2e: only to be listed")
    reader, writer = os.pipe()
    os.close(reader)  # `head` has read its lines and left
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            "list",
            "--limit",
            "1000",
            "--json",
            cwd=REPO,
            env=e2e.env,
            stdout=writer,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(writer)
    _, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert err.decode() == ""
    assert process.returncode == 0
