"""What every `refunds` command shares: settings, the connection to Temporal, the event loop,
and the table that turns each failure into one stderr line and an exit code.

A command is a handler ``(args) -> int``, or ``async (args) -> int`` (run here with
``asyncio.run``). It raises; :func:`run` reports. :func:`exit_now` is how the process leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import select
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeAlias

from pydantic import ValidationError

from codec.encryption import EncryptionSettingsError
from core.money import MoneyError
from core.settings import MissingSettingError, Settings
from providers.errors import InvalidRequestError
from starter.client import (
    IdempotencyConflictError,
    RefundClient,
    RefundClientError,
    RefundNotFoundError,
)
from starter.connection import TemporalConfigError, TemporalConnectError
from telemetry.tracing import setup_tracing

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4
# `start --wait` / `batch --wait`: the refund ended FAILED, CANCELED or REJECTED.
EXIT_NOT_SUCCEEDED = 5
# `start --wait` / `batch --wait`: the refund is in NEEDS_ATTENTION (still open: waiting for an
# operator, or flagged while its provider refund is watched).
EXIT_NEEDS_ATTENTION = 6
EXIT_UNREACHABLE = 7
EXIT_INTERRUPTED = 130

# What each exit code means, for `--json` error documents (``"kind"``) and the help texts.
EXIT_KINDS = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error",
    EXIT_INVALID: "invalid",
    EXIT_CONFLICT: "conflict",
    EXIT_NOT_FOUND: "not_found",
    EXIT_NOT_SUCCEEDED: "not_succeeded",
    EXIT_NEEDS_ATTENTION: "needs_attention",
    EXIT_UNREACHABLE: "unreachable",
    EXIT_INTERRUPTED: "interrupted",
}

# The table of `refunds --help` and `refunds start --help` (docs/cli.md holds the same).
EXIT_CODES_HELP = """\
exit codes:
  0    ok (with --wait: the refund SUCCEEDED)
  1    any other failure (too late to cancel, a refused resolve, ...)
  2    invalid input (arguments, request fields, amounts, keys, settings)
  3    idempotency conflict: the key is used by a different request
  4    no refund with that key
  5    with --wait: the refund ended FAILED, CANCELED or REJECTED
  6    with --wait: the refund is in NEEDS_ATTENTION (open, see `refunds resolve`)
  7    Temporal unreachable
  130  interrupted (Ctrl-C)"""

PROG = "refunds"

Handler = Callable[[argparse.Namespace], int | Awaitable[int]]

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
    "notify_url": "--notify-url",
}


class UsageError(Exception):
    """Bad command line: the message is the whole line to print."""


class InputError(Exception):
    """A value given on the command line that cannot be used; names the flag."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"invalid {flag}: {message}")


class CommandError(Exception):
    """The command could not do its work (exit 1); the message is the line to print."""


class UnreachableError(RefundClientError):
    """Temporal did not answer the connection (exit 7); the message is the line to print."""


class Parser(argparse.ArgumentParser):
    # One line instead of argparse's usage block, with the prefix of every other error; the
    # hint names the command's help.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# What each command group's ``register`` adds its commands to (each one a Parser too).
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return value


def upper(text: str) -> str:
    """An argument ``type`` for values in capitals (states, reason codes, currencies):
    any case is accepted and normalised, like ``--currency pln``."""
    return text.strip().upper()


def lower(text: str) -> str:
    """An argument ``type`` for values in small letters (providers, `--close`)."""
    return text.strip().lower()


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(text.split())


def describe_validation(err: ValidationError, labels: dict[str, str] | None = None) -> str:
    """One line naming each bad field: ``amount_minor: Input should be greater than 0``."""
    parts: list[str] = []
    for error in err.errors():
        loc = error["loc"]
        if loc:
            head = (labels or {}).get(str(loc[0]), str(loc[0]))
            tail = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
            where = head + tail
        else:
            where = "request"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        labels = {name: name.upper() for name in Settings.model_fields}
        raise InputError("settings", describe_validation(err, labels)) from None


async def connect(settings: Settings) -> RefundClient:
    try:
        return await RefundClient.connect(settings)
    except TemporalConnectError as err:
        # One line naming the address and what to fix (starter/connection.py), never the
        # SDK's transport error.
        raise UnreachableError(str(err)) from None


async def connected() -> RefundClient:
    """A client for the settings of the environment (or .env)."""
    return await connect(load_settings())


# ------------------------------------------------------------------------------- errors

