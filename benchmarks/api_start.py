"""What the HTTP API costs a caller starting refunds: ``POST /v1/refunds`` against a direct
``RefundClient.start``, on the same embedded stack in the same run.

``python -m benchmarks.api_start [--rounds R] [--starts S] [--clients N]`` (or ``make bench``)
starts one embedded stack (Temporal dev server, simulators, worker, ``refunds api``) on free
ports with a temporary state directory, then runs ``R`` rounds. In each round both ways start
``S`` refunds with ``N`` concurrent clients, in alternating order (round 1 direct first,
round 2 HTTP first, ...), so drift in the machine's load hits both alike:

* **direct**: ``N`` tasks sharing one ``RefundClient`` in this process (how a Python service
  starts refunds: one Temporal client per process);
* **HTTP**: ``N`` ``httpx.AsyncClient``s, each with its own keep-alive connection, posting to
  ``refunds api``, which starts the refund through its own ``RefundClient``.

Each refund is of a fresh Paynow payment of the ``succeeds_immediately`` scenario, made
through the simulator's ``POST /paynow/_sim/payments`` before the round (outside the timing),
so amounts never run out and no two refunds share a payment's lane. A start is timed from
the call until ``RefundClient.start`` returns or the API answers 201; throughput is a round's
starts over its wall time. Refunds are not waited for: the worker carries on with earlier
rounds' refunds meanwhile, as a live service's does, and the alternating order shares that
load between both ways. The figures printed are the medians over the rounds of each round's
p50, p99 and throughput, and the HTTP figures as ratios of the direct ones: the ratios hold
across machines better than the figures themselves. Nothing is asserted about them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.keys import Scope, hash_token, new_token
from core.models import ProviderName, RefundRequest
from devstack.stack import EmbeddedStack, StackConfig
from simulators.serving import free_port
from starter.client import RefundClient

DEFAULT_ROUNDS = 3
DEFAULT_STARTS = 50
DEFAULT_CLIENTS = 8
# Untimed starts of each way before the first round: connections, caches, first imports.
WARM_UP_STARTS = 4
SCENARIO = "succeeds_immediately"
AMOUNT_MINOR = 100  # 1.00 PLN of a 100.00 PLN payment: Paynow's card minimum
CURRENCY = "PLN"
DIRECT = "direct"
HTTP = "http"
LABELS = {DIRECT: "RefundClient.start", HTTP: "POST /v1/refunds"}

# Starts one refund of the payment under the key and returns when it has been started.
Starter = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class Round:
    """One way's figures in one round."""

    latencies_ms: list[float]
    wall_s: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.wall_s


@dataclass(frozen=True)
class Figures:
    """One way's medians over the rounds."""

    name: str
    p50_ms: float
    p99_ms: float
    starts_per_s: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0-1): a value that was measured, also for the
    small samples of a test run."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def summarize(name: str, rounds: Sequence[Round]) -> Figures:
    return Figures(
        name,
        statistics.median(percentile(r.latencies_ms, 0.50) for r in rounds),
        statistics.median(percentile(r.latencies_ms, 0.99) for r in rounds),
        statistics.median(r.throughput for r in rounds),
    )


def request_for(key: str, payment_id: str) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key,
        provider=ProviderName.PAYNOW,
        payment_id=payment_id,
        amount_minor=AMOUNT_MINOR,
        currency=CURRENCY,
        reason="benchmark",
    )


