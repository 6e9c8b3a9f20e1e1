"""Merchant profiles: which Mews properties and Paynow shops a worker refunds for.

A request names its profile (``RefundRequest.merchant``); the worker holds the profile's
credentials, so workflow input, history and memo carry only the name. Profiles come from two
places (docs/profiles.md):

* the ``MEWS_*`` and ``PAYNOW_*`` settings, as they always did: the profile ``default``;
* ``REFUNDS_PROFILES_FILE``, a TOML file with any number of ``[mews.<name>]`` and
  ``[paynow.<name>]`` tables. A table gives the base URL and, for each credential, either
  ``<credential>_env`` (the name of an environment variable holding it) or
  ``<credential>_file`` (a file holding it: Docker and Kubernetes secrets), never the secret
  itself: the file may be committed, so an inline secret refuses the whole file. A Mews table
  states ``portfolio``: whether its access token is a Portfolio Access Token. A table may
  state its own ``budget`` (``core.budgets``), else the provider's setting applies.

Every enabled profile's credentials are checked at start-up; a disabled one
(``enabled = false``) is listed but needs none, and a request naming it is refused.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.budgets import Budget, BudgetError, BudgetGroup, group_profiles, parse_budget
from core.models import ProviderName
from core.settings import MissingSettingError, Settings
from providers.base import RefundProvider
from providers.credentials import Credential, FileCredential, FixedCredential, env_credential
from providers.http import build_client
from providers.mews import MewsAdapter
from providers.paynow import PaynowAdapter
from providers.paynow.adapter import USER_AGENT as PAYNOW_USER_AGENT

DEFAULT_PROFILE = "default"
# The same rule as RefundRequest.merchant: a profile a request cannot name is useless.
PROFILE_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Each provider's credentials, as named in a profile table (``<name>_env`` / ``<name>_file``).
CREDENTIALS: dict[ProviderName, tuple[str, ...]] = {
    ProviderName.MEWS: ("client_token", "access_token"),
    ProviderName.PAYNOW: ("api_key", "signature_key"),
}
# The credential each provider counts its rate limit on: profiles sharing it share a budget.
RATE_LIMITED_BY: dict[ProviderName, str] = {
    ProviderName.MEWS: "access_token",
    ProviderName.PAYNOW: "api_key",
}


class ProfilesFileError(MissingSettingError):
    """REFUNDS_PROFILES_FILE cannot be used; the message names the file and the table."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, pattern=r"^https?://")
    enabled: bool = True
    # "N/Ts" or "none"; unset: REFUNDS_<PROVIDER>_BUDGET.
    budget: str | None = None

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        try:
            parse_budget(value)
        except BudgetError as err:
            raise ValueError(str(err)) from None
        return value


class _MewsTable(_Table):
    # Mews' Client: the name and version of the client app; the MEWS_CLIENT setting if unset.
    client: str | None = Field(default=None, min_length=1, max_length=200)
    # Required: a Portfolio Access Token needs EnterpriseId on every call, and tokens cannot
    # be told apart by looking at them (PROVIDERS.md, Mews).
    portfolio: bool
    client_token_env: str | None = None
    client_token_file: Path | None = None
    access_token_env: str | None = None
    access_token_file: Path | None = None


class _PaynowTable(_Table):
    api_key_env: str | None = None
    api_key_file: Path | None = None
    signature_key_env: str | None = None
    signature_key_file: Path | None = None


_TABLES: dict[ProviderName, type[_Table]] = {
    ProviderName.MEWS: _MewsTable,
    ProviderName.PAYNOW: _PaynowTable,
}


@dataclass(frozen=True)
class Profile:
    """One merchant profile of one provider; ``build`` makes its adapter (enabled only)."""

    name: str
    provider: ProviderName
    enabled: bool
    origin: str
    build: Callable[[], RefundProvider] | None = None
    # Enabled profiles: the profile's budget (None: none), and the credential its provider
    # counts the rate limit on (compared at start-up to group profiles, never shown).
    budget: Budget | None = None
    rate_credential: Credential | None = None


