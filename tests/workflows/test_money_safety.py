"""Issue 9: outages ridden out, NEEDS_ATTENTION as a state that waits for an operator's
`resolve`, Temporal cancellation, handlers and continue-as-new, money as the provider states
it. Each test fails on the workflow before these changes.

Tests that send updates run on the dev server (`dev_env`, with second-scale timings): the
time-skipping test server does not implement workflow updates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, cast

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.failures import OUTCOME_UNKNOWN
from activities.models import (
    CancelAtProviderResult,
    EnterLaneInput,
    FindRefundsInput,
    FoundRefunds,
    PolledRefund,
    PollInput,
    SubmitInput,
    SubmittedRefund,
    ValidatedRefund,
    ValidateInput,
    WorkflowRef,
)
from core.models import (
    ProviderRefundStatus,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
    ResolveAction,
)
from tests.workflows.fakes import FakeProvider, final_error, refund
from tests.workflows.test_refund_workflow import (
    FAST,
    harness,
    mews_request,
    paynow_request,
    wait_for,
    worker_for,
)
from workflows.models import (
    CancelAnswer,
    CancelRequest,
    LaneClaim,
    LaneGrant,
    RefundWorkflowInput,
    ReleaseLaneInput,
    ResolveRequest,
)
from workflows.refund import RefundWorkflow

# Dev-server timings: a lost answer is looked up after one second.
QUICK = RefundOptions(poll_initial_s=1, poll_max_s=2, reconcile_settle_s=1)
PENDING = ProviderRefundStatus.PENDING
SUCCEEDED = ProviderRefundStatus.SUCCEEDED
LOST = final_error("mews: no answer", OUTCOME_UNKNOWN)


@activity.defn(name="release_refund_lane")
async def release_lane(params: ReleaseLaneInput) -> bool:
    """The lane's release, where these tests stand in for the lane: nothing to tell."""
    return True


def _raise(error: BaseException) -> Callable[[int, activity.Info], Any]:
    def step(_: int, __: activity.Info) -> Any:
        raise error

    return step


def _two_candidates(n: int, _: activity.Info) -> Any:
    return [
        refund(PENDING, "A", raw="Pending", amount_minor=5000, currency="GBP"),
        refund(PENDING, "B", raw="Pending", amount_minor=5000, currency="GBP"),
    ]


def _poll_by_id(amounts: dict[str, tuple[int, str]]) -> Any:
    """A poll answer for the refund id asked for, with its amount; unknown ids are 404s."""

    async def poll(params: PollInput) -> PolledRefund:
        if params.refund_id not in amounts:
            raise final_error(f"mews: refund {params.refund_id} not found", "NotFoundError")
        minor, currency = amounts[params.refund_id]
        return PolledRefund(
            refund=refund(
                SUCCEEDED, params.refund_id, raw="Charged", amount_minor=minor, currency=currency
            )
        )

    return activity.defn(name="poll_refund_status")(poll)


def _provider(
    fake: FakeProvider,
    *,
    validate: Callable[..., Any] | None = None,
    submit: Callable[..., Any] | None = None,
    poll: Callable[..., Any] | None = None,
    find: Callable[..., Any] | None = None,
) -> list[Callable[..., Any]]:
    """The fake's provider activities, with some replaced by a test's own."""
    return [
        fake.route,
        validate or fake.validate,
        submit or fake.submit,
        poll or fake.poll_status,
        fake.cancel,
        find or fake.find_submitted,
    ]


@asynccontextmanager
async def _running(
    env: WorkflowEnvironment,
    request: RefundRequest,
    options: RefundOptions,
    activities: list[Callable[..., Any]],
) -> AsyncIterator[WorkflowHandle[Any, RefundStatus]]:
    """A worker with these provider activities, and the refund started on it."""
    queue = f"q-{uuid.uuid4().hex}"
    async with worker_for(env, queue, activities):
        yield await env.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=options),
            id=request.workflow_id,
            task_queue=queue,
        )


