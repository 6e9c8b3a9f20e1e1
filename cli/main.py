"""`refunds`: start, follow, cancel and resolve refunds; run the worker, the simulators, the
dev stack and the demo. See ``docs/cli.md``.

Exit codes: 0 ok; 1 any other failure; 2 invalid input (arguments, request fields, amounts,
keys, settings); 3 idempotency conflict; 4 no refund with that key; under `--wait`, 5 the refund
ended FAILED, CANCELED or REJECTED and 6 it needs attention; 7 Temporal unreachable; 130
interrupted (:data:`cli.runner.EXIT_CODES_HELP`). Errors are one line on stderr, starting
``refunds: error:``; with ``--json`` also one JSON document on stdout.

The commands live one group per module (:mod:`cli.refunds`, :mod:`cli.serve`,
:mod:`cli.api`, :mod:`cli.dev`) over :mod:`cli.runner`, which all of them share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from cli import api, dev, refunds, runner, serve
from cli.runner import EXIT_CODES_HELP, PROG, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Durable, exactly-once payment refunds on Temporal (Mews, Paynow).",
        epilog=(
            f"{EXIT_CODES_HELP}\n\n"
            "Values are case-insensitive (--currency pln, --state rejected, --provider MEWS).\n"
            "Settings come from the environment or .env (TEMPORAL_ADDRESS, ...)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    refunds.register(commands)
    serve.register(commands)
    api.register(commands)
    dev.register(commands)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (every failure is one stderr line)."""
    return runner.run(build_parser, argv)


def main() -> NoReturn:
    runner.exit_now(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
