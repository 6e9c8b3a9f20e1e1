"""Secured Temporal: the real worker process and the `refunds` CLI connect through TLS and
mTLS using only the SDK's environment configuration (``TEMPORAL_*`` variables, a profile in a
TOML file), and a wrong CA, a missing client certificate or an unknown profile fails in one
clear line with its exit code, no traceback, no credential.

The dev server of an embedded stack (simulators included; its own worker serves another task
queue) sits behind two TLS-terminating proxies (``tests/support/tls.py``): one TLS only, one
requiring a client certificate. Certificates are made for this module by ``cryptography``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.process import ChildProcess
from devstack.stack import EmbeddedStack, StackConfig, StackError
from simulators.serving import free_port
from starter.connection import SECURING_ENV
from tests.support.tls import CertificateAuthority, Issued, TlsProxy

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
API_KEY = "tls-test-api-key-4f1c9e"  # sent to the dev server, which ignores it
CLI_TIMEOUT_S = 60.0


@dataclass
class Secured:
    stack: EmbeddedStack
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    client: Issued
    tls: TlsProxy
    mtls: TlsProxy
    config_file: Path
    logs: Path

    def env(self, **temporal: str) -> dict[str, str]:
        """The stack's settings (simulators' credentials, poll timing) with no Temporal
        connection setting but ``temporal``."""
        env = {
            name: value
            for name, value in self.stack.env().items()
            if not name.startswith("TEMPORAL_")
        }
        return {**env, **{name: "" for name in SECURING_ENV}, **temporal}

    async def refunds(self, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            *args,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secured(certificates: Path) -> AsyncIterator[Secured]:
    stack = EmbeddedStack(
        StackConfig(
            temporal_port=free_port(),
            ui_port=free_port(),
            sim_port=free_port(),
            state_dir=certificates / "state",
            poll_initial_s=0.2,
            poll_max_s=0.5,
        )
    )
    try:
        await stack.start()
    except StackError as err:
        pytest.fail(f"{err}\n{err.log_tail}")
    ca = CertificateAuthority(certificates / "ca")
    other_ca = CertificateAuthority(certificates / "other-ca", "some other CA")
    server = ca.issue("server", server=True)
    upstream = ("127.0.0.1", stack.config.temporal_port)
    tls = TlsProxy(upstream=upstream, server=server).start()
    mtls = TlsProxy(upstream=upstream, server=server, client_ca=ca.cert_path).start()
    client = ca.issue("client", server=False)
    config_file = certificates / "temporal.toml"
    config_file.write_text(
        f"""
[profile.tls]
address = "{tls.address}"
namespace = "default"
[profile.tls.tls]
server_ca_cert_path = "{ca.cert_path}"

[profile.mtls]
address = "{mtls.address}"
[profile.mtls.tls]
server_ca_cert_path = "{ca.cert_path}"
client_cert_path = "{client.cert}"
client_key_path = "{client.key}"