async def _resolve(handle: WorkflowHandle[Any, RefundStatus], request: ResolveRequest) -> Any:
    return await handle.execute_update(RefundWorkflow.resolve, request)


# ----------------------------------------------------------------- NEEDS_ATTENTION + resolve


async def test_ambiguous_lookup_waits_for_an_operator_and_adopt_checks_the_provider(
    dev_env: WorkflowEnvironment,
) -> None:
    fake = FakeProvider(submit_step=_raise(LOST), find_step=_two_candidates)
    poll = _poll_by_id({"A": (5000, "GBP"), "B": (5000, "GBP"), "C": (4000, "GBP")})
    request = mews_request(5000)
    activities = _provider(fake, poll=poll)
    async with _running(dev_env, request, QUICK, activities) as handle:
        status = await wait_for(handle, lambda s: s.state is RefundState.NEEDS_ATTENTION)
        assert "A, B" in (status.attention_reason or "")
        assert "--adopt" in (status.attention_actions or "")
        # Still open: the operator has the last word.
        described = await handle.describe()
        assert described.status is not None
        assert described.status.name == "RUNNING"

        # Refusals leave the refund as it was.
        with pytest.raises(WorkflowUpdateFailedError) as unknown:
            await _resolve(
                handle,
                ResolveRequest(action=ResolveAction.ADOPT, refund_id="Z", reason="ops", by="ann"),
            )
        assert "cannot adopt Z" in str(unknown.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as wrong_amount:
            await _resolve(
                handle,
                ResolveRequest(action=ResolveAction.ADOPT, refund_id="C", reason="ops", by="ann"),
            )
        assert "40.00 GBP" in str(wrong_amount.value.cause)

        answer = await _resolve(
            handle,
            ResolveRequest(
                action=ResolveAction.ADOPT, refund_id="B", reason="PSP ticket 42", by="ann"
            ),
        )
        result = await handle.result()
    assert answer.note.startswith("adopted provider refund B")
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "B"
    assert [(r.action, r.by, r.reason) for r in result.resolutions] == [
        (ResolveAction.ADOPT, "ann", "PSP ticket 42")
    ]
    assert fake.count("submit") == 1  # never re-sent


async def test_resend_looks_once_more_ignoring_declared_candidates_then_sends(
    dev_env: WorkflowEnvironment,
) -> None:
    def submit(n: int, _: activity.Info) -> Any:
        if n == 1:
            raise LOST
        return refund(PENDING, "NEW-1", raw="Pending", amount_minor=5000, currency="GBP")

    fake = FakeProvider(submit_step=submit, find_step=_two_candidates)
    async with harness(dev_env, fake) as h:
        handle = await h.start(mews_request(5000), QUICK)
        await wait_for(handle, lambda s: s.state is RefundState.NEEDS_ATTENTION)
        finds_before = fake.count("find")
        await _resolve(handle, ResolveRequest(action=ResolveAction.RESEND, reason="none is ours"))
        result = await handle.result()
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "NEW-1"
    assert fake.count("find") == finds_before + 1
    assert fake.count("submit") == 2


@pytest.mark.parametrize("close_as", [RefundState.FAILED, RefundState.CANCELED])
async def test_close_ends_the_refund_as_the_operator_says(
    dev_env: WorkflowEnvironment, close_as: RefundState
) -> None:
    fake = FakeProvider(submit_step=_raise(LOST), find_step=_two_candidates)
    async with harness(dev_env, fake) as h:
        handle = await h.start(mews_request(5000), QUICK)
        await wait_for(handle, lambda s: s.state is RefundState.NEEDS_ATTENTION)
        answer = await _resolve(
            handle,
            ResolveRequest(
                action=ResolveAction.CLOSE, close_as=close_as, reason="refunded by phone", by="bo"
            ),
        )
        result = await handle.result()
        # A final refund takes no resolution: the workflow is closed.
        with pytest.raises((RPCError, WorkflowUpdateFailedError)):
            await _resolve(handle, ResolveRequest(action=ResolveAction.RESEND, reason="again"))
    assert answer.state is close_as
    assert result.state is close_as
    assert "refunded by phone" in (result.message or "")
    assert result.resolutions[0].close_as is close_as
    assert fake.count("submit") == 1


async def test_resolve_is_refused_outside_needs_attention(dev_env: WorkflowEnvironment) -> None:
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING))
    async with harness(dev_env, fake) as h:
        handle = await h.start(paynow_request(), QUICK)
        await wait_for(handle, lambda s: s.state is RefundState.PENDING)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await _resolve(
                handle,
                ResolveRequest(
                    action=ResolveAction.CLOSE, close_as=RefundState.FAILED, reason="give up"
                ),
            )
        await handle.terminate("test over")
    assert "only a refund in NEEDS_ATTENTION" in str(refused.value.cause)


