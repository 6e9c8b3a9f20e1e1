"""When may `submit_refund` send again? For a provider without an idempotency key (Mews),
only when the previous attempt recorded that it surely sent nothing; an attempt that died
mid-call (worker SIGKILLed, call timed out) leaves no record, so the next one reports an
unknown outcome and the workflow reconciles instead of refunding twice.
(tests/faults/test_worker_kills.py shows the same against the real worker.)"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import RefundActivities
from activities.failures import OUTCOME_UNKNOWN
from activities.models import SubmitInput
from core.models import (
    ProviderName,
    ProviderRefund,
    ProviderRefundStatus,
    RefundRequest,
)
from providers.base import RefundableCheck
from providers.errors import (
    ProviderConnectError,
    RateLimitedError,
    Step,
    Subject,
    UnknownOutcomeError,
    operator_sentence,
)
from providers.registry import ProviderDirectory

REQUEST = RefundRequest(
    idempotency_key="resend-rule-1",
    provider=ProviderName.MEWS,
    payment_id="6d1b2c3a-0001-4a5b-8c6d-7e8f9a0b1c01",
    account_id="a1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01",
    amount_minor=1000,
    currency="GBP",
    reason="test",
)
MADE = ProviderRefund(refund_id="r-1", status=ProviderRefundStatus.PENDING, raw_status="Pending")


class FakeProvider:
    def __init__(self, *, idempotent: bool, fails_with: Exception | None = None) -> None:
        self.idempotent = idempotent
        self.fails_with = fails_with
        self.sent = 0

    @property
    def name(self) -> ProviderName:
        return ProviderName.MEWS

    @property
    def supports_idempotency_key(self) -> bool:
        return self.idempotent

    def check_request(self, request: RefundRequest) -> None:
        return None

    async def check_refundable(
        self, request: RefundRequest, *, known_refunded_minor: int = 0
    ) -> RefundableCheck:
        raise NotImplementedError

    async def submit(self, request: RefundRequest) -> ProviderRefund:
        self.sent += 1
        if self.fails_with is not None:
            raise self.fails_with
        return MADE

    async def get_refund(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        raise NotImplementedError

    async def cancel(self, request: RefundRequest, refund_id: str) -> ProviderRefund:
        raise NotImplementedError

    async def find_refunds(
        self, request: RefundRequest, *, created_from: datetime, created_to: datetime
    ) -> list[ProviderRefund]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def environment(attempt: int, details: list[Any]) -> tuple[ActivityEnvironment, list[Any]]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt, heartbeat_details=details)
    beats: list[Any] = []
    env.on_heartbeat = lambda *args: beats.append(list(args))
    return env, beats


async def submit(provider: FakeProvider, attempt: int, details: list[Any]) -> list[Any]:
    env, beats = environment(attempt, details)
    activities = RefundActivities(ProviderDirectory({ProviderName.MEWS: provider}))
    result = await env.run(activities.submit, SubmitInput(request=REQUEST))
    assert result.refund == MADE
    return beats


async def test_first_attempt_sends() -> None:
    provider = FakeProvider(idempotent=False)
    assert await submit(provider, 1, []) == []
    assert provider.sent == 1


async def test_retry_after_a_silent_attempt_is_an_unknown_outcome_and_sends_nothing() -> None:
    provider = FakeProvider(idempotent=False)
    with pytest.raises(ApplicationError) as raised:
        await submit(provider, 2, [])
    assert raised.value.type == OUTCOME_UNKNOWN
    assert raised.value.non_retryable
    assert raised.value.message == (
        "Refund call attempt 1 ended without an answer (its worker stopped or the call timed "
        "out), so the refund may have been made at Mews: it is not sent again (Mews takes no "
        "idempotency key) but looked up at Mews."
    )
    assert provider.sent == 0


async def test_a_stale_record_from_an_older_attempt_does_not_count() -> None:
    provider = FakeProvider(idempotent=False)
    with pytest.raises(ApplicationError) as raised:
        await submit(provider, 3, ["submit-not-sent", 1])
    assert raised.value.type == OUTCOME_UNKNOWN
    assert provider.sent == 0


async def test_retry_after_a_recorded_not_sent_sends_again() -> None:
    provider = FakeProvider(idempotent=False)
    await submit(provider, 2, ["submit-not-sent", 1])
    assert provider.sent == 1


@pytest.mark.parametrize(
    "error",
    [
        RateLimitedError("429", provider="mews", status_code=429, retry_after=1.0),
        ProviderConnectError("refused", provider="mews"),
    ],
)
async def test_a_definite_not_sent_is_recorded_for_the_next_attempt(error: Exception) -> None:
    provider = FakeProvider(idempotent=False, fails_with=error)
    env, beats = environment(1, [])
    activities = RefundActivities(ProviderDirectory({ProviderName.MEWS: provider}))
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.submit, SubmitInput(request=REQUEST))
    assert not raised.value.non_retryable
    assert beats == [["submit-not-sent", 1]]


async def test_a_lost_answer_records_nothing() -> None:
    about = Subject("mews", Step.SUBMIT, payment_id="p-1", amount_minor=1000, currency="GBP")
    lost = UnknownOutcomeError(
        operator_sentence(UnknownOutcomeError, about),
        provider="mews",
        detail="ReadTimeout: timed out",
        about=about,
    )
    provider = FakeProvider(idempotent=False, fails_with=lost)
    env, beats = environment(1, [])
    activities = RefundActivities(ProviderDirectory({ProviderName.MEWS: provider}))
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.submit, SubmitInput(request=REQUEST))
    assert raised.value.type == OUTCOME_UNKNOWN
    # Before: "outcome unknown, not re-sent: mews: submit: no answer after the request ...".
    assert raised.value.message == (
        "Mews gave no clear answer to the refund of 10.00 GBP on payment p-1, so the refund "
        "may have been made at Mews: it is not sent again (Mews takes no idempotency key) "
        "but looked up at Mews. Detail: ReadTimeout: timed out."
    )
    assert beats == []


async def test_providers_with_idempotency_keys_always_send() -> None:
    provider = FakeProvider(idempotent=True)
    assert await submit(provider, 5, []) == []
    assert provider.sent == 1
