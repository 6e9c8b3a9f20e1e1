"""RefundWorkflow on the time-skipping server, with scripted activities."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.failures import OUTCOME_UNKNOWN
from activities.models import (
    CancelAtProviderResult,
    EnterLaneInput,
    ValidatedRefund,
    ValidateInput,
    WorkflowRef,
)
from activities.status_watch import StatusWatchActivities
from core.models import (
    REFUND_PAYMENT_ID,
    REFUND_PROVIDER,
    REFUND_STATE,
    ProviderName,
    ProviderRefundStatus,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
)
from starter.client import IdempotencyConflictError, RefundClient
from tests.workflows.fakes import FakeProvider, final_error, refund
from workflows.models import CancelRequest, LaneGrant, RefundWorkflowInput, ReleaseLaneInput
from workflows.names import signal_name
from workflows.refund import RefundWorkflow
from workflows.status_batch import RefundStatusBatchWorkflow, status_batch_id

PENDING = ProviderRefundStatus.PENDING
SUCCEEDED = ProviderRefundStatus.SUCCEEDED
W = TypeVar("W")
T = TypeVar("T")


def _paynow_payment_id() -> str:
    # A payment of its own per test: refunds of one payment share a lane.
    raw = uuid.uuid4().hex.upper()
    return f"{raw[:4]}-{raw[4:7]}-{raw[7:10]}-{raw[10:13]}"


def paynow_request(key: str | None = None, amount: int = 1234) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key or f"t-{uuid.uuid4().hex[:20]}",
        provider=ProviderName.PAYNOW,
        payment_id=_paynow_payment_id(),
        amount_minor=amount,
        currency="PLN",
        reason="damaged on arrival",
    )


def mews_request(amount: int = 5000) -> RefundRequest:
    return RefundRequest(
        idempotency_key=f"t-{uuid.uuid4().hex[:20]}",
        provider=ProviderName.MEWS,
        payment_id=str(uuid.uuid4()),
        account_id="fadd5bb6-b428-45d5-94f8-fd0d89fece6d",
        amount_minor=amount,
        currency="GBP",
        reason="overcharged",
    )


FAST = RefundOptions(poll_initial_s=60, poll_max_s=3600)


class Harness:
    def __init__(self, env: WorkflowEnvironment, fake: FakeProvider, queue: str) -> None:
        self.env = env
        self.fake = fake
        self.queue = queue

    async def start(
        self,
        request: RefundRequest,
        options: RefundOptions = FAST,
        *,
        cancel_first: str | None = None,
    ) -> WorkflowHandle[Any, RefundStatus]:
        extra: dict[str, Any] = {}
        if cancel_first is not None:
            extra = {
                "start_signal": signal_name(RefundWorkflow.cancel),
                "start_signal_args": [CancelRequest(reason=cancel_first)],
            }
        return await self.env.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=options),
            id=request.workflow_id,
            task_queue=self.queue,
            **extra,
        )

    async def run(self, request: RefundRequest, options: RefundOptions = FAST) -> RefundStatus:
        handle = await self.start(request, options)
        return await handle.result()


class InstantLane:
    """Stands in for the payment lane on the time-skipping server: admits at once.

    The real lane workflow is exercised on the real dev server (tests/faults, the codec,
    telemetry and UI tests); with it, these time-skipping tests occasionally stopped
    skipping time. The workflow's own side (enter, wait for admission, release) still runs.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self.workflow_ids: set[str] = set()
        self.released: list[ReleaseLaneInput] = []

    @activity.defn(name="enter_refund_lane")
    async def enter(self, params: EnterLaneInput) -> None:
        self.workflow_ids.add(params.workflow_id)
        await self._client.get_workflow_handle_for(RefundWorkflow.run, params.workflow_id).signal(
            RefundWorkflow.admitted, LaneGrant(lane_id=params.lane_id)
        )

    @activity.defn(name="take_refund_lane")
    async def take(self, params: EnterLaneInput) -> LaneGrant:
        self.workflow_ids.add(params.workflow_id)
        return LaneGrant(lane_id=params.lane_id)

    @activity.defn(name="release_refund_lane")
    async def release(self, params: ReleaseLaneInput) -> bool:
        self.released.append(params)
        return True

    @activity.defn(name="refund_is_open")
    async def is_open(self, params: WorkflowRef) -> bool:
        return True

    @property
    def all(self) -> list[Callable[..., Any]]:
        return [self.enter, self.take, self.release, self.is_open]


