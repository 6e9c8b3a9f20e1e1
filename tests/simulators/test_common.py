"""The simulators' shared core: faults on demand, the journal and the `/_sim` control routes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.common import (
    CONTROL_PREFIX,
    FaultKind,
    FaultMiddleware,
    FaultSpec,
    SimulatorCore,
    control_routes,
)

REFUND_PATH = "/v3/payments/PAY1-AAA-BBB-CCC/refunds"
STATUS_PATH = "/v3/refunds/R-1/status"
PAYMENTS = [{"paymentId": "PAY1-AAA-BBB-CCC", "status": "CONFIRMED"}]

# --- SimulatorCore -----------------------------------------------------------------------------


def test_no_fault_pending() -> None:
    assert SimulatorCore().take_fault("POST", REFUND_PATH) is None


def test_fault_count_counts_down() -> None:
    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.STATUS, count=3, status=502)])
    taken = [core.take_fault("POST", REFUND_PATH) for _ in range(4)]
    assert [spec.count if spec else None for spec in taken] == [3, 2, 1, None]
    assert all(spec.status == 502 for spec in taken if spec)


def test_faults_match_by_path() -> None:
    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.STATUS, path_contains="/refunds/")])
    assert core.take_fault("POST", REFUND_PATH) is None  # "/refunds" without the slash
    fault = core.take_fault("GET", STATUS_PATH)
    assert fault is not None
    assert fault.kind is FaultKind.STATUS
    assert core.take_fault("GET", STATUS_PATH) is None


def test_faults_match_by_method_in_any_case() -> None:
    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.LATENCY, method="post")])
    assert core.take_fault("GET", REFUND_PATH) is None
    assert core.take_fault("POST", REFUND_PATH) is not None


def test_first_matching_fault_wins_and_others_wait() -> None:
    core = SimulatorCore()
    core.add_faults(
        [
            FaultSpec(kind=FaultKind.LATENCY, path_contains="/status"),
            FaultSpec(kind=FaultKind.STATUS, status=500),
            FaultSpec(kind=FaultKind.RATE_LIMIT),
        ]
    )
    first = core.take_fault("POST", REFUND_PATH)
    assert first is not None
    assert first.kind is FaultKind.STATUS
    second = core.take_fault("POST", REFUND_PATH)
    assert second is not None
    assert second.kind is FaultKind.RATE_LIMIT
    assert core.take_fault("POST", REFUND_PATH) is None
    latency = core.take_fault("GET", STATUS_PATH)
    assert latency is not None
    assert latency.kind is FaultKind.LATENCY


@pytest.mark.parametrize(
    "path", [f"{CONTROL_PREFIX}/faults", f"{CONTROL_PREFIX}/journal", f"{CONTROL_PREFIX}/reset"]
)
def test_control_paths_are_never_faulted(path: str) -> None:
    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.STATUS, path_contains="_sim")])
    assert core.take_fault("POST", path) is None
    assert core.take_fault("GET", path) is None
    assert not FaultSpec(kind=FaultKind.STATUS).matches("POST", path)


def test_queued_faults_are_copies() -> None:
    core = SimulatorCore()
    spec = FaultSpec(kind=FaultKind.STATUS)
    core.add_faults([spec])
    spec.count = 10
    assert core.take_fault("POST", REFUND_PATH) is not None
    assert core.take_fault("POST", REFUND_PATH) is None


def test_clear_faults() -> None:
    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.STATUS, count=5)])
    core.clear_faults()
    assert core.take_fault("POST", REFUND_PATH) is None


def test_journal_counts_refunds_per_payment_and_per_key() -> None:
    core = SimulatorCore()
    core.record_refund(payment_id="p1", refund_id="r1", amount_minor=100, idempotency_key="k1")
    core.record_refund(payment_id="p1", refund_id="r2", amount_minor=None, idempotency_key="k2")
    core.record_refund(payment_id="p2", refund_id="r3", amount_minor=50, idempotency_key="k1")
    core.record_refund(payment_id="p3", refund_id="r4", amount_minor=7)
    journal = core.journal()
    assert journal["refunds_per_payment"] == {"p1": 2, "p2": 1, "p3": 1}
    assert journal["refunds_per_key"] == {"k1": 2, "k2": 1}
    assert [r["refund_id"] for r in journal["refunds"]] == ["r1", "r2", "r3", "r4"]
    assert journal["refunds"][1]["amount_minor"] is None
    assert journal["requests"] == []
    json.dumps(journal)  # served as JSON as it is


def test_reset_clears_everything() -> None:
    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.STATUS)])
    core.record_refund(payment_id="p1", refund_id="r1", amount_minor=1)
    core.reset()
    assert core.take_fault("POST", REFUND_PATH) is None
    assert core.journal() == {
        "requests": [],
        "refunds": [],
        "refunds_per_payment": {},
        "refunds_per_key": {},
    }


def test_fault_spec_validation() -> None:
    assert FaultSpec(kind=FaultKind.STATUS).status == 503
    assert FaultSpec(kind=FaultKind.STATUS).count == 1
    for bad in (
        {"kind": "status", "status": 200},
        {"kind": "status", "status": 600},
        {"kind": "status", "count": 0},
        {"kind": "latency", "seconds": -1},
        {"kind": "explode"},
        {"kind": "status", "unknown": True},
    ):
        with pytest.raises(ValueError, match="validation error"):
            FaultSpec.model_validate(bad)


# --- FaultMiddleware and the control routes, in process ----------------------------------------


def paynow_error_body(status: int, message: str) -> dict[str, Any]:
    return {"statusCode": status, "errors": [{"errorType": "SIMULATED", "message": message}]}


@dataclass
class Sim:
    core: SimulatorCore
    client: httpx.AsyncClient
    processed: list[str] = field(default_factory=list)
    resets: list[float] = field(default_factory=list)

    async def refund(self, key: str = "key-1") -> httpx.Response:
        return await self.client.post(
            REFUND_PATH, json={"amount": 100}, headers={"Idempotency-Key": key}
        )

    async def faults(self, payload: Any) -> httpx.Response:
        return await self.client.post(f"{CONTROL_PREFIX}/faults", json=payload)

    async def journal(self) -> dict[str, Any]:
        response = await self.client.get(f"{CONTROL_PREFIX}/journal")
        assert response.status_code == 200
        journal: dict[str, Any] = response.json()
        return journal


def build_sim(*, with_error_headers: bool = True) -> Sim:
    core = SimulatorCore()
    processed: list[str] = []
    resets: list[float] = []

    async def create_refund(request: Request) -> Response:
        refund_id = f"R-{len(processed) + 1}"
        processed.append(refund_id)
        core.record_refund(
            payment_id=request.path_params["payment_id"],
            refund_id=refund_id,
            amount_minor=(await request.json())["amount"],
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return JSONResponse({"refundId": refund_id, "status": "NEW"}, 201)

    async def refund_status(request: Request) -> Response:
        return JSONResponse({"refundId": request.path_params["refund_id"], "status": "NEW"})

    app = Starlette(
        routes=[
            Route("/v3/payments/{payment_id}/refunds", create_refund, methods=["POST"]),
            Route("/v3/refunds/{refund_id}/status", refund_status, methods=["GET"]),
            *control_routes(
                core, reset=lambda: resets.append(time.monotonic()), payments=lambda: PAYMENTS
            ),
        ]
    )
    wrapped = FaultMiddleware(
        app,
        core=core,
        error_body=paynow_error_body,
        error_headers=(lambda: {"Request-Id": "sim-request-1"}) if with_error_headers else None,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://sim.test"
    )
    return Sim(core=core, client=client, processed=processed, resets=resets)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    built = build_sim()
    async with built.client:
        yield built


async def test_requests_pass_through_and_are_journaled(sim: Sim) -> None:
    response = await sim.refund(key="abc-1")
    assert response.status_code == 201
    assert response.json() == {"refundId": "R-1", "status": "NEW"}
    journal = await sim.journal()
    assert len(journal["requests"]) == 1  # the journal call itself is not journaled
    entry = journal["requests"][0]
    assert entry["method"] == "POST"
    assert entry["path"] == REFUND_PATH
    assert entry["status"] == 201
    assert entry["fault"] is None
    assert entry["idempotency_key"] == "abc-1"
    assert journal["refunds_per_payment"] == {"PAY1-AAA-BBB-CCC": 1}
    assert journal["refunds_per_key"] == {"abc-1": 1}


async def test_status_fault_answers_the_provider_error_without_processing(sim: Sim) -> None:
    queued = await sim.faults({"kind": "status", "status": 502})
    assert queued.status_code == 201
    assert queued.json() == {"queued": 1}

    response = await sim.refund()
    assert response.status_code == 502
    assert response.json() == paynow_error_body(502, "Simulated provider failure.")
    assert response.headers["Request-Id"] == "sim-request-1"
    assert sim.processed == []

    journal = await sim.journal()
    assert journal["requests"][0]["status"] == 502
    assert journal["requests"][0]["fault"] == "status"
    assert journal["refunds"] == []
    # One fault, one request: the next goes through.
    assert (await sim.refund()).status_code == 201


async def test_status_fault_defaults_to_503(sim: Sim) -> None:
    await sim.faults({"kind": "status"})
    response = await sim.refund()
    assert response.status_code == 503
    assert response.json()["statusCode"] == 503


async def test_error_headers_are_optional() -> None:
    built = build_sim(with_error_headers=False)
    async with built.client:
        await built.faults({"kind": "status"})
        response = await built.refund()
    assert response.status_code == 503
    assert "Request-Id" not in response.headers


async def test_rate_limit_sets_retry_after(sim: Sim) -> None:
    await sim.faults({"kind": "rate_limit", "retry_after": "7"})
    response = await sim.refund()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Request-Id"] == "sim-request-1"
    assert response.json() == paynow_error_body(429, "Too many requests.")
    assert sim.processed == []
    assert (await sim.journal())["requests"][0]["fault"] == "rate_limit"


async def test_rate_limit_ignores_the_status_field_and_may_omit_retry_after(sim: Sim) -> None:
    await sim.faults({"kind": "rate_limit", "status": 500})
    response = await sim.refund()
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


async def test_latency_delays_then_processes(sim: Sim) -> None:
    await sim.faults({"kind": "latency", "seconds": 0.05})
    started = time.monotonic()
    response = await sim.refund()
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert elapsed >= 0.045  # the event loop may wake a hair early
    assert sim.processed == ["R-1"]
    entry = (await sim.journal())["requests"][0]
    assert entry["fault"] == "latency"
    assert entry["status"] == 201


async def test_process_then_hang_makes_the_refund_but_withholds_the_answer(sim: Sim) -> None:
    await sim.faults({"kind": "process_then_hang", "seconds": 5})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sim.refund(key="hung-1"), timeout=0.2)
    # The client saw nothing, yet the refund exists: an unknown outcome.
    assert sim.processed == ["R-1"]
    journal = await sim.journal()
    assert journal["refunds_per_key"] == {"hung-1": 1}
    assert journal["requests"][0]["fault"] == "process_then_hang"
    assert journal["requests"][0]["status"] is None


async def test_process_then_hang_answers_after_the_delay(sim: Sim) -> None:
    await sim.faults({"kind": "process_then_hang", "seconds": 0.05})
    started = time.monotonic()
    response = await sim.refund()
    assert time.monotonic() - started >= 0.045
    assert response.status_code == 201
    assert response.json()["refundId"] == "R-1"
    assert (await sim.journal())["requests"][0]["status"] == 201


async def test_drop_processes_then_fails_the_connection(sim: Sim) -> None:
    await sim.faults({"kind": "drop"})
    with pytest.raises(ConnectionAbortedError):
        await sim.refund()
    assert sim.processed == ["R-1"]


async def test_faults_only_hit_matching_requests(sim: Sim) -> None:
    await sim.faults({"kind": "status", "path_contains": "/refunds", "method": "POST"})
    status = await sim.client.get(STATUS_PATH)
    assert status.status_code == 200
    assert (await sim.refund()).status_code == 503


async def test_control_routes_are_neither_faulted_nor_journaled(sim: Sim) -> None:
    await sim.faults({"kind": "status", "count": 2})
    assert (await sim.client.get(f"{CONTROL_PREFIX}/payments")).status_code == 200
    assert (await sim.journal())["requests"] == []
    assert (await sim.refund()).status_code == 503


async def test_post_a_list_of_faults(sim: Sim) -> None:
    response = await sim.faults(
        [{"kind": "status", "status": 500}, {"kind": "rate_limit", "retry_after": "1"}]
    )
    assert response.status_code == 201
    assert response.json() == {"queued": 2}
    assert (await sim.refund()).status_code == 500
    assert (await sim.refund()).status_code == 429
    assert (await sim.refund()).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"{}",
        b'{"kind": "explode"}',
        b'{"kind": "status", "status": 200}',
        b'{"kind": "status", "unknown": 1}',
        b'[{"kind": "status"}, {"kind": "nope"}]',
        b'"status"',
    ],
)
async def test_garbage_faults_are_refused_with_422(sim: Sim, body: bytes) -> None:
    response = await sim.client.post(
        f"{CONTROL_PREFIX}/faults", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "error" in response.json()
    # Nothing was queued, not even the valid half of a list.
    assert (await sim.refund()).status_code == 201


async def test_delete_faults(sim: Sim) -> None:
    await sim.faults({"kind": "status", "count": 10})
    response = await sim.client.delete(f"{CONTROL_PREFIX}/faults")
    assert response.status_code == 204
    assert (await sim.refund()).status_code == 201


async def test_reset_clears_state_and_calls_the_reset_callback(sim: Sim) -> None:
    await sim.refund()
    await sim.faults({"kind": "status", "count": 3})
    response = await sim.client.post(f"{CONTROL_PREFIX}/reset")
    assert response.status_code == 204
    assert len(sim.resets) == 1
    journal = await sim.journal()
    assert journal["requests"] == []
    assert journal["refunds"] == []
    assert (await sim.refund()).status_code == 201


async def test_payments_route_serves_the_seed(sim: Sim) -> None:
    response = await sim.client.get(f"{CONTROL_PREFIX}/payments")
    assert response.status_code == 200
    assert response.json() == PAYMENTS


async def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def never_receive() -> Any:
        raise AssertionError("not called")

    async def never_send(message: Any) -> None:
        raise AssertionError("not called")

    core = SimulatorCore()
    core.add_faults([FaultSpec(kind=FaultKind.STATUS)])
    middleware = FaultMiddleware(inner, core=core, error_body=paynow_error_body)
    await middleware({"type": "lifespan"}, never_receive, never_send)
    assert seen == ["lifespan"]
    assert core.take_fault("POST", REFUND_PATH) is not None
