"""A receiver of outcome events on loopback, for tests: it records what arrives and can
refuse a number of deliveries first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Receiver:
    """An HTTP endpoint on loopback that answers ``failures`` times 503, then 204."""

    failures: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    url: str = ""

    def verified(self, secret: str) -> list[Any]:
        """Every delivered body, checked with the Standard Webhooks library and ``secret``."""
        signer = Webhook(secret)
        return [
            signer.verify(body, headers)
            for (headers, body), code in zip(self.received, self.answered, strict=True)
            if code == 204
        ]


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            receiver.received.append((dict(self.headers.items()), body))
            code = 503 if receiver.failures > 0 else 204
            receiver.failures -= 1
            receiver.answered.append(code)
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/refund-events"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