async def test_a_siblings_claimed_refund_is_never_adopted(env: WorkflowEnvironment) -> None:
    """The account's lane hands over the refunds siblings made: reconciliation skips them,
    and an operator cannot adopt one either."""
    fake = FakeProvider(submit_step=_raise(LOST), find_step=_two_candidates)
    queue = f"q-{uuid.uuid4().hex}"
    claims = (LaneClaim(refund_id="A", payment_id="other-payment", amount_minor=5000),)

    @activity.defn(name="take_refund_lane")
    async def take(params: EnterLaneInput) -> LaneGrant:
        return LaneGrant(lane_id=params.lane_id, claims=claims)

    @activity.defn(name="refund_is_open")
    async def is_open(params: WorkflowRef) -> bool:
        return True

    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RefundWorkflow],
        activities=[*fake.all, take, release_lane, is_open],
    ):
        request = mews_request(5000)
        handle = await env.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=FAST),
            id=request.workflow_id,
            task_queue=queue,
        )
        result = await handle.result()
    # A is a sibling's: B is the only candidate left, so it is adopted.
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "B"


# -------------------------------------------------------------------------------- outages


async def test_lost_answers_for_an_hour_are_ridden_out_and_sent_once_known_none(
    env: WorkflowEnvironment,
) -> None:
    """Before: after three lost answers the refund parked in NEEDS_ATTENTION and completed."""

    def submit(n: int, _: activity.Info) -> Any:
        if n <= 8:
            raise LOST
        return refund(PENDING, "R-9", raw="Pending", amount_minor=5000, currency="GBP")

    fake = FakeProvider(submit_step=submit, find_step=lambda n, _: [])
    options = RefundOptions(poll_initial_s=60, poll_max_s=60, attention_after_s=600)
    async with harness(env, fake) as h:
        result = await h.run(mews_request(5000), options)
    assert result.state is RefundState.SUCCEEDED
    assert result.provider_refund_id == "R-9"
    assert fake.count("submit") == 9
    # Past the attention deadline it was flagged, and kept trying.
    assert result.attention_reason is not None


async def test_submit_after_a_spent_budget_is_marked_resumed(env: WorkflowEnvironment) -> None:
    """Before: the next submit started at attempt 1 again and a Mews refund was sent blindly."""
    seen: list[tuple[int, bool]] = []
    first: list[datetime] = []

    @activity.defn(name="submit_refund")
    async def submit(params: SubmitInput) -> SubmittedRefund:
        info = activity.info()
        seen.append((info.attempt, params.resumed))
        first.append(info.current_attempt_scheduled_time)
        if info.current_attempt_scheduled_time - first[0] < timedelta(minutes=15):
            raise ApplicationError("mews HTTP 429", type="RateLimitedError")
        return SubmittedRefund(refund=refund(PENDING), attempt=info.attempt)

    fake = FakeProvider()
    request = mews_request()
    activities = _provider(fake, submit=submit)
    async with _running(env, request, FAST, activities) as handle:
        result = await handle.result()
    assert result.state is RefundState.SUCCEEDED
    restarted = [resumed for attempt, resumed in seen[1:] if attempt == 1]
    assert restarted, "the 10-minute budget should have run out once"
    assert all(restarted)


