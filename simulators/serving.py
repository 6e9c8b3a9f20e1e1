"""Run ASGI apps on real sockets: for `refunds sim`, `refunds dev` and tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (good enough for tests on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PortInUseError(OSError):
    """The server's address could not be bound (usually: something already listens there)."""


class BackgroundServer:
    """A uvicorn server in a daemon thread with its own event loop.

    :meth:`start` binds the listening socket itself, in the calling thread, and hands it to
    uvicorn: a busy port is a :class:`PortInUseError` there, and uvicorn never logs its own
    error line about it.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"sim:{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bind(self) -> socket.socket:
        """The listening socket, bound as uvicorn binds its own (``SO_REUSEADDR``)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(2048)
        except OSError as err:
            sock.close()
            raise PortInUseError(err.errno, err.strerror) from err
        return sock

    def _run(self) -> None:
        sockets = [self._socket] if self._socket is not None else None
        asyncio.run(self._server.serve(sockets=sockets))

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind (:class:`PortInUseError` when the port is taken) and serve until :meth:`stop`."""
        self._socket = self._bind()
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._close_socket()
                raise RuntimeError(f"simulator server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._close_socket()

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


@contextmanager
def serve_in_thread(app: ASGIApp, *, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on loopback for the duration of the block; yields its base URL."""
    server = BackgroundServer(app, port=port)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()