def load_profiles(settings: Settings) -> list[Profile]:
    """Every profile: ``default`` from the settings (if configured), then the file's.

    Raises :class:`MissingSettingError` (or :class:`ProfilesFileError`) naming what to fix;
    no message holds a secret."""
    profiles = _default_profiles(settings)
    if settings.refunds_profiles_file is not None:
        taken = {(p.name, p.provider) for p in profiles}
        for profile in _file_profiles(settings.refunds_profiles_file, settings):
            if (profile.name, profile.provider) in taken:
                raise ProfilesFileError(
                    f"{settings.refunds_profiles_file}: [{profile.provider.value}."
                    f"{profile.name}] is also configured by the "
                    f"{profile.provider.value.upper()}_* settings (the profile "
                    f"{DEFAULT_PROFILE!r}): define it in one place only"
                )
            profiles.append(profile)
    if not any(p.enabled for p in profiles):
        raise MissingSettingError(
            "no merchant profile is configured: set the credentials of at least one provider "
            "(MEWS_CLIENT_TOKEN and MEWS_ACCESS_TOKEN, or PAYNOW_API_KEY and "
            "PAYNOW_SIGNATURE_KEY), or name profiles in REFUNDS_PROFILES_FILE (docs/profiles.md)"
        )
    return profiles


def settings_budget(settings: Settings, provider: ProviderName) -> Budget | None:
    """The provider's budget setting (``REFUNDS_MEWS_BUDGET``, ``REFUNDS_PAYNOW_BUDGET``)."""
    return parse_budget(getattr(settings, f"refunds_{provider.value}_budget"))


def budget_groups(profiles: list[Profile]) -> list[BudgetGroup]:
    """The enabled profiles grouped per provider by the credential the provider counts its
    rate limit on (Mews: the access token, Paynow: the API key). Credentials are read now and
    only compared: a group is named after its first profile, never after a credential."""
    groups: list[BudgetGroup] = []
    for provider in ProviderName:
        enabled = [p for p in profiles if p.provider is provider and p.enabled]
        group_of = group_profiles((p.name, _rate_key(p)) for p in enabled)
        for name in sorted(set(group_of.values())):
            members = [p for p in enabled if group_of[p.name] == name]
            budget: Budget | None = None
            # The strictest budget of the profiles wins; no budget only if none has one.
            for member in members:
                if member.budget is not None:
                    budget = member.budget.stricter(budget)
            groups.append(
                BudgetGroup(provider, name, tuple(sorted(p.name for p in members)), budget)
            )
    return groups


def _rate_key(profile: Profile) -> tuple[str, str]:
    """What a profile's provider counts its limit on; a profile without a known credential
    (built by hand) is a group of its own."""
    if profile.rate_credential is None:
        return ("profile", profile.name)
    return ("credential", profile.rate_credential.current().get_secret_value())


def build_adapters(
    profiles: list[Profile],
) -> dict[str, dict[ProviderName, RefundProvider]]:
    """The enabled profiles' adapters: each its own HTTP client (and so its own connection
    pool and rate-limit standing at the provider)."""
    adapters: dict[str, dict[ProviderName, RefundProvider]] = {}
    for profile in profiles:
        if profile.enabled and profile.build is not None:
            adapters.setdefault(profile.name, {})[profile.provider] = profile.build()
    return adapters


# --- the profile "default", from the MEWS_* / PAYNOW_* settings ------------------------------

_SETTINGS: dict[ProviderName, tuple[str, ...]] = {
    ProviderName.MEWS: ("MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN"),
    ProviderName.PAYNOW: ("PAYNOW_API_KEY", "PAYNOW_SIGNATURE_KEY"),
}

_FACTORIES: dict[ProviderName, Callable[[Settings], RefundProvider]] = {
    ProviderName.MEWS: MewsAdapter.from_settings,
    ProviderName.PAYNOW: PaynowAdapter.from_settings,
}


def _default_profiles(settings: Settings) -> list[Profile]:
    """Providers whose settings are all set; half-configured ones are an error."""
    profiles: list[Profile] = []
    for provider, variables in _SETTINGS.items():
        present = [v for v in variables if _is_set(settings, v)]
        if len(present) == len(variables):
            factory = _FACTORIES[provider]
            profiles.append(
                Profile(
                    DEFAULT_PROFILE,
                    provider,
                    enabled=True,
                    origin="the environment",
                    build=functools.partial(factory, settings),
                    budget=settings_budget(settings, provider),
                    rate_credential=FixedCredential(
                        getattr(settings, f"{provider.value}_{RATE_LIMITED_BY[provider]}")
                    ),
                )
            )
        elif present:
            missing = ", ".join(v for v in variables if v not in present)
            raise MissingSettingError(
                f"{missing} is not set: {provider.value} is half configured "
                f"({', '.join(present)} is set). Set it, or unset the others."
            )
    return profiles


def _is_set(settings: Settings, env_name: str) -> bool:
    value = getattr(settings, env_name.lower(), None)
    return value is not None and bool(value.get_secret_value())


# --- REFUNDS_PROFILES_FILE ---------------------------------------------------------------------


