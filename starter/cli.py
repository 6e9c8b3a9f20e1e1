"""`refunds`: start, follow, cancel and resolve refunds; run the worker, the simulators, the
dev stack and the demo. See ``docs/cli.md``.

Exit codes: 0 ok; 1 any other failure; 2 invalid input (arguments, request fields, amounts,
settings); 3 idempotency conflict; 4 no refund with that key. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from pydantic import ValidationError

from codec.encryption import EncryptionSettingsError
from core.models import (
    FINAL_STATES,
    ProviderName,
    ReasonCode,
    RefundRequest,
    RefundState,
    ResolveAction,
)
from core.money import MoneyError, parse_major
from core.settings import MissingSettingError, Settings
from providers.errors import InvalidRequestError
from providers.registry import check_request
from starter import batch, output
from starter.batch import describe_validation
from starter.client import (
    IdempotencyConflictError,
    RefundClient,
    RefundClientError,
    RefundNotFoundError,
    summary_line,
)
from starter.stack import DEFAULT_STATE_DIR, StackConfig, StackError
from telemetry.tracing import parent_context, setup_tracing
from workflows.models import ResolveRequest

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4

PROG = "refunds"

# Request fields as `refunds start` spells them, so an error names the flag to fix.
FLAG_OF_FIELD = {
    "idempotency_key": "--key",
    "provider": "--provider",
    "payment_id": "--payment-id",
    "account_id": "--account-id",
    "enterprise_id": "--enterprise-id",
    "amount_minor": "--amount",
    "currency": "--currency",
    "reason": "--reason",
    "reason_code": "--reason-code",
    "transfers": "--transfer",
    "requester": "--requester",
    "metadata": "--meta",
}


# `refunds resolve --close` values and the state each ends the refund in.
CLOSE_AS = {"failed": RefundState.FAILED, "canceled": RefundState.CANCELED}

# ResolveRequest fields as `refunds resolve` spells them.
FLAG_OF_RESOLVE_FIELD = {
    "refund_id": "--adopt",
    "close_as": "--close",
    "reason": "--reason",
    "by": "--by",
}

DEFAULT_OPERATOR = "operator"


class UsageError(Exception):
    """Bad command line: the message is the whole line to print."""


class InputError(Exception):
    """A value given on the command line that cannot be used; names the flag."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"invalid {flag}: {message}")