async def test_cancel_during_reconciliation_is_honoured_before_a_resend(
    env: WorkflowEnvironment,
) -> None:
    handles: list[WorkflowHandle[Any, RefundStatus]] = []

    async def find_then_cancel(params: Any) -> Any:
        from activities.models import FoundRefunds

        await handles[0].signal(RefundWorkflow.cancel, CancelRequest(reason="customer called"))
        return FoundRefunds(refunds=())

    fake = FakeProvider(submit_step=_raise(LOST))
    queue = f"q-{uuid.uuid4().hex}"
    find = activity.defn(name="find_submitted_refunds")(find_then_cancel)
    activities: list[Callable[..., Any]] = [
        fake.route,
        fake.validate,
        fake.submit,
        fake.poll_status,
        fake.cancel,
        find,
    ]
    async with worker_for(env, queue, activities):
        request = mews_request()
        handles.append(
            await env.client.start_workflow(
                RefundWorkflow.run,
                RefundWorkflowInput(request=request, options=FAST),
                id=request.workflow_id,
                task_queue=queue,
            )
        )
        result = await handles[0].result()
    assert result.state is RefundState.CANCELED
    assert "no refund" in (result.cancel_note or "")
    assert fake.count("submit") == 1


# ------------------------------------------------------------------ Temporal cancellation


async def test_temporal_cancel_before_submit_ends_canceled_with_nothing_sent(
    env: WorkflowEnvironment,
) -> None:
    release = asyncio.Event()
    fake = FakeProvider()
    original = fake.validate

    @activity.defn(name="validate_refund")
    async def slow_validate(params: ValidateInput) -> ValidatedRefund:
        await release.wait()
        return await original(params)

    request = paynow_request()
    activities = _provider(fake, validate=slow_validate)
    async with _running(env, request, FAST, activities) as handle:
        await wait_for(handle, lambda s: s.state is RefundState.VALIDATING)
        await handle.cancel()
        release.set()
        result = await handle.result()
    assert result.state is RefundState.CANCELED
    assert "Temporal" in (result.cancel_reason or "")
    assert fake.count("submit") == 0


async def test_temporal_cancel_during_submit_waits_for_the_answer_then_cancels_there(
    env: WorkflowEnvironment,
) -> None:
    """Before: the in-flight submit was abandoned, its refund made but never known."""
    release = asyncio.Event()
    fake = FakeProvider(poll_step=lambda n, _: refund(PENDING, raw="NEW"))
    original = fake.submit

    @activity.defn(name="submit_refund")
    async def slow_submit(params: SubmitInput) -> SubmittedRefund:
        await release.wait()
        return await original(params)

    request = paynow_request()
    activities = _provider(fake, submit=slow_submit)
    async with _running(env, request, FAST, activities) as handle:
        await wait_for(handle, lambda s: s.state is RefundState.SUBMITTING)
        await handle.cancel()
        await asyncio.sleep(0.3)
        release.set()
        result = await handle.result()
    assert result.state is RefundState.CANCELED
    assert result.provider_refund_id == "R-1"
    assert fake.count("cancel") == 1


# ------------------------------------------------------------ handlers and long runs


