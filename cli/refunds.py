"""`refunds start | status | cancel | resolve | list | batch`: starting and following refunds
through :class:`starter.client.RefundClient`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, TextIO

from pydantic import TypeAdapter, ValidationError

from cli import batch, output, runner
from cli.requests import CLOSE_AS, build_request, build_resolution, traceparent_of
from cli.runner import (
    EXIT_CODES_HELP,
    EXIT_OK,
    PROG,
    Commands,
    InputError,
    lower,
    positive_int,
    upper,
)
from cli.waiting import outcome_code, wait_for_outcome
from core.models import FINAL_STATES, IdempotencyKey, ProviderName, ReasonCode, RefundState
from providers.registry import check_request
from starter.client import RefundClient, summary_line


def register(commands: Commands) -> None:
    start = commands.add_parser(
        "start",
        help="start a refund (or attach to the identical one with the same key)",
        description=textwrap.fill(
            "Start a refund. The key makes it idempotent: the same key and the same request "
            "attach to the existing refund; the same key with any difference is a conflict "
            "(exit 3). Amounts are in major units as people write them (12.34 PLN). With "
            "--wait the exit code says the outcome: 0 SUCCEEDED, 5 ended otherwise, 6 needs "
            "attention.",
            width=79,
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument(
        "--provider", required=True, type=lower, choices=[p.value for p in ProviderName]
    )
    start.add_argument("--payment-id", required=True, help="the provider's payment id")
    start.add_argument("--account-id", help="Mews: the account (customer) that paid")
    start.add_argument("--enterprise-id", help="Mews: the enterprise (Portfolio tokens only)")
    start.add_argument("--amount", help="amount in major units, e.g. 12.34; absent = whole")
    start.add_argument("--currency", help="ISO 4217 code of --amount, e.g. PLN")
    start.add_argument("--reason", required=True, help="why (shown to the provider)")
    start.add_argument(
        "--reason-code", type=upper, choices=[r.value for r in ReasonCode], help="Paynow"
    )
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
        "--notify-url",
        metavar="URL",
        help=(
            "where signed outcome events are POSTed (final state, NEEDS_ATTENTION); docs/events.md"
        ),
    )
    start.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="metadata (repeatable)"
    )
    start.add_argument(
        "--wait",
        action="store_true",
        help="wait for the outcome (final, or NEEDS_ATTENTION) and print it; see exit codes",
    )
    _json_argument(start)
    _traceparent_argument(start)
    start.set_defaults(handler=cmd_start, traced=True)

    status = commands.add_parser("status", help="show a refund's status")
    status.add_argument("key", type=refund_key)
    _json_argument(status)
    status.set_defaults(handler=cmd_status, traced=True)

    cancel = commands.add_parser(
        "cancel", help="ask a refund to cancel (before submit, or while the provider allows)"
    )
    cancel.add_argument("key", type=refund_key)
    cancel.add_argument("--reason", required=True)
    _json_argument(cancel)
    cancel.set_defaults(handler=cmd_cancel, traced=True)

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
    resolve.add_argument("key", type=refund_key)
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--adopt", metavar="REFUND_ID", help="the provider refund that is this refund's"
    )
    decision.add_argument(
        "--resend", action="store_true", help="no refund was made: look once more, then send"
    )
    decision.add_argument(
        "--close", type=lower, choices=list(CLOSE_AS), help="end the refund as FAILED or CANCELED"
    )
    resolve.add_argument("--reason", required=True, help="why (recorded with the decision)")
    resolve.add_argument("--by", help="who decides (default: $USER, else 'operator')")
    _json_argument(resolve)
    resolve.set_defaults(handler=cmd_resolve, traced=True)

    listing = commands.add_parser("list", help="list refunds, newest first")
    listing.add_argument("--state", type=upper, choices=[s.value for s in RefundState])
    listing.add_argument("--provider", type=lower, choices=[p.value for p in ProviderName])
    listing.add_argument("--limit", type=positive_int, default=50)
    _json_argument(listing)
    listing.set_defaults(handler=cmd_list, traced=True)

    many = commands.add_parser(
        "batch",
        help="start refunds from a JSON Lines file (one RefundRequest per line)",
        description=(
            "Start one refund per line of FILE (JSON Lines, the RefundRequest field names; "
            "'-' reads stdin). Invalid lines are reported by number and nothing is started "
            "for them. The worst line decides the exit code: 1 (errors), 3 (conflicts), "
            "2 (invalid lines), then with --wait 6 (a refund needs attention) and 5 (a refund "
            "ended FAILED, CANCELED or REJECTED); 0 when every line started or attached (and, "
            "with --wait, every refund SUCCEEDED). On a terminal the progress is one line "
            "with counts and elapsed time."
        ),
    )
    many.add_argument("file")
    many.add_argument("--concurrency", type=positive_int, default=8)
    many.add_argument("--wait", action="store_true", help="also wait for every outcome")
    many.add_argument("--json", action="store_true", help="print JSON (progress to stderr)")
    _traceparent_argument(many)
    many.set_defaults(handler=cmd_batch, traced=True)


_KEY = TypeAdapter(IdempotencyKey)


def refund_key(text: str) -> str:
    """KEY of `status`, `cancel` and `resolve`: a key `start` could have been given (exit 2
    otherwise, before any connection)."""
    try:
        return _KEY.validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a refund key (1-45 of A-Z a-z 0-9 . _ : -)"
        ) from None


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _traceparent_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traceparent",
        metavar="HEADER",
        help=(
            "W3C traceparent of the caller's trace to continue (default: $TRACEPARENT; "
            "otherwise a new trace)"
        ),
    )


async def cmd_start(args: argparse.Namespace) -> int:
    request = build_request(args)
    # Offline checks before any connection: bad input never needs (or reaches) a server.
    check_request(request)
    traceparent = traceparent_of(args)
    client = await runner.connected()
    started = await client.start(request, traceparent=traceparent)
    if not args.json:
        verb = "created" if started.created else "attached to existing (same key, same request)"
        print(f"{verb}: {started.workflow_id}")
        print(f"  {summary_line(request)}")
    status = None
    if args.wait:
        if not args.json:
            print("waiting for the outcome...", flush=True)
        status = await wait_for_outcome(client, request.idempotency_key)
    if args.json:
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
    return EXIT_OK if status is None else outcome_code(status)


async def cmd_status(args: argparse.Namespace) -> int:
    client = await runner.connected()
    status = await client.status(args.key)
    print(output.to_json(status) if args.json else output.render_status(status))
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    client = await runner.connected()
    status = await client.cancel(args.key, args.reason)
    if args.json:
        print(output.to_json(status))
    else:
        print(f"cancel sent to {status.workflow_id}; state now {status.state.value}")
        print(output.render_status(status))
    return EXIT_OK


async def cmd_resolve(args: argparse.Namespace) -> int:
    request = build_resolution(args)
    client = await runner.connected()
    answer = await client.resolve(args.key, request)
    if args.json:
        print(output.to_json(answer))
        return EXIT_OK
    print(f"resolved refund {args.key!r} ({request.action.value} by {request.by}): {answer.note}")
    print(f"state now {answer.state.value}")
    if answer.state not in FINAL_STATES:
        print(f"follow it with `{PROG} status {args.key}`")
    return EXIT_OK


async def cmd_list(args: argparse.Namespace) -> int:
    client = await runner.connected()
    items = await client.list(
        state=RefundState(args.state) if args.state else None,
        provider=ProviderName(args.provider) if args.provider else None,
        limit=args.limit,
    )
    if args.json:
        print(output.to_json(items))
        return EXIT_OK
    rows = [[i.key, i.state, i.provider, i.payment_id, i.amount, i.started_at] for i in items]
    headers = ["KEY", "STATE", "PROVIDER", "PAYMENT", "AMOUNT", "STARTED"]
    print(output.render_table(headers, rows, right=[4]))
    print(f"\n{output.count(len(items), 'refund')}")
    return EXIT_OK


def _is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can redraw a line (not ``TERM=dumb``)."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


async def _run_batch(
    args: argparse.Namespace,
    client: RefundClient | None,
    lines: list[batch.BatchLine],
    progress: batch.BatchProgress,
    traceparent: str | None,
) -> list[batch.BatchResult]:
    return await batch.run_batch(
        client,
        lines,
        concurrency=args.concurrency,
        wait=args.wait,
        progress=progress,
        traceparent=traceparent,
    )


def _read_source(file: str) -> str:
    """FILE of `refunds batch` ('-': stdin), read before anything starts."""
    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as err:
        raise InputError("FILE", f"cannot read {file}: {err.strerror}") from None


async def cmd_batch(args: argparse.Namespace) -> int:
    lines = batch.parse_lines(_read_source(args.file))
    traceparent = traceparent_of(args)
    # With no valid line there is nothing to start: report without a server.
    settings = runner.load_settings() if any(line.request for line in lines) else None
    progress_to: TextIO = sys.stderr if args.json else sys.stdout
    client = await runner.connect(settings) if settings is not None else None
    if _is_terminal(progress_to):
        shown = batch.TerminalProgress(progress_to, len(lines), wait=args.wait)
        ticker = asyncio.ensure_future(shown.ticking())
        try:
            results = await _run_batch(args, client, lines, shown, traceparent)
        finally:
            ticker.cancel()
            shown.close()
    else:

        def write(line: str) -> None:
            print(line, file=progress_to, flush=True)

        plain = batch.PlainProgress(write, len(lines))
        results = await _run_batch(args, client, lines, plain, traceparent)
    if args.json:
        print(output.to_json(batch.to_json(results)))
    else:
        print()
        print(batch.summary(results))
    return batch.exit_code(results)
