"""The Kubernetes manifests (deploy/kubernetes/): every object of the base and of each overlay
is valid against the Kubernetes JSON schemas, and keeps the promises of issue 13 and
deploy/kubernetes/README.md (probes backed by real checks, sized resources, non-root, a PDB
over the workers, graceful termination, settings only from a ConfigMap or a Secret).

There is no kubectl here, so the kustomizations are rendered by :func:`render`, which knows
the small part of kustomize the files use (``resources``, and ``patches`` given as inline JSON
6902 operations with a target) and refuses anything else, naming it. The schemas are those
bundled in the ``kubernetes-validate`` wheel (strict variants: an unknown field, such as a
misspelt ``readinesProbe``, is an error); it resolves references from those files only, and
the tests run with every network connection refused to prove it.
"""

from __future__ import annotations

import copy
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from api.routes import health
from core.settings import Settings
from providers.profiles import load_profiles
from worker import GRACEFUL_SHUTDOWN

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = sorted(p.parent for p in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]

# The oldest Kubernetes the manifests support (the API's preStop `sleep` action is on by
# default from 1.30) and the newest the validator bundles.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())

# The image's user (Dockerfile: `USER 10001:10001`).
IMAGE_UID = 10001
# The worker's peak RSS measured under load (deploy/kubernetes/README.md, "Sizing"), MiB.
WORKER_MEASURED_PEAK_MIB = 255
API_MEASURED_PEAK_MIB = 125
# What a worker needs to run, serve its probes and sign outcome events.
WORKER_NEEDS = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "REFUNDS_TASK_QUEUE",
    "REFUNDS_METRICS_PORT",
    "REFUNDS_EVENTS_SECRET",
    "MEWS_BASE_URL",
    "MEWS_CLIENT_TOKEN",
    "MEWS_ACCESS_TOKEN",
    "PAYNOW_BASE_URL",
    "PAYNOW_API_KEY",
    "PAYNOW_SIGNATURE_KEY",
}
# The Temporal SDK's environment configuration (temporalio.envconfig), read by every process.
TEMPORAL_SDK_ENV = {
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
}
SECRET_NAME = re.compile(r"TOKEN|SECRET|API_KEY|SIGNATURE_KEY|ENCRYPTION_KEYS|PASSWORD")

Obj = dict[str, Any]


# --- rendering -------------------------------------------------------------------------