class _Parser(argparse.ArgumentParser):
    # One line instead of argparse's usage block: the hint says where the help is.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Durable, exactly-once payment refunds on Temporal (Mews, Paynow).",
        epilog=(
            "exit codes: 0 ok, 1 other failure, 2 invalid input, 3 idempotency conflict, "
            "4 refund not found. Settings come from the environment or .env "
            "(TEMPORAL_ADDRESS, ...)."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    start = commands.add_parser(
        "start",
        help="start a refund (or attach to the identical one with the same key)",
        description=(
            "Start a refund. The key makes it idempotent: the same key and the same request "
            "attach to the existing refund; the same key with any difference is a conflict "
            "(exit 3). Amounts are in major units as people write them (12.34 PLN)."
        ),
    )
    start.add_argument("--provider", required=True, choices=[p.value for p in ProviderName])
    start.add_argument("--payment-id", required=True, help="the provider's payment id")
    start.add_argument("--account-id", help="Mews: the account (customer) that paid")
    start.add_argument("--enterprise-id", help="Mews: the enterprise (Portfolio tokens only)")
    start.add_argument("--amount", help="amount in major units, e.g. 12.34; absent = whole")
    start.add_argument("--currency", help="ISO 4217 code of --amount, e.g. PLN")
    start.add_argument("--reason", required=True, help="why (shown to the provider)")
    start.add_argument("--reason-code", choices=[r.value for r in ReasonCode], help="Paynow")
    start.add_argument(
        "--transfer",
        action="append",
        default=[],
        metavar="SELLER:GROSS:FEE",
        help="Paynow marketplace transfer, amounts in major units of --currency (repeatable)",
    )
    start.add_argument("--key", required=True, help="idempotency key, 1-45 of [A-Za-z0-9._:-]")
    start.add_argument("--requester", help="who asks (for the audit trail)")
    start.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="metadata (repeatable)"
    )
    start.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    start.add_argument("--json", action="store_true", help="print JSON")
    _traceparent_argument(start)
    start.set_defaults(handler=cmd_start)

    status = commands.add_parser("status", help="show a refund's status")
    status.add_argument("key")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)

    cancel = commands.add_parser(
        "cancel", help="ask a refund to cancel (before submit, or while the provider allows)"
    )
    cancel.add_argument("key")
    cancel.add_argument("--reason", required=True)
    cancel.add_argument("--json", action="store_true", help="print JSON")
    cancel.set_defaults(handler=cmd_cancel)

    resolve = commands.add_parser(
        "resolve",
        help="decide a refund in NEEDS_ATTENTION: adopt a provider refund, re-send, or close",
        description=(
            "An operator's decision for a refund in NEEDS_ATTENTION. While its submit outcome "
            "is unknown: --adopt ID, this provider refund is this refund's (checked at the "
            "provider first: it must exist there, be of this refund's amount and currency, and "
            "not be claimed by another refund of the same account or payment); --resend, no "
            "refund was made: it looks once more, then sends again. Always: --close "
            "failed|canceled ends the refund so. The decision, who made it and why are "
            "recorded in the status. A refusal changes nothing (exit 1)."
        ),
    )
    resolve.add_argument("key")
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--adopt", metavar="REFUND_ID", help="the provider refund that is this refund's"
    )
    decision.add_argument(
        "--resend", action="store_true", help="no refund was made: look once more, then send"
    )
    decision.add_argument(
        "--close", choices=list(CLOSE_AS), help="end the refund as FAILED or CANCELED"
    )
    resolve.add_argument("--reason", required=True, help="why (recorded with the decision)")
    resolve.add_argument("--by", help="who decides (default: $USER, else 'operator')")
    resolve.add_argument("--json", action="store_true", help="print JSON")
    resolve.set_defaults(handler=cmd_resolve)

    listing = commands.add_parser("list", help="list refunds, newest first")
    listing.add_argument("--state", choices=[s.value for s in RefundState])
    listing.add_argument("--provider", choices=[p.value for p in ProviderName])
    listing.add_argument("--limit", type=_positive_int, default=50)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)

    batch = commands.add_parser(
        "batch",
        help="start refunds from a JSON Lines file (one RefundRequest per line)",
        description=(
            "Start one refund per line of FILE (JSON Lines, the RefundRequest field names; "
            "'-' reads stdin). Invalid lines are reported by number and nothing is started "
            "for them. Exit 0 when every line started or attached, else 1 (errors), "
            "3 (conflicts) or 2 (invalid lines), in that order."
        ),
    )
    batch.add_argument("file")
    batch.add_argument("--concurrency", type=_positive_int, default=8)
    batch.add_argument("--wait", action="store_true", help="also wait for every outcome")
    batch.add_argument("--json", action="store_true", help="print JSON (progress to stderr)")
    _traceparent_argument(batch)
    batch.set_defaults(handler=cmd_batch)

    worker = commands.add_parser("worker", help="run the refund worker (settings from the env)")
    worker.set_defaults(handler=cmd_worker)

    sim = commands.add_parser("sim", help="serve the Mews and Paynow simulators on one port")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8700)
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
    codec_server.add_argument("--port", type=_port, default=8234, help="default 8234")
    codec_server.set_defaults(handler=cmd_codec_server)

    dev = commands.add_parser(
        "dev",
        help="run Temporal dev server + simulators + worker (+ codec server) until Ctrl-C",
    )
    _stack_arguments(dev, DEFAULT_STATE_DIR)
    dev.set_defaults(handler=cmd_dev)

    demo = commands.add_parser(
        "demo", help="run every refund outcome end to end on an embedded stack"
    )
    _stack_arguments(demo, DEFAULT_STATE_DIR / "demo")
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
    chaos.add_argument("--count", type=_positive_int, default=200, help="refunds (default 200)")
    chaos.add_argument("--seed", type=int, help="random seed (printed; default: a fresh one)")
    chaos.add_argument("--concurrency", type=_positive_int, default=16, help="parallel starts")
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
    return parser


