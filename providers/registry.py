"""Which adapters exist, and building the ones the merchant profiles configure.

A provider is enabled when a merchant profile of it is: the ``MEWS_*``/``PAYNOW_*`` settings
(the profile ``default``) or ``REFUNDS_PROFILES_FILE`` (:mod:`providers.profiles`). Half a
configuration (one credential of two) fails at start-up naming the missing variable; so does
a configuration with none.

Provider calls are grouped by the credential their provider counts its rate limit on
(:class:`~core.budgets.BudgetGroup`): each group has its own budget queue (``core.budgets``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from core.budgets import BudgetGroup
from core.models import ProviderName, RefundRequest
from core.settings import Settings
from providers.base import RefundProvider
from providers.errors import InvalidRequestError
from providers.mews import check_mews_request
from providers.paynow import check_paynow_request
from providers.profiles import DEFAULT_PROFILE, budget_groups, build_adapters, load_profiles

REQUEST_CHECKS: dict[ProviderName, Callable[[RefundRequest], None]] = {
    ProviderName.MEWS: check_mews_request,
    ProviderName.PAYNOW: check_paynow_request,
}

CREDENTIAL_SETTINGS: dict[ProviderName, tuple[str, ...]] = {
    ProviderName.MEWS: ("MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN"),
    ProviderName.PAYNOW: ("PAYNOW_API_KEY", "PAYNOW_SIGNATURE_KEY"),
}


class ProviderNotConfiguredError(LookupError):
    """The worker holds no credentials for the provider a request names."""


def check_request(request: RefundRequest) -> None:
    """Offline checks for the request's provider; raises ``InvalidRequestError``."""
    REQUEST_CHECKS[request.provider](request)


def configured_providers(settings: Settings) -> list[ProviderName]:
    """Providers with at least one enabled merchant profile; a half-configured provider, or
    none at all, is an error naming what to set."""
    return sorted({p.provider for p in load_profiles(settings) if p.enabled})


class ProviderDirectory:
    """The adapters a worker holds, per (merchant profile, provider).

    ``providers`` are the profile ``default``'s; ``profiles`` holds any others (and may hold
    ``default`` too). ``disabled`` lists (profile, provider) pairs that exist but are switched
    off: a request naming one is refused like an unknown profile, saying so.

    ``groups`` say which profiles share a budget; a profile in none is a group of its own,
    with no budget."""

    def __init__(
        self,
        providers: Mapping[ProviderName, RefundProvider] | None = None,
        *,
        profiles: Mapping[str, Mapping[ProviderName, RefundProvider]] | None = None,
        disabled: Iterable[tuple[str, ProviderName]] = (),
        groups: Iterable[BudgetGroup] = (),
    ) -> None:
        self._profiles: dict[str, dict[ProviderName, RefundProvider]] = {
            name: dict(adapters) for name, adapters in (profiles or {}).items()
        }
        if providers:
            self._profiles.setdefault(DEFAULT_PROFILE, {}).update(providers)
        self._disabled = frozenset(disabled)
        self._groups: dict[tuple[str, ProviderName], BudgetGroup] = {
            (name, group.provider): group for group in groups for name in group.profiles
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderDirectory:
        profiles = load_profiles(settings)
        return cls(
            profiles=build_adapters(profiles),
            disabled=[(p.name, p.provider) for p in profiles if not p.enabled],
            groups=budget_groups(profiles),
        )

    @property
    def enabled(self) -> list[ProviderName]:
        return sorted({name for adapters in self._profiles.values() for name in adapters})

    def profile_names(self, provider: ProviderName) -> list[str]:
        """The enabled profiles of ``provider``, by name (never anything more)."""
        return sorted(m for m, adapters in self._profiles.items() if provider in adapters)

    def describe(self) -> str:
        """One line for logs and messages: every profile per provider, names only."""
        parts = []
        for provider in ProviderName:
            names = self.profile_names(provider)
            off = sorted(m for m, p in self._disabled if p is provider)
            if off:
                names += [f"{m} (disabled)" for m in off]
            parts.append(f"{provider.value}: {', '.join(names) if names else 'none'}")
        return "; ".join(parts)

    @property
    def budget_groups(self) -> list[BudgetGroup]:
        """One group per budget queue: every enabled profile is in exactly one."""
        found = {(g.provider, g.name): g for g in self._groups.values()}
        for provider in ProviderName:
            for name in self.profile_names(provider):
                if (name, provider) not in self._groups:
                    found[(provider, name)] = BudgetGroup(provider, name, (name,), None)
        return [found[key] for key in sorted(found)]

    def budget_group(self, request: RefundRequest) -> BudgetGroup:
        """The group whose budget queue the request's provider calls run on; raises
        :class:`ProviderNotConfiguredError` as :meth:`for_request` does."""
        self.for_request(request)
        key = (request.merchant, request.provider)
        group = self._groups.get(key)
        return group or BudgetGroup(request.provider, request.merchant, (request.merchant,), None)

    def for_request(self, request: RefundRequest) -> RefundProvider:
        provider, merchant = request.provider, request.merchant
        adapter = self._profiles.get(merchant, {}).get(provider)
        if adapter is not None:
            return adapter
        # Names only, never a credential: the message lands in the workflow's history.
        if (merchant, provider) in self._disabled:
            raise ProviderNotConfiguredError(
                f"merchant profile {merchant!r} is disabled for {provider.value} on this "
                f"worker; profiles: {self.describe()}"
            )
        if merchant == DEFAULT_PROFILE and not self.profile_names(provider):
            variables = " and ".join(CREDENTIAL_SETTINGS[provider])
            raise ProviderNotConfiguredError(
                f"provider {provider.value} is not configured on this worker "
                f"(set {variables}, or name {provider.value} profiles in REFUNDS_PROFILES_FILE)"
            )
        raise ProviderNotConfiguredError(
            f"merchant profile {merchant!r} is not configured for {provider.value} on this "
            f"worker; profiles: {self.describe()}"
        )

    async def aclose(self) -> None:
        for adapters in self._profiles.values():
            for provider in adapters.values():
                await provider.aclose()


__all__ = [
    "CREDENTIAL_SETTINGS",
    "InvalidRequestError",
    "ProviderDirectory",
    "ProviderNotConfiguredError",
    "check_request",
    "configured_providers",
]