async def test_cancel_update_just_before_continue_as_new_is_answered(
    dev_env: WorkflowEnvironment,
) -> None:
    """Before: the run waited for handlers to finish while the update waited for the run."""
    handles: list[WorkflowHandle[Any, RefundStatus]] = []
    answers: list[asyncio.Task[CancelAnswer]] = []

    async def cancel() -> CancelAnswer:
        # The SDK types an async update's answer as the handler's coroutine.
        return cast(
            CancelAnswer,
            await handles[0].execute_update(
                RefundWorkflow.request_cancel, CancelRequest(reason="stop")
            ),
        )

    def poll(n: int, _: activity.Info) -> Any:
        if n == 10:
            answers.append(asyncio.ensure_future(cancel()))
        return refund(PENDING if n < 14 else SUCCEEDED, raw="Pending")

    fake = FakeProvider(
        poll_step=poll,
        cancel_step=lambda n, _: CancelAtProviderResult(canceled=False, note="mews has none"),
    )
    options = RefundOptions(poll_initial_s=0.2, poll_max_s=0.2, checks_per_run=10)
    async with harness(dev_env, fake) as h:
        handles.append(await h.start(mews_request(), options))
        result = await asyncio.wait_for(
            dev_env.client.get_workflow_handle(handles[0].id, result_type=RefundStatus).result(), 60
        )
        answer = await asyncio.wait_for(answers[0], 30)
    assert not answer.canceled
    assert "mews has none" in answer.note
    assert result.state is RefundState.SUCCEEDED


async def _succeeds_after_continue_as_new(
    env: WorkflowEnvironment, poll: Callable[[int, activity.Info], Any]
) -> None:
    """A Paynow refund with these status checks, 10 checks a run: it ends SUCCEEDED in a
    later run than its first."""
    fake = FakeProvider(poll_step=poll)
    options = RefundOptions(poll_initial_s=1, poll_max_s=5, checks_per_run=10)
    async with harness(env, fake) as h:
        request = paynow_request()
        handle = await h.start(request, options)
        result = await handle.result()
        latest = await env.client.get_workflow_handle(request.workflow_id).describe()
    assert result.state is RefundState.SUCCEEDED
    assert latest.run_id != handle.first_execution_run_id


async def test_failing_polls_still_continue_as_new(env: WorkflowEnvironment) -> None:
    first: list[datetime] = []

    def poll(_: int, info: activity.Info) -> Any:
        first.append(info.current_attempt_scheduled_time)
        if info.current_attempt_scheduled_time - first[0] < timedelta(hours=2, minutes=30):
            raise ApplicationError("paynow HTTP 503", type="ServerError")
        return refund(SUCCEEDED)

    await _succeeds_after_continue_as_new(env, poll)


async def test_a_cancel_the_provider_never_answers_ends_with_a_note(
    env: WorkflowEnvironment,
) -> None:
    """Before: a cancel answered only by retryable errors was retried forever."""

    def cancel(_: int, __: activity.Info) -> Any:
        raise ApplicationError("paynow HTTP 409 (undocumented for cancel)", type="ConflictError")

    fake = FakeProvider(
        poll_step=lambda n, _: refund(PENDING if n < 6 else SUCCEEDED, raw="NEW"),
        cancel_step=cancel,
    )
    async with harness(env, fake) as h:
        handle = await h.start(paynow_request())
        await wait_for(handle, lambda s: s.state is RefundState.PENDING)
        await handle.signal(RefundWorkflow.cancel, CancelRequest(reason="dupe"))
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.state is RefundState.SUCCEEDED
    assert "did not answer the cancel" in (result.cancel_note or "")


# --------------------------------------------------------------------- money as stated


async def test_paynow_amounts_are_reported_as_paynow_states_them(
    env: WorkflowEnvironment,
) -> None:
    answer = refund(
        PENDING,
        raw="NEW",
        amount_minor=1234,
        payer_amount_minor=1000,
        voucher_amount_minor=234,
    )
    fake = FakeProvider(submit_step=lambda n, _: answer)
    async with harness(env, fake) as h:
        result = await h.run(paynow_request(amount=1234))
    assert result.state is RefundState.SUCCEEDED
    assert (result.confirmed_amount_minor, result.confirmed_currency) == (1234, None)
    assert (result.payer_amount_minor, result.voucher_amount_minor) == (1000, 234)
    assert "does not state a refund's currency" in (result.message or "")


