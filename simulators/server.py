"""Both simulators behind one port: Mews under ``/mews``, Paynow under ``/paynow``.

``GET /`` describes the server: each provider's base URL, the environment a worker needs to
use it (the simulators' own made-up credentials: they open nothing real) and its payments
with their scenarios. `refunds sim` serves this app; `refunds dev` and `refunds demo` run that
command as a subprocess and read ``GET /`` to configure their worker.

Each simulator keeps its own control routes under its prefix, e.g.
``POST /paynow/_sim/payments`` or ``GET /mews/_sim/journal``. ``GET /_sim/journal`` at the root
answers both journals in one document, ``{"mews": {...}, "paynow": {...}}``, each as its own
route would.
"""

from __future__ import annotations

import argparse
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from simulators.common import CONTROL_PREFIX
from simulators.mews import MewsSimulator
from simulators.mews.seed import DEFAULT_ACCESS_TOKEN, DEFAULT_CLIENT_TOKEN
from simulators.mews.seed import Scenario as MewsScenario
from simulators.paynow import PaynowSimulator
from simulators.paynow.seed import DEFAULT_API_KEY, DEFAULT_SIGNATURE_KEY, SCENARIOS

MEWS_PREFIX = "/mews"
PAYNOW_PREFIX = "/paynow"
DEFAULT_PORT = 8700


class CombinedSimulators:
    """One ASGI app (``.app``) holding a Mews and a Paynow simulator; ``.env`` holds the
    credentials they accept, under the worker's variable names."""

    def __init__(
        self,
        *,
        mews_client_token: str = DEFAULT_CLIENT_TOKEN,
        mews_access_token: str = DEFAULT_ACCESS_TOKEN,
        paynow_api_key: str = DEFAULT_API_KEY,
        paynow_signature_key: str = DEFAULT_SIGNATURE_KEY,
    ) -> None:
        self.mews = MewsSimulator(client_token=mews_client_token, access_token=mews_access_token)
        self.paynow = PaynowSimulator(api_key=paynow_api_key, signature_key=paynow_signature_key)
        self.env = {
            "MEWS_CLIENT_TOKEN": mews_client_token,
            "MEWS_ACCESS_TOKEN": mews_access_token,
            "PAYNOW_API_KEY": paynow_api_key,
            "PAYNOW_SIGNATURE_KEY": paynow_signature_key,
        }
        self.app = Starlette(
            routes=[
                Route("/", self._index, methods=["GET"]),
                Route(f"{CONTROL_PREFIX}/journal", self._journal, methods=["GET"]),
                Mount(MEWS_PREFIX, app=self.mews.app),
                Mount(PAYNOW_PREFIX, app=self.paynow.app),
            ]
        )

    def reset(self) -> None:
        self.mews.reset()
        self.paynow.reset()

    def journal(self) -> dict[str, Any]:
        """Both simulators' journals, under the providers' names."""
        return {"mews": self.mews.core.journal(), "paynow": self.paynow.core.journal()}

    def describe(self, base_url: str) -> dict[str, Any]:
        """What ``GET /`` answers, for a server reachable at ``base_url``."""
        root = base_url.rstrip("/")
        mews_url, paynow_url = root + MEWS_PREFIX, root + PAYNOW_PREFIX
        return {
            "service": "refund-orchestrator simulators",
            "note": "fake credentials, accepted by these simulators only",
            "providers": {
                "mews": {
                    "base_url": mews_url,
                    "env": {
                        "MEWS_BASE_URL": mews_url,
                        "MEWS_CLIENT_TOKEN": self.env["MEWS_CLIENT_TOKEN"],
                        "MEWS_ACCESS_TOKEN": self.env["MEWS_ACCESS_TOKEN"],
                    },
                    "scenarios": [s.value for s in MewsScenario],
                    "payments": self.mews.payments(),
                },
                "paynow": {
                    "base_url": paynow_url,
                    "env": {
                        "PAYNOW_BASE_URL": paynow_url,
                        "PAYNOW_API_KEY": self.env["PAYNOW_API_KEY"],
                        "PAYNOW_SIGNATURE_KEY": self.env["PAYNOW_SIGNATURE_KEY"],
                    },
                    "scenarios": list(SCENARIOS),
                    "payments": self.paynow.payments(),
                },
            },
        }

    async def _index(self, request: Request) -> Response:
        return JSONResponse(self.describe(str(request.base_url)))

    async def _journal(self, _: Request) -> Response:
        return JSONResponse(self.journal())


def build_app() -> Starlette:
    """The combined app with default credentials (for ``uvicorn simulators.server:build_app``)."""
    return CombinedSimulators().app


def main(argv: list[str] | None = None) -> None:
    """``python -m simulators.server``: serve without the banner `refunds sim` prints."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m simulators.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    uvicorn.run(CombinedSimulators().app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
