"""REFUNDS_PROFILES_FILE: parsing, refusals (inline secrets above all), the profile default,
the directory's answers for unknown and disabled profiles, and file secrets that rotate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.models import ProviderName, RefundRequest
from core.settings import MissingSettingError, Settings
from providers.credentials import FileCredential
from providers.errors import InvalidRequestError
from providers.mews import MewsAdapter
from providers.paynow import PaynowAdapter
from providers.profiles import ProfilesFileError, load_profiles
from providers.registry import ProviderDirectory, ProviderNotConfiguredError

MEWS_PAYMENT = "6d1b2c3a-0101-4b2c-9d3e-4f5a6b7c8d01"
MEWS_ACCOUNT = "a1c0ffee-0100-4b2c-9d3e-4f5a6b7c8d00"
ENTERPRISE = "3b0f6a2e-5c1d-4e8f-9a70-1d2c3b4a5e60"

PROFILES = """
[mews.hotel]
base_url = "https://api.mews.com"
portfolio = false
client_token_env = "T_HOTEL_CLIENT"
access_token_file = "hotel-access"

[mews.group]
base_url = "https://api.mews.com"
portfolio = true
client_token_env = "T_HOTEL_CLIENT"
access_token_env = "T_GROUP_ACCESS"

[mews.closed]
base_url = "https://api.mews.com"
portfolio = false
enabled = false
client_token_env = "T_UNSET"
access_token_env = "T_UNSET"

[paynow.shop-b]
base_url = "https://api.paynow.pl"
api_key_env = "T_SHOP_KEY"
signature_key_file = "/nonexistent/ignored-when-relative-test"
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_HOTEL_CLIENT", "hotel-client-secret")
    monkeypatch.setenv("T_GROUP_ACCESS", "group-access-secret")
    monkeypatch.setenv("T_SHOP_KEY", "shop-key-secret")
    monkeypatch.delenv("T_UNSET", raising=False)


def settings_for(tmp_path: Path, text: str, **values: str) -> Settings:
    (tmp_path / "hotel-access").write_text("hotel-access-secret\n")
    (tmp_path / "shop-sig").write_text("shop-signature-secret")
    path = tmp_path / "profiles.toml"
    path.write_text(text.replace("/nonexistent/ignored-when-relative-test", "shop-sig"))
    # Validated, not read from the environment: this machine's MEWS_* never leak in.
    return Settings.model_validate({"refunds_profiles_file": path, **values})


def request(
    merchant: str, provider: ProviderName = ProviderName.MEWS, **extra: str
) -> RefundRequest:
    fields: dict[str, str | int]
    if provider is ProviderName.MEWS:
        fields = {"payment_id": MEWS_PAYMENT, "account_id": MEWS_ACCOUNT}
    else:
        fields = {"payment_id": "SUCC-EED-S00-001", "amount_minor": 100, "currency": "PLN"}
    return RefundRequest.model_validate(
        {
            "idempotency_key": "k-1",
            "provider": provider,
            "reason": "test",
            "merchant": merchant,
            **fields,
            **extra,
        }
    )