def _stack_arguments(parser: argparse.ArgumentParser, state_dir: Path) -> None:
    parser.add_argument("--temporal-port", type=_port, default=7233)
    parser.add_argument("--ui-port", type=_port, default=8233)
    parser.add_argument("--sim-port", type=_port, default=8700)
    parser.add_argument(
        "--codec-port",
        type=_port,
        default=8234,
        help="codec server for the UI, started only when encryption is configured",
    )
    parser.add_argument("--state-dir", type=Path, default=state_dir, help=f"default {state_dir}/")


def _traceparent_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traceparent",
        metavar="HEADER",
        help=(
            "W3C traceparent of the caller's trace to continue (default: $TRACEPARENT; "
            "otherwise a new trace)"
        ),
    )


def traceparent_of(args: argparse.Namespace) -> str | None:
    """The trace to continue: ``--traceparent`` (checked: a bad one is an input error), else
    ``$TRACEPARENT`` when it is a valid one (a bad inherited value only starts a new trace)."""
    if args.traceparent is not None:
        if parent_context(args.traceparent) is None:
            raise InputError(
                "--traceparent",
                f"{args.traceparent!r} is not a W3C traceparent "
                "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)",
            )
        return str(args.traceparent)
    inherited = os.environ.get(TRACEPARENT_ENV, "").strip()
    return inherited if parent_context(inherited) is not None else None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return value


def _stack_config(args: argparse.Namespace) -> StackConfig:
    return StackConfig(
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        sim_port=args.sim_port,
        state_dir=args.state_dir,
        codec_port=args.codec_port,
    )


# The OpenTelemetry convention for handing a trace to a child process through its environment.
TRACEPARENT_ENV = "TRACEPARENT"

_ZERO = re.compile(r"^0+(\.0*)?$")


def parse_amount(text: str, currency: str, *, flag: str, allow_zero: bool = False) -> int:
    """Minor units of ``text`` (major units of ``currency``); refuses anything inexact."""
    if allow_zero and _ZERO.match(text.strip()):
        return 0
    try:
        return parse_major(text, currency)
    except MoneyError as err:
        raise InputError(flag, str(err)) from None


