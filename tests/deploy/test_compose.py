"""The deployment files: `docker-compose config` accepts docker-compose.yml, and the stack keeps
the promises deploy/README.md makes (a non-root worker image with a healthcheck, a setup job
that registers the search attributes, pinned images, no credentials in the files).

`docker-compose config` validates and resolves the file without a Docker engine. Every run is
hermetic: an empty ``--env-file`` stands in for the developer's ``.env`` and the environment
holds only PATH plus what the test sets. Its output is normalised YAML (two-space indent,
sorted keys) and is read here as text, because PyYAML is not a dependency of this project.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from core.models import SEARCH_ATTRIBUTES
from core.settings import Settings
from simulators.mews import seed as mews_seed
from simulators.paynow import seed as paynow_seed
from starter.connection import SDK_ENV
from tests.support.system_tools import require_program
from worker import GRACEFUL_SHUTDOWN

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"

TEST_PASSWORD = "test-only-postgres-password"
SERVICES = {
    "postgresql",
    "temporal-schema",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    "worker",
    "api",
    "sim",
    "codec",
    "otel-collector",
    "jaeger",
    "prometheus",
}
# Settings read by the codec server (`python -m codec`) or the HTTP API, not by the worker.
NOT_FOR_THE_WORKER = {
    "REFUNDS_CODEC_AUTH_TOKEN",
    "REFUNDS_CODEC_UI_ORIGINS",
    "REFUNDS_API_HOST",
    "REFUNDS_API_PORT",
    "REFUNDS_API_KEYS",
    "REFUNDS_API_KEYS_FILE",
    "REFUNDS_API_INSECURE_NO_AUTH",
    "REFUNDS_API_MAX_BODY_BYTES",
    "MEWS_WEBHOOK_TOKEN",
}
SIMULATOR_CREDENTIALS = (
    "SIMULATOR-DEMO",
    mews_seed.DEFAULT_CLIENT_TOKEN,
    mews_seed.DEFAULT_ACCESS_TOKEN,
    mews_seed.DEFAULT_PORTFOLIO_TOKEN,
    paynow_seed.DEFAULT_API_KEY,
    paynow_seed.DEFAULT_SIGNATURE_KEY,
)
SECRET_NAME = re.compile(r"PASSWORD|PWD|TOKEN|SECRET|API_KEY|SIGNATURE_KEY|ENCRYPTION_KEYS")

Compose = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    """Runs ``docker-compose -f docker-compose.yml ARGS`` with only ``env`` set."""
    binary = str(
        require_program(
            "docker-compose", package="docker-compose", purpose="validating docker-compose.yml"
        )
    )
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [binary, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), *args]
        return subprocess.run(
            command,
            cwd=ROOT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def config(compose: Compose, *args: str, **env: str) -> str:
    """The resolved file; fails the test with compose's own message when it is refused."""
    result = compose(*args, "config", env={"POSTGRES_PASSWORD": TEST_PASSWORD, **env})
    assert result.returncode == 0, f"docker-compose config refused the file:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def resolved(compose: Compose) -> str:
    return config(compose)


