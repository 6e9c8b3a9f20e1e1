"""HTTP plumbing shared by adapters: the transport-error translator and ``Retry-After``.

httpx separates "no response" (``httpx.TransportError``) from "a response with a bad status";
so do we. The translator is the only place transport exceptions become provider errors.
Whether a failed request may have been processed depends on how far it got:

* ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``: nothing was sent -> safe to retry.
* ``ReadTimeout``, ``WriteTimeout``, ``ReadError``, ``WriteError``, ``RemoteProtocolError``
  (connection dropped mid-exchange): bytes may have reached the provider -> unknown outcome.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx

from providers.errors import (
    ProviderConnectError,
    Step,
    Subject,
    UnknownOutcomeError,
    operator_sentence,
    redact,
)
from telemetry.http import TracedTransport, provider_operation

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@asynccontextmanager
async def translate_transport_errors(
    provider: str,
    operation: str,
    *,
    secrets: Iterable[str] = (),
    about: Subject | None = None,
) -> AsyncIterator[None]:
    """Turn httpx transport failures inside the block into provider errors: the operator's
    sentence for what the call was ``about``, the transport's words as the detail."""
    about = about or Subject(provider, _step(operation))
    try:
        # Labels the block's HTTP spans and provider_calls with the provider and operation.
        with provider_operation(provider, operation):
            yield
    except _NOT_SENT as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise ProviderConnectError(
            operator_sentence(ProviderConnectError, about),
            provider=provider,
            detail=detail,
            about=about,
        ) from None
    except httpx.TransportError as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise UnknownOutcomeError(
            operator_sentence(UnknownOutcomeError, about),
            provider=provider,
            detail=detail,
            about=about,
        ) from None


def _step(operation: str) -> Step:
    """A call's step from its name when the adapter did not say (writes read as submits)."""
    name = operation.lower()
    for step, words in (
        (Step.CANCEL, ("cancel",)),
        (Step.STATUS, ("status", "get")),
        (Step.FIND, ("find", "getall")),
        (Step.CHECK, ("check",)),
    ):
        if any(word in name for word in words):
            return step
    return Step.SUBMIT


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns ``None`` when absent or unparseable (callers then back off exponentially) and
    never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def build_client(*, base_url: str, timeout_s: float, user_agent: str) -> httpx.AsyncClient:
    """The production client: explicit timeouts, no retries (Temporal owns retries), and a
    span per request (telemetry.http)."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": user_agent},
        transport=TracedTransport(httpx.AsyncHTTPTransport(retries=0)),
    )