def parse_transfer(spec: str, currency: str | None) -> dict[str, Any]:
    """``SELLER:GROSS:FEE`` (amounts in major units of ``currency``) -> a Transfer's fields."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise InputError(
            "--transfer", f"expected SELLER:GROSS:FEE like s1:10.00:0.50, got {spec!r}"
        )
    if currency is None:
        raise InputError("--transfer", "transfer amounts need --currency (and --amount)")
    seller, gross, fee = parts
    return {
        "seller_id": seller,
        "gross_amount_minor": parse_amount(gross, currency, flag="--transfer", allow_zero=True),
        "fee_amount_minor": parse_amount(fee, currency, flag="--transfer", allow_zero=True),
    }


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError("--meta", f"expected KEY=VALUE, got {pair!r}")
        metadata[name] = value
    return metadata


def build_request(args: argparse.Namespace) -> RefundRequest:
    """The request `refunds start` sends; raises InputError / ValidationError (exit 2)."""
    currency = args.currency.strip().upper() if args.currency else None
    amount_minor: int | None = None
    if args.amount is not None:
        if currency is None:
            raise InputError("--amount", "needs --currency, e.g. --amount 12.34 --currency PLN")
        amount_minor = parse_amount(args.amount, currency, flag="--amount")
    elif currency is not None:
        raise InputError("--currency", "goes with --amount (leave both out for the whole payment)")
    fields: dict[str, Any] = {
        "idempotency_key": args.key,
        "provider": args.provider,
        "payment_id": args.payment_id,
        "account_id": args.account_id,
        "enterprise_id": args.enterprise_id,
        "amount_minor": amount_minor,
        "currency": currency,
        "reason": args.reason,
        "reason_code": args.reason_code,
        "transfers": [parse_transfer(t, currency) for t in args.transfer],
        "requester": args.requester,
        "metadata": parse_meta(args.meta),
    }
    return RefundRequest.model_validate(fields)


# ------------------------------------------------------------------------------ commands


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        labels = {name: name.upper() for name in Settings.model_fields}
        raise InputError("settings", describe_validation(err, labels)) from None


async def connect(settings: Settings) -> RefundClient:
    try:
        return await RefundClient.connect(settings)
    except RuntimeError as err:
        raise RefundClientError(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}; set TEMPORAL_ADDRESS): {err}"
        ) from None


def cmd_start(args: argparse.Namespace) -> int:
    request = build_request(args)
    # Offline checks before any connection: bad input never needs (or reaches) a server.
    check_request(request)
    traceparent = traceparent_of(args)
    settings = load_settings()
    return asyncio.run(
        _start(request, settings, wait=args.wait, as_json=args.json, traceparent=traceparent)
    )


async def _start(
    request: RefundRequest,
    settings: Settings,
    *,
    wait: bool,
    as_json: bool,
    traceparent: str | None = None,
) -> int:
    client = await connect(settings)
    started = await client.start(request, traceparent=traceparent)
    if not as_json:
        verb = "created" if started.created else "attached to existing (same key, same request)"
        print(f"{verb}: {started.workflow_id}")
        print(f"  {summary_line(request)}")
    status = None
    if wait:
        if not as_json:
            print("waiting for the outcome...", flush=True)
        status = await client.wait(request.idempotency_key)
    if as_json:
        answer: dict[str, Any] = {
            "key": started.key,
            "workflow_id": started.workflow_id,
            "created": started.created,
        }
        if status is not None:
            answer["status"] = status.model_dump(mode="json")
        print(output.to_json(answer))
    elif status is not None:
        print(output.render_status(status))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def go() -> int:
        client = await connect(settings)
        status = await client.status(args.key)
        print(output.to_json(status) if args.json else output.render_status(status))
        return EXIT_OK

    return asyncio.run(go())


def cmd_cancel(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def go() -> int:
        client = await connect(settings)
        status = await client.cancel(args.key, args.reason)
        if args.json:
            print(output.to_json(status))
        else:
            print(f"cancel sent to {status.workflow_id}; state now {status.state.value}")
            print(output.render_status(status))
        return EXIT_OK

    return asyncio.run(go())


def default_operator() -> str:
    """Who resolves when --by is not given: the login name, else ``operator``."""
    return os.environ.get("USER", "").strip() or DEFAULT_OPERATOR


def build_resolution(args: argparse.Namespace) -> ResolveRequest:
    """The `resolve` update's payload from the command line; raises InputError (exit 2)."""
    if not args.reason.strip():
        raise InputError("--reason", "must not be blank: say why")
    by = default_operator() if args.by is None else args.by.strip()
    if not by:
        raise InputError("--by", "must not be blank (leave it out for $USER)")
    fields: dict[str, Any] = {"reason": args.reason, "by": by}
    if args.adopt is not None:
        refund_id = args.adopt.strip()
        if not refund_id:
            raise InputError("--adopt", "needs the provider refund id")
        fields.update(action=ResolveAction.ADOPT, refund_id=refund_id)
    elif args.resend:
        fields["action"] = ResolveAction.RESEND
    else:
        fields.update(action=ResolveAction.CLOSE, close_as=CLOSE_AS[args.close])
    try:
        return ResolveRequest.model_validate(fields)
    except ValidationError as err:
        raise InputError("resolution", describe_validation(err, FLAG_OF_RESOLVE_FIELD)) from None


