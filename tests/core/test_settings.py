"""Settings: the environment contract, `.env`, required credentials and secret hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.settings import MissingSettingError, Settings

# The names other teams, the README and `.env.example` rely on.
CONTRACT_NAMES = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "REFUNDS_TASK_QUEUE",
    "MEWS_BASE_URL",
    "MEWS_CLIENT_TOKEN",
    "MEWS_ACCESS_TOKEN",
    "MEWS_CLIENT",
    "PAYNOW_BASE_URL",
    "PAYNOW_API_KEY",
    "PAYNOW_SIGNATURE_KEY",
    "REFUNDS_HTTP_TIMEOUT_S",
    "REFUNDS_POLL_INITIAL_S",
    "REFUNDS_POLL_MAX_S",
    # The HTTP API, its Mews webhook and outcome events (issue 11).
    "REFUNDS_API_HOST",
    "REFUNDS_API_PORT",
    "REFUNDS_API_KEYS",
    "REFUNDS_API_KEYS_FILE",
    "REFUNDS_API_INSECURE_NO_AUTH",
    "REFUNDS_API_MAX_BODY_BYTES",
    "MEWS_WEBHOOK_TOKEN",
    "REFUNDS_EVENTS_SECRET",
    "REFUNDS_EVENTS_ALLOW_PRIVATE",
    "REFUNDS_EVENTS_RETRY_INITIAL_S",
    "REFUNDS_EVENTS_RETRY_MAX_S",
    "REFUNDS_EVENTS_GIVE_UP_AFTER_S",
)
SECRET_NAMES = (
    "MEWS_CLIENT_TOKEN",
    "MEWS_ACCESS_TOKEN",
    "PAYNOW_API_KEY",
    "PAYNOW_SIGNATURE_KEY",
    "MEWS_WEBHOOK_TOKEN",
    "REFUNDS_EVENTS_SECRET",
)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No developer `.env` and no exported variable may reach these tests."""
    for name in {*CONTRACT_NAMES, *(field.upper() for field in Settings.model_fields)}:
        monkeypatch.delenv(name, raising=False)
        # Settings match names case-insensitively, so a lower-case export would count too.
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_contract_name_is_a_field() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert set(CONTRACT_NAMES) <= fields


def test_defaults() -> None:
    settings = Settings()
    assert settings.temporal_address == "localhost:7233"
    assert settings.temporal_namespace == "default"
    assert settings.refunds_task_queue == "refunds"
    assert settings.mews_base_url == "https://api.mews-demo.com"
    assert settings.mews_client_token is None
    assert settings.mews_access_token is None
    assert settings.mews_client == "refund-orchestrator 0.1.0"
    assert settings.paynow_base_url == "https://api.sandbox.paynow.pl"
    assert settings.paynow_api_key is None
    assert settings.paynow_signature_key is None
    assert settings.refunds_http_timeout_s == 10.0
    assert settings.refunds_poll_initial_s == 5.0
    assert settings.refunds_poll_max_s == 300.0
    assert settings.refunds_attention_after_s == 48 * 3600.0


def test_every_contract_variable_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "TEMPORAL_ADDRESS": "temporal.internal:7233",
        "TEMPORAL_NAMESPACE": "payments",
        "REFUNDS_TASK_QUEUE": "refunds-eu",
        "MEWS_BASE_URL": "https://api.mews.com",
        "MEWS_CLIENT_TOKEN": "mews-client-token-value",
        "MEWS_ACCESS_TOKEN": "mews-access-token-value",
        "MEWS_CLIENT": "acme refunds 2.0",
        "PAYNOW_BASE_URL": "https://api.paynow.pl",
        "PAYNOW_API_KEY": "paynow-api-key-value",
        "PAYNOW_SIGNATURE_KEY": "paynow-signature-key-value",
        "REFUNDS_HTTP_TIMEOUT_S": "2.5",
        "REFUNDS_POLL_INITIAL_S": "1",
        "REFUNDS_POLL_MAX_S": "60",
        "REFUNDS_API_HOST": "10.0.4.7",
        "REFUNDS_API_PORT": "9240",
        "REFUNDS_API_KEYS": '[{"name": "checkout", "sha256": "00", "scopes": []}]',
        "REFUNDS_API_KEYS_FILE": "/run/secrets/refunds-api-keys.json",
        "REFUNDS_API_INSECURE_NO_AUTH": "true",
        "REFUNDS_API_MAX_BODY_BYTES": "2048",
        "MEWS_WEBHOOK_TOKEN": "mews-webhook-token-value",
        "REFUNDS_EVENTS_SECRET": "whsec_ZXZlbnRzLXNlY3JldC12YWx1ZQ==",
        "REFUNDS_EVENTS_ALLOW_PRIVATE": "true",
        "REFUNDS_EVENTS_RETRY_INITIAL_S": "2",
        "REFUNDS_EVENTS_RETRY_MAX_S": "600",
        "REFUNDS_EVENTS_GIVE_UP_AFTER_S": "86400",
    }
    assert set(values) == set(CONTRACT_NAMES)
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    assert settings.temporal_address == "temporal.internal:7233"
    assert settings.temporal_namespace == "payments"
    assert settings.refunds_task_queue == "refunds-eu"
    assert settings.mews_base_url == "https://api.mews.com"
    assert settings.mews_client == "acme refunds 2.0"
    assert settings.paynow_base_url == "https://api.paynow.pl"
    assert settings.refunds_http_timeout_s == 2.5
    assert settings.refunds_poll_initial_s == 1.0
    assert settings.refunds_poll_max_s == 60.0
    assert settings.refunds_api_host == "10.0.4.7"
    assert settings.refunds_api_port == 9240
    assert settings.refunds_api_keys == values["REFUNDS_API_KEYS"]
    assert settings.refunds_api_keys_file == Path("/run/secrets/refunds-api-keys.json")
    assert settings.refunds_api_insecure_no_auth is True
    assert settings.refunds_api_max_body_bytes == 2048
    assert settings.refunds_events_allow_private is True
    assert settings.refunds_events_retry_initial_s == 2.0
    assert settings.refunds_events_retry_max_s == 600.0
    assert settings.refunds_events_give_up_after_s == 86400.0
    for name in SECRET_NAMES:
        secret = getattr(settings, name.lower())
        assert isinstance(secret, SecretStr)
        assert secret.get_secret_value() == values[name]


