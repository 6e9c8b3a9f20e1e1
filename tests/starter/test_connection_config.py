"""Where `starter.connection` connects, and how: the SDK's environment configuration under the
project's settings, in the documented precedence, with credentials kept out of every message
and ``repr``. No server is needed: only :func:`resolve_target` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from core.settings import Settings
from starter.connection import (
    SDK_ENV,
    TemporalConfigError,
    TemporalTarget,
    plain_environment,
    resolve_target,
)
from tests.support.tls import CertificateAuthority

SECRET = "secret-api-key-0b7d"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No developer `.env`, exported TEMPORAL_* variable or default config file."""
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_profiles(path: Path) -> Path:
    path.write_text(
        '[profile.default]\naddress = "from-file:7233"\nnamespace = "file-ns"\n'
        '[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\n'
        f'api_key = "{SECRET}"\n'
    )
    return path


def test_defaults_are_a_plain_local_server() -> None:
    target = resolve_target(Settings())
    assert (target.address, target.namespace, target.tls, target.api_key) == (
        "localhost:7233",
        "default",
        False,
        None,
    )


def test_the_profile_gives_address_namespace_and_api_key_with_tls_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(write_profiles(tmp_path / "t.toml")))
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    target = resolve_target(Settings())
    assert target.address == "ns.acct.tmprl.cloud:7233"
    assert target.namespace == "ns.acct"
    assert target.api_key == SECRET
    assert target.tls is True
    assert SECRET not in repr(target)
    assert target.describe() == "ns.acct.tmprl.cloud:7233 (namespace ns.acct, TLS, API key)"


def test_environment_beats_the_file_and_explicit_settings_beat_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(write_profiles(tmp_path / "t.toml")))
    assert resolve_target(Settings()).address == "from-file:7233"
    monkeypatch.setenv("TEMPORAL_ADDRESS", "from-env:7233")
    assert resolve_target(Settings()).address == "from-env:7233"
    explicit = Settings(temporal_address="stack:7233", temporal_namespace="stack-ns")
    target = resolve_target(explicit)
    assert (target.address, target.namespace) == ("stack:7233", "stack-ns")


def test_temporal_values_of_dot_env_reach_the_connection(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    (isolated / ".env").write_text(f"TEMPORAL_API_KEY={SECRET}\nTEMPORAL_TLS=false\n")
    target = resolve_target(Settings())
    assert target.api_key == SECRET
    assert target.tls is False
    # The process environment wins over .env, as it does for Settings.
    monkeypatch.setenv("TEMPORAL_TLS", "true")
    assert isinstance(resolve_target(Settings()).tls, TLSConfig)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK alone would take these as "TLS on".
    monkeypatch.setenv("TEMPORAL_API_KEY", "")
    monkeypatch.setenv("TEMPORAL_TLS", "")
    assert resolve_target(Settings()).tls is False


def test_mtls_files_are_read_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    client = ca.issue("client", server=False)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(ca.cert_path))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(client.cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_DATA", client.key.read_text())
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "temporal.internal")
    target = resolve_target(Settings())
    assert isinstance(target.tls, TLSConfig)
    assert target.tls.client_private_key == client.key.read_bytes()
    assert target.tls.domain == "temporal.internal"
    assert "PRIVATE KEY" not in repr(target)
    assert "client certificate" in target.describe()


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"TEMPORAL_PROFILE": "prod"}, "Temporal profile 'prod' (TEMPORAL_PROFILE) is not in"),
        ({"TEMPORAL_TLS": "yes"}, "TEMPORAL_TLS must be true or false, not 'yes'"),
        ({"TEMPORAL_TLS_DISABLE_HOST_VERIFICATION": "true"}, "not supported by the Temporal"),
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nowhere/c.pem"},
            "cannot read the client certificate /nowhere/c.pem",
        ),
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/a", "TEMPORAL_TLS_CLIENT_CERT_DATA": "b"},
            "Cannot specify both TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_CERT_DATA",
        ),
        (
            {"TEMPORAL_TLS_CLIENT_KEY_DATA": f"not a key {SECRET}"},
            "the client private key (given as data;",
        ),
    ],
)
def test_unusable_settings_say_what_to_fix_without_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TemporalConfigError) as raised:
        resolve_target(Settings())
    assert fragment in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_toml_error_does_not_quote_the_api_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[profile.default]\napi_key = "{SECRET}\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(broken))
    with pytest.raises(TemporalConfigError) as raised:
        resolve_target(Settings())
    assert "TOML parse error" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_the_dev_stack_environment_drops_what_secures_another_cluster(tmp_path: Path) -> None:
    shell = {
        "TEMPORAL_API_KEY": SECRET,
        "TEMPORAL_TLS": "true",
        "TEMPORAL_PROFILE": "cloud",
        "TEMPORAL_CONFIG_FILE": str(write_profiles(tmp_path / "t.toml")),
    }
    target = resolve_target(
        Settings(temporal_address="127.0.0.1:7999"), environ=plain_environment(shell)
    )
    assert target == TemporalTarget(address="127.0.0.1:7999", namespace="default")