def cmd_resolve(args: argparse.Namespace) -> int:
    request = build_resolution(args)
    settings = load_settings()

    async def go() -> int:
        client = await connect(settings)
        answer = await client.resolve(args.key, request)
        if args.json:
            print(output.to_json(answer))
            return EXIT_OK
        print(
            f"resolved refund {args.key!r} ({request.action.value} by {request.by}): {answer.note}"
        )
        print(f"state now {answer.state.value}")
        if answer.state not in FINAL_STATES:
            print(f"follow it with `{PROG} status {args.key}`")
        return EXIT_OK

    return asyncio.run(go())


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def go() -> int:
        client = await connect(settings)
        items = await client.list(
            state=RefundState(args.state) if args.state else None,
            provider=ProviderName(args.provider) if args.provider else None,
            limit=args.limit,
        )
        if args.json:
            print(output.to_json(items))
            return EXIT_OK
        rows = [[i.key, i.state, i.provider, i.payment_id, i.amount, i.started_at] for i in items]
        print(
            output.render_table(
                ["KEY", "STATE", "PROVIDER", "PAYMENT", "AMOUNT", "STARTED"], rows, right=[4]
            )
        )
        print(f"\n{len(items)} refund(s)")
        return EXIT_OK

    return asyncio.run(go())