class UnsupportedKustomization(AssertionError):
    """The kustomization uses a feature :func:`render` does not implement."""


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` makes, for the features the files use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise UnsupportedKustomization(
            f"{directory}: {sorted(unknown)}: teach render() in {Path(__file__).name} these"
        )
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    objects: list[Obj] = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        if set(patch) != {"target", "patch"} or set(patch["target"]) - {"kind", "name"}:
            raise UnsupportedKustomization(f"{directory}: a patch other than JSON 6902: {patch}")
        targets = [
            obj
            for obj in objects
            if all(
                (obj["metadata"]["name"] if key == "name" else obj[key]) == value
                for key, value in patch["target"].items()
            )
        ]
        assert targets, f"{directory}: the patch target {patch['target']} matches nothing"
        for obj in targets:
            for operation in yaml.safe_load(patch["patch"]):
                _apply(obj, operation)
    return objects


def _apply(obj: Obj, operation: dict[str, Any]) -> None:
    """One RFC 6902 ``add``, ``replace`` or ``remove``."""
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]
    ]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, value)
        elif op == "replace":
            node[index] = value
        elif op == "remove":
            del node[index]
        else:
            raise UnsupportedKustomization(f"JSON patch op {op!r}")
    elif op in ("add", "replace", "remove"):
        if op != "add":
            assert last in node, f"{operation['path']}: nothing to {op}"
        if op == "remove":
            del node[last]
        else:
            node[last] = value
    else:
        raise UnsupportedKustomization(f"JSON patch op {op!r}")


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(objects: list[Obj], deployment: str) -> Obj:
    spec: Obj = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj], deployment: str) -> Obj:
    containers = pod_spec(objects, deployment)["containers"]
    assert len(containers) == 1
    found: Obj = containers[0]
    return found


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"memory {quantity!r}: use Ki, Mi or Gi"
    return int(match[1]) * units[match[2]]


def cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation works offline: any connection other than to this machine fails the test."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"network access during the test: {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return render(BASE)


# --- schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_every_object_is_valid_against_the_kubernetes_schemas(
    directory: Path, version: str
) -> None:
    objects = render(directory)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_refuses_a_broken_manifest(base: list[Obj]) -> None:
    """The schemas are not vacuous: a misspelt field and a wrong type are both refused."""
    misspelt = copy.deepcopy(one(base, "Deployment", "refunds-worker"))
    worker = misspelt["spec"]["template"]["spec"]["containers"][0]
    worker["readinesProbe"] = worker.pop("readinessProbe")
    wrong_type = copy.deepcopy(one(base, "Deployment", "refunds-worker"))
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.utils.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_render_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: []\nconfigMapGenerator: []\n"
    )
    with pytest.raises(UnsupportedKustomization, match="configMapGenerator"):
        render(tmp_path)


def test_the_base_has_each_object_the_readme_names(base: list[Obj]) -> None:
    assert sorted((o["kind"], o["metadata"]["name"]) for o in base) == [
        ("ConfigMap", "refunds-config"),
        ("Deployment", "refunds-api"),
        ("Deployment", "refunds-worker"),
        ("PodDisruptionBudget", "refunds-api"),
        ("PodDisruptionBudget", "refunds-worker"),
        ("Service", "refunds-api"),
        ("ServiceAccount", "refund-orchestrator"),
    ]
    readme = (KUBERNETES / "README.md").read_text()
    for obj in base:
        assert f"`{obj['metadata']['name']}`" in readme, obj["metadata"]["name"]


# --- probes ----------------------------------------------------------------------------


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/metrics" else 404)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[int, type[_Metrics]]]:
    handler = type("Metrics", (_Metrics,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


# Lines as the worker's SDK runtime serves them (captured from `refunds worker`).
POLLERS = (
    'temporal_num_pollers{{namespace="default",poller_type="activity_task",'
    'service_name="temporal-core-sdk",task_queue="{queue}"}} {count}\n'
    'temporal_num_pollers{{namespace="default",poller_type="workflow_task",'
    'service_name="temporal-core-sdk",task_queue="{queue}"}} {count}\n'
)


@pytest.mark.parametrize(
    ("served", "ready"),
    [
        (POLLERS.format(queue="refunds", count=5), True),
        (POLLERS.format(queue="refunds", count=0), False),
        (POLLERS.format(queue="another-queue", count=5), False),
        ("# no worker metrics yet\n", False),
    ],
    ids=["polling", "no-pollers", "other-queue", "not-started"],
)
def test_the_worker_is_ready_only_while_it_polls_its_task_queue(
    base: list[Obj], metrics_server: tuple[int, type[_Metrics]], served: str, ready: bool
) -> None:
    """The readiness command, run as the kubelet runs it, against a metrics endpoint."""
    port, handler = metrics_server
    handler.body = served.encode()
    config = one(base, "ConfigMap", "refunds-config")["data"]
    command = container(base, "refunds-worker")["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    env = {
        "PATH": os.environ["PATH"],
        "REFUNDS_METRICS_PORT": str(port),
        "REFUNDS_TASK_QUEUE": config["REFUNDS_TASK_QUEUE"],
    }
    result = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode == 0) == ready, result.stderr


def test_the_worker_probe_without_an_endpoint_fails(base: list[Obj]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    command = container(base, "refunds-worker")["readinessProbe"]["exec"]["command"]
    env = {"PATH": os.environ["PATH"], "REFUNDS_METRICS_PORT": str(free_port)}
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True)
    assert result.returncode != 0


def test_worker_liveness_is_the_images_healthcheck(base: list[Obj]) -> None:
    worker = container(base, "refunds-worker")
    config = one(base, "ConfigMap", "refunds-config")["data"]
    liveness = worker["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert liveness["path"] == "/metrics"
    assert ports[liveness["port"]] == int(config["REFUNDS_METRICS_PORT"])
    healthcheck = next(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if "CMD [" in line
    )
    assert "/metrics" in healthcheck
    assert "REFUNDS_METRICS_PORT" in healthcheck


def test_api_probes_are_its_health_endpoints(base: list[Obj]) -> None:
    api = container(base, "refunds-api")
    routes = {getattr(route, "path", None) for route in health.routes}
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    readiness, liveness = api["readinessProbe"]["httpGet"], api["livenessProbe"]["httpGet"]
    assert (readiness["path"], liveness["path"]) == ("/readyz", "/healthz")
    assert {readiness["path"], liveness["path"]} <= routes
    assert ports[readiness["port"]] == ports[liveness["port"]] == 8240
    assert api["args"][api["args"].index("--port") + 1] == "8240"


def test_the_api_service_reaches_the_api_pods(base: list[Obj]) -> None:
    service = one(base, "Service", "refunds-api")["spec"]
    labels = one(base, "Deployment", "refunds-api")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    ports = {p["name"] for p in container(base, "refunds-api")["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= ports


# --- resources, security, termination, disruptions -------------------------------------


@pytest.mark.parametrize(
    ("deployment", "measured_mib"),
    [("refunds-worker", WORKER_MEASURED_PEAK_MIB), ("refunds-api", API_MEASURED_PEAK_MIB)],
)
def test_requests_and_limits_cover_the_measured_memory(
    base: list[Obj], deployment: str, measured_mib: int
) -> None:
    resources = container(base, deployment)["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert set(requests) == set(limits) == {"cpu", "memory"}
    assert cores(requests["cpu"]) <= cores(limits["cpu"])
    assert mebibytes(requests["memory"]) >= measured_mib
    # Room for what was not measured (a full workflow cache, a probe process) before an
    # out-of-memory kill.
    assert mebibytes(limits["memory"]) >= 1.5 * measured_mib


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_pods_run_as_the_images_non_root_user_with_nothing_extra(directory: Path) -> None:
    objects = render(directory)
    for deployment in ("refunds-worker", "refunds-api"):
        spec = pod_spec(objects, deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == IMAGE_UID
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert "hostNetwork" not in spec
        assert "hostPID" not in spec
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"] for m in box["volumeMounts"]}
            assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_termination_grace_outlasts_the_workers_graceful_shutdown(base: list[Obj]) -> None:
    grace = pod_spec(base, "refunds-worker")["terminationGracePeriodSeconds"]
    assert grace >= GRACEFUL_SHUTDOWN.total_seconds() + 10
    api = pod_spec(base, "refunds-api")
    pause = api["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    # A status request may wait 60 s (docs/api.md, `?wait`).
    assert api["terminationGracePeriodSeconds"] > pause + 60


@pytest.mark.parametrize("deployment", ["refunds-worker", "refunds-api"])
def test_the_disruption_budget_selects_the_pods_and_allows_an_eviction(
    base: list[Obj], deployment: str
) -> None:
    budget = one(base, "PodDisruptionBudget", deployment)["spec"]
    spec = one(base, "Deployment", deployment)["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # Never all of them (a drain could not proceed), never none (no protection).
    assert 1 <= budget["minAvailable"] < spec["replicas"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- settings and secrets --------------------------------------------------------------


def environment(objects: list[Obj], deployment: str) -> dict[str, str]:
    """Each variable the container gets, and where from: ``configmap``, ``secret:NAME`` or
    ``inline``. Fails on anything else (a whole Secret as ``envFrom``, a field ref)."""
    box = container(objects, deployment)
    found: dict[str, str] = {}
    for source in box.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{deployment}: envFrom {source}"
        config = one(objects, "ConfigMap", source["configMapRef"]["name"])
        found |= dict.fromkeys(config["data"], "configmap")
    for var in box.get("env", []):
        if "value" in var:
            found[var["name"]] = "inline"
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["key"] == var["name"], f"{var['name']}: the Secret's key is its name"
            found[var["name"]] = f"secret:{ref['name']}"
    return found


def secret_mounts(objects: list[Obj], deployment: str) -> dict[str, str]:
    """Mount path -> Secret name, for each Secret mounted as a directory."""
    spec = pod_spec(objects, deployment)
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    mounts: dict[str, str] = {}
    for mount in spec["containers"][0]["volumeMounts"]:
        if mount["name"] in secrets:
            assert mount.get("readOnly") is True
            assert "subPath" not in mount, "a subPath mount never sees a rotated secret"
            mounts[mount["mountPath"]] = secrets[mount["name"]]
    return mounts


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_settings_come_from_the_configmap_or_a_secret_never_inline(directory: Path) -> None:
    objects = render(directory)
    assert not [o for o in objects if o["kind"] == "Secret"], "Secrets are made by hand"
    known = {name.upper() for name in Settings.model_fields} | TEMPORAL_SDK_ENV
    config = one(objects, "ConfigMap", "refunds-config")["data"]
    for deployment in ("refunds-worker", "refunds-api"):
        env = environment(objects, deployment)
        mounts = secret_mounts(objects, deployment)
        for name, source in env.items():
            assert name in known or name.startswith("OTEL_"), f"{deployment}: unknown {name}"
            if SECRET_NAME.search(name) and not name.endswith(("_FILE", "_PATH")):
                assert source.startswith("secret:"), f"{deployment}: {name} from {source}"
            if source == "inline":
                # Only a path to a file of a mounted Secret: the *_FILE convention.
                assert name.endswith("_FILE"), f"{deployment}: {name} is inline"
        # Every file a setting names is in a mounted Secret.
        for name in env:
            if name.endswith(("_FILE", "_PATH")) and name != "REFUNDS_PROFILES_FILE":
                value = config.get(name) or next(
                    v["value"] for v in container(objects, deployment)["env"] if v["name"] == name
                )
                assert any(value.startswith(path + "/") for path in mounts), (
                    f"{deployment}: {name}={value} is in no mounted Secret ({mounts})"
                )


def test_the_worker_gets_everything_it_needs_and_secrets_from_secrets(base: list[Obj]) -> None:
    env = environment(base, "refunds-worker")
    assert set(env) >= WORKER_NEEDS, f"missing: {WORKER_NEEDS - set(env)}"
    for name in WORKER_NEEDS:
        if SECRET_NAME.search(name):
            assert env[name].startswith("secret:"), name
    # The API starts refunds; it never calls a provider.
    api = environment(base, "refunds-api")
    assert not {n for n in api if n.startswith(("MEWS_CLIENT", "MEWS_ACCESS", "PAYNOW_"))} - {
        "PAYNOW_BASE_URL"
    }


def test_no_credential_is_written_in_the_manifests() -> None:
    text = "\n".join(p.read_text() for p in KUBERNETES.rglob("*.yaml"))
    assert "kind: Secret\n" not in text
    for line in text.splitlines():
        assignment = re.match(r"\s*([A-Z_]+):\s*\"?([^\"]+)\"?\s*$", line)
        if assignment and SECRET_NAME.search(assignment[1]):
            pytest.fail(f"a secret-looking setting with a value: {line.strip()}")
    assert "whsec_" not in text
    assert "rfk_" not in text


# --- overlays --------------------------------------------------------------------------


def test_temporal_cloud_gives_every_process_the_api_key_over_tls() -> None:
    objects = render(KUBERNETES / "overlays" / "temporal-cloud")
    assert one(objects, "ConfigMap", "refunds-config")["data"]["TEMPORAL_TLS"] == "true"
    for deployment in ("refunds-worker", "refunds-api"):
        assert environment(objects, deployment)["TEMPORAL_API_KEY"] == "secret:temporal-cloud"


def test_mtls_gives_every_process_the_client_certificate() -> None:
    objects = render(KUBERNETES / "overlays" / "self-hosted-mtls")
    config = one(objects, "ConfigMap", "refunds-config")["data"]
    assert config["TEMPORAL_TLS"] == "true"
    for deployment in ("refunds-worker", "refunds-api"):
        mounts = secret_mounts(objects, deployment)
        assert mounts["/var/run/secrets/temporal-tls"] == "temporal-client-tls"
        for name in (
            "TEMPORAL_TLS_CLIENT_CERT_PATH",
            "TEMPORAL_TLS_CLIENT_KEY_PATH",
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        ):
            assert config[name].startswith("/var/run/secrets/temporal-tls/")


def test_merchant_profiles_read_every_credential_from_the_mounted_secret(tmp_path: Path) -> None:
    """The example profiles file loads with the worker's own loader, once its paths point at
    files made here, and names only files of the mounted Secret."""
    objects = render(KUBERNETES / "overlays" / "merchant-profiles")
    config = one(objects, "ConfigMap", "refunds-config")["data"]
    profiles_file = Path(config["REFUNDS_PROFILES_FILE"])
    spec = pod_spec(objects, "refunds-worker")
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    profiles_volume = next(n for n, path in mounts.items() if path == str(profiles_file.parent))
    profiles_map = one(objects, "ConfigMap", volumes[profiles_volume]["configMap"]["name"])
    text = profiles_map["data"][profiles_file.name]
    [secret_dir] = [
        path
        for path, name in secret_mounts(objects, "refunds-worker").items()
        if name == "refunds-merchant-credentials"
    ]
    files = [
        value
        for tables in tomllib.loads(text).values()
        for table in tables.values()
        for key, value in table.items()
        if key.endswith("_file")
    ]
    assert files
    assert all(f.startswith(secret_dir + "/") for f in files), files
    local = tmp_path / "merchants"
    local.mkdir()
    for name in {Path(f).name for f in files}:
        (local / name).write_text(f"test-only-{name}")
    copy_of_file = tmp_path / "profiles.toml"
    copy_of_file.write_text(text.replace(secret_dir, str(local)))
    loaded = load_profiles(Settings(_env_file=None, refunds_profiles_file=copy_of_file))
    assert {p.name for p in loaded if p.enabled} >= {"hotel-a", "hotel-group", "shop-a", "shop-b"}
