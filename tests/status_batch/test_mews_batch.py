"""The batched status read against the Mews simulator over HTTP (a real socket): one
``payments/getAll`` reads many refunds, judged exactly as ``get_refund`` judges each one;
PaymentIds at most 1000 a call; Limitation/Cursor paging; and the ``check_refund_statuses``
activity on top, its failures classified as ``poll_refund_status``'s."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.status_batch import (
    CheckedStatuses,
    CheckStatusesInput,
    StatusBatchActivities,
    StatusTarget,
)
from core.models import ProviderName, ProviderRefund, ProviderRefundStatus, RefundRequest
from providers.errors import NotFoundError
from providers.mews import MewsAdapter
from providers.mews.adapter import MAX_PAYMENT_IDS, RefundRef
from providers.registry import ProviderDirectory
from simulators.common import FaultKind, FaultSpec
from simulators.mews import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_TOKEN,
    DEFAULT_PORTFOLIO_TOKEN,
    MewsSimulator,
)
from simulators.mews.seed import ENTERPRISE_ID, Scenario
from simulators.serving import serve_in_thread

GET_ALL = "/api/connector/v1/payments/getAll"
OTHER_ACCOUNT = "a1c0ffee-0fff-4b2c-9d3e-4f5a6b7c8dff"
OTHER_ENTERPRISE = "3b0f6a2e-5c1d-4e8f-9a70-1d2c3b4affff"


@dataclass
class Made:
    """A refund made at the simulator, with the request that made it."""

    request: RefundRequest
    refund_id: str
    payment_id: str

    def ref(self, **changes: Any) -> RefundRef:
        ref = RefundRef(
            refund_id=self.refund_id,
            account_id=self.request.account_id,
            enterprise_id=self.request.enterprise_id,
        )
        return dataclasses.replace(ref, **changes)


@dataclass
class Mews:
    sim: MewsSimulator
    base_url: str
    # PaymentIds of each getAll the adapters sent (read from the request bodies).
    sent: list[list[str]] = field(default_factory=list)
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        async def note(request: httpx.Request) -> None:
            if request.url.path.endswith(GET_ALL):
                self.sent.append(list(json.loads(request.content).get("PaymentIds") or []))

        client = httpx.AsyncClient(
            base_url=self.base_url, timeout=10.0, event_hooks={"request": [note]}
        )
        self._clients.append(client)
        return client

    def adapter(
        self, *, access_token: str = DEFAULT_ACCESS_TOKEN, page_size: int = 1000, **kw: Any
    ) -> MewsAdapter:
        return MewsAdapter(
            client=self.client(),
            client_token=SecretStr(DEFAULT_CLIENT_TOKEN),
            access_token=SecretStr(access_token),
            client_name="refund-orchestrator tests 0.1",
            page_size=page_size,
            **kw,
        )

    def get_all_calls(self) -> int:
        return sum(1 for r in self.sim.core.journal()["requests"] if r["path"] == GET_ALL)

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.client().post(path, json=body or {})
        assert response.is_success, response.text
        return response.json()

    async def make(self, adapter: MewsAdapter, count: int, n0: int = 0) -> list[Made]:
        made = []
        for n in range(n0, n0 + count):
            payment = await self.control("_sim/payments", {"scenario": Scenario.HELD.value})
            request = RefundRequest(
                idempotency_key=f"batch-{n}",
                provider=ProviderName.MEWS,
                payment_id=payment["payment_id"],
                account_id=payment["account_id"],
                reason="guest left early",
                amount_minor=100,
                currency=payment["currency"],
            )
            refund = await adapter.submit(request)
            made.append(Made(request, refund.refund_id, payment["payment_id"]))
        return made

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture(scope="module")
def sim() -> MewsSimulator:
    # No rate limit in the way of the set-up's hundreds of requests.
    return MewsSimulator(rate_limit=1_000_000)


@pytest.fixture(scope="module")
def base_url(sim: MewsSimulator) -> Iterator[str]:
    with serve_in_thread(Starlette(routes=[Mount("/mews", app=sim.app)])) as url:
        yield f"{url}/mews/"


@pytest.fixture
async def mews(sim: MewsSimulator, base_url: str) -> AsyncIterator[Mews]:
    sim.reset()
    harness = Mews(sim, base_url)
    yield harness
    await harness.aclose()


async def single(adapter: MewsAdapter, made: Made, **changes: Any) -> ProviderRefund | None:
    """The single-id path: get_refund, None for its NotFoundError."""
    try:
        return await adapter.get_refund(made.request.model_copy(update=changes), made.refund_id)
    except NotFoundError:
        return None


async def test_one_get_all_reads_many_refunds_as_get_refund_reads_each(mews: Mews) -> None:
    adapter = mews.adapter()
    made = await mews.make(adapter, 40)
    # Final states, as Mews' side moves on: ten charged, five failed, five canceled; the
    # rest stay pending (the held scenario: reads never move them).
    for m, state in zip(made, ["Charged"] * 10 + ["Failed"] * 5 + ["Canceled"] * 5, strict=False):
        await mews.control(f"_sim/refunds/{m.refund_id}/settle", {"state": state})
    unknown = str(uuid.uuid4())
    refs: list[str | RefundRef] = [m.ref() for m in made]
    refs += [
        made[0].ref(),  # twice
        RefundRef(refund_id=made[1].payment_id, account_id=made[1].request.account_id),
        made[2].ref(refund_id=made[2].refund_id.upper(), account_id=OTHER_ACCOUNT),
        RefundRef(refund_id=unknown),
        "not-a-mews-id",
        made[3].refund_id.upper(),  # a bare id: no account named
    ]
    before = mews.get_all_calls()
    found = await adapter.poll_many(refs)
    assert mews.get_all_calls() - before == 1
    # The 40, the payment and the unknown id: each once (ids are not case-sensitive), the
    # non-UUID never sent (Mews would refuse the whole call).
    assert len(mews.sent[-1]) == 40 + 2

    statuses = [found[m.refund_id].status for m in made]
    assert statuses == (
        [ProviderRefundStatus.SUCCEEDED] * 10
        + [ProviderRefundStatus.FAILED] * 5
        + [ProviderRefundStatus.CANCELED] * 5
        + [ProviderRefundStatus.PENDING] * 20
    )
    # Exactly what the single-id path reads (states are stable: held or settled).
    for m in made:
        assert found[m.refund_id] == await single(adapter, m)
    assert found[made[3].refund_id.upper()] == await single(adapter, made[3])
    # Absent where get_refund says NotFoundError: a payment that is no refund, a refund on
    # another account than named, an unknown id; a non-UUID is simply absent.
    assert made[1].payment_id not in found
    payment_as_refund = Made(made[1].request, made[1].payment_id, made[1].payment_id)
    assert await single(adapter, payment_as_refund) is None
    assert made[2].refund_id.upper() not in found
    assert await single(adapter, made[2], account_id=OTHER_ACCOUNT) is None
    assert unknown not in found
    assert "not-a-mews-id" not in found
    assert set(found) == {m.refund_id for m in made} | {made[3].refund_id.upper()}


async def test_at_most_1000_payment_ids_a_call(mews: Mews) -> None:
    adapter = mews.adapter()
    made = await mews.make(adapter, 3)
    strangers = [str(uuid.uuid4()) for _ in range(2 * MAX_PAYMENT_IDS + 100)]
    ids = [made[0].refund_id, *strangers[:1500], made[1].refund_id, *strangers[1500:]]
    ids.append(made[2].refund_id)
    before = mews.get_all_calls()
    found = await adapter.poll_many(ids)
    assert mews.get_all_calls() - before == 3
    assert [len(sent) for sent in mews.sent[-3:]] == [1000, 1000, 103]
    assert set(found) == {m.refund_id for m in made}


async def test_the_simulator_takes_1000_payment_ids_and_refuses_more(mews: Mews) -> None:
    """As documented: one getAll takes up to 1000 PaymentIds (the simulator is no kinder)."""
    client = mews.client()
    body: dict[str, Any] = {
        "ClientToken": DEFAULT_CLIENT_TOKEN,
        "AccessToken": DEFAULT_ACCESS_TOKEN,
        "Client": "tests",
        "Limitation": {"Count": 1000},
    }
    ok = await client.post(
        GET_ALL.lstrip("/"),
        json={**body, "PaymentIds": [str(uuid.uuid4()) for _ in range(1000)]},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["Payments"] == []
    refused = await client.post(
        GET_ALL.lstrip("/"),
        json={**body, "PaymentIds": [str(uuid.uuid4()) for _ in range(1001)]},
    )
    assert refused.status_code == 400
    assert "PaymentIds" in refused.json()["Message"]
    count = await client.post(
        GET_ALL.lstrip("/"),
        json={**body, "Limitation": {"Count": 1001}, "PaymentIds": [str(uuid.uuid4())]},
    )
    assert count.status_code == 400


async def test_pages_follow_the_cursor_to_the_end(mews: Mews) -> None:
    adapter = mews.adapter(page_size=7)
    made = await mews.make(mews.adapter(), 40)
    before = mews.get_all_calls()
    found = await adapter.poll_many([m.ref() for m in made])
    # 40 refunds in pages of 7: six calls, the last one short.
    assert mews.get_all_calls() - before == 6
    assert set(found) == {m.refund_id for m in made}
    # A full last page is not followed by an empty one: every id asked for was found.
    before = mews.get_all_calls()
    assert len(await adapter.poll_many([m.ref() for m in made[:35]])) == 35
    assert mews.get_all_calls() - before == 5


async def test_enterprises_narrow_as_for_one_refund(mews: Mews) -> None:
    made = await mews.make(mews.adapter(), 2)
    portfolio = mews.adapter(access_token=DEFAULT_PORTFOLIO_TOKEN, portfolio=True)
    here = made[0].ref(enterprise_id=ENTERPRISE_ID)
    elsewhere = made[1].ref(enterprise_id=OTHER_ENTERPRISE)
    found = await portfolio.poll_many([here, elsewhere])
    assert set(found) == {made[0].refund_id}
    assert found[made[0].refund_id] == await single(portfolio, made[0], enterprise_id=ENTERPRISE_ID)
    assert await single(portfolio, made[1], enterprise_id=OTHER_ENTERPRISE) is None


def activities_for(adapter: MewsAdapter) -> StatusBatchActivities:
    return StatusBatchActivities(ProviderDirectory({ProviderName.MEWS: adapter}))


def check_input(*targets: StatusTarget, merchant: str = "default") -> CheckStatusesInput:
    return CheckStatusesInput(provider=ProviderName.MEWS, merchant=merchant, refunds=targets)


async def test_the_activity_reads_a_batch_and_lists_the_missing(mews: Mews) -> None:
    adapter = mews.adapter()
    made = await mews.make(adapter, 5)
    unknown = str(uuid.uuid4())
    targets = [StatusTarget(refund_id=m.refund_id, account_id=m.request.account_id) for m in made]
    targets.append(StatusTarget(refund_id=unknown))
    before = mews.get_all_calls()
    result = await ActivityEnvironment().run(
        activities_for(adapter).check_statuses, check_input(*targets)
    )
    assert isinstance(result, CheckedStatuses)
    assert mews.get_all_calls() - before == 1
    assert list(result.found) == [m.refund_id for m in made]
    assert all(r.status is ProviderRefundStatus.PENDING for r in result.found.values())
    assert result.missing == (unknown,)


async def test_the_activitys_failures_are_classified_as_poll_statuss(mews: Mews) -> None:
    made = await mews.make(mews.adapter(), 1)
    target = StatusTarget(refund_id=made[0].refund_id)
    env = ActivityEnvironment()
    refused = activities_for(mews.adapter(access_token="not-the-token"))
    with pytest.raises(ApplicationError) as caught:
        await env.run(refused.check_statuses, check_input(target))
    assert caught.value.type == "AuthenticationError"
    assert caught.value.non_retryable
    assert "not-the-token" not in str(caught.value)

    mews.sim.core.add_faults([FaultSpec(kind=FaultKind.STATUS, status=503)])
    with pytest.raises(ApplicationError) as caught:
        await env.run(activities_for(mews.adapter()).check_statuses, check_input(target))
    assert caught.value.type == "ServerError"
    assert not caught.value.non_retryable

    with pytest.raises(ApplicationError) as caught:
        await env.run(
            activities_for(mews.adapter()).check_statuses, check_input(target, merchant="other")
        )
    assert caught.value.type == "ProviderNotConfigured"
    assert caught.value.non_retryable
