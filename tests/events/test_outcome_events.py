"""Outcome events to a refund's notify_url: signed per Standard Webhooks and verified here
with the same library a receiver would use; delivered at least once while the receiver is
down for a while; never holding up or changing the refund; given up after the configured
time; and refused for addresses a caller must not aim the worker at (SSRF).

On the dev server (real time, real HTTP to a receiver on loopback, which the worker is told
to allow), with the provider faked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.events import EventActivities
from activities.lane_activities import LaneActivities
from core.models import (
    EventDelivery,
    ProviderRefundStatus,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
)
from core.settings import Settings
from providers.errors import InvalidRequestError
from starter.client import RefundClient, RefundNotFoundError
from tests.support.receivers import Receiver, receiving
from tests.workflows.fakes import FakeProvider, refund
from tests.workflows.test_refund_workflow import paynow_request
from workflows.events import RefundEventWorkflow
from workflows.payment_lane import RefundLaneWorkflow
from workflows.refund import RefundWorkflow

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
QUICK = RefundOptions(
    poll_initial_s=0.2,
    poll_max_s=0.5,
    events_retry_initial_s=0.2,
    events_retry_max_s=0.5,
)


@asynccontextmanager
async def worker(
    env: WorkflowEnvironment, fake: FakeProvider, *, allow_private: bool = True
) -> AsyncIterator[RefundClient]:
    queue = f"events-{uuid.uuid4().hex}"
    settings = Settings(
        _env_file=None,
        refunds_events_secret=SecretStr(SECRET),
        refunds_events_allow_private=allow_private,
    )
    events = EventActivities(settings)
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[RefundWorkflow, RefundLaneWorkflow, RefundEventWorkflow],
            activities=[*fake.all, *LaneActivities(env.client).all, events.deliver],
        ):
            yield RefundClient(
                env.client, task_queue=queue, options=QUICK, allow_private_notify_urls=True
            )
    finally:
        await events.aclose()


def with_url(request: RefundRequest, url: str) -> RefundRequest:
    return request.model_copy(update={"notify_url": url})


async def until(check: Any, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def first_event_ends(
    client: RefundClient, request: RefundRequest, delivery: EventDelivery
) -> RefundStatus | None:
    """The refund's status once its first event's delivery is ``delivery`` (None: never)."""

    async def ended() -> RefundStatus | None:
        status = await client.status(request.idempotency_key)
        return status if status.events[-1:] and status.events[0].delivery is delivery else None

    found: RefundStatus | None = await until(ended)
    return found


async def test_the_final_state_is_told_once_signed_and_verifiable(
    dev_env: WorkflowEnvironment,
) -> None:
    with receiving(Receiver()) as receiver:
        async with worker(dev_env, FakeProvider()) as client:
            request = with_url(paynow_request(), receiver.url)
            await client.start(request)
            final = await asyncio.wait_for(client.wait(request.idempotency_key), 15)
            assert final.state is RefundState.SUCCEEDED

            status = await first_event_ends(client, request, EventDelivery.DELIVERED)
    assert status is not None, "the event was not delivered"
    [event] = status.events
    assert (event.type, event.state, event.attempts) == ("refund.succeeded", "SUCCEEDED", 1)
    [body] = receiver.verified(SECRET)
    assert body["type"] == "refund.succeeded"
    assert body["data"]["key"] == request.idempotency_key
    assert body["data"]["state"] == "SUCCEEDED"
    assert body["data"]["amount_minor"] == request.amount_minor
    headers = receiver.received[0][0]
    assert headers["webhook-id"] == event.event_id
    # A wrong secret does not verify: the signature is real.
    with pytest.raises(Exception, match="signature"):
        Webhook(base64.b64encode(os.urandom(32)).decode()).verify(receiver.received[0][1], headers)


async def test_a_receiver_down_for_a_while_gets_the_event_later_and_the_refund_never_waits(
    dev_env: WorkflowEnvironment,
) -> None:
    with receiving(Receiver(failures=3)) as receiver:
        async with worker(dev_env, FakeProvider()) as client:
            request = with_url(paynow_request(), receiver.url)
            await client.start(request)
            # The refund ends while its event is still failing.
            final = await asyncio.wait_for(client.wait(request.idempotency_key), 15)
            assert final.state is RefundState.SUCCEEDED

            status = await first_event_ends(client, request, EventDelivery.DELIVERED)
    assert status is not None, receiver.answered
    assert receiver.answered == [503, 503, 503, 204]
    [event] = status.events
    assert event.attempts == 4
    assert event.last_error is None
    # Every attempt carried the same event id and body; the refund's outcome is unchanged.
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 1
    assert len({b for _, b in receiver.received}) == 1
    assert status.state is RefundState.SUCCEEDED
    assert json.loads(receiver.received[-1][1])["data"]["state"] == "SUCCEEDED"


async def test_an_event_no_receiver_takes_is_given_up_with_its_last_error(
    dev_env: WorkflowEnvironment,
) -> None:
    options = QUICK.model_copy(update={"events_give_up_after_s": 1.0})
    with receiving(Receiver(failures=1000)) as receiver:
        async with worker(dev_env, FakeProvider()) as client:
            client.options = options
            request = with_url(paynow_request(), receiver.url)
            await client.start(request)

            status = await first_event_ends(client, request, EventDelivery.GIVEN_UP)
    assert status is not None
    [event] = status.events
    assert event.attempts >= 2
    assert event.last_error == "the receiver answered HTTP 503"
    assert status.state is RefundState.SUCCEEDED


async def test_needs_attention_and_the_final_state_are_each_told(
    dev_env: WorkflowEnvironment,
) -> None:
    pending = refund(ProviderRefundStatus.PENDING)
    fake = FakeProvider(
        poll_step=lambda n, _: pending if n < 8 else refund(ProviderRefundStatus.SUCCEEDED)
    )
    with receiving(Receiver()) as receiver:
        async with worker(dev_env, fake) as client:
            client.options = QUICK.model_copy(update={"attention_after_s": 0.5})
            request = with_url(paynow_request(), receiver.url)
            await client.start(request)
            final = await asyncio.wait_for(client.wait(request.idempotency_key), 20)
            assert final.state is RefundState.SUCCEEDED
            await until(lambda: asyncio.sleep(0, len(receiver.verified(SECRET)) == 2))
    types = [body["type"] for body in receiver.verified(SECRET)]
    assert types == ["refund.needs_attention", "refund.succeeded"]
    assert [e.type for e in final.events] == types


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ],
)
async def test_private_receivers_are_refused_before_anything_starts(
    dev_env: WorkflowEnvironment, url: str
) -> None:
    client = RefundClient(dev_env.client, task_queue="nobody-listens", options=QUICK)
    request = with_url(paynow_request(), url)
    with pytest.raises(InvalidRequestError, match="REFUNDS_EVENTS_ALLOW_PRIVATE"):
        await client.start(request)
    with pytest.raises(RefundNotFoundError):
        await client.status(request.idempotency_key)


async def test_the_worker_refuses_a_private_receiver_even_if_the_starter_allowed_it(
    dev_env: WorkflowEnvironment,
) -> None:
    with receiving(Receiver()) as receiver:
        async with worker(dev_env, FakeProvider(), allow_private=False) as client:
            request = with_url(paynow_request(), receiver.url)
            await client.start(request)

            status = await first_event_ends(client, request, EventDelivery.GIVEN_UP)
    assert status is not None
    assert receiver.received == []
    assert status.events[0].attempts == 1
    assert "127.0.0.1 is a loopback address" in (status.events[0].last_error or "")
