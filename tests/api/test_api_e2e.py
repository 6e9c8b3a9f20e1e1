"""`refunds api` end to end: a real HTTP client against the real API process, worker, Temporal
dev server and simulators. Both providers, every status code, 50 concurrent starts with one
key, cancel, resolve, long-poll, paging, and no credential in the API's log."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from typing import Any

import httpx
import pytest

from core.models import ProviderName, RefundState
from tests.api.conftest import ApiStack
from tests.support.refunds import wait_for_state

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PROBLEM = "application/problem+json"
TYPE = "urn:refunds:problem:"


def new_key(label: str) -> str:
    return f"api-{label}-{uuid.uuid4().hex[:10]}"


def paynow_body(payment_id: str, amount_minor: int = 1234, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "paynow",
        "payment_id": payment_id,
        "amount_minor": amount_minor,
        "currency": "PLN",
        "reason": "api e2e: goods returned",
        **extra,
    }


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == TYPE + kind
    assert body["status"] == status
    return body


async def post_refund(
    api: httpx.AsyncClient, stack: ApiStack, key: str, body: dict[str, Any], who: str = "checkout"
) -> httpx.Response:
    return await api.post(
        "/v1/refunds", json=body, headers={**stack.auth(who), "Idempotency-Key": key}
    )


async def refunds_at(stack: ApiStack, provider: ProviderName, payment_id: str) -> list[Any]:
    journal = await stack.journal(provider)
    return [r for r in journal["refunds"] if r["payment_id"] == payment_id]


async def test_paynow_refund_start_repeat_and_status(
    api_stack: ApiStack, api: httpx.AsyncClient
) -> None:
    payment = await api_stack.new_payment(ProviderName.PAYNOW, "succeeds")
    key = new_key("paynow")
    body = paynow_body(payment["payment_id"])
    first = await post_refund(api, api_stack, key, body)
    assert first.status_code == 201, first.text
    assert first.json()["status_url"] == f"/v1/refunds/{key}"
    again = await post_refund(api, api_stack, key, body)
    assert again.status_code == 200
    assert again.json() == first.json()

    final = await api.get(f"/v1/refunds/{key}", params={"wait": 30}, headers=api_stack.auth())
    while final.json()["state"] not in ("SUCCEEDED", "FAILED", "CANCELED", "REJECTED"):
        final = await api.get(f"/v1/refunds/{key}", params={"wait": 30}, headers=api_stack.auth())
    assert final.status_code == 200
    assert final.json()["state"] == "SUCCEEDED"
    assert final.json()["amount_minor"] == 1234
    # A repeat after the end still answers the first answer, and starts nothing.
    late = await post_refund(api, api_stack, key, body, who="operator")
    assert (late.status_code, late.json()) == (200, first.json())
    assert len(await refunds_at(api_stack, ProviderName.PAYNOW, payment["payment_id"])) == 1
    # Who started it is in the memo, not the request: another key attached without conflict.
    memo = await (await api_stack.client.handle(key).describe()).memo()
    assert memo["started_by"] == "checkout"


async def test_mews_refund_through_the_api(api_stack: ApiStack, api: httpx.AsyncClient) -> None:
    payment = await api_stack.new_payment(ProviderName.MEWS, "succeeds_immediately")
    key = new_key("mews")
    body = {
        "provider": "mews",
        "payment_id": payment["payment_id"],
        "account_id": payment["account_id"],
        "amount_minor": 500,
        "currency": payment["currency"],
        "reason": "api e2e: mews",
    }
    assert (await post_refund(api, api_stack, key, body)).status_code == 201
    status = await api_stack.client.wait(key)
    assert status.state is RefundState.SUCCEEDED
    made = await refunds_at(api_stack, ProviderName.MEWS, payment["payment_id"])
    assert len(made) == 1


async def test_the_same_key_with_another_request_is_a_conflict_naming_fields(
    api_stack: ApiStack, api: httpx.AsyncClient
) -> None:
    payment = await api_stack.new_payment(ProviderName.PAYNOW, "succeeds")
    key = new_key("conflict")
    assert (
        await post_refund(api, api_stack, key, paynow_body(payment["payment_id"]))
    ).status_code == 201
    other = paynow_body(payment["payment_id"], amount_minor=999, reason="another reason")
    body = problem(await post_refund(api, api_stack, key, other), 409, "conflict")
    assert body["fields"] == ["amount_minor", "reason"]
    assert "amount_minor and reason" in body["detail"]


async def test_bad_input_is_422_with_field_errors_and_reaches_no_provider(
    api_stack: ApiStack, api: httpx.AsyncClient
) -> None:
    # A payment id no provider call may ever name: the journals prove none was made.
    unseen = f"NEVER-{uuid.uuid4().hex[:12]}"
    good = paynow_body(unseen)
    cases: list[tuple[str, dict[str, Any], list[Any]]] = [
        ("bad key!", good, ["header", "Idempotency-Key"]),
        (new_key("bad"), {**good, "provider": "paypal"}, ["body", "provider"]),
        (new_key("bad"), {**good, "amount_minor": 0}, ["body", "amount_minor"]),
        (new_key("bad"), {**good, "currency": "XXZ"}, ["body", "currency"]),
        (new_key("bad"), {**good, "surprise": 1}, ["body", "surprise"]),
        # The model's cross-field rule, through RefundRequest itself.
        (new_key("bad"), {**good, "currency": None}, ["body"]),
        # The provider's offline check: Paynow takes no account id.
        (new_key("bad"), {**good, "account_id": "acc-1"}, ["body"]),
    ]
    for key, body, loc in cases:
        answer = problem(await post_refund(api, api_stack, key, body), 422, "validation")
        assert loc in [error["loc"] for error in answer["errors"]], answer
    not_json = await api.post(
        "/v1/refunds",
        content=b"{not json",
        headers={
            **api_stack.auth(),
            "Idempotency-Key": new_key("x"),
            "Content-Type": "application/json",
        },
    )
    problem(not_json, 422, "validation")
    for provider in ProviderName:
        assert unseen not in str(await api_stack.journal(provider))
    # Nothing was started either.
    for key, _, _ in cases[1:]:
        missing = await api.get(f"/v1/refunds/{key}", headers=api_stack.auth())
        assert missing.status_code == 404


async def test_auth_size_and_routing_problems(api_stack: ApiStack, api: httpx.AsyncClient) -> None:
    body = paynow_body("SUCC-EED-S00-001")
    missing = problem(await api.get("/v1/refunds"), 401, "unauthorized")
    assert "Bearer" in missing["detail"]
    no_token = await api.get("/v1/refunds")
    assert no_token.headers["www-authenticate"] == 'Bearer realm="refunds"'
    wrong = await api.get("/v1/refunds", headers={"Authorization": "Bearer rfk_not-a-key"})
    problem(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    viewer_post = await post_refund(api, api_stack, new_key("viewer"), body, who="viewer")
    forbidden = problem(viewer_post, 403, "forbidden")
    assert "refunds:write" in forbidden["detail"]
    assert 'error="insufficient_scope"' in viewer_post.headers["www-authenticate"]
    cancel = await api.post(
        "/v1/refunds/any-key/cancel", json={"reason": "x"}, headers=api_stack.auth("checkout")
    )
    problem(cancel, 403, "forbidden")
    problem(await api.get("/v1/refunds/no-such-refund", headers=api_stack.auth()), 404, "not-found")
    problem(await api.get("/v2/nothing"), 404, "not-found")
    problem(await api.delete("/v1/refunds", headers=api_stack.auth()), 405, "method-not-allowed")
    big = {**body, "metadata": {"note": "x" * 500}, "reason": "y" * 70_000}
    too_large = await post_refund(api, api_stack, new_key("big"), big)
    problem(too_large, 413, "payload-too-large")
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready"}


async def test_fifty_concurrent_posts_with_one_key_make_one_refund(
    api_stack: ApiStack, api: httpx.AsyncClient
) -> None:
    payment = await api_stack.new_payment(ProviderName.PAYNOW, "succeeds")
    key = new_key("race")
    body = paynow_body(payment["payment_id"])
    answers = await asyncio.gather(*(post_refund(api, api_stack, key, body) for _ in range(50)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] * 49 + [201], codes
    assert len({answer.text for answer in answers}) == 1
    assert (await api_stack.client.wait(key)).state is RefundState.SUCCEEDED
    assert len(await refunds_at(api_stack, ProviderName.PAYNOW, payment["payment_id"])) == 1


async def test_cancel_at_paynow_then_too_late(api_stack: ApiStack, api: httpx.AsyncClient) -> None:
    payment = await api_stack.new_payment(ProviderName.PAYNOW, "awaiting")
    key = new_key("cancel")
    assert (
        await post_refund(api, api_stack, key, paynow_body(payment["payment_id"]))
    ).status_code == 201
    pending = await wait_for_state(api_stack.client, key, RefundState.PENDING)
    assert pending.provider_refund_id
    answer = await api.post(
        f"/v1/refunds/{key}/cancel",
        json={"reason": "customer kept the item"},
        headers=api_stack.auth("operator"),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["canceled"] is True
    assert answer.json()["state"] == "CANCELED"
    status = (await api.get(f"/v1/refunds/{key}", headers=api_stack.auth("viewer"))).json()
    assert status["cancel_reason"] == "customer kept the item (by operator)"
    again = await api.post(
        f"/v1/refunds/{key}/cancel", json={"reason": "again"}, headers=api_stack.auth()
    )
    assert "too late" in problem(again, 409, "refused")["detail"]
    blank = await api.post(
        f"/v1/refunds/{key}/cancel", json={"reason": "  "}, headers=api_stack.auth()
    )
    problem(blank, 422, "validation")


async def test_resolve_closes_a_refund_waiting_for_an_operator(
    api_stack: ApiStack, api: httpx.AsyncClient
) -> None:
    payment = await api_stack.new_payment(ProviderName.MEWS, "succeeds_immediately")
    await api_stack.inject(
        ProviderName.MEWS,
        # Nothing is made and the answer is lost; the validation's lookup passes, the
        # reconciliation's is refused (final): the refund waits for an operator.
        {"kind": "drop_before", "path_contains": "payments/refund", "method": "POST"},
        {"kind": "latency", "seconds": 0, "path_contains": "payments/getAll"},
        {"kind": "status", "status": 403, "path_contains": "payments/getAll"},
    )
    key = new_key("resolve")
    body = {
        "provider": "mews",
        "payment_id": payment["payment_id"],
        "account_id": payment["account_id"],
        "amount_minor": 700,
        "currency": payment["currency"],
        "reason": "api e2e: resolve",
    }
    try:
        assert (await post_refund(api, api_stack, key, body)).status_code == 201
        await wait_for_state(api_stack.client, key, RefundState.NEEDS_ATTENTION)
    finally:
        await api_stack.clear_faults()
    url = f"/v1/refunds/{key}/resolve"
    invalid = await api.post(url, json={"action": "adopt", "reason": "x"}, headers=api_stack.auth())
    problem(invalid, 422, "validation")
    with_by = {"action": "resend", "reason": "x", "by": "someone else"}
    problem(await api.post(url, json=with_by, headers=api_stack.auth()), 422, "validation")
    close = {"action": "close", "close_as": "FAILED", "reason": "settled by phone"}
    problem(await api.post(url, json=close, headers=api_stack.auth("checkout")), 403, "forbidden")
    answer = await api.post(url, json=close, headers=api_stack.auth("operator"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "FAILED"
    status = (await api.get(f"/v1/refunds/{key}", headers=api_stack.auth())).json()
    assert status["state"] == "FAILED"
    assert [(r["by"], r["reason"]) for r in status["resolutions"]] == [
        ("operator", "settled by phone")
    ]
    refused = await api.post(url, json=close, headers=api_stack.auth())
    assert "nothing to resolve" in problem(refused, 409, "refused")["detail"]
    assert await refunds_at(api_stack, ProviderName.MEWS, payment["payment_id"]) == []


async def test_long_poll_answers_on_change_or_at_the_deadline(
    api_stack: ApiStack, api: httpx.AsyncClient
) -> None:
    slow = await api_stack.new_payment(ProviderName.PAYNOW, "slow")
    quick = await api_stack.new_payment(ProviderName.PAYNOW, "succeeds")
    slow_key, quick_key = new_key("slow"), new_key("quick")
    for key, payment in ((slow_key, slow), (quick_key, quick)):
        assert (
            await post_refund(api, api_stack, key, paynow_body(payment["payment_id"]))
        ).status_code == 201
        await wait_for_state(api_stack.client, key, RefundState.PENDING)
    # No change within the wait: the current status at the deadline.
    began = time.monotonic()
    unchanged = await api.get(
        f"/v1/refunds/{slow_key}", params={"wait": 1.0}, headers=api_stack.auth()
    )
    assert unchanged.json()["state"] == "PENDING"
    assert 0.9 <= time.monotonic() - began < 5
    # A change ends the wait long before its 60 s.
    began = time.monotonic()
    changed = await api.get(
        f"/v1/refunds/{quick_key}", params={"wait": 60}, headers=api_stack.auth()
    )
    assert changed.json()["state"] == "SUCCEEDED"
    assert time.monotonic() - began < 20
    # A final refund answers at once.
    began = time.monotonic()
    await api.get(f"/v1/refunds/{quick_key}", params={"wait": 60}, headers=api_stack.auth())
    assert time.monotonic() - began < 2
    too_long = await api.get(
        f"/v1/refunds/{quick_key}", params={"wait": 61}, headers=api_stack.auth()
    )
    assert ["query", "wait"] in [e["loc"] for e in problem(too_long, 422, "validation")["errors"]]


async def test_list_pages_through_visibility(api_stack: ApiStack, api: httpx.AsyncClient) -> None:
    payment = await api_stack.new_payment(ProviderName.PAYNOW, "succeeds")
    keys = {new_key("list-a"), new_key("list-b")}
    for n, key in enumerate(sorted(keys)):
        body = paynow_body(payment["payment_id"], amount_minor=100 + n)
        assert (await post_refund(api, api_stack, key, body)).status_code == 201
    params = {"payment_id": payment["payment_id"], "provider": "paynow", "page_size": 1}
    deadline = time.monotonic() + 15
    while True:
        everything = await api.get(
            "/v1/refunds", params={**params, "page_size": 10}, headers=api_stack.auth("viewer")
        )
        if {item["key"] for item in everything.json()["items"]} == keys:
            break
        assert time.monotonic() < deadline, everything.text
        await asyncio.sleep(0.3)
    first = (await api.get("/v1/refunds", params=params, headers=api_stack.auth())).json()
    assert len(first["items"]) == 1
    assert first["next_page_token"]
    second = await api.get(
        "/v1/refunds",
        params={**params, "page_token": first["next_page_token"]},
        headers=api_stack.auth(),
    )
    seen = {first["items"][0]["key"], second.json()["items"][0]["key"]}
    assert seen == keys
    assert first["items"][0]["amount"] in ("1.00 PLN", "1.01 PLN")
    bad = await api.get("/v1/refunds", params={"page_token": "!!"}, headers=api_stack.auth())
    problem(bad, 422, "validation")
    # Well-formed but not given out here (the fuzz run found a 500 for one): refused before
    # it reaches Temporal, as is a real token with a byte changed.
    forged = base64.urlsafe_b64encode(os.urandom(24)).decode()
    token = first["next_page_token"]
    tampered = token[:4] + ("A" if token[4] != "A" else "B") + token[5:]
    for wrong in (forged, tampered):
        refused = await api.get(
            "/v1/refunds", params={**params, "page_token": wrong}, headers=api_stack.auth()
        )
        problem(refused, 422, "validation")
    problem(
        await api.get("/v1/refunds", params={"state": "SOMEWHERE"}, headers=api_stack.auth()),
        422,
        "validation",
    )


async def test_no_token_or_provider_credential_in_the_api_log(api_stack: ApiStack) -> None:
    log = (api_stack.stack.log_dir / "api.log").read_text()
    assert "POST /v1/refunds" in log, "the log is the API's"
    env = api_stack.stack.settings_env()
    secrets = [
        *api_stack.tokens.values(),
        env["MEWS_CLIENT_TOKEN"],
        env["MEWS_ACCESS_TOKEN"],
        env["PAYNOW_API_KEY"],
        env["PAYNOW_SIGNATURE_KEY"],
    ]
    for secret in secrets:
        assert secret not in log