def activity_name(fn: Callable[..., Any]) -> str | None:
    definition = activity._Definition.from_callable(fn)
    return definition.name if definition else None


@asynccontextmanager
async def worker_for(
    env: WorkflowEnvironment,
    queue: str,
    activities: list[Callable[..., Any]],
    **worker_options: Any,
) -> AsyncIterator[None]:
    """Scripted provider activities, with an instant lane, and the status batch of Mews
    refunds: on the dev server the real RefundStatusBatchWorkflow and its registration
    (its reads the scripted ``check_refund_statuses``, a "poll" recorded per refund read);
    on the time-skipping server the fake's instant stand-in (``watch_refund_status``: one
    "poll" read at once, its result signalled), as with the real batch there the server
    stopped skipping time (a refund's result signal left pending).

    A failed test may leave its refund running; once this worker is gone its pending timers
    would hold the time-skipping server back for every later test, so it ends with the test,
    and so does the queue's status batch (the fakes route to the worker's own queue).
    ``worker_options`` go to the Worker (``max_cached_workflows``, say).
    """
    lane = InstantLane(env.client)
    workflows: list[type] = [RefundWorkflow]
    if not env.supports_time_skipping:
        watches = StatusWatchActivities(env.client)
        stand_in = activity_name(watches.register)
        activities = [*(a for a in activities if activity_name(a) != stand_in), *watches.all]
        workflows.append(RefundStatusBatchWorkflow)
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=workflows,
            activities=[*activities, *lane.all],
            **worker_options,
        ):
            yield
    finally:
        for workflow_id in [*lane.workflow_ids, status_batch_id(queue)]:
            with contextlib.suppress(RPCError):
                await env.client.get_workflow_handle(workflow_id).terminate("test finished")


@asynccontextmanager
async def harness(env: WorkflowEnvironment, fake: FakeProvider) -> AsyncIterator[Harness]:
    queue = f"q-{uuid.uuid4().hex}"
    async with worker_for(env, queue, fake.all):
        yield Harness(env, fake, queue)


async def query_until(
    handle: WorkflowHandle[Any, Any],
    query: Callable[[W], T],
    ok: Callable[[T], bool],
    *,
    tries: int = 600,
) -> T:
    """Ask a workflow ``query`` every 50 ms until its answer is ``ok``; fails the test with
    the last answer after ``tries``."""
    answer = None
    for _ in range(tries):
        answer = await handle.query(query)
        if ok(answer):
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached; last answer {answer}")


async def wait_for(
    handle: WorkflowHandle[Any, RefundStatus], ok: Callable[[RefundStatus], bool]
) -> RefundStatus:
    return await query_until(handle, RefundWorkflow.status, ok)


async def test_happy_path_pending_then_succeeded(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n < 3 else SUCCEEDED))
    async with harness(env, fake) as h:
        result = await h.run(paynow_request())
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "R-1"
    assert result.provider_status == "SUCCESSFUL"
    assert [c.name for c in fake.calls] == ["validate", "submit", "poll", "poll", "poll"]


async def test_pending_for_three_days_completes_with_attention_flag(
    env: WorkflowEnvironment,
) -> None:
    # With checks capped at an hour, 90 pending answers span more than three days.
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n <= 90 else SUCCEEDED))
    async with harness(env, fake) as h:
        result = await h.run(paynow_request())
    assert result.state is RefundState.SUCCEEDED
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.finished_at - result.started_at >= timedelta(days=3)
    # Past the 48 h attention deadline it was flagged, and still watched to the end.
    assert result.attention_reason is not None
    assert "not final after" in result.attention_reason
    polls = [c.scheduled for c in fake.calls if c.name == "poll"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(polls)]
    assert gaps[0] == pytest.approx(60, abs=2)  # poll_initial_s
    assert max(gaps) == pytest.approx(3600, abs=2)  # capped at poll_max_s