def test_dotenv_file_in_the_working_directory_is_read(isolated_environment: Path) -> None:
    (isolated_environment / ".env").write_text(
        "TEMPORAL_NAMESPACE=from-dotenv\n"
        "PAYNOW_API_KEY=dotenv-api-key\n"
        "REFUNDS_POLL_MAX_S=120\n"
        "SOMETHING_ELSE=ignored\n",
        encoding="utf-8",
    )
    settings = Settings()
    assert settings.temporal_namespace == "from-dotenv"
    assert settings.require("PAYNOW_API_KEY", purpose="Paynow").get_secret_value() == (
        "dotenv-api-key"
    )
    assert settings.refunds_poll_max_s == 120.0


def test_environment_wins_over_dotenv(
    isolated_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_environment / ".env").write_text("TEMPORAL_NAMESPACE=from-dotenv\n")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "from-env")
    assert Settings().temporal_namespace == "from-env"


def test_copied_env_example_leaves_credentials_unset(isolated_environment: Path) -> None:
    # `.env.example` ships the credential names with empty values.
    (isolated_environment / ".env").write_text("MEWS_CLIENT_TOKEN=\nPAYNOW_API_KEY=\n")
    settings = Settings()
    with pytest.raises(MissingSettingError, match="MEWS_CLIENT_TOKEN"):
        settings.require("MEWS_CLIENT_TOKEN", purpose="Mews refunds")
    with pytest.raises(MissingSettingError, match="PAYNOW_API_KEY"):
        settings.require("PAYNOW_API_KEY", purpose="Paynow refunds")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFUNDS_HTTP_TIMEOUT_S", "0"),
        ("REFUNDS_HTTP_TIMEOUT_S", "301"),
        ("REFUNDS_HTTP_TIMEOUT_S", "ten"),
        ("REFUNDS_POLL_INITIAL_S", "0"),
        ("REFUNDS_POLL_MAX_S", "-1"),
    ],
)
def test_invalid_numbers_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.temporal_address = "elsewhere:7233"  # type: ignore[misc]


# --- require() ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_require_returns_the_secret(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, f"value-of-{name}")
    secret = Settings().require(name, purpose="a test")
    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == f"value-of-{name}"


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_require_names_the_missing_variable(name: str) -> None:
    with pytest.raises(MissingSettingError) as caught:
        Settings().require(name, purpose="Mews and Paynow refunds")
    message = str(caught.value)
    assert message.startswith(f"{name} is not set")
    assert "Mews and Paynow refunds" in message
    assert ".env" in message


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_require_treats_empty_as_missing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "")
    with pytest.raises(MissingSettingError, match=name):
        Settings().require(name, purpose="a test")


def test_require_only_checks_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNOW_API_KEY", "present")
    settings = Settings()
    assert settings.require("PAYNOW_API_KEY", purpose="Paynow").get_secret_value() == "present"
    with pytest.raises(MissingSettingError, match="PAYNOW_SIGNATURE_KEY"):
        settings.require("PAYNOW_SIGNATURE_KEY", purpose="Paynow")


@pytest.mark.parametrize("name", ["TEMPORAL_ADDRESS", "NO_SUCH_SETTING"])
def test_require_refuses_names_that_are_not_secrets(name: str) -> None:
    with pytest.raises(MissingSettingError, match=name):
        Settings().require(name, purpose="a test")


# --- secrets never print -----------------------------------------------------------------------


def test_secrets_are_not_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {name: f"SUPER-SECRET-{index}-VALUE" for index, name in enumerate(SECRET_NAMES)}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    shown = [repr(settings), str(settings), f"{settings}", repr(settings.model_dump())]
    for text in shown:
        for value in secrets.values():
            assert value not in text
        assert "SUPER-SECRET" not in text
    # They are there, just hidden.
    assert (
        settings.require("PAYNOW_SIGNATURE_KEY", purpose="x").get_secret_value()
        == (secrets["PAYNOW_SIGNATURE_KEY"])
    )
    assert "**********" in repr(settings)