# (kind, exit code, the line to print). A kind is a class, or the dotted name of one that
# only a command imports (named, not imported: `refunds start` never loads the dev harness).
ErrorMapping = tuple[type[BaseException] | str, int, Callable[[Any], str]]

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
    (
        IdempotencyConflictError,
        EXIT_CONFLICT,
        lambda e: e.naming_fields(lambda field: FLAG_OF_FIELD.get(field, field)),
    ),
    (RefundNotFoundError, EXIT_NOT_FOUND, str),
    (UnreachableError, EXIT_UNREACHABLE, str),
    # The Temporal connection settings (TEMPORAL_*, the profile), from any command, the
    # worker's included: unusable ones are invalid input, a refused handshake is unreachable.
    (TemporalConfigError, EXIT_INVALID, str),
    (TemporalConnectError, EXIT_UNREACHABLE, str),
    (RefundClientError, EXIT_ERROR, str),
    (CommandError, EXIT_ERROR, str),
    ("devstack.stack.StackError", EXIT_ERROR, str),
)


def _is_a(err: BaseException, kind: type[BaseException] | str) -> bool:
    if isinstance(kind, type):
        return isinstance(err, kind)
    return any(f"{cls.__module__}.{cls.__qualname__}" == kind for cls in type(err).__mro__)


def describe_error(err: BaseException) -> tuple[int, str]:
    """The exit code of ``err`` and the line that says what happened."""
    for kind, code, describe in ERRORS:
        if _is_a(err, kind):
            return code, describe(err)
    return EXIT_ERROR, f"{type(err).__name__}: {err}"


def report_error(err: Exception, *, as_json: bool = False) -> int:
    """Print ``err`` as one line on stderr (and, ``as_json``, as the JSON document on
    stdout); its exit code."""
    code, message = describe_error(err)
    fail(message, code, as_json=as_json)
    return code


def error(message: str) -> None:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr, flush=True)


def fail(message: str, code: int, *, as_json: bool = False) -> None:
    """Report a failure: the stderr line always; with ``--json`` also the one JSON document
    of the command on stdout, ``{"error": {"code", "kind", "message"}}``."""
    error(message)
    if as_json:
        document = {
            "error": {
                "code": code,
                "kind": EXIT_KINDS.get(code, "error"),
                "message": one_line(message),
            }
        }
        print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)


def wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON (``--json`` before any ``--``), read without
    the parser: an argument error is reported as JSON too."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


# ------------------------------------------------------------------------------ running


def run(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None) -> int:
    """Parse, run one command, and turn every failure into one stderr line + exit code (with
    ``--json``, also one JSON document on stdout). A command whose defaults set ``traced``
    exports the starter's spans (when OTEL_TRACES_EXPORTER asks for it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(arguments)
    tracing = None
    try:
        args = build_parser().parse_args(arguments)
        as_json = bool(getattr(args, "json", False))
        handler: Handler = args.handler
        if getattr(args, "traced", False):
            tracing = setup_tracing("refund-starter")
        outcome = handler(args)
        if inspect.isawaitable(outcome):
            return asyncio.run(_awaited(outcome))
        return outcome
    except SystemExit as leaving:
        # argparse's --help (and nothing else) leaves through SystemExit.
        return leaving.code if isinstance(leaving.code, int) else EXIT_OK
    except UsageError as err:
        fail(str(err), EXIT_INVALID, as_json=as_json)
        return EXIT_INVALID
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        return EXIT_INTERRUPTED
    except BrokenPipeError as err:
        # `refunds list --json | head`: the reader has what it wanted and left. Not an error
        # of ours; any other broken pipe is reported as usual.
        if not stdout_gone():
            return report_error(err, as_json=as_json)
        silence_stdout()
        return EXIT_OK
    except Exception as err:
        return report_error(err, as_json=as_json)
    finally:
        # exit_now() leaves with os._exit, which skips atexit: flush spans here.
        if tracing is not None:
            tracing.shutdown()


def stdout_gone() -> bool:
    """True when nobody reads stdout any more (a pipe whose reader has closed)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):
        return True  # no poll() here, or no stdout to ask: take the error's word for it
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in events)


def silence_stdout() -> None:
    """Point stdout at /dev/null so that nothing more (a final flush) fails on it."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


async def _awaited(outcome: Awaitable[int]) -> int:
    return await outcome


def exit_now(code: int) -> NoReturn:
    # The Temporal SDK's Rust core can abort the interpreter during finalization
    # (temporalio issue #300: `PyGILState_Release`, exit code 134) after the command has
    # finished. Flush what we printed and leave without finalization, so the exit code is
    # exactly the command's.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