def cmd_batch(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as err:
        raise InputError("FILE", f"cannot read {args.file}: {err.strerror}") from None
    lines = batch.parse_lines(text)
    traceparent = traceparent_of(args)
    settings = load_settings() if any(line.request for line in lines) else None
    progress_to: TextIO = sys.stderr if args.json else sys.stdout

    def progress(line: str) -> None:
        print(line, file=progress_to, flush=True)

    async def go() -> list[batch.BatchResult]:
        # With no valid line there is nothing to start: report without a server.
        client = await connect(settings) if settings is not None else None
        return await batch.run_batch(
            client,
            lines,
            concurrency=args.concurrency,
            wait=args.wait,
            progress=progress,
            traceparent=traceparent,
        )

    results = asyncio.run(go())
    if args.json:
        print(output.to_json(batch.to_json(results)))
    else:
        print()
        print(batch.summary(results))
    return batch.exit_code(results)


def cmd_worker(args: argparse.Namespace) -> int:
    from worker import run_worker

    # run_worker sets up JSON logs, tracing and metrics itself.
    settings = load_settings()
    asyncio.run(run_worker(settings))
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    # Imported here: the simulators sit beside the product and only this command serves them.
    from simulators.server import CombinedSimulators
    from simulators.serving import BackgroundServer

    sims = CombinedSimulators()
    server = BackgroundServer(sims.app, host=args.host, port=args.port)
    try:
        server.start()
    except RuntimeError:
        raise RefundClientError(
            f"cannot serve the simulators on {args.host}:{args.port} (port in use?); "
            "choose another with --port"
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
    serve_codec(load_settings(), host=args.host, port=args.port)
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


def cmd_dev(args: argparse.Namespace) -> int:
    from starter.stack import EmbeddedStack

    async def go() -> int:
        stop = _stop_event()
        stack = EmbeddedStack(_stack_config(args))
        print(
            f"starting Temporal on {stack.temporal_address}, simulators on {stack.sim_url}, "
            f"a worker (logs in {stack.log_dir}/)...",
            flush=True,
        )
        async with stack:
            print(f"\nTemporal UI   {stack.ui_url}")
            print(f"Temporal      {stack.temporal_address}  (namespace default)")
            print(
                f"Simulators    {stack.sim_url}  (Mews {stack.sim_url}/mews, "
                f"Paynow {stack.sim_url}/paynow)"
            )
            if stack.codec_url:
                print(f"Codec server  {stack.codec_url}  (the UI decrypts refunds through it)")
            print(f"State         {stack.state_dir}/ (temporal.db, logs/)")
            print("\nPoint a starter at it:")
            print(output.render_env({"TEMPORAL_ADDRESS": stack.temporal_address}))
            print("\nOr run your own worker against the simulators (stop this one first):")
            print(output.render_env(stack.settings_env()))
            print()
            print(output.render_sim_payments(stack.sim_info))
            print("\nCtrl-C to stop them all.", flush=True)
            await stop.wait()
            print("stopping...", flush=True)
        print("stopped.")
        return EXIT_OK

    return asyncio.run(go())


def _stop_event() -> asyncio.Event:
    """Set on SIGINT / SIGTERM (must be called inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def cmd_demo(args: argparse.Namespace) -> int:
    from starter.demo import run_demo

    async def go() -> int:
        stop = _stop_event()
        return await run_demo(_stack_config(args), keep=args.keep, stop=stop)

    return asyncio.run(go())


def cmd_chaos(args: argparse.Namespace) -> int:
    from starter.chaos import ChaosConfig, run_chaos

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

    async def go() -> int:
        stop = _stop_event()
        return await run_chaos(
            config, state_dir=args.state_dir, keep=args.keep, stop=stop, as_json=args.json
        )

    return asyncio.run(go())


# ------------------------------------------------------------------------------- running

ErrorMapping = tuple[type[BaseException], int, Callable[[Any], str]]

ERRORS: tuple[ErrorMapping, ...] = (
    (InputError, EXIT_INVALID, str),
    (
        ValidationError,
        EXIT_INVALID,
        lambda e: "invalid request: " + describe_validation(e, FLAG_OF_FIELD),
    ),
    (MoneyError, EXIT_INVALID, lambda e: f"invalid amount: {e}"),
    (InvalidRequestError, EXIT_INVALID, lambda e: f"invalid request: {e.message}"),
    (MissingSettingError, EXIT_INVALID, str),
    (EncryptionSettingsError, EXIT_INVALID, str),
    (IdempotencyConflictError, EXIT_CONFLICT, str),
    (RefundNotFoundError, EXIT_NOT_FOUND, str),
    (RefundClientError, EXIT_ERROR, str),
    (StackError, EXIT_ERROR, str),
)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, and turn every failure into one stderr line + exit code."""
    tracing = None
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        if handler in STARTER_COMMANDS:
            # Export the starter's spans when OTEL_TRACES_EXPORTER asks for it.
            tracing = setup_tracing("refund-starter")
        return handler(args)
    except SystemExit as leaving:
        # argparse's --help (and nothing else) leaves through SystemExit.
        return leaving.code if isinstance(leaving.code, int) else EXIT_OK
    except UsageError as err:
        print(" ".join(str(err).split()), file=sys.stderr, flush=True)
        return EXIT_INVALID
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as err:
        for kind, code, describe in ERRORS:
            if isinstance(err, kind):
                _error(describe(err))
                return code
        _error(f"{type(err).__name__}: {err}")
        return EXIT_ERROR
    finally:
        # main() leaves with os._exit, which skips atexit: flush spans here.
        if tracing is not None:
            tracing.shutdown()


STARTER_COMMANDS: tuple[Callable[[argparse.Namespace], int], ...] = (
    cmd_start,
    cmd_status,
    cmd_cancel,
    cmd_resolve,
    cmd_list,
    cmd_batch,
)


def _error(message: str) -> None:
    line = " ".join(message.split())
    print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)


def main() -> NoReturn:
    code = run(sys.argv[1:])
    # The Temporal SDK's Rust core can abort the interpreter during finalization
    # (temporalio issue #300: `PyGILState_Release`, exit code 134) after the command has
    # finished. Flush what we printed and leave without finalization, so the exit code is
    # exactly the command's.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