def service_blocks(text: str) -> dict[str, str]:
    """Each service's lines, keyed by name, from a compose file or `config` output."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_services = False
    for line in text.splitlines():
        if re.match(r"\S", line):
            in_services = line.rstrip() == "services:"
            current = None
        elif in_services and (header := re.match(r"  ([\w.-]+):\s*$", line)):
            current = blocks.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def environment(block: str) -> dict[str, str]:
    """The ``environment:`` mapping of a resolved service block (``null`` for pass-through)."""
    section = re.search(r"^    environment:\n((?:      .*\n?)*)", block, re.MULTILINE)
    assert section, "the service has no environment mapping"
    pairs = re.findall(r"^      ([A-Z][A-Z0-9_]*): ?(.*)$", section.group(1), re.MULTILINE)
    return {name: value.strip("'\"") for name, value in pairs}


def images(text: str) -> list[str]:
    return re.findall(r"^\s+image: ['\"]?([^'\"\s]+)", text, re.MULTILINE)


# --------------------------------------------------------------------------- validation


def test_config_accepts_the_file(resolved: str) -> None:
    assert set(service_blocks(resolved)) == SERVICES


def test_config_accepts_the_sim_profile(compose: Compose) -> None:
    assert "sim:" in config(compose, "--profile", "sim")
    profiles = compose("config", "--profiles", env={"POSTGRES_PASSWORD": TEST_PASSWORD})
    assert profiles.returncode == 0, profiles.stderr
    assert sorted(profiles.stdout.split()) == ["codec", "sim"]


def test_the_database_password_is_required(compose: Compose) -> None:
    result = compose("config")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


# ------------------------------------------------------------------------------ worker


def test_worker_is_healthchecked_and_stops_gracefully(resolved: str) -> None:
    worker = service_blocks(resolved)["worker"]
    assert re.search(r"^    healthcheck:\n(      .*\n)*      test:", worker + "\n", re.MULTILINE)
    assert "/metrics" in worker
    assert "stop_signal: SIGTERM" in worker
    assert "stop_grace_period: 30s" in worker
    # Replicas (`--scale worker=3`) cannot share a container name or a host port.
    assert "container_name:" not in worker
    assert "ports:" not in worker


def test_worker_scales_out(resolved: str) -> None:
    """`docker-compose up --scale worker=N` (deploy/README.md): nothing in the worker's
    service may exist only once (a container name, a host name, a host port)."""
    worker = service_blocks(resolved)["worker"]
    for one_of_a_kind in ("container_name:", "hostname:", "ports:", "mac_address:"):
        assert one_of_a_kind not in worker, f"{one_of_a_kind} stops --scale worker=N"
    # Every replica polls the same queue, with the same settings.
    assert environment(worker)["REFUNDS_TASK_QUEUE"] == "refunds"
    readme = (DEPLOY / "README.md").read_text()
    assert "docker-compose up -d --scale worker=3" in readme


def test_worker_gets_sigterm_and_time_to_finish_its_activities(resolved: str) -> None:
    """The worker process is PID 1 of its container (exec form, no shell in between), so
    Docker's SIGTERM reaches it; Docker waits longer than the worker lets activities run."""
    dockerfile = DOCKERFILE.read_text()
    for instruction in re.findall(r"^(?:ENTRYPOINT|CMD) (.*)$", dockerfile, re.MULTILINE):
        assert instruction.startswith("["), f"shell form runs /bin/sh as PID 1: {instruction}"
    worker = service_blocks(resolved)["worker"]
    assert "entrypoint:" not in worker
    assert re.search(r"^    command:\n    - worker$", worker, re.MULTILINE)
    assert "stop_signal: SIGTERM" in worker
    grace = re.search(r"^    stop_grace_period: (?:(\d+)m)?(?:(\d+)s)?$", worker, re.MULTILINE)
    assert grace, "the worker needs a stop_grace_period"
    minutes, seconds = (int(part or 0) for part in grace.groups())
    # Room for the worker to stop polling and close its connections after the activities.
    assert 60 * minutes + seconds >= GRACEFUL_SHUTDOWN.total_seconds() + 10


def test_worker_waits_for_the_setup_job(resolved: str) -> None:
    worker = service_blocks(resolved)["worker"]
    assert re.search(
        r"^      temporal-setup:\n        condition: service_completed_successfully$",
        worker,
        re.MULTILINE,
    )


def test_worker_receives_every_setting(resolved: str) -> None:
    env = environment(service_blocks(resolved)["worker"])
    wanted = {name.upper() for name in Settings.model_fields} - NOT_FOR_THE_WORKER
    # The Temporal SDK's own connection settings (TLS, API key, profile) too.
    wanted |= set(SDK_ENV)
    missing = sorted(wanted - set(env))
    assert not missing, f"add {', '.join(missing)} to the worker's environment"


def test_worker_and_api_pass_the_temporal_security_settings_through(compose: Compose) -> None:
    """Temporal Cloud with an API key, or mTLS with certificates as PEM data: what is set in
    the environment (or .env) reaches both services as it is, what is unset stays unset."""
    blocks = service_blocks(
        config(
            compose,
            TEMPORAL_ADDRESS="ns.acct.tmprl.cloud:7233",
            TEMPORAL_API_KEY="from-the-environment",
            TEMPORAL_TLS_CLIENT_CERT_PATH="/run/secrets/temporal-client.pem",
        )
    )
    for service in ("worker", "api"):
        env = environment(blocks[service])
        assert env["TEMPORAL_ADDRESS"] == "ns.acct.tmprl.cloud:7233"
        assert env["TEMPORAL_API_KEY"] == "from-the-environment"
        assert env["TEMPORAL_TLS_CLIENT_CERT_PATH"] == "/run/secrets/temporal-client.pem"
        assert env["TEMPORAL_TLS_CLIENT_KEY_DATA"] == "null"
        assert set(SDK_ENV) <= set(env), service


def test_worker_defaults_fit_the_compose_network(resolved: str) -> None:
    env = environment(service_blocks(resolved)["worker"])
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TEMPORAL_NAMESPACE"] == "default"
    assert env["REFUNDS_TASK_QUEUE"] == "refunds"
    assert env["REFUNDS_METRICS_PORT"] == "9464"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["OTEL_SERVICE_NAME"]


