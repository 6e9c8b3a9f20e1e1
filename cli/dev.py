"""`refunds dev | demo | chaos`: the dev harness (:mod:`devstack`) from the command line.

The harness is imported inside each command, never here: parsing and every other command
(`refunds start` first of all) run without it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from cli import output
from cli.runner import EXIT_OK, Commands, InputError, port, positive_int
from core.settings import Settings

if TYPE_CHECKING:
    from devstack.stack import StackConfig

# devstack.stack.DEFAULT_STATE_DIR (a test holds them equal), named here so that building the
# parser never imports the dev harness.
STATE_DIR = Path(".refunds")
# `refunds dev --fast`: status checks from 1 s, doubling up to 5 s (REFUNDS_POLL_INITIAL_S,
# REFUNDS_POLL_MAX_S), so that a `slow` scenario ends in a minute rather than many.
FAST_POLL_INITIAL_S = 1.0
FAST_POLL_MAX_S = 5.0
# The HTTP API's port in the embedded stack: REFUNDS_API_PORT's default.
API_PORT: int = Settings.model_fields["refunds_api_port"].default


def register(commands: Commands) -> None:
    dev = commands.add_parser(
        "dev",
        help="run Temporal dev server + simulators + worker (+ codec server) until Ctrl-C",
        description=(
            "Run the Temporal dev server, both provider simulators and a worker (and the codec "
            "server when encryption is configured) until Ctrl-C. A refund checks its provider "
            "after REFUNDS_POLL_INITIAL_S (default 5 s), the wait doubling up to "
            "REFUNDS_POLL_MAX_S (default 300 s), as set where the refund is started: the "
            "banner shows the timing and the settings to export."
        ),
    )
    _stack_arguments(dev, STATE_DIR)
    dev.add_argument(
        "--fast",
        action="store_true",
        help=(
            f"poll providers every {FAST_POLL_INITIAL_S:g}s doubling to {FAST_POLL_MAX_S:g}s "
            "(REFUNDS_POLL_INITIAL_S / REFUNDS_POLL_MAX_S for the worker and the starter "
            "settings it prints), for trying things out; default: the environment's, 5s to 300s"
        ),
    )
    dev.set_defaults(handler=cmd_dev)

    demo = commands.add_parser(
        "demo", help="run every refund outcome end to end on an embedded stack"
    )
    _stack_arguments(demo, STATE_DIR / "demo")
    demo.add_argument("--keep", action="store_true", help="keep the stack up until Ctrl-C")
    demo.set_defaults(handler=cmd_demo)

    chaos = commands.add_parser(
        "chaos",
        help="many refunds under random provider faults and worker kills; checks exactly-once",
        description=(
            "Start an embedded stack on free ports, run --count refunds (both providers, random "
            "scenarios and amounts; Mews refunds of several payments on shared accounts, started "
            "together and often for the same amount) while injecting simulator faults, a long "
            "503 outage of one provider's refund call and worker kills, then count refunds at "
            "the providers. Exit 0 only when every refund was started and ended final and "
            "correct: none parked in NEEDS_ATTENTION, unstarted, duplicated, orphaned, of the "
            "wrong amount, or lost."
        ),
    )
    chaos.add_argument("--count", type=positive_int, default=200, help="refunds (default 200)")
    chaos.add_argument("--seed", type=int, help="random seed (printed; default: a fresh one)")
    chaos.add_argument("--concurrency", type=positive_int, default=16, help="parallel starts")
    chaos.add_argument("--kills", type=int, default=3, help="worker SIGKILLs (default 3)")
    chaos.add_argument(
        "--storm", type=float, default=60.0, help="seconds of faults after the last start"
    )
    chaos.add_argument(
        "--deadline", type=float, default=300.0, help="seconds for refunds to end after the storm"
    )
    chaos.add_argument("--state-dir", type=Path, help="default: a new temporary directory")
    chaos.add_argument("--keep", action="store_true", help="keep the stack up until Ctrl-C")
    chaos.add_argument("--json", action="store_true", help="print JSON (progress to stderr)")
    chaos.set_defaults(handler=cmd_chaos)


def _stack_arguments(parser: argparse.ArgumentParser, state_dir: Path) -> None:
    parser.add_argument("--temporal-port", type=port, default=7233)
    parser.add_argument("--ui-port", type=port, default=8233)
    parser.add_argument("--sim-port", type=port, default=8700)
    parser.add_argument(
        "--codec-port",
        type=port,
        default=8234,
        help="codec server for the UI, started only when encryption is configured",
    )
    parser.add_argument(
        "--api-port", type=port, default=API_PORT, help="the HTTP API, `refunds api`"
    )
    parser.add_argument("--state-dir", type=Path, default=state_dir, help=f"default {state_dir}/")


def _stack_config(args: argparse.Namespace) -> StackConfig:
    from devstack.stack import StackConfig

    return StackConfig(
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        sim_port=args.sim_port,
        state_dir=args.state_dir,
        codec_port=args.codec_port,
        api_port=args.api_port,
    )


def _stop_event() -> asyncio.Event:
    """Set on SIGINT / SIGTERM (must be called inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def cmd_dev(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from devstack.stack import EmbeddedStack

    stop = _stop_event()
    config = _stack_config(args)
    if args.fast:
        config = replace(config, poll_initial_s=FAST_POLL_INITIAL_S, poll_max_s=FAST_POLL_MAX_S)
    stack = EmbeddedStack(config)
    print(
        f"starting Temporal on {stack.temporal_address}, simulators on {stack.sim_url}, "
        f"a worker (logs in {stack.log_dir}/)...",
        flush=True,
    )
    async with stack:
        print(f"\nTemporal UI   {stack.ui_url}")
        print(f"Temporal      {stack.temporal_address}  (namespace default)")
        print(
            f"Nexus         endpoint {stack.nexus_endpoint} -> namespace default, task queue "
            f"{stack.config.task_queue}  (service refunds, docs/nexus.md)"
        )
        print(
            f"Simulators    {stack.sim_url}  (Mews {stack.sim_url}/mews, "
            f"Paynow {stack.sim_url}/paynow)"
        )
        if stack.codec_url:
            print(f"Codec server  {stack.codec_url}  (the UI decrypts refunds through it)")
        if stack.api_url:
            print(f"HTTP API      {stack.api_url}  (docs {stack.api_url}/docs, docs/api.md)")
            if stack.api_token:
                bearer = '-H "Authorization: Bearer $TOKEN"'
                print(
                    "              a dev key with every scope, for this run only:\n"
                    f"              export TOKEN={stack.api_token}\n"
                    f"              curl {bearer} {stack.api_url}/v1/refunds"
                )
        if stack.mews_webhook_url:
            # The URL's token is a secret even for a run: masked, as in the API's own log.
            print(
                f"Mews webhooks the Mews simulator sends PaymentUpdated to {stack.mews_webhook_url}"
                "\n              (a token made for this run, not shown): a Mews refund checks "
                "its status as soon as it changes"
            )
        if stack.events_secret:
            print(
                "Events        outcome events to a refund's notify_url (localhost allowed) are "
                "signed with a secret made for this run:\n"
                f"              export REFUNDS_EVENTS_SECRET={stack.events_secret}"
            )
        print(f"State         {stack.state_dir}/ (temporal.db, logs/)")
        settings = stack.settings()
        initial, longest = settings.refunds_poll_initial_s, settings.refunds_poll_max_s
        print(
            f"Polling       a refund checks its provider after {initial:g}s, the wait doubling "
            f"up to {longest:g}s (REFUNDS_POLL_INITIAL_S, REFUNDS_POLL_MAX_S where it is started)"
        )
        if not args.fast:
            print(
                f"              `slow` scenarios take minutes: `refunds dev --fast` polls every "
                f"{FAST_POLL_INITIAL_S:g}s to {FAST_POLL_MAX_S:g}s"
            )
        starter_env = {"TEMPORAL_ADDRESS": stack.temporal_address}
        allow_private = stack.settings_env().get("REFUNDS_EVENTS_ALLOW_PRIVATE")
        if allow_private is not None:
            # Set by the stack, not configured: a starter in another shell needs it too, or it
            # refuses the localhost notify_url the banner allows.
            starter_env["REFUNDS_EVENTS_ALLOW_PRIVATE"] = allow_private
        if args.fast:
            starter_env["REFUNDS_POLL_INITIAL_S"] = f"{initial:g}"
            starter_env["REFUNDS_POLL_MAX_S"] = f"{longest:g}"
        print("\nPoint a starter at it:")
        print(output.render_env(starter_env))
        print("\nOr run your own worker against the simulators (stop this one first):")
        print(output.render_env(stack.settings_env()))
        print()
        print(output.render_sim_payments(stack.sim_info))
        print("\nCtrl-C to stop them all.", flush=True)
        await stop.wait()
        print("stopping...", flush=True)
    print("stopped.")
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo

    return await run_demo(_stack_config(args), keep=args.keep, stop=_stop_event())


async def cmd_chaos(args: argparse.Namespace) -> int:
    from devstack.chaos import ChaosConfig, run_chaos

    if args.kills < 0:
        raise InputError("--kills", "must be 0 or more")
    if args.deadline <= 0:
        raise InputError("--deadline", "must be more than 0 seconds")
    if args.storm < 0:
        raise InputError("--storm", "must be 0 seconds or more")
    config = ChaosConfig(
        count=args.count,
        seed=args.seed,
        concurrency=args.concurrency,
        kills=args.kills,
        storm_after_starts_s=args.storm,
        deadline_s=args.deadline,
    )
    return await run_chaos(
        config, state_dir=args.state_dir, keep=args.keep, stop=_stop_event(), as_json=args.json
    )