async def test_needs_attention_is_visible_while_still_watching(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n <= 5 else SUCCEEDED))
    options = RefundOptions(poll_initial_s=60, poll_max_s=60, attention_after_s=150)
    async with harness(env, fake) as h:
        result = await h.run(paynow_request(), options)
    assert result.state is RefundState.SUCCEEDED
    assert result.attention_reason is not None


async def test_cancel_before_submit_never_calls_the_provider(env: WorkflowEnvironment) -> None:
    fake = FakeProvider()
    async with harness(env, fake) as h:
        handle = await h.start(paynow_request(), cancel_first="customer changed their mind")
        result = await handle.result()
    assert result.state is RefundState.CANCELED
    assert "customer changed their mind" in (result.message or "")
    assert fake.calls == []


async def test_cancel_during_validation_stops_before_submit(env: WorkflowEnvironment) -> None:
    release = asyncio.Event()
    fake = FakeProvider()

    original = fake.validate

    @activity.defn(name="validate_refund")
    async def slow_validate(params: ValidateInput) -> ValidatedRefund:
        await release.wait()
        return await original(params)

    queue = f"q-{uuid.uuid4().hex}"
    activities: list[Callable[..., Any]] = [
        fake.route,
        slow_validate,
        fake.submit,
        fake.poll_status,
        fake.cancel,
        fake.find_submitted,
    ]
    async with worker_for(env, queue, activities):
        request = paynow_request()
        handle = await env.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=FAST),
            id=request.workflow_id,
            task_queue=queue,
        )
        await wait_for(handle, lambda s: s.state is RefundState.VALIDATING)
        await handle.signal(RefundWorkflow.cancel, CancelRequest(reason="ops"))
        release.set()
        result = await handle.result()
    assert result.state is RefundState.CANCELED
    assert fake.count("submit") == 0


async def test_cancel_of_paynow_refund_in_new_calls_provider_cancel(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING, raw="NEW"))
    async with harness(env, fake) as h:
        handle = await h.start(paynow_request())
        # Polled at least once (the submit answer itself says PENDING).
        status = await wait_for(handle, lambda s: s.provider_status == "NEW")
        assert status.state is RefundState.PENDING
        assert status.next_check_at is not None
        await handle.signal(RefundWorkflow.cancel, CancelRequest(reason="duplicate order"))
        result = await handle.result()
    assert result.state is RefundState.CANCELED
    assert result.provider_status == "CANCELLED"
    assert fake.count("cancel") == 1