async def test_awaiting_refunds_are_not_flagged_before_the_documented_wait(
    env: WorkflowEnvironment,
) -> None:
    """Paynow documents that an awaiting refund may stay NEW for 120 h."""
    first: list[datetime] = []

    def poll(_: int, info: activity.Info) -> Any:
        first.append(info.current_attempt_scheduled_time)
        if info.current_attempt_scheduled_time - first[0] < timedelta(hours=100):
            return refund(PENDING, raw="NEW", pending_may_last_s=120 * 3600)
        return refund(SUCCEEDED)

    fake = FakeProvider(poll_step=poll)
    options = RefundOptions(poll_initial_s=3600, poll_max_s=3600, attention_after_s=48 * 3600)
    async with harness(env, fake) as h:
        result = await h.run(paynow_request(), options)
    assert result.state is RefundState.SUCCEEDED
    assert result.attention_reason is None


async def test_validation_is_told_only_this_payments_succeeded_sibling_refunds(
    env: WorkflowEnvironment,
) -> None:
    seen: list[int] = []
    fake = FakeProvider()
    original = fake.validate

    @activity.defn(name="validate_refund")
    async def validate(params: ValidateInput) -> ValidatedRefund:
        seen.append(params.known_refunded_minor)
        return await original(params)

    request = mews_request(5000)
    claims = (
        LaneClaim(
            refund_id="S1",
            payment_id=request.payment_id,
            amount_minor=700,
            currency="GBP",
            succeeded=True,
        ),
        LaneClaim(
            refund_id="S2",
            payment_id=request.payment_id,
            amount_minor=300,
            currency="GBP",
            succeeded=False,
        ),
        LaneClaim(
            refund_id="S3",
            payment_id="another-payment",
            amount_minor=900,
            currency="GBP",
            succeeded=True,
        ),
    )

    @activity.defn(name="take_refund_lane")
    async def take(params: EnterLaneInput) -> LaneGrant:
        return LaneGrant(lane_id=params.lane_id, claims=claims)

    @activity.defn(name="refund_is_open")
    async def is_open(params: WorkflowRef) -> bool:
        return True

    queue = f"q-{uuid.uuid4().hex}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RefundWorkflow],
        activities=[
            fake.route,
            validate,
            fake.submit,
            fake.poll_status,
            fake.cancel,
            fake.find_submitted,
            take,
            release_lane,
            is_open,
        ],
    ):
        await env.client.execute_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=FAST),
            id=request.workflow_id,
            task_queue=queue,
        )
    assert seen == [700]


# ------------------------------------------------------------- found in review (issue 9)


async def test_a_resumed_submit_looks_back_to_the_call_that_may_have_sent(
    env: WorkflowEnvironment,
) -> None:
    """Before: the lookup window started at the resumed submit, up to a call budget after
    the call that may have made the refund, so that refund could be missed and sent again."""
    first: list[datetime] = []
    windows: list[datetime] = []

    @activity.defn(name="submit_refund")
    async def submit(params: SubmitInput) -> SubmittedRefund:
        info = activity.info()
        first.append(info.current_attempt_scheduled_time)
        if params.resumed:
            raise LOST
        if info.current_attempt_scheduled_time - first[0] < timedelta(minutes=15):
            raise ApplicationError("mews HTTP 503", type="ServerError")
        return SubmittedRefund(refund=refund(PENDING), attempt=info.attempt)

    @activity.defn(name="find_submitted_refunds")
    async def find(params: FindRefundsInput) -> FoundRefunds:
        windows.append(params.created_from)
        return FoundRefunds(refunds=())

    fake = FakeProvider()
    request = mews_request()
    activities = _provider(fake, submit=submit, find=find)
    async with _running(env, request, FAST, activities) as handle:
        result = await handle.result()
    assert result.state is RefundState.SUCCEEDED
    assert windows, "the resumed submit should have been reconciled"
    # The first call went out at first[0]; its refund may date from then.
    assert windows[0] <= first[0] - timedelta(minutes=4)


