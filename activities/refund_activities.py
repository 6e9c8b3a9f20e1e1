"""The refund activities: validate, submit, poll status, cancel, find submitted refunds, and
route, which names the budget queue those provider calls run on (``core.budgets``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import (
    OUTCOME_UNKNOWN,
    PROVIDER_NOT_CONFIGURED,
    not_resent_sentence,
    provider_failures,
)
from activities.models import (
    CancelAtProviderInput,
    CancelAtProviderResult,
    FindRefundsInput,
    FoundRefunds,
    PolledRefund,
    PollInput,
    RefundRoute,
    SubmitInput,
    SubmittedRefund,
    ValidatedRefund,
    ValidateInput,
)
from activities.telemetry import observed
from core.models import RefundRequest
from providers.base import RefundProvider
from providers.errors import ProviderError, RefundNotCancellableError, provider_title
from providers.registry import ProviderDirectory, ProviderNotConfiguredError


class RefundActivities:
    """Holds the provider adapters; one instance per worker."""

    def __init__(self, providers: ProviderDirectory) -> None:
        self._providers = providers

    def _provider(self, request: RefundRequest) -> RefundProvider:
        try:
            return self._providers.for_request(request)
        except ProviderNotConfiguredError as err:
            raise _not_configured(err) from None

    @activity.defn(name="route_refund")
    async def route(self, request: RefundRequest) -> RefundRoute:
        """The budget queue of the request's profile: ``<task queue>.budget.<provider>.<group>``,
        where the task queue is the one this runs on (the workflow's, run as a local activity)
        and the group is the first profile by name sharing the profile's credential; reads may
        run locally when the group has no budget. No call to the provider; an unknown or
        disabled profile is refused, non-retryable."""
        try:
            group = self._providers.budget_group(request)
        except ProviderNotConfiguredError as err:
            raise _not_configured(err) from None
        return RefundRoute(
            task_queue=group.queue(activity.info().task_queue), local_reads=group.budget is None
        )

    @activity.defn(name="validate_refund")
    async def validate(self, params: ValidateInput) -> ValidatedRefund:
        """Offline checks, then the provider's pre-checks (payment refundable, amount fits)."""
        provider = self._provider(params.request)
        with observed(provider.name, "validate", params.request.merchant), provider_failures():
            provider.check_request(params.request)
            check = await provider.check_refundable(
                params.request, known_refunded_minor=params.known_refunded_minor
            )
        return ValidatedRefund(
            amount_minor=check.amount_minor,
            currency=check.currency,
            payment_amount_minor=check.payment_amount_minor,
            refundable_minor=check.refundable_minor,
            raw_payment_state=check.raw_payment_state,
            attempt=activity.info().attempt,
        )

    @activity.defn(name="submit_refund")
    async def submit(self, params: SubmitInput) -> SubmittedRefund:
        """The provider's refund call. Without an idempotency key an unknown outcome is final
        for this activity: the workflow reconciles instead of re-sending."""
        provider = self._provider(params.request)
        unsafe_to_resend = not provider.supports_idempotency_key
        info = activity.info()
        with (
            observed(provider.name, "submit", params.request.merchant),
            provider_failures(unsafe_to_resend=unsafe_to_resend),
        ):
            if unsafe_to_resend and info.attempt == 1 and params.resumed:
                # The workflow's earlier submit ran out of its call budget, maybe mid-call:
                # this attempt counter restarted, but the request may have been processed.
                raise ApplicationError(
                    not_resent_sentence(
                        provider.name.value,
                        "The previous refund call ran out of time without an answer",
                    ),
                    type=OUTCOME_UNKNOWN,
                    non_retryable=True,
                )
            if unsafe_to_resend and info.attempt > 1 and not _said_not_sent(info):
                # The previous attempt ended without telling (its worker died, or it ran out
                # of time mid-call): its request may have been processed. Sending again could
                # refund twice, so the outcome is unknown and the workflow reconciles.
                raise ApplicationError(
                    not_resent_sentence(
                        provider.name.value,
                        f"Refund call attempt {info.attempt - 1} ended without an answer "
                        "(its worker stopped or the call timed out)",
                    ),
                    type=OUTCOME_UNKNOWN,
                    non_retryable=True,
                )
            try:
                refund = await provider.submit(params.request)
            except ProviderError as err:
                if unsafe_to_resend and not err.outcome_unknown:
                    # Surely not processed (refused connection, 429, 409): tell the next
                    # attempt, through the heartbeat details it inherits, that it may send.
                    activity.heartbeat(_NOT_SENT, info.attempt)
                raise
        return SubmittedRefund(refund=refund, attempt=info.attempt)

    @activity.defn(name="poll_refund_status")
    async def poll_status(self, params: PollInput) -> PolledRefund:
        provider = self._provider(params.request)
        with observed(provider.name, "poll_status", params.request.merchant), provider_failures():
            refund = await provider.get_refund(params.request, params.refund_id)
        return PolledRefund(refund=refund, attempt=activity.info().attempt)

    @activity.defn(name="cancel_refund")
    async def cancel(self, params: CancelAtProviderInput) -> CancelAtProviderResult:
        """Cancel at the provider where it allows; "too late" is an answer, not a failure."""
        provider = self._provider(params.request)
        with observed(provider.name, "cancel", params.request.merchant), provider_failures():
            try:
                refund = await provider.cancel(params.request, params.refund_id)
            except RefundNotCancellableError as err:
                return CancelAtProviderResult(canceled=False, note=str(err))
        return CancelAtProviderResult(
            canceled=True,
            refund=refund,
            note=f"{provider_title(provider.name.value)} took the cancel of refund "
            f"{params.refund_id}.",
        )

    @activity.defn(name="find_submitted_refunds")
    async def find_submitted(self, params: FindRefundsInput) -> FoundRefunds:
        provider = self._provider(params.request)
        with (
            observed(provider.name, "find_submitted", params.request.merchant),
            provider_failures(),
        ):
            found = await provider.find_refunds(
                params.request, created_from=params.created_from, created_to=params.created_to
            )
        return FoundRefunds(refunds=tuple(found))

    @property
    def provider_calls(self) -> list[Callable[..., Any]]:
        """The activities that call a provider: what a budget queue's worker runs."""
        return [self.validate, self.submit, self.poll_status, self.cancel, self.find_submitted]

    @property
    def all(self) -> list[Callable[..., Any]]:
        """Every activity method, for ``Worker(activities=...)``."""
        return [*self.provider_calls, self.route]


_NOT_SENT = "submit-not-sent"


def _not_configured(err: ProviderNotConfiguredError) -> ApplicationError:
    # Names only, never a credential: the message lands in the workflow's history.
    return ApplicationError(str(err), type=PROVIDER_NOT_CONFIGURED, non_retryable=True)


def _said_not_sent(info: activity.Info) -> bool:
    """Whether the attempt just before this one recorded that it surely sent nothing."""
    return list(info.heartbeat_details) == [_NOT_SENT, info.attempt - 1]