async def test_cancel_refused_by_provider_keeps_watching(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(
        poll_step=lambda n, _: refund(PENDING if n < 4 else SUCCEEDED),
        cancel_step=lambda n, _: CancelAtProviderResult(
            canceled=False, note="mews has no refund cancel"
        ),
    )
    async with harness(env, fake) as h:
        handle = await h.start(mews_request())
        await wait_for(handle, lambda s: s.state is RefundState.PENDING)
        await handle.signal(RefundWorkflow.cancel, CancelRequest(reason="please stop"))
        result = await handle.result()
    assert result.state is RefundState.SUCCEEDED
    assert result.cancel_requested
    assert "mews has no refund cancel" in (result.cancel_note or "")
    assert fake.count("cancel") == 1


def _raise(error: BaseException) -> Callable[[int, activity.Info], Any]:
    def step(_: int, __: activity.Info) -> Any:
        raise error

    return step


async def test_forbidden_at_validation_is_rejected_with_provider_message(
    env: WorkflowEnvironment,
) -> None:
    message = "mews HTTP 403: Payment of type CashPayment cannot be refunded."
    fake = FakeProvider(validate_step=_raise(final_error(message)))
    async with harness(env, fake) as h:
        result = await h.run(mews_request())
    assert result.state is RefundState.REJECTED
    assert result.message == message
    assert fake.count("submit") == 0


async def test_forbidden_at_submit_fails_with_provider_message(env: WorkflowEnvironment) -> None:
    message = "paynow HTTP 400 VALIDATION_ERROR: amount exceeds the refundable amount"
    fake = FakeProvider(submit_step=_raise(final_error(message, "AmountExceedsRefundableError")))
    async with harness(env, fake) as h:
        result = await h.run(paynow_request())
    assert result.state is RefundState.FAILED
    assert result.message == message
    assert fake.count("submit") == 1


async def test_thirty_minute_outage_is_ridden_out(env: WorkflowEnvironment) -> None:
    start: list[Any] = []

    def submit(_: int, info: activity.Info) -> Any:
        scheduled = info.current_attempt_scheduled_time
        start.append(scheduled)
        if scheduled - start[0] < timedelta(minutes=30):
            raise ApplicationError("paynow HTTP 503: down", type="ServerError")
        return None

    fake = FakeProvider(submit_step=submit)
    async with harness(env, fake) as h:
        result = await h.run(paynow_request())
    assert result.state is RefundState.SUCCEEDED
    assert start[-1] - start[0] >= timedelta(minutes=30)
    # The 10-minute call budget ran out at least twice; the status kept the last error.
    assert result.last_error is not None
    assert "503" in result.last_error


async def test_mews_unknown_outcome_adopts_the_refund_it_finds(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(
        submit_step=_raise(final_error("mews: no answer", OUTCOME_UNKNOWN)),
        find_step=lambda n, _: [
            refund(PENDING, "OTHER", raw="Pending", amount_minor=999, currency="GBP"),
            refund(PENDING, "MINE", raw="Pending", amount_minor=5000, currency="GBP"),
        ],
    )
    async with harness(env, fake) as h:
        result = await h.run(mews_request(5000))
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "MINE"
    assert fake.count("submit") == 1  # never re-sent blindly


async def test_mews_unknown_outcome_resends_only_when_sure_none_was_made(
    env: WorkflowEnvironment,
) -> None:
    def submit(n: int, _: activity.Info) -> Any:
        if n == 1:
            raise final_error("mews: no answer", OUTCOME_UNKNOWN)
        return None

    fake = FakeProvider(submit_step=submit, find_step=lambda n, _: [])
    async with harness(env, fake) as h:
        result = await h.run(mews_request())
    assert result.state is RefundState.SUCCEEDED
    assert fake.count("find") == 2  # looked twice, after settling, before re-sending
    assert fake.count("submit") == 2


async def test_continue_as_new_keeps_the_refund(env: WorkflowEnvironment) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n <= 25 else SUCCEEDED))
    options = RefundOptions(poll_initial_s=1, poll_max_s=5, checks_per_run=10)
    async with harness(env, fake) as h:
        request = paynow_request()
        handle = await h.start(request, options)
        result = await handle.result()
        latest = await env.client.get_workflow_handle(request.workflow_id).describe()
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "R-1"
    assert fake.count("submit") == 1
    assert latest.run_id != handle.first_execution_run_id  # it really continued as new


async def test_search_attributes_follow_the_state(env: WorkflowEnvironment) -> None:
    fake = FakeProvider()
    async with harness(env, fake) as h:
        request = paynow_request()
        await h.run(request)
        description = await env.client.get_workflow_handle(request.workflow_id).describe()
    attrs = description.typed_search_attributes
    assert attrs.get(REFUND_STATE) == "SUCCEEDED"
    assert attrs.get(REFUND_PROVIDER) == "paynow"
    assert attrs.get(REFUND_PAYMENT_ID) == request.payment_id


