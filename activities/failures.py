"""The one place provider errors become Temporal failures.

Every activity wraps its provider call in :func:`provider_failures`. The ``ApplicationError``
type is the provider error's class name (``RateLimitedError``, ``ForbiddenError``, ...), its
message is the provider error's credential-free text, ``non_retryable`` follows the error
tree, and ``Retry-After`` becomes ``next_retry_delay`` so the server waits exactly that long.

One rule depends on the provider: when a *write* may have been processed but we got no
answer and the provider has no idempotency key (Mews), re-sending could refund twice. Such
an attempt fails as :data:`OUTCOME_UNKNOWN`, non-retryable, and the workflow reconciles.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from temporalio.exceptions import ApplicationError

from providers.errors import ProviderError, provider_title

OUTCOME_UNKNOWN = "OutcomeUnknown"
PROVIDER_NOT_CONFIGURED = "ProviderNotConfigured"


def not_resent_sentence(provider: str, why: str) -> str:
    """The operator's sentence for a write that may have been made and is not sent again."""
    p = provider_title(provider)
    return (
        f"{why}, so the refund may have been made at {p}: it is not sent again ({p} takes no "
        f"idempotency key) but looked up at {p}."
    )


def to_application_error(err: ProviderError, *, unsafe_to_resend: bool = False) -> ApplicationError:
    """The failure's message is the error's full text: the operator's sentence, then the
    provider's words once (``str(err)``)."""
    if unsafe_to_resend and err.outcome_unknown:
        doing = err.about.doing if err.about is not None else "the refund call"
        why = f"{provider_title(err.provider)} gave no clear answer to {doing}"
        return ApplicationError(
            not_resent_sentence(err.provider, why) + err.said(),
            {"provider": err.provider, "error_type": type(err).__name__},
            type=OUTCOME_UNKNOWN,
            non_retryable=True,
        )
    delay = timedelta(seconds=err.retry_after) if err.retry_after is not None else None
    return ApplicationError(
        str(err),
        {"provider": err.provider, "error_type": type(err).__name__, "code": err.code},
        type=type(err).__name__,
        non_retryable=not err.retryable,
        next_retry_delay=delay,
    )


@contextmanager
def provider_failures(*, unsafe_to_resend: bool = False) -> Iterator[None]:
    """Translate provider errors raised in the block; anything else is a bug and propagates."""
    try:
        yield
    except ProviderError as err:
        raise to_application_error(err, unsafe_to_resend=unsafe_to_resend) from None
