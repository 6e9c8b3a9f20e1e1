"""What payload encryption costs: the encrypting converter against the plain one.

``python -m benchmarks.codec_overhead [--rounds N]`` (or ``make bench``) converts a refund's
workflow input and its final status to payloads and back, ``N`` times with pydantic's plain
converter (the baseline) and ``N`` times with the encrypting converter the worker and starters
use when ``REFUNDS_ENCRYPTION_KEYS`` is set. It prints microseconds per round trip, the ratio
of the two, and the payload sizes. Both are measured in the same process, alternating, so the
ratio holds across machines better than either figure alone.

Every payload crosses this path when it is written and when it is read (worker, starter,
codec server), so the per-payload figure times the payloads a refund writes and reads is what
encryption adds to a refund's CPU time; the provider's answer times dwarf it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from codec import Keyring, encrypting_converter
from core.models import ProviderName, RefundRequest, RefundState, RefundStatus
from workflows.models import RefundWorkflowInput

DEFAULT_ROUNDS = 2000
BATCHES = 5


def sample_values() -> list[Any]:
    """A refund's workflow input and final status: what most of its payloads look like."""
    request = RefundRequest(
        idempotency_key="bench-order-1042-r1",
        provider=ProviderName.PAYNOW,
        payment_id="NOLV-8F9-08K-WGD",
        amount_minor=2500,
        currency="PLN",
        reason="damaged in transit: the customer sent photos of the box",
        requester="support-agent-17",
        metadata={"order": "1042", "ticket": "SUP-88213"},
    )
    status = RefundStatus(
        key=request.idempotency_key,
        workflow_id=request.workflow_id,
        provider=ProviderName.PAYNOW,
        payment_id=request.payment_id,
        state=RefundState.SUCCEEDED,
        amount_minor=2500,
        currency="PLN",
        provider_refund_id="R2WB-FRK-BKJ-P31",
        provider_status="SUCCESSFUL",
        started_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    )
    return [RefundWorkflowInput(request=request), status]


@dataclass(frozen=True)
class Measured:
    name: str
    micros_per_round: float
    payload_bytes: int


async def round_trip(converter: DataConverter, values: Sequence[Any]) -> list[Payload]:
    payloads = await converter.encode(values)
    decoded = await converter.decode(payloads, [type(v) for v in values])
    if decoded != list(values):
        raise AssertionError(f"{converter!r} did not give back what it was given")
    return payloads


async def measure(
    converters: dict[str, DataConverter], values: Sequence[Any], rounds: int
) -> list[Measured]:
    """Median of ``BATCHES`` batches of ``rounds // BATCHES`` round trips, converters
    alternating batch by batch so drift in the machine's speed hits both alike."""
    per_batch = max(1, rounds // BATCHES)
    timings: dict[str, list[float]] = {name: [] for name in converters}
    sizes: dict[str, int] = {}
    for name, converter in converters.items():  # warm-up, and the sizes
        payloads = await round_trip(converter, values)
        sizes[name] = sum(p.ByteSize() for p in payloads)
    for _ in range(BATCHES):
        for name, converter in converters.items():
            began = time.perf_counter()
            for _ in range(per_batch):
                await round_trip(converter, values)
            timings[name].append((time.perf_counter() - began) / per_batch * 1e6)
    return [Measured(name, statistics.median(timings[name]), sizes[name]) for name in converters]


def report(results: list[Measured], rounds: int, values: int) -> str:
    baseline = results[0]
    lines = [
        f"codec overhead: {rounds} round trips (encode + decode) of {values} payloads "
        "(a refund's workflow input and final status), median of "
        f"{BATCHES} batches",
        "",
        f"{'converter':<12} {'us/round trip':>14} {'us/payload':>11} {'ratio':>7} {'bytes':>7}",
    ]
    for result in results:
        lines.append(
            f"{result.name:<12} {result.micros_per_round:>14.1f} "
            f"{result.micros_per_round / values:>11.1f} "
            f"{result.micros_per_round / baseline.micros_per_round:>6.2f}x "
            f"{result.payload_bytes:>7}"
        )
    extra = results[-1].micros_per_round - baseline.micros_per_round
    lines += [
        "",
        f"encryption adds {extra / values:.1f} us and "
        f"{(results[-1].payload_bytes - baseline.payload_bytes) / values:.0f} bytes per payload",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codec_overhead")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="round trips each")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    key = base64.b64encode(os.urandom(32)).decode()
    converters = {
        "plain": pydantic_data_converter,
        "encrypted": encrypting_converter(Keyring.parse(f"bench:{key}", "bench")),
    }
    values = sample_values()
    results = asyncio.run(measure(converters, values, args.rounds))
    print(report(results, args.rounds, len(values)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
