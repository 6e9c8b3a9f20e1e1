"""``python -m codec [--host H] [--port P]``: serve the codec server (docs/encryption.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from codec.encryption import EncryptionSettingsError
from codec.server import DEFAULT_HOST, DEFAULT_PORT, serve_codec
from core.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codec",
        description="Decrypt refund payloads for the Temporal UI and CLI (remote codec server).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve_codec(Settings(), host=args.host, port=args.port)
    except (EncryptionSettingsError, ValidationError) as err:
        print(f"codec server: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
