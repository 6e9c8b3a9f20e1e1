"""`refunds api`: the HTTP API (docs/api.md) until SIGINT/SIGTERM.

The API's modules are imported inside the command: every other command runs without them.
"""

from __future__ import annotations

import argparse

from cli import runner
from cli.runner import EXIT_OK, CommandError, Commands, InputError, port


def register(commands: Commands) -> None:
    api = commands.add_parser(
        "api",
        help="serve the HTTP API (start, status, list, cancel, resolve refunds over HTTP)",
        description=(
            "Serve the refunds HTTP API (docs/api.md) on REFUNDS_API_HOST:REFUNDS_API_PORT "
            "(default 127.0.0.1:8240): OpenAPI at /openapi.json, docs at /docs. Needs API keys "
            "(REFUNDS_API_KEYS or REFUNDS_API_KEYS_FILE: SHA-256 digests of bearer tokens with "
            "scopes); without any it refuses to start unless REFUNDS_API_INSECURE_NO_AUTH=true."
        ),
    )
    api.add_argument("--host", help="default REFUNDS_API_HOST, else 127.0.0.1")
    api.add_argument("--port", type=port, help="default REFUNDS_API_PORT, else 8240")
    api.set_defaults(handler=cmd_api)


async def cmd_api(args: argparse.Namespace) -> int:
    from api.keys import ApiKeysError
    from api.server import PortInUseError, serve_api

    settings = runner.load_settings()
    host = args.host or settings.refunds_api_host
    listen_port = args.port or settings.refunds_api_port
    try:
        await serve_api(settings, host=host, port=listen_port)
    except ApiKeysError as err:
        raise InputError("settings", str(err)) from None
    except PortInUseError as err:
        raise CommandError(
            f"cannot serve the API on {host}:{listen_port} ({err.strerror}): stop what listens "
            "there or choose another port with --port (or REFUNDS_API_PORT)"
        ) from None
    return EXIT_OK