async def test_same_key_twice_gives_one_workflow_and_another_amount_is_refused(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider()
    async with harness(env, fake) as h:
        client = RefundClient(env.client, task_queue=h.queue, options=FAST)
        request = paynow_request()
        first = await client.start(request)
        second = await client.start(request)
        assert first.created
        assert not second.created
        result = await client.wait(request.idempotency_key)
        # Finished refunds are attached to as well, for as long as they are retained.
        third = await client.start(request)
        assert not third.created
        with pytest.raises(IdempotencyConflictError, match="idempotency conflict"):
            await client.start(request.model_copy(update={"amount_minor": 999}))
    assert result.state is RefundState.SUCCEEDED
    assert fake.count("submit") == 1


# --- messages for people: one sentence, the provider named, amounts in major units -------------


async def test_success_message_names_provider_amount_and_payment(env: WorkflowEnvironment) -> None:
    """Before: "provider status SUCCESSFUL; the provider did not state the amount refunded"."""
    fake = FakeProvider(poll_step=lambda n, _: refund(SUCCEEDED))
    request = paynow_request(amount=9000)
    async with harness(env, fake) as h:
        result = await h.run(request)
    assert result.state is RefundState.SUCCEEDED
    assert result.message == (
        f"Paynow made the refund of 90.00 PLN on payment {request.payment_id} (Paynow status "
        "SUCCESSFUL); Paynow did not state the amount refunded."
    )


async def test_failure_message_says_what_to_do(env: WorkflowEnvironment) -> None:
    """Before: "provider status FAILED: CARD_BALANCE_ERROR"."""
    fake = FakeProvider(
        poll_step=lambda n, _: refund(
            ProviderRefundStatus.FAILED, failure_reason="CARD_BALANCE_ERROR"
        )
    )
    request = paynow_request(amount=1234)
    async with harness(env, fake) as h:
        result = await h.run(request)
    assert result.state is RefundState.FAILED
    assert result.message == (
        f"Paynow reports that the refund of 12.34 PLN on payment {request.payment_id} failed "
        "(Paynow status FAILED: CARD_BALANCE_ERROR): check the payment at Paynow, and start a "
        "new refund if it is still owed."
    )


async def test_attention_reason_says_how_long_and_where(env: WorkflowEnvironment) -> None:
    """Before: "not final after 0.1 h (last known: PENDING)"."""
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING if n <= 5 else SUCCEEDED))
    options = RefundOptions(poll_initial_s=60, poll_max_s=60, attention_after_s=150)
    async with harness(env, fake) as h:
        result = await h.run(paynow_request(), options)
    assert result.attention_reason is not None
    assert result.attention_reason.startswith("The refund is not final after ")
    assert result.attention_reason.endswith(" h: Paynow last showed it as PENDING.")


async def test_cancel_before_submit_says_nothing_was_refunded(env: WorkflowEnvironment) -> None:
    fake = FakeProvider()
    async with harness(env, fake) as h:
        handle = await h.start(mews_request(), cancel_first="duplicate")
        result = await handle.result()
    assert result.message == (
        "Canceled before the refund was sent to Mews: nothing was refunded (duplicate)."
    )
    assert result.cancel_note == "canceled before submit: Mews was never asked for the refund"


async def test_cancel_refused_note_says_the_refund_goes_on(env: WorkflowEnvironment) -> None:
    note = "Mews has no refund cancellation, so refund R-1 cannot be canceled."
    fake = FakeProvider(
        poll_step=lambda n, _: refund(PENDING if n < 4 else SUCCEEDED),
        cancel_step=lambda n, _: CancelAtProviderResult(canceled=False, note=note),
    )
    async with harness(env, fake) as h:
        handle = await h.start(mews_request())
        await wait_for(handle, lambda s: s.state is RefundState.PENDING)
        await handle.signal(RefundWorkflow.cancel, CancelRequest(reason="please stop"))
        result = await handle.result()
    assert result.cancel_note == (
        f"Not canceled at Mews; the refund goes on, watching until final. {note}"
    )


async def test_last_error_is_the_provider_errors_text_without_step_prefix(
    env: WorkflowEnvironment,
) -> None:
    """Before: "submit: paynow HTTP 503: submit: down"."""
    text = "Paynow failed with a server error on the refund. Paynow said (HTTP 503): down."
    start: list[Any] = []

    def submit(_: int, info: activity.Info) -> Any:
        start.append(info.current_attempt_scheduled_time)
        if info.current_attempt_scheduled_time - start[0] < timedelta(minutes=12):
            raise ApplicationError(text, type="ServerError")
        return None

    fake = FakeProvider(submit_step=submit)
    async with harness(env, fake) as h:
        result = await h.run(paynow_request())
    assert result.state is RefundState.SUCCEEDED
    assert result.last_error == text


async def test_attempts_counts_the_check_and_the_refund_call_as_documented(
    env: WorkflowEnvironment,
) -> None:
    """`attempts 2` on a clean success: one check, one refund call, as its description says."""
    fake = FakeProvider(poll_step=lambda n, _: refund(SUCCEEDED))
    async with harness(env, fake) as h:
        result = await h.run(paynow_request())
    assert result.attempts == 2
    description = RefundStatus.model_fields["attempts"].description or ""
    assert "2 on a clean run" in description
    assert "status checks are not counted" in description