async def new_payments(sim: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` fresh ``succeeds_immediately`` Paynow payments."""

    async def one() -> str:
        response = await sim.post("/paynow/_sim/payments", json={"scenario": SCENARIO})
        if response.status_code != 201:
            raise RuntimeError(f"the Paynow simulator made no payment: {response.text}")
        payment_id: str = response.json()["payment_id"]
        return payment_id

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def run_round(
    start: Starter, keys: Sequence[str], payments: Sequence[str], clients: int
) -> Round:
    """Start one refund per key, ``clients`` at a time, each client taking the next key."""
    pending = iter(zip(keys, payments, strict=True))
    latencies: list[float] = []

    async def client() -> None:
        for key, payment_id in pending:
            began = time.perf_counter()
            await start(key, payment_id)
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Round(latencies, time.perf_counter() - began)


def report(figures: Sequence[Figures], *, rounds: int, starts: int, clients: int) -> str:
    direct, http = figures
    lines = [
        f"refund start: {rounds} rounds of {starts} starts each way, {clients} concurrent "
        f"clients, Paynow {SCENARIO} payments; medians of the rounds",
        "",
        f"{'how':<20} {'p50 ms':>8} {'p99 ms':>8} {'starts/s':>9} {'p50':>7} {'p99':>7} "
        f"{'starts/s':>9}",
    ]
    for result in figures:
        lines.append(
            f"{LABELS[result.name]:<20} {result.p50_ms:>8.1f} {result.p99_ms:>8.1f} "
            f"{result.starts_per_s:>9.1f} {result.p50_ms / direct.p50_ms:>6.2f}x "
            f"{result.p99_ms / direct.p99_ms:>6.2f}x "
            f"{result.starts_per_s / direct.starts_per_s:>8.2f}x"
        )
    lines += [
        "",
        f"the HTTP API adds {http.p50_ms - direct.p50_ms:.1f} ms at p50 and "
        f"{http.p99_ms - direct.p99_ms:.1f} ms at p99 to a start; its throughput is "
        f"{http.starts_per_s / direct.starts_per_s:.0%} of the direct client's",
    ]
    return "\n".join(lines)


async def measure(
    stack: EmbeddedStack, token: str, *, rounds: int, starts: int, clients: int
) -> list[Figures]:
    assert stack.api_url is not None
    refunds = await RefundClient.connect(stack.settings())
    run = secrets.token_hex(3)
    headers = {"Authorization": f"Bearer {token}"}
    results: dict[str, list[Round]] = {DIRECT: [], HTTP: []}
    async with httpx.AsyncClient(base_url=stack.sim_url, timeout=30) as sim:
        # One connection per HTTP client: each client task posts through its own.
        http_clients = [
            httpx.AsyncClient(
                base_url=stack.api_url,
                headers=headers,
                timeout=30,
                limits=httpx.Limits(max_connections=1),
            )
            for _ in range(clients)
        ]
        free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for each in http_clients:
            free.put_nowait(each)

        async def start_direct(key: str, payment_id: str) -> None:
            started = await refunds.start(request_for(key, payment_id))
            if not started.created:
                raise RuntimeError(f"refund {key} was not created")

        async def start_http(key: str, payment_id: str) -> None:
            body = request_for(key, payment_id).model_dump(
                mode="json",
                include={"provider", "payment_id", "amount_minor", "currency", "reason"},
            )
            client = await free.get()
            try:
                response = await client.post(
                    "/v1/refunds", json=body, headers={"Idempotency-Key": key}
                )
            finally:
                free.put_nowait(client)
            if response.status_code != 201:
                raise RuntimeError(
                    f"POST /v1/refunds answered {response.status_code}: {response.text}"
                )

        starters: dict[str, Starter] = {DIRECT: start_direct, HTTP: start_http}
        try:
            for number in range(rounds + 1):
                # Round 0 is the untimed warm-up.
                count = WARM_UP_STARTS if number == 0 else starts
                order = [DIRECT, HTTP] if number % 2 else [HTTP, DIRECT]
                for name in order:
                    payments = await new_payments(sim, count)
                    keys = [f"bench-{run}-{name}-{number}-{i}" for i in range(count)]
                    measured = await run_round(starters[name], keys, payments, clients)
                    if number > 0:
                        results[name].append(measured)
                        print(
                            f"round {number}/{rounds}: {name} {count} starts in "
                            f"{measured.wall_s:.1f}s",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for each in http_clients:
                await each.aclose()
    return [summarize(name, results[name]) for name in (DIRECT, HTTP)]


async def run(*, rounds: int, starts: int, clients: int) -> str:
    token = new_token()
    keys = [{"name": "bench", "sha256": hash_token(token), "scopes": [Scope.WRITE.value]}]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as state_dir:
        stack = EmbeddedStack(
            StackConfig(
                temporal_port=free_port(),
                ui_port=free_port(),
                sim_port=free_port(),
                api_port=free_port(),
                state_dir=Path(state_dir),
                secret_env={"REFUNDS_API_KEYS": json.dumps(keys)},
            )
        )
        async with stack:
            figures = await measure(stack, token, rounds=rounds, starts=starts, clients=clients)
    return report(figures, rounds=rounds, starts=starts, clients=clients)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_start")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds each way")
    parser.add_argument("--starts", type=int, default=DEFAULT_STARTS, help="starts per round")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent clients")
    args = parser.parse_args(argv)
    for name in ("rounds", "starts", "clients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be 1 or more")
    print(asyncio.run(run(rounds=args.rounds, starts=args.starts, clients=args.clients)))
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    # Skip interpreter teardown: the Temporal SDK can abort there (temporalio issue #300).
    os._exit(status)