[profile.wrong-ca]
address = "{tls.address}"
[profile.wrong-ca.tls]
server_ca_cert_path = "{other_ca.cert_path}"
"""
    )
    try:
        yield Secured(stack, ca, other_ca, client, tls, mtls, config_file, certificates)
    finally:
        tls.stop()
        mtls.stop()
        await stack.stop()


async def run_refund_through(secured: Secured, worker_env: dict[str, str], profile: str) -> None:
    """The real worker process on a task queue of its own with ``worker_env``; a refund
    started with `refunds start --wait` through ``profile`` ends SUCCEEDED, and `refunds
    status` reads it through the same profile."""
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    log = secured.logs / f"worker-{queue}.log"
    worker = ChildProcess(
        f"worker-{queue}",
        [sys.executable, "-m", "cli", "worker"],
        env={**worker_env, "REFUNDS_TASK_QUEUE": queue},
        log_path=log,
    )
    worker.start()
    try:
        cli_env = secured.env(
            TEMPORAL_CONFIG_FILE=str(secured.config_file),
            TEMPORAL_PROFILE=profile,
            REFUNDS_TASK_QUEUE=queue,
        )
        key = f"tls-{uuid.uuid4().hex[:12]}"
        code, out, err = await secured.refunds(
            "start",
            "--provider",
            "paynow",
            "--payment-id",
            "SUCC-EED-S00-001",
            "--amount",
            "1.00",
            "--currency",
            "PLN",
            "--reason",
            "tls test",
            "--key",
            key,
            "--wait",
            "--json",
            env=cli_env,
        )
        assert code == 0, f"{err}\n--- worker log\n{log.read_text()[-3000:]}"
        assert json.loads(out)["status"]["state"] == "SUCCEEDED"
        code, out, err = await secured.refunds("status", key, "--json", env=cli_env)
        assert code == 0, err
        assert json.loads(out)["state"] == "SUCCEEDED"
        assert worker.alive, log.read_text()[-3000:]
    finally:
        await worker.stop(10.0)
    text = log.read_text()
    assert "worker connected to 127.0.0.1:" in text
    assert API_KEY not in text
    assert "PRIVATE KEY" not in text


def tls_worker_env(secured: Secured) -> dict[str, str]:
    return secured.env(
        TEMPORAL_ADDRESS=secured.tls.address,
        TEMPORAL_TLS="true",
        TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(secured.ca.cert_path),
        TEMPORAL_API_KEY=API_KEY,
    )


def mtls_worker_env(secured: Secured) -> dict[str, str]:
    return secured.env(
        TEMPORAL_ADDRESS=secured.mtls.address,
        TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(secured.ca.cert_path),
        TEMPORAL_TLS_CLIENT_CERT_PATH=str(secured.client.cert),
        # The key as data, the way a Kubernetes or compose secret often hands it over.
        TEMPORAL_TLS_CLIENT_KEY_DATA=secured.client.key.read_text(),
    )


async def test_workers_run_refunds_over_tls_and_mtls_with_env_vars_only(secured: Secured) -> None:
    # Side by side, each on its own task queue: the module stays short.
    await asyncio.gather(
        run_refund_through(secured, tls_worker_env(secured), profile="tls"),
        run_refund_through(secured, mtls_worker_env(secured), profile="mtls"),
    )


Outcome = tuple[int, str, str]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def failures(secured: Secured) -> dict[str, Outcome]:
    """Every failing command, run at once (they are independent); each test reads its own."""
    config = {"TEMPORAL_CONFIG_FILE": str(secured.config_file)}
    unreadable = secured.logs / "nowhere" / "client.pem"
    commands = {
        "wrong_ca": (
            ["status", "any-key"],
            secured.env(**config, TEMPORAL_PROFILE="wrong-ca", TEMPORAL_API_KEY=API_KEY),
        ),
        "worker_wrong_ca": (
            ["worker"],
            secured.env(
                TEMPORAL_ADDRESS=secured.tls.address,
                TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(secured.other_ca.cert_path),
            ),
        ),
        "no_client_cert": (
            ["list"],
            secured.env(
                TEMPORAL_ADDRESS=secured.mtls.address,
                TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(secured.ca.cert_path),
            ),
        ),
        "unknown_profile": (
            ["status", "any-key", "--json"],
            secured.env(**config, TEMPORAL_PROFILE="prod"),
        ),
        "unreadable_cert": (
            ["list"],
            secured.env(
                TEMPORAL_ADDRESS=secured.mtls.address,
                TEMPORAL_TLS_CLIENT_CERT_PATH=str(unreadable),
                TEMPORAL_TLS_CLIENT_KEY_PATH=str(secured.client.key),
            ),
        ),
    }
    outcomes = await asyncio.gather(
        *(secured.refunds(*argv, env=env) for argv, env in commands.values())
    )
    return dict(zip(commands, outcomes, strict=True))


def one_clear_line(outcome: Outcome, expected_code: int, *fragments: str) -> str:
    code, out, err = outcome
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("refunds: error: "), err
    assert "Traceback" not in err
    assert "tonic" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert API_KEY not in out + err
    return lines[0]


def test_a_wrong_ca_is_one_line_and_exit_7(secured: Secured, failures: dict[str, Outcome]) -> None:
    one_clear_line(
        failures["wrong_ca"],
        7,
        f"cannot reach Temporal at {secured.tls.address} (namespace default, TLS, API key)",
        "TLS certificate is not trusted",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    )


def test_the_worker_with_a_wrong_ca_exits_7_in_one_line(failures: dict[str, Outcome]) -> None:
    code, _, err = failures["worker_wrong_ca"]
    assert code == 7, err
    assert "Traceback" not in err
    # The worker's JSON log lines come first on stderr; the error is the last line.
    last = err.strip().splitlines()[-1]
    assert last.startswith("refunds: error: cannot reach Temporal at "), err
    assert "TLS certificate is not trusted" in last


def test_a_missing_client_certificate_is_one_line_and_exit_7(
    failures: dict[str, Outcome],
) -> None:
    one_clear_line(
        failures["no_client_cert"],
        7,
        "may require a client certificate",
        "TEMPORAL_TLS_CLIENT_CERT_PATH",
    )


def test_an_unknown_profile_is_one_line_naming_the_profiles_and_exit_2(
    failures: dict[str, Outcome],
) -> None:
    line = one_clear_line(failures["unknown_profile"], 2, "Temporal profile 'prod'")
    assert "profiles there: mtls, tls, wrong-ca" in line
    assert json.loads(failures["unknown_profile"][1])["error"]["kind"] == "invalid"


def test_an_unreadable_certificate_is_one_line_and_exit_2(
    secured: Secured, failures: dict[str, Outcome]
) -> None:
    missing = secured.logs / "nowhere" / "client.pem"
    one_clear_line(failures["unreadable_cert"], 2, f"cannot read the client certificate {missing}")