async def test_a_cancel_the_provider_took_but_still_shows_pending_is_not_canceled(
    env: WorkflowEnvironment,
) -> None:
    """Before: any cancel answer marked 'canceled' ended the refund CANCELED, even when the
    provider's own status for it was still NEW."""
    fake = FakeProvider(
        poll_step=lambda n, _: refund(PENDING if n < 3 else SUCCEEDED, raw="NEW"),
        cancel_step=lambda n, _: CancelAtProviderResult(
            canceled=True, refund=refund(PENDING, raw="NEW"), note="canceled at paynow"
        ),
    )
    async with harness(env, fake) as h:
        handle = await h.start(paynow_request())
        await wait_for(handle, lambda s: s.state is RefundState.PENDING)
        await handle.signal(RefundWorkflow.cancel, CancelRequest(reason="customer kept it"))
        result = await handle.result()
    assert result.state is RefundState.SUCCEEDED
    assert "watching until final" in (result.cancel_note or "")


async def test_refused_status_checks_still_continue_as_new(env: WorkflowEnvironment) -> None:
    """Before: a status check refused with a final error counted nowhere, so the run polled
    at the first interval forever and never continued as new."""

    def poll(n: int, _: activity.Info) -> Any:
        if n <= 12:
            raise final_error("paynow: refund not found", "NotFoundError")
        return refund(SUCCEEDED)

    await _succeeds_after_continue_as_new(env, poll)


async def test_adopt_refuses_a_refund_older_than_this_ones_first_send(
    dev_env: WorkflowEnvironment,
) -> None:
    """Before: any unclaimed refund of the account with this amount could be adopted, such
    as another payment's refund from the day before."""
    fake = FakeProvider(submit_step=_raise(LOST), find_step=_two_candidates)

    @activity.defn(name="poll_refund_status")
    async def poll(params: PollInput) -> PolledRefund:
        made = datetime.now(UTC) - timedelta(days=1)
        return PolledRefund(
            refund=refund(
                SUCCEEDED,
                params.refund_id,
                raw="Charged",
                amount_minor=5000,
                currency="GBP",
                created_at=made,
            )
        )

    request = mews_request(5000)
    activities = _provider(fake, poll=poll)
    async with _running(dev_env, request, QUICK, activities) as handle:
        await wait_for(handle, lambda s: s.state is RefundState.NEEDS_ATTENTION)
        with pytest.raises(WorkflowUpdateFailedError) as old:
            await _resolve(
                handle,
                ResolveRequest(action=ResolveAction.ADOPT, refund_id="Y", reason="ops"),
            )
        assert "before this refund was first sent" in str(old.value.cause)
        status = await handle.query(RefundWorkflow.status)
        assert status.state is RefundState.NEEDS_ATTENTION
        assert status.resolutions == []
        await handle.terminate("test finished")


async def test_after_a_day_of_outage_re_sends_slow_down_to_hourly(env: WorkflowEnvironment) -> None:
    """A refund being sent cannot continue-as-new: past a day of lost answers it re-sends
    hourly instead of every 10 minutes, keeping its history far from Temporal's limit."""
    sent: list[datetime] = []

    def submit(_: int, info: activity.Info) -> Any:
        sent.append(info.current_attempt_scheduled_time)
        if sent[-1] - sent[0] < timedelta(hours=30):
            raise LOST
        return refund(PENDING, "R-9", raw="Pending", amount_minor=5000, currency="GBP")

    fake = FakeProvider(submit_step=submit, find_step=lambda n, _: [])
    options = RefundOptions(
        poll_initial_s=60, poll_max_s=60, reconcile_settle_s=1, reconcile_lookups=1
    )
    async with harness(env, fake) as h:
        result = await h.run(mews_request(5000), options)
    assert result.state is RefundState.SUCCEEDED
    gaps = [(b - sent[0], b - a) for a, b in pairwise(sent)]
    first_day = [gap for at, gap in gaps if timedelta(hours=2) < at < timedelta(hours=23)]
    later = [gap for at, gap in gaps if at > timedelta(hours=26)]
    assert first_day
    assert later
    assert max(first_day) < timedelta(minutes=11)
    assert min(later) > timedelta(minutes=59)
