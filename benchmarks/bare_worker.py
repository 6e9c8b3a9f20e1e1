"""The baseline of the refund throughput benchmark: a bare workflow of three no-op activities.

``python -m benchmarks.bare_worker`` runs a worker of :class:`BareWorkflow` on
``BARE_TASK_QUEUE`` against ``TEMPORAL_ADDRESS`` until SIGTERM or SIGINT. It is its own
process, as the refund worker is, so the two are compared on equal terms: the same dev server,
one worker process each, the same client starting the workflows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

BARE_TASK_QUEUE = "bench-bare"


@activity.defn(name="bench_noop")
async def noop(step: str) -> str:
    return step


@workflow.defn(name="BenchBareWorkflow")
class BareWorkflow:
    """What a refund does at the least: three activities in turn, nothing else."""

    @workflow.run
    async def run(self, label: str) -> str:
        for step in ("validate", "submit", "poll"):
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=timedelta(seconds=30)
            )
        return label


async def serve() -> None:
    client = await Client.connect(
        os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"),
        namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client, task_queue=BARE_TASK_QUEUE, workflows=[BareWorkflow], activities=[noop]
    ):
        print("bare worker ready", flush=True)
        await stop.wait()


def main() -> None:
    asyncio.run(serve())
    sys.stdout.flush()
    # Skip interpreter teardown: the SDK can abort there (temporalio issue #300).
    os._exit(0)


if __name__ == "__main__":
    main()