async def test_profiles_file_and_settings_make_one_directory(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, PROFILES, mews_client_token="default-client", mews_access_token="default-access"
    )
    directory = ProviderDirectory.from_settings(settings)
    try:
        assert directory.profile_names(ProviderName.MEWS) == ["default", "group", "hotel"]
        assert directory.profile_names(ProviderName.PAYNOW) == ["shop-b"]
        hotel = directory.for_request(request("hotel"))
        group = directory.for_request(request("group", enterprise_id=ENTERPRISE))
        assert isinstance(hotel, MewsAdapter)
        assert isinstance(group, MewsAdapter)
        assert hotel is not group  # each profile its own adapter and HTTP client
        assert isinstance(
            directory.for_request(request("shop-b", ProviderName.PAYNOW)), PaynowAdapter
        )

        with pytest.raises(ProviderNotConfiguredError) as unknown:
            directory.for_request(request("nowhere"))
        assert str(unknown.value) == (
            "merchant profile 'nowhere' is not configured for mews on this worker; profiles: "
            "mews: default, group, hotel, closed (disabled); paynow: shop-b"
        )
        with pytest.raises(ProviderNotConfiguredError, match="'closed' is disabled for mews"):
            directory.for_request(request("closed"))
        with pytest.raises(ProviderNotConfiguredError, match="paynow: shop-b"):
            directory.for_request(request("hotel", ProviderName.PAYNOW))
        for text in (str(unknown.value), directory.describe(), repr(hotel)):
            assert "secret" not in text

        # Portfolio: enterprise_id required; an enterprise's own token: refused with one;
        # the profile default (portfolio not stated) passes it on either way.
        with pytest.raises(InvalidRequestError, match="enterprise_id is required"):
            group.check_request(request("group"))
        with pytest.raises(InvalidRequestError, match="enterprise_id must be left unset"):
            hotel.check_request(request("hotel", enterprise_id=ENTERPRISE))
        default = directory.for_request(request("default"))
        default.check_request(request("default", enterprise_id=ENTERPRISE))
        default.check_request(request("default"))
    finally:
        await directory.aclose()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'access_token = "live-secret-value"\nclient_token_env = "T_HOTEL_CLIENT"',
            "holds access_token inline: secrets never go in the profiles file",
        ),
        ('client_token_env = "T_HOTEL_CLIENT"', "give exactly one of access_token_env"),
        (
            'client_token_env = "T_HOTEL_CLIENT"\naccess_token_env = "T_UNSET"',
            "T_UNSET is not set",
        ),
        (
            'client_token_env = "T_HOTEL_CLIENT"\naccess_token_file = "missing"',
            "missing cannot be read",
        ),
        (
            'client_token_env = "hotel-client-secret value"\naccess_token_env = "T_UNSET"',
            "must be the name of an environment variable",
        ),
        ('client_token_env = "A"\naccess_token_env = "B"\ncolour = "blue"', "colour"),
    ],
)
def test_a_bad_profile_fails_at_start_up_naming_it(
    tmp_path: Path, table: str, message: str
) -> None:
    text = f'[mews.hotel]\nbase_url = "https://api.mews.com"\nportfolio = false\n{table}\n'
    with pytest.raises(MissingSettingError, match=message) as failure:
        load_profiles(settings_for(tmp_path, text))
    # It says which profile (or which variable) to fix.
    assert any(name in str(failure.value) for name in ("[mews.hotel]", "T_UNSET", "'hotel'"))
    assert "live-secret-value" not in str(failure.value)
    assert "hotel-client-secret" not in str(failure.value)


def test_portfolio_must_be_stated_and_default_defined_once(tmp_path: Path) -> None:
    text = '[mews.hotel]\nbase_url = "https://x"\nclient_token_env = "A"\naccess_token_env = "B"\n'
    with pytest.raises(ProfilesFileError, match="portfolio: Field required"):
        load_profiles(settings_for(tmp_path, text))
    twice = (
        '[paynow.default]\nbase_url = "https://x"\napi_key_env = "T_SHOP_KEY"\n'
        'signature_key_env = "T_SHOP_KEY"\n'
    )
    with pytest.raises(ProfilesFileError, match="define it in one place only"):
        load_profiles(settings_for(tmp_path, twice, paynow_api_key="k", paynow_signature_key="s"))
    with pytest.raises(ProfilesFileError, match="unknown table"):
        load_profiles(settings_for(tmp_path, '[stripe.x]\nbase_url = "https://x"\n'))


def test_file_credential_follows_rotation_and_survives_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    credential = FileCredential(path, what="a test token")
    assert credential.current().get_secret_value() == "first"

    staged = tmp_path / "staged"
    staged.write_text("second")
    os.replace(staged, path)
    assert credential.current().get_secret_value() == "second"

    # Mid-swap (Kubernetes moves a symlink): the last value read is kept.
    path.unlink()
    assert credential.current().get_secret_value() == "second"
    path.write_text("third")
    assert credential.current().get_secret_value() == "third"
    assert "third" not in repr(credential)