def test_settings_come_from_the_environment(compose: Compose) -> None:
    blocks = service_blocks(
        config(
            compose,
            TEMPORAL_NAMESPACE="refunds-prod",
            MEWS_BASE_URL="https://api.mews.com",
            PAYNOW_API_KEY="from-the-environment",
        )
    )
    worker = environment(blocks["worker"])
    assert worker["TEMPORAL_NAMESPACE"] == "refunds-prod"
    assert worker["MEWS_BASE_URL"] == "https://api.mews.com"
    assert worker["PAYNOW_API_KEY"] == "from-the-environment"
    # Unset settings pass through as nothing: the worker's own defaults apply.
    assert worker["PAYNOW_SIGNATURE_KEY"] == "null"
    assert environment(blocks["temporal-setup"])["TEMPORAL_NAMESPACE"] == "refunds-prod"


def test_sim_runs_the_same_image_under_its_profile(resolved: str) -> None:
    blocks = service_blocks(resolved)
    sim = blocks["sim"]
    assert re.search(r"^    profiles:\n    - sim$", sim, re.MULTILINE)
    assert images(sim) == images(blocks["worker"])
    assert "- sim\n    - --host\n    - 0.0.0.0\n    - --port\n    - '8700'" in sim


def test_codec_server_runs_the_same_image_under_its_profile(compose: Compose) -> None:
    blocks = service_blocks(config(compose, "--profile", "codec"))
    codec = blocks["codec"]
    assert re.search(r"^    profiles:\n    - codec$", codec, re.MULTILINE)
    assert images(codec) == images(blocks["worker"])
    assert "- codec-server\n    - --host\n    - 0.0.0.0\n    - --port\n    - '8234'" in codec
    # Reachable from the operator's browser on this machine only.
    assert "- 127.0.0.1:8234:8234" in codec
    env = environment(codec)
    # The compose UI's origins, as the browser sees them (temporal-ui publishes 8080).
    assert env["REFUNDS_CODEC_UI_ORIGINS"] == "http://localhost:8080,http://127.0.0.1:8080"
    assert "- 127.0.0.1:8080:8080" in blocks["temporal-ui"]
    # Keys and token pass through from the environment, never written in the file.
    passed = ("REFUNDS_ENCRYPTION_KEYS", "REFUNDS_ENCRYPTION_KEY_ID", "REFUNDS_CODEC_AUTH_TOKEN")
    for name in passed:
        assert env[name] == "null", name


def test_the_ui_uses_the_codec_endpoint_given(compose: Compose) -> None:
    plain = environment(service_blocks(config(compose))["temporal-ui"])
    assert plain["TEMPORAL_CODEC_ENDPOINT"] == ""
    blocks = service_blocks(config(compose, TEMPORAL_CODEC_ENDPOINT="http://localhost:8234"))
    assert environment(blocks["temporal-ui"])["TEMPORAL_CODEC_ENDPOINT"] == (
        "http://localhost:8234"
    )
    keys = "k1:" + "A" * 43 + "="
    codec = environment(
        service_blocks(
            config(
                compose,
                "--profile",
                "codec",
                REFUNDS_ENCRYPTION_KEYS=keys,
                REFUNDS_ENCRYPTION_KEY_ID="k1",
            )
        )["codec"]
    )
    assert codec["REFUNDS_ENCRYPTION_KEYS"] == keys
    assert codec["REFUNDS_ENCRYPTION_KEY_ID"] == "k1"


# -------------------------------------------------------------------------- setup job


def test_setup_job_creates_the_namespace_and_search_attributes() -> None:
    setup = service_blocks(COMPOSE_FILE.read_text())["temporal-setup"]
    assert "temporalio/admin-tools:" in setup
    assert "TEMPORAL_NAMESPACE: ${TEMPORAL_NAMESPACE:-default}" in setup
    assert "temporal operator namespace create" in setup
    assert "temporal operator search-attribute create" in setup
    for key in SEARCH_ATTRIBUTES:
        assert re.search(rf"\b{key.name}\b(\s+--type)?\s+Keyword\b", setup), key.name


def test_server_runs_on_postgres_after_the_schema_job(resolved: str) -> None:
    temporal = service_blocks(resolved)["temporal"]
    assert "DB: postgres12" in temporal
    assert "POSTGRES_SEEDS: postgresql" in temporal
    assert re.search(r"postgresql:\n        condition: service_healthy", temporal)
    assert re.search(
        r"temporal-schema:\n        condition: service_completed_successfully", temporal
    )


# ---------------------------------------------------------------- images and secrets


