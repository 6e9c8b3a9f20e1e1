"""`refunds worker | sim | codec-server`: the long-running servers, each until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading

from cli import output, runner
from cli.runner import EXIT_OK, CommandError, Commands, port


def register(commands: Commands) -> None:
    worker = commands.add_parser("worker", help="run the refund worker (settings from the env)")
    worker.set_defaults(handler=cmd_worker)

    sim = commands.add_parser("sim", help="serve the Mews and Paynow simulators on one port")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=port, default=8700)
    sim.set_defaults(handler=cmd_sim)

    codec_server = commands.add_parser(
        "codec-server",
        help="serve the codec server the Temporal UI and CLI decrypt refunds through",
        description=(
            "Decrypt (and encrypt) refund payloads for the Temporal UI and CLI, with the keys of "
            "REFUNDS_ENCRYPTION_KEYS. Optional: REFUNDS_CODEC_AUTH_TOKEN (bearer token every "
            "call needs), REFUNDS_CODEC_UI_ORIGINS (the UI origins CORS allows). See "
            "docs/encryption.md."
        ),
    )
    codec_server.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    codec_server.add_argument("--port", type=port, default=8234, help="default 8234")
    codec_server.set_defaults(handler=cmd_codec_server)


async def cmd_worker(args: argparse.Namespace) -> int:
    from worker import run_worker

    # run_worker sets up JSON logs, tracing and metrics itself.
    await run_worker(runner.load_settings())
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    # Imported here: the simulators sit beside the product and only this command serves them.
    from simulators.server import CombinedSimulators
    from simulators.serving import BackgroundServer, PortInUseError

    sims = CombinedSimulators()
    server = BackgroundServer(sims.app, host=args.host, port=args.port)
    try:
        server.start()
    except PortInUseError as err:
        # The server binds before uvicorn runs: this is the only line about it.
        raise CommandError(
            f"cannot serve the simulators on {args.host}:{args.port} ({err.strerror}): "
            "stop what listens there or choose another port with --port"
        ) from None
    except RuntimeError:
        raise CommandError(
            f"the simulators did not start on {args.host}:{args.port}; choose another "
            "address with --host / --port"
        ) from None
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104
    info = sims.describe(f"http://{shown_host}:{args.port}")
    env: dict[str, str] = {}
    for described in info["providers"].values():
        env.update(described["env"])
    print(f"Simulators on http://{shown_host}:{args.port}  (GET / describes them as JSON)")
    for name, described in info["providers"].items():
        print(f"  {name:<7} {described['base_url']}")
    print("\nEnvironment for a worker (made-up credentials, accepted only by these simulators):")
    print(output.render_env(env))
    print()
    print(output.render_sim_payments(info))
    print(
        "\nA fresh payment per run: POST <base url>/_sim/payments "
        '{"scenario": "succeeds"}; journal: GET <base url>/_sim/journal'
    )
    print("Ctrl-C to stop.", flush=True)
    _wait_for_stop_signal()
    server.stop()
    return EXIT_OK


def cmd_codec_server(args: argparse.Namespace) -> int:
    from codec.server import serve_codec

    # Serves until SIGINT / SIGTERM (uvicorn handles both).
    serve_codec(runner.load_settings(), host=args.host, port=args.port)
    return EXIT_OK


def _wait_for_stop_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
