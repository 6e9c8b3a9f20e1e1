"""Which adapters exist, and building the ones the settings configure.

A provider is enabled when its credentials are set. Half a configuration (one credential of
two) fails at start-up naming the missing variable; so does a configuration with none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from core.models import ProviderName, RefundRequest
from core.settings import MissingSettingError, Settings
from providers.base import RefundProvider
from providers.errors import InvalidRequestError
from providers.mews import MewsAdapter, check_mews_request
from providers.paynow import PaynowAdapter, check_paynow_request

REQUEST_CHECKS: dict[ProviderName, Callable[[RefundRequest], None]] = {
    ProviderName.MEWS: check_mews_request,
    ProviderName.PAYNOW: check_paynow_request,
}

CREDENTIAL_SETTINGS: dict[ProviderName, tuple[str, ...]] = {
    ProviderName.MEWS: ("MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN"),
    ProviderName.PAYNOW: ("PAYNOW_API_KEY", "PAYNOW_SIGNATURE_KEY"),
}

_FACTORIES: dict[ProviderName, Callable[[Settings], RefundProvider]] = {
    ProviderName.MEWS: MewsAdapter.from_settings,
    ProviderName.PAYNOW: PaynowAdapter.from_settings,
}


class ProviderNotConfiguredError(LookupError):
    """The worker holds no credentials for the provider a request names."""


def check_request(request: RefundRequest) -> None:
    """Offline checks for the request's provider; raises ``InvalidRequestError``."""
    REQUEST_CHECKS[request.provider](request)


def configured_providers(settings: Settings) -> list[ProviderName]:
    """Providers whose credentials are all set; half-configured ones are an error."""
    enabled: list[ProviderName] = []
    for name, variables in CREDENTIAL_SETTINGS.items():
        present = [v for v in variables if _is_set(settings, v)]
        if len(present) == len(variables):
            enabled.append(name)
        elif present:
            missing = ", ".join(v for v in variables if v not in present)
            raise MissingSettingError(
                f"{missing} is not set: {name.value} is half configured "
                f"({', '.join(present)} is set). Set it, or unset the others."
            )
    if not enabled:
        every = ", ".join(v for vs in CREDENTIAL_SETTINGS.values() for v in vs)
        raise MissingSettingError(
            f"no provider is configured: set the credentials of at least one ({every})."
        )
    return enabled


def _is_set(settings: Settings, env_name: str) -> bool:
    value = getattr(settings, env_name.lower(), None)
    return value is not None and bool(value.get_secret_value())


class ProviderDirectory:
    """The adapters a worker holds, per (merchant profile, provider)."""

    def __init__(self, providers: Mapping[ProviderName, RefundProvider]) -> None:
        self._providers = dict(providers)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderDirectory:
        return cls({name: _FACTORIES[name](settings) for name in configured_providers(settings)})

    @property
    def enabled(self) -> list[ProviderName]:
        return sorted(self._providers)

    def for_request(self, request: RefundRequest) -> RefundProvider:
        # One merchant profile for now; the request names it so more can come without
        # putting credentials into workflow input.
        if request.merchant != "default":
            raise ProviderNotConfiguredError(
                f"merchant profile {request.merchant!r} is not configured on this worker"
            )
        try:
            return self._providers[request.provider]
        except KeyError:
            variables = " and ".join(CREDENTIAL_SETTINGS[request.provider])
            raise ProviderNotConfiguredError(
                f"provider {request.provider.value} is not configured on this worker "
                f"(set {variables})"
            ) from None

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


__all__ = [
    "CREDENTIAL_SETTINGS",
    "InvalidRequestError",
    "ProviderDirectory",
    "ProviderNotConfiguredError",
    "check_request",
    "configured_providers",
]