def test_every_image_is_pinned(compose: Compose) -> None:
    found = images(config(compose, "--profile", "sim"))
    assert len(found) == len(SERVICES)
    for image in found:
        name, _, tag = image.rpartition(":")
        assert name, f"{image} has no tag"
        assert "/" not in tag, f"{image} has no tag"
        assert tag != "latest", f"{image} is not pinned"


def test_dockerfile_base_image_is_pinned() -> None:
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda ref: defaults[ref.group(1)], base)
        for base in re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    ]
    assert len(bases) >= 2, "build and runtime stages"
    assert all(base.startswith("python:3.11-slim") for base in bases), bases


def test_dockerfile_runs_the_worker_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users, "the image must name a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert users[-1] == "10001:10001"
    assert re.search(r"^HEALTHCHECK .*\n?.*REFUNDS_METRICS_PORT", text, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["refunds"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["worker"\]$', text, re.MULTILINE)
    # A regular install of the wheel: not editable, no dev extras.
    assert " -e " not in text
    assert "[dev]" not in text


def test_no_credentials_in_the_deployment_files() -> None:
    files = [COMPOSE_FILE, DOCKERFILE, *sorted(DEPLOY.glob("*.y*ml"))]
    for path in files:
        text = path.read_text()
        for credential in SIMULATOR_CREDENTIALS:
            assert credential not in text, f"{path.name} holds a simulator credential"
    for number, line in enumerate(COMPOSE_FILE.read_text().splitlines(), start=1):
        setting = re.match(r"\s*-?\s*([A-Z][A-Z0-9_]*)\s*[:=]\s*(.*)$", line)
        if setting and SECRET_NAME.search(setting.group(1)):
            value = setting.group(2).strip()
            assert value == "" or value.startswith("${"), (
                f"docker-compose.yml:{number}: {setting.group(1)} must come from the "
                "environment (${VAR}), not be written in the file"
            )


def test_env_files_stay_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored


def test_api_runs_the_same_image_with_its_keys_from_the_environment(compose: Compose) -> None:
    digest = "0" * 64
    keys = f'[{{"name": "checkout", "sha256": "{digest}", "scopes": ["refunds:read"]}}]'
    blocks = service_blocks(config(compose, REFUNDS_API_KEYS=keys))
    api = blocks["api"]
    assert images(api) == images(blocks["worker"])
    assert "- api\n    - --host\n    - 0.0.0.0\n    - --port\n    - '8240'" in api
    assert "- 127.0.0.1:8240:8240" in api
    assert "/readyz" in api
    assert re.search(
        r"^      temporal-setup:\n        condition: service_completed_successfully$",
        api,
        re.MULTILINE,
    )
    env = environment(api)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    # (compose may fold the long value over lines: the digest and name are what count)
    assert env["REFUNDS_API_KEYS"].startswith('[{"name": "checkout"')
    assert digest in api
    # Never the insecure flag in a deployment; the file passes through when set.
    assert "REFUNDS_API_INSECURE_NO_AUTH" not in env
    assert environment(service_blocks(config(compose))["api"])["REFUNDS_API_KEYS_FILE"] == "null"


def test_api_takes_the_mews_webhook_token_from_the_environment(compose: Compose) -> None:
    token = "whk-" + "7" * 32
    api = environment(service_blocks(config(compose, MEWS_WEBHOOK_TOKEN=token))["api"])
    assert api["MEWS_WEBHOOK_TOKEN"] == token
    # Unset: the endpoint answers 404 (no default token), and the worker never has it.
    assert environment(service_blocks(config(compose))["api"])["MEWS_WEBHOOK_TOKEN"] == "null"
    assert "MEWS_WEBHOOK_TOKEN" not in environment(service_blocks(config(compose))["worker"])


# --------------------------------------------------------------------------- telemetry


def test_prometheus_scrapes_every_worker_and_the_collector() -> None:
    text = (DEPLOY / "prometheus.yml").read_text()
    assert re.search(r"dns_sd_configs:\n\s+- names: \[worker\]\n\s+type: A\n\s+port: 9464", text)
    assert '"otel-collector:8888"' in text
    assert '"temporal:8000"' in text


def test_collector_takes_otlp_and_sends_traces_to_jaeger() -> None:
    text = (DEPLOY / "otel-collector.yaml").read_text()
    assert "endpoint: 0.0.0.0:4317" in text
    assert "endpoint: 0.0.0.0:4318" in text
    assert "endpoint: jaeger:4317" in text
    assert re.search(r"processors: \[memory_limiter, batch\]", text)


def test_deploy_configs_are_mounted(resolved: str) -> None:
    blocks = service_blocks(resolved)
    assert (
        "/deploy/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro"
        in (blocks["otel-collector"])
    )
    assert "/deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in blocks["prometheus"]