def _file_profiles(path: Path, settings: Settings) -> list[Profile]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfilesFileError(
            f"REFUNDS_PROFILES_FILE {path} cannot be read ({exc.strerror})"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # A TOML error names the line and column, never quotes the text.
        raise ProfilesFileError(f"REFUNDS_PROFILES_FILE {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {p.value for p in ProviderName})
    if unknown:
        raise ProfilesFileError(
            f"{path}: unknown table(s) {', '.join(unknown)}; profiles go under [mews.<name>] "
            "or [paynow.<name>]"
        )
    profiles: list[Profile] = []
    for provider in ProviderName:
        tables = document.get(provider.value, {})
        if not isinstance(tables, dict):
            raise ProfilesFileError(f"{path}: {provider.value} must be a table of profiles")
        for name, table in tables.items():
            where = f"{path}: [{provider.value}.{name}]"
            if not PROFILE_NAME.match(name):
                raise ProfilesFileError(
                    f"{where}: a profile name is 1-64 characters of a-z, 0-9, '_' and '-' "
                    "(what a request's merchant field takes)"
                )
            if not isinstance(table, dict):
                raise ProfilesFileError(f"{where} must be a table")
            profiles.append(_profile(provider, name, table, where, path.parent, settings))
    return profiles


def _profile(
    provider: ProviderName,
    name: str,
    table: Mapping[str, Any],
    where: str,
    base_dir: Path,
    settings: Settings,
) -> Profile:
    for credential in CREDENTIALS[provider]:
        if credential in table:
            # Only the key is named: the value may be a real secret.
            raise ProfilesFileError(
                f"{where} holds {credential} inline: secrets never go in the profiles file "
                f"(it may be committed). Give {credential}_env (the name of an environment "
                f"variable holding it) or {credential}_file (a file holding it, such as a "
                "mounted Docker or Kubernetes secret)"
            )
    try:
        parsed = _TABLES[provider].model_validate(dict(table))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'table'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise ProfilesFileError(f"{where}: {problems}") from None
    sources = {c: _source(parsed, c, where) for c in CREDENTIALS[provider]}
    if not parsed.enabled:
        return Profile(name, provider, enabled=False, origin=where)
    # Resolved now: a missing variable or file fails at start-up, naming it.
    what = f"the {{}} of merchant profile {name!r} ({provider.value})"
    resolved = {
        credential: _resolve(source, base_dir, what.format(credential.replace("_", " ")))
        for credential, source in sources.items()
    }
    timeout_s = settings.refunds_http_timeout_s
    if isinstance(parsed, _MewsTable):
        client_name = parsed.client or settings.mews_client
        portfolio = parsed.portfolio

        def build() -> RefundProvider:
            return MewsAdapter(
                client=build_client(
                    base_url=parsed.base_url, timeout_s=timeout_s, user_agent=client_name
                ),
                client_token=resolved["client_token"],
                access_token=resolved["access_token"],
                client_name=client_name,
                portfolio=portfolio,
            )

    else:

        def build() -> RefundProvider:
            return PaynowAdapter(
                client=build_client(
                    base_url=parsed.base_url, timeout_s=timeout_s, user_agent=PAYNOW_USER_AGENT
                ),
                api_key=resolved["api_key"],
                signature_key=resolved["signature_key"],
            )

    budget = (
        parse_budget(parsed.budget)
        if "budget" in parsed.model_fields_set
        else settings_budget(settings, provider)
    )
    return Profile(
        name,
        provider,
        enabled=True,
        origin=where,
        build=build,
        budget=budget,
        rate_credential=resolved[RATE_LIMITED_BY[provider]],
    )


def _source(table: _Table, credential: str, where: str) -> tuple[str, str | Path]:
    env: str | None = getattr(table, f"{credential}_env")
    file: Path | None = getattr(table, f"{credential}_file")
    if (env is None) == (file is None):
        raise ProfilesFileError(
            f"{where}: give exactly one of {credential}_env (an environment variable's name) "
            f"and {credential}_file (a file holding it)"
        )
    if env is not None:
        if not _ENV_NAME.match(env):
            raise ProfilesFileError(
                f"{where}: {credential}_env must be the name of an environment variable "
                "(letters, digits and '_'), not its value"
            )
        return ("env", env)
    assert file is not None
    return ("file", file)


def _resolve(source: tuple[str, str | Path], base_dir: Path, what: str) -> Credential:
    kind, value = source
    if kind == "env":
        return env_credential(str(value), what=what)
    path = Path(value)
    # Relative paths are read from the profiles file's directory, wherever the worker runs.
    return FileCredential(path if path.is_absolute() else base_dir / path, what=what)
