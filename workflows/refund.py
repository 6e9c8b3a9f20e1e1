"""`RefundWorkflow`: one refund, carried to a final, known outcome exactly once.

States and transitions::

    VALIDATING ──refused by us or the provider──────────────────────────▶ REJECTED
        │      ──cancel (signal, update or Temporal cancellation)───────▶ CANCELED
        ▼ ok
    SUBMITTING ──cancel before the call, or before a re-send─────────────▶ CANCELED
        │      ──provider refuses the refund (final 4xx)─────────────────▶ FAILED
        │      ──outcome unknown: reconcile; adopt, or re-send when sure
        │        nothing was made, for as long as it takes
        │      ──lookup cannot tell (several candidates)──▶ NEEDS_ATTENTION ─┐
        ▼ accepted                                     operator: resolve ◀──┘
     PENDING ──provider says succeeded / failed / canceled──▶ SUCCEEDED / FAILED / CANCELED
        │  ▲
        ▼  │ still watched; a final provider status ends it as above
    NEEDS_ATTENTION   (past the attention deadline, or the provider lost track of the refund;
                       the workflow stays open: watching, and waiting for an operator)

`REJECTED` means nothing was sent to the provider. Business outcomes complete the workflow
with a :class:`RefundStatus`; only bugs fail it. `NEEDS_ATTENTION` is never an end: the
`resolve` update (adopt a named provider refund, re-send, or close as FAILED/CANCELED) is the
operator's last word, recorded in the status.

* Retries: every activity states its timeout and retry policy. Final provider errors come
  back as non-retryable ``ApplicationError`` s; transient ones are retried by the server
  with exponential backoff, or exactly after ``Retry-After``. Each activity call also has a
  budget (schedule-to-close); when it runs out the workflow records the last error, checks
  the attention deadline and calls again. A submit whose budget ran out may have been cut
  mid-call: the next one is marked ``resumed``, so a provider without an idempotency key
  reconciles instead of sending blindly.
* Polling: durable timers, capped exponential from ``poll_initial_s`` to ``poll_max_s``
  (both carried in the input, so replay is deterministic). A cancel wakes the wait.
* Cancel: the `cancel` signal, the `request_cancel` update and Temporal's own cancellation
  (the UI's "Request Cancellation", ``temporal workflow cancel``) do the same thing. Before
  submit, the refund ends `CANCELED` and the provider's refund call is never made. After
  submit, the provider's cancel is tried (bounded); if the provider cannot cancel, the note
  says why and watching goes on. A provider call in flight is never abandoned. Terminate is
  the unsafe one: it stops the workflow wherever it is.
* Continue-as-new after ``checks_per_run`` status checks (failed ones count) or when the
  server suggests it, once every handler has finished and no cancel or resolution waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities import RefundActivities
    from activities.failures import OUTCOME_UNKNOWN
    from activities.lane_activities import LaneActivities
    from activities.models import (
        CancelAtProviderInput,
        CancelAtProviderResult,
        EnterLaneInput,
        FindRefundsInput,
        PolledRefund,
        PollInput,
        SubmitInput,
        SubmittedRefund,
        ValidatedRefund,
        ValidateInput,
    )
    from activities.status_watch import RegisterWatchInput, StatusWatchActivities
    from core.models import (
        FINAL_STATES,
        REFUND_PAYMENT_ID,
        REFUND_PROVIDER,
        REFUND_PROVIDER_REFUND_ID,
        REFUND_STATE,
        OutcomeEvent,
        ProviderName,
        ProviderRefund,
        ProviderRefundStatus,
        RefundState,
        RefundStatus,
        Resolution,
        ResolveAction,
    )
    from core.money import describe_amount, format_minor
    from providers.errors import provider_title
    from telemetry.metrics import record_refund_finished, record_refund_started
    from workflows.models import (
        CancelAnswer,
        CancelRequest,
        CarriedState,
        CheckNow,
        EventInput,
        LaneClaim,
        LaneExit,
        LaneGrant,
        RefundWorkflowInput,
        ReleaseLaneInput,
        ResolveAnswer,
        ResolveRequest,
        lane_id_for,
        lane_scope,
    )
    from workflows.outcomes import Accepted as _Accepted
    from workflows.outcomes import BudgetSpent as _BudgetSpent
    from workflows.outcomes import Close as _Close
    from workflows.outcomes import Decision as _Decision
    from workflows.outcomes import Final as _Final
    from workflows.outcomes import Lookup as _Lookup
    from workflows.outcomes import Refused as _Refused
    from workflows.outcomes import Resend as _Resend
    from workflows.outcomes import Unknown as _Unknown
    from workflows.policies import CALL_BUDGET, RETRY
    from workflows.status_batch import (
        PROVIDER_STATUS_SIGNAL,
        ProviderStatus,
        StatusOutcome,
        UnwatchRefund,
        WatchRefund,
        expected_by,
        registered_due_at,
        status_batch_id,
    )

# Reconciliation looks for refunds created from this long before the lost attempt started
# until this long after the lookup (room for the provider's clock).
RECONCILE_MARGIN = timedelta(minutes=5)
# Between re-sends after lookups proved nothing was made: doubling from the first, capped.
RESEND_BACKOFF_FIRST = timedelta(seconds=10)
RESEND_BACKOFF_MAX = timedelta(minutes=10)
RESEND_SLOWER_AFTER = timedelta(days=1)
RESEND_BACKOFF_LONG = timedelta(hours=1)
# Past a provider's documented pending time (Paynow's awaiting refunds), this much more
# before a refund is flagged.
ATTENTION_GRACE = timedelta(hours=1)
# Versioning: histories recorded before refunds queued in a lane replay without it.
LANE_PATCH = "per-payment-lane"
# Versioning: account lanes, outages ridden out, NEEDS_ATTENTION that waits for an operator,
# bounded cancels, failed polls counted toward continue-as-new. Histories recorded before it
# replay the earlier behaviour.
MONEY_SAFE_PATCH = "money-safe-v2"
# Versioning: search attributes are upserted only when their value changes (the starter has
# set the first ones), a refund id and a state that change together in one upsert.
LEAN_UPSERTS_PATCH = "lean-upserts"
# Versioning: the provider's refund id is indexed (search attribute RefundProviderRefundId),
# so a provider webhook that names only it finds the refund. Runs started before it do not.
REFUND_ID_ATTRIBUTE_PATCH = "index-provider-refund-id"
# Versioning: one marker for the workflow of issue 12 (cost per refund). It stands for every
# patch above (a run that has it never asks for them: 2 history events each), Paynow refunds
# skip the lane (docs/performance.md, "The lane"), and provider calls run on the budget queue
# of the request's profile (docs/operations.md, "Provider budgets"). Histories recorded
# before it replay through the patches above, in their order.
COST_PATCH = "lean-run-v5"
# Finding the budget queue is a lookup in the worker's own configuration (a local activity:
# no server round trip, one marker event).
ROUTE_TIMEOUT = timedelta(seconds=10)
ROUTE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# A local read is tried once: retries belong to the activity it falls back to, whose waits
# the server keeps (a local activity's would be timers and workflow tasks in the history).
LOCAL_READ_RETRY = RetryPolicy(maximum_attempts=1)
# Providers whose refunds queue in a lane (under COST_PATCH): those without an idempotency key
# on their refund call, where a lost answer is looked up and a sibling's refund could be taken
# for one's own. Paynow retries with the same Idempotency-Key and refuses an over-refund itself.
LANE_PROVIDERS = frozenset({ProviderName.MEWS})
# Versioning: a pending refund of a provider with a batched status read (Mews) and a budget
# queue has its status read by the budget queue's RefundStatusBatchWorkflow instead of one
# read of its own per check (issue 12, item 3). Asked only when such a refund starts watching:
# Paynow refunds never record it, and runs recorded before it poll on their own.
MEWS_STATUS_BATCH_PATCH = "mews-status-batch"
# Versioning: the same decision, asked in the run's first activation (every run of a Mews
# refund, after local-lane-messages) instead of where the watch starts, right after a local
# activity, where its marker did not replay (see run()). Runs before it ask the old one.
MEWS_BATCH_AT_START_PATCH = "mews-status-batch-at-start"
BATCHED_PROVIDERS = frozenset({ProviderName.MEWS})
# Versioning: when the refund's budget queue counts nothing (its group has no budget: Paynow
# unless REFUNDS_PAYNOW_BUDGET is set), its reads (validate, each status check) are first
# tried once as a local activity, inside the workflow task that needs them: one marker
# event instead of an activity's three and the workflow task its completion takes. Anything
# but an answer falls back to the ordinary activity on the budget queue (its retries, call
# budget and Retry-After as before). Asked when every run starts (after lean-run-v5); runs
# before it never record it.
LOCAL_READS_PATCH = "local-provider-reads"
# Versioning: a refund that queues in a lane (Mews) enters and leaves it through local
# activities, sent by the worker's Temporal client inside the workflow task: one marker
# event each, instead of the enter activity's three events and workflow task and the
# release's external-signal events and the workflow task their answer takes. Where no lane
# runs for its scope (the usual case) the lane is started with the refund holding it, so it
# goes on to validate and submit in the same workflow task, with no admission signal. Asked
# when a first run of such a refund starts (after local-provider-reads); runs before it, and
# Paynow refunds, never record it.
LOCAL_LANE_PATCH = "local-lane-messages"
# Versioning: one marker where a run asked up to four (lean-run-v5, local-provider-reads and,
# for a Mews refund, local-lane-messages and mews-status-batch-at-start: each a marker and
# the SDK's TemporalChangeVersion upsert, a visibility write). A run that records it behaves
# as one that recorded every one of those it would have asked, and asks none of them. Asked
# first thing in every run's first activation; runs before it replay through the others.
LEAN_START_PATCH = "lean-start-v10"
TEMPORAL_CANCEL_REASON = "cancellation requested through Temporal"
# The states an outcome event is sent for (a request with a notify_url).
EVENT_STATES = FINAL_STATES | {RefundState.NEEDS_ATTENTION}
EVENT_WORKFLOW_PREFIX = "refund-event:"

R = TypeVar("R")
P = TypeVar("P")


RESOLVE_HINT = (
    "resolve it: adopt the provider refund that is this one's (`refunds resolve KEY --adopt "
    "ID`), declare that none was made (`--resend`: it looks once more, then sends), or "
    "close it (`--close failed|canceled --reason ...`)"
)
WATCH_HINT = (
    "still watched: a final provider status ends it; to give up on it, "
    "`refunds resolve KEY --close failed|canceled --reason ...`"
)


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.init
    def __init__(self, params: RefundWorkflowInput) -> None:
        request = params.request
        carried = params.carried
        self._request = request
        self._options = params.options
        # Set from the patch markers when the run starts; until then (handlers that run first)
        # the current behaviour.
        self._v2 = True
        self._v5 = True
        # When this run first sent the refund: an adopted refund cannot be older.
        self._first_sent_at: datetime | None = None
        # One call's timeout; the HTTP client's own (REFUNDS_HTTP_TIMEOUT_S) is far shorter.
        self._call_timeout = timedelta(seconds=params.options.call_timeout_s)
        self._validated: ValidatedRefund | None = carried.validated if carried else None
        self._refund: ProviderRefund | None = carried.refund if carried else None
        self._submitted_at: datetime | None = carried.submitted_at if carried else None
        self._checks = carried.checks if carried else 0
        self._checks_this_run = 0
        self._cancel_handled = carried.cancel_handled if carried else False
        self._lane: str | None = None
        # The task queue of this refund's provider calls (its profile's budget queue, found
        # when the run starts); None: the workflow's own.
        self._queue: str | None = None
        # Reads may be tried as local activities first (patch local-provider-reads).
        self._may_read_locally = False
        self._local_reads = False
        # The lane is entered and left through local activities (patch local-lane-messages).
        self._local_lane = False
        self._batch_from_start = False
        self._admitted = False
        self._claims: tuple[LaneClaim, ...] = ()
        # Refunds that may be this one's (ambiguous reconciliation): claimed on release.
        self._possible_refunds: tuple[str, ...] = ()
        # Candidates an operator declared not to be this refund's (resend).
        self._excluded: set[str] = set()
        self._awaiting_resolution = False
        # A provider webhook asked for a status check now (`check_now`); and whether the
        # provider refund id is indexed (decided when the run starts, by patch).
        self._check_now = False
        self._index_refund_id = False
        self._indexed_refund_id: str | None = None
        # Search attributes (patch lean-upserts): what the run knows they hold, and values to
        # send with the next upsert.
        self._lean = False
        self._attributes_now: dict[str, str] = {}
        self._attributes_due: dict[SearchAttributeKey[str], str] = {}
        # Outcome events whose delivery workflow is being started (awaited before the run
        # ends or continues as new).
        self._event_starts: list[asyncio.Task[None]] = []
        self._resolving = False
        self._decision: _Decision | None = None
        # The state this run last logged: a state is logged once when entered (and once at
        # the run's start), not at every check that finds it unchanged.
        self._logged_state: RefundState | None = None
        # Batched status reads (MEWS_STATUS_BATCH_PATCH): whether this run's checks are read
        # by the status batch; the provider refund id and budget queue it registered; when a
        # result is due at the latest (the watchdog); results not yet played out; and whether
        # the batch declined it (then it polls on its own until its next run).
        self._batched = False
        self._watched: tuple[str, str] | None = None
        self._expected: datetime | None = None
        self._batch_results: list[ProviderStatus] = []
        self._declined = False
        self._batch_ended = False
        now = workflow.now()
        self._status = RefundStatus(
            key=request.idempotency_key,
            workflow_id=request.workflow_id,
            provider=request.provider,
            payment_id=request.payment_id,
            merchant=request.merchant,
            state=carried.state if carried else RefundState.VALIDATING,
            amount_minor=(carried.validated.amount_minor if carried else request.amount_minor),
            currency=(carried.validated.currency if carried else request.currency),
            provider_refund_id=carried.refund.refund_id if carried else None,
            provider_status=carried.refund.raw_status if carried else None,
            attempts=carried.attempts if carried else 0,
            last_error=carried.last_error if carried else None,
            attention_reason=carried.attention_reason if carried else None,
            attention_actions=carried.attention_actions if carried else None,
            resolutions=list(carried.resolutions) if carried else [],
            confirmed_amount_minor=carried.confirmed_amount_minor if carried else None,
            confirmed_currency=carried.confirmed_currency if carried else None,
            payer_amount_minor=carried.payer_amount_minor if carried else None,
            voucher_amount_minor=carried.voucher_amount_minor if carried else None,
            cancel_requested=carried.cancel_requested if carried else False,
            cancel_reason=carried.cancel_reason if carried else None,
            cancel_note=carried.cancel_note if carried else None,
            started_at=carried.started_at if carried else now,
            updated_at=now,
            events=list(carried.events) if carried else [],
        )

    # ----------------------------------------------------------------- messages

    @workflow.run
    async def run(self, params: RefundWorkflowInput) -> RefundStatus:
        if workflow.patched(LEAN_START_PATCH):
            # Everything the four patches below decide, without their markers.
            self._v5 = self._may_read_locally = True
            self._local_lane = params.carried is None and self._request.provider in LANE_PROVIDERS
            self._batch_from_start = self._request.provider in BATCHED_PROVIDERS
        else:
            self._ask_start_patches(params)
        if self._v5:
            self._v2 = self._lean = True
        else:
            self._v2 = workflow.patched(MONEY_SAFE_PATCH)
            self._lean = workflow.patched(LEAN_UPSERTS_PATCH)
        if self._lean:
            # What the start set (the starter's attributes, or a previous run's).
            held = workflow.info().typed_search_attributes
            for key in (
                REFUND_STATE,
                REFUND_PROVIDER,
                REFUND_PAYMENT_ID,
                REFUND_PROVIDER_REFUND_ID,
            ):
                value = held.get(key)
                if value is not None:
                    self._attributes_now[key.name] = value
        self._upsert(
            {
                REFUND_PROVIDER: self._request.provider.value,
                REFUND_PAYMENT_ID: self._request.payment_id,
            }
        )
        self._set_state(self._status.state)
        self._index_refund_id = self._v5 or workflow.patched(REFUND_ID_ATTRIBUTE_PATCH)
        self._index_provider_refund_id()
        self._upsert({})
        if params.carried is None:
            record_refund_started(self._request.provider.value)
        # Temporal's cancellation cancels this (the primary) task only. The refund runs in a
        # task of its own, so a cancellation never abandons a provider call in flight: it
        # becomes a cancel request, handled like the `cancel` signal.
        if not self._v2:
            return await self._carry_through(params)
        refund = asyncio.create_task(self._carry_through(params))
        while True:
            try:
                return await asyncio.shield(refund)
            except asyncio.CancelledError:
                if refund.done():
                    # Finished (or continued as new) in the same task as the cancellation:
                    # its outcome stands.
                    return refund.result()
                self.cancel(CancelRequest(reason=TEMPORAL_CANCEL_REASON))

    def _ask_start_patches(self, params: RefundWorkflowInput) -> None:
        """The patches a run before LEAN_START_PATCH asked in its first activation, in their
        order (so its history replays)."""
        self._v5 = workflow.patched(COST_PATCH)
        # Asked first thing, in the run's first activation: asked after the route's local
        # activity (when the route allowed local reads), its marker failed to replay once a
        # worker replayed the history (evicted from the cache, queried), a non-determinism
        # error seen with a small cache and status queries.
        self._may_read_locally = self._v5 and workflow.patched(LOCAL_READS_PATCH)
        # Asked here for the same reason, and only where a lane will be entered.
        self._local_lane = (
            self._v5
            and params.carried is None
            and self._request.provider in LANE_PROVIDERS
            and workflow.patched(LOCAL_LANE_PATCH)
        )
        # And batched status reads: asked where the watch starts (MEWS_STATUS_BATCH_PATCH),
        # after the lane's release or the route (local activities), their marker failed to
        # replay in the same way (a Mews refund evicted and queried looped on failed workflow
        # tasks). A run that records this one decides there and never asks the other.
        self._batch_from_start = (
            self._v5
            and self._request.provider in BATCHED_PROVIDERS
            and workflow.patched(MEWS_BATCH_AT_START_PATCH)
        )

    async def _carry_through(self, params: RefundWorkflowInput) -> RefundStatus:
        if params.carried is None:
            if not await self._validate_and_submit():
                return await self._result()
        elif self._v5:
            await self._route(before_submit=False)
        return await self._watch()

    @workflow.signal(name="cancel")
    def cancel(self, params: CancelRequest) -> None:
        """Operator's cancel. Idempotent: the first reason is kept."""
        if self._status.cancel_requested or self._status.is_final:
            return
        self._status.cancel_requested = True
        self._status.cancel_reason = params.reason
        self._touch()

    @workflow.signal(name="check_now")
    def check_now(self, params: CheckNow) -> None:
        """Read the provider's status now (a provider webhook said the refund changed).
        Harmless at any time: before the provider refund exists, or once final, it changes
        nothing; several before the next check make one check."""
        if not self._status.is_final:
            self._check_now = True

    @workflow.signal(name=PROVIDER_STATUS_SIGNAL)
    def provider_status(self, result: ProviderStatus) -> None:
        """A batched status read of this refund (RefundStatusBatchWorkflow): played out by
        the watch loop, and only if it is of the current provider refund."""
        if not self._status.is_final:
            self._batch_results.append(result)

    @workflow.update(name="request_cancel")
    async def request_cancel(self, params: CancelRequest) -> CancelAnswer:
        """Cancel with an answer: waits until the cancel has played out (before submit, at the
        provider, or refused by it) and says which."""
        self.cancel(params)
        await workflow.wait_condition(
            lambda: self._status.is_final or self._status.cancel_note is not None
        )
        canceled = self._status.state is RefundState.CANCELED
        note = self._status.cancel_note or self._status.message or self._status.state.value
        return CancelAnswer(canceled=canceled, state=self._status.state, note=note)

    @request_cancel.validator
    def _accept_cancel(self, params: CancelRequest) -> None:
        # Rejected updates leave no trace in the history: "too late" costs nothing.
        if self._status.is_final:
            raise ValueError(
                f"too late to cancel: the refund is already {self._status.state.value}"
                + (f" ({self._status.message})" if self._status.message else "")
            )

    @workflow.update(name="resolve")
    async def resolve(self, params: ResolveRequest) -> ResolveAnswer:
        """An operator's decision for a refund in `NEEDS_ATTENTION`: adopt a provider refund
        (checked at the provider first), re-send, or close. Recorded in the status."""
        if params.action is ResolveAction.ADOPT:
            if params.refund_id is None:
                raise _invariant_broken("adopt without a refund_id passed ResolveRequest")
            refund = await self._check_adoptable(params.refund_id)
            outcome = f"adopted provider refund {refund.refund_id} ({self._money(refund)})"
            self._record_resolution(params, outcome)
            self._decision = refund
        elif params.action is ResolveAction.RESEND:
            self._excluded.update(self._possible_refunds)
            outcome = "declared that no refund was made: looking once more, then sending again"
            self._record_resolution(params, outcome)
            self._decision = _Resend()
        else:
            if params.close_as is None:
                raise _invariant_broken("close without close_as passed ResolveRequest")
            who = f" by {params.by}" if params.by else ""
            outcome = f"closed as {params.close_as.value}"
            self._record_resolution(params, outcome)
            self._decision = _Close(
                params.close_as, f"closed{who} as {params.close_as.value}: {params.reason}"
            )
        # Answer once the main flow has taken the decision (and, for a close, finished).
        recorded = len(self._status.resolutions) - 1
        await workflow.wait_condition(lambda: self._decision is None or self._status.is_final)
        if params.close_as is not None and self._status.state is not params.close_as:
            # The provider's final status came first: the record says so.
            outcome = f"not applied: the refund ended {self._status.state.value} first"
            self._decision = None
            entry = self._status.resolutions[recorded]
            self._status.resolutions[recorded] = entry.model_copy(update={"outcome": outcome})
            self._touch()
        return ResolveAnswer(state=self._status.state, note=outcome)

    @resolve.validator
    def _accept_resolution(self, params: ResolveRequest) -> None:
        state = self._status.state
        if self._status.is_final:
            raise ValueError(f"nothing to resolve: the refund is already {state.value}")
        if self._decision is not None or self._resolving:
            raise ValueError("another resolution of this refund is being applied")
        if state is not RefundState.NEEDS_ATTENTION:
            raise ValueError(
                f"only a refund in NEEDS_ATTENTION can be resolved; this one is {state.value}"
            )
        if params.action in (ResolveAction.ADOPT, ResolveAction.RESEND):
            if not self._awaiting_resolution:
                known = self._status.provider_refund_id
                raise ValueError(
                    f"{params.action.value} applies only while the refund's submit outcome is "
                    "unknown and waits for an operator; "
                    + (
                        f"this refund's provider refund is {known}"
                        if known
                        else "this one is still being sent"
                    )
                )
        elif not self._awaiting_resolution and self._refund is None:
            raise ValueError(
                "the refund is still being sent (the provider is not answering): wait for it, "
                "or cancel it, which is honoured before any re-send"
            )
        if params.refund_id is not None and params.refund_id in self._claimed:
            raise ValueError(
                f"provider refund {params.refund_id} is claimed by another refund of the same "
                f"{self._scope()}: it cannot be this one's"
            )

    @workflow.signal(name="admitted")
    def admitted(self, grant: LaneGrant) -> None:
        """The lane says it is this refund's turn."""
        self._admitted = True
        self._claims = grant.claims or tuple(
            LaneClaim(refund_id=i) for i in grant.claimed_refund_ids
        )

    @workflow.query(name="status")
    def status(self) -> RefundStatus:
        return self._status.model_copy()

    # ------------------------------------------------------------------- phases

    async def _validate_and_submit(self) -> bool:
        """Returns False when the refund ended before anything needs watching."""
        if self._canceled_before_submit():
            return False
        if self._v5 and not await self._route(before_submit=True):
            return False
        if self._queues_in_lane() and not await self._enter_lane():
            return False
        refund: ProviderRefund | None = None
        try:
            refund = await self._validate_then_submit()
        finally:
            await self._leave_lane(refund)
        if refund is None:
            return False
        self._adopt(refund)
        return True

    async def _route(self, *, before_submit: bool) -> bool:
        """Send this refund's provider calls to its profile's budget queue. False when the
        worker refuses the profile before anything was sent (the refund is then REJECTED)."""
        try:
            route = await workflow.execute_local_activity_method(
                RefundActivities.route,
                self._request,
                start_to_close_timeout=ROUTE_TIMEOUT,
                retry_policy=ROUTE_RETRY,
                summary="find the profile's budget queue",
            )
        except FailureError as err:
            cause = _local_failure(err)
            if before_submit and isinstance(cause, ApplicationError) and cause.non_retryable:
                self._finish(RefundState.REJECTED, cause.message)
                return False
            # Later (a profile removed while its refund is watched) or a lookup that failed:
            # the calls stay on the workflow's own task queue, whose worker runs them too
            # (and refuses an unknown profile there, which the status then says).
            workflow.logger.warning("no budget queue for this refund: %s", _describe(err, "route"))
            return True
        self._queue = route.task_queue
        self._local_reads = route.local_reads and self._may_read_locally
        return True

    def _queues_in_lane(self) -> bool:
        if self._v5:
            return self._request.provider in LANE_PROVIDERS
        return workflow.patched(LANE_PATCH)

    @property
    def _claimed(self) -> frozenset[str]:
        """Provider refund ids siblings of this lane made (handed over at admission)."""
        return frozenset(c.refund_id for c in self._claims)

    def _scope(self) -> str:
        return "account" if self._v2 and self._request.account_id else "payment"

    async def _enter_lane(self) -> bool:
        """Queue behind earlier refunds of the same account (or payment); False if canceled
        meanwhile."""
        self._lane = lane_id_for(self._request, workflow.info().task_queue, by_account=self._v2)
        self._status.message = f"waiting for earlier refunds of the same {self._scope()}"
        self._touch()
        entry = EnterLaneInput(
            lane_id=self._lane,
            workflow_id=workflow.info().workflow_id,
            scope=lane_scope(self._request) if self._v2 else None,
        )
        summary = f"queue in the {self._scope()}'s lane"
        if self._local_lane:
            # An idle scope's lane is started with this refund holding it: admitted at once,
            # in this workflow task. Sent again after a crash before its marker, it changes
            # nothing (the lane never queues its holder or a queued refund twice, and says
            # so when it already holds this one).
            grant: LaneGrant | None = await workflow.execute_local_activity_method(
                LaneActivities.take,
                entry,
                start_to_close_timeout=self._call_timeout,
                retry_policy=RETRY,
                summary=summary,
            )
            if grant is not None:
                self.admitted(grant)
        else:
            await workflow.execute_activity_method(
                LaneActivities.enter,
                entry,
                start_to_close_timeout=self._call_timeout,
                retry_policy=RETRY,
                summary=summary,
            )
        await workflow.wait_condition(lambda: self._admitted or self._status.cancel_requested)
        self._status.message = None
        if not self._admitted:
            await self._leave_lane(None)
            self._canceled_before_submit()
            return False
        return True

    async def _leave_lane(self, made: ProviderRefund | None) -> None:
        """Release the lane, claiming the refund made and every one that may be this one's."""
        if self._lane is None:
            return
        lane, self._lane = self._lane, None
        claims = [LaneClaim(refund_id=i) for i in self._possible_refunds]
        if made is not None:
            claims = [c for c in claims if c.refund_id != made.refund_id]
            claims.append(
                LaneClaim(
                    refund_id=made.refund_id,
                    payment_id=self._request.payment_id,
                    amount_minor=made.amount_minor,
                    currency=made.currency,
                    succeeded=made.status is ProviderRefundStatus.SUCCEEDED,
                )
            )
        refund_ids = ((made.refund_id,) if made else ()) + self._possible_refunds
        exit_ = LaneExit(
            workflow_id=workflow.info().workflow_id,
            refund_ids=refund_ids,
            claims=tuple(claims) if self._v2 else (),
        )
        if self._local_lane:
            released: bool = await workflow.execute_local_activity_method(
                LaneActivities.release,
                ReleaseLaneInput(lane_id=lane, exit=exit_),
                start_to_close_timeout=self._call_timeout,
                retry_policy=RETRY,
                summary=f"leave the {self._scope()}'s lane",
            )
            if not released:
                workflow.logger.warning("refund lane %s was gone at release", lane)
            return
        try:
            await workflow.get_external_workflow_handle_for(RefundLaneWorkflow.run, lane).signal(
                RefundLaneWorkflow.release, exit_
            )
        except FailureError:
            # The lane is gone (an operator terminated it): nothing left to release.
            workflow.logger.warning("refund lane %s was gone at release", lane)

    def _known_refunded_minor(self) -> int:
        """What siblings of this service refunded on this very payment, and the provider
        said succeeded: never another payment's refunds, never an unfinished one."""
        currency = self._request.currency
        return sum(
            c.amount_minor
            for c in self._claims
            if c.succeeded
            and c.amount_minor is not None
            and c.payment_id == self._request.payment_id
            and (currency is None or c.currency == currency)
        )

    async def _validate_then_submit(self) -> ProviderRefund | None:
        validated = await self._call(
            "validate",
            lambda: self._provider_read(
                RefundActivities.validate,
                ValidateInput(
                    request=self._request, known_refunded_minor=self._known_refunded_minor()
                ),
                f"validate at {self._request.provider.value}",
                counted=True,
            ),
        )
        if isinstance(validated, _Final):
            self._finish(RefundState.REJECTED, validated.error.message)
            return None
        self._validated = validated
        self._status.amount_minor = validated.amount_minor
        self._status.currency = validated.currency
        self._status.attempts += validated.attempt
        if self._canceled_before_submit():
            return None

        self._set_state(RefundState.SUBMITTING)
        return await self._submit()

    async def _submit(self) -> ProviderRefund | None:
        """Submit until the provider answers, reconciling unknown outcomes where re-sending
        is unsafe. Rides out outages for as long as they last."""
        resumed = False
        cycle = 0
        while True:
            cycle += 1
            if not self._v2 and cycle > 3:
                self._flag_attention(f"{self._p}'s answer to the refund call was lost three times")
                return None
            if not resumed or self._submitted_at is None:
                # A resumed submit follows a call that may have sent: the lookup window
                # starts before that call, not this one.
                self._submitted_at = workflow.now()
            attempt_started = self._submitted_at
            if self._first_sent_at is None:
                self._first_sent_at = attempt_started
            sent = await self._send(resumed)
            resumed = False
            if isinstance(sent, _Accepted):
                self._status.attempts += sent.submitted.attempt
                return sent.submitted.refund
            if isinstance(sent, _Refused):
                self._finish(RefundState.FAILED, sent.message)
                return None
            if isinstance(sent, _BudgetSpent):
                # Maybe cut mid-call: the next submit is told, so a provider without an
                # idempotency key reconciles instead of sending blindly.
                resumed = True
                continue
            self._note_error(sent.message)
            if self._v2:
                self._check_attention()  # flagged past the deadline, and keeps going
            found = await self._reconcile(attempt_started, self._options.reconcile_lookups)
            while found is _Lookup.UNRESOLVED:
                if not self._v2:
                    return None
                decision = await self._await_resolution()
                if isinstance(decision, _Close):
                    return None
                # Resolved: no longer waiting for anyone. An adopted refund is watched
                # (PENDING until its provider status says more), a resend submits again.
                if isinstance(decision, ProviderRefund):
                    self._set_state(RefundState.PENDING)
                    return decision
                self._set_state(RefundState.SUBMITTING)
                found = await self._reconcile(attempt_started, 1)
            if isinstance(found, ProviderRefund):
                return found
            # Sure that nothing was made. A cancel that came meanwhile wins over a re-send.
            if self._v2 and self._canceled_before_submit(
                note="canceled before a re-send: lookups found no refund from the lost answer"
            ):
                return None
            if self._v2 and cycle > 1 and await self._resend_backoff(cycle):
                return None

    async def _send(self, resumed: bool) -> _Accepted | _Refused | _Unknown | _BudgetSpent:
        def start() -> Awaitable[SubmittedRefund]:
            return self._provider_call(
                RefundActivities.submit,
                SubmitInput(request=self._request, resumed=resumed),
                self._amount_summary("submit"),
            )

        submitted: SubmittedRefund | _Final | _BudgetSpent
        if self._v2:
            submitted = await self._call_once("submit", start)
        else:
            submitted = await self._call("submit", start)
        if isinstance(submitted, _Final):
            if submitted.error.type == OUTCOME_UNKNOWN:
                return _Unknown(submitted.error.message)
            return _Refused(submitted.error.message)
        if isinstance(submitted, _BudgetSpent):
            return submitted
        return _Accepted(submitted)

    async def _resend_backoff(self, cycle: int) -> bool:
        """Wait before re-sending again; True when a cancel came meanwhile (then CANCELED)."""
        # Past a day of outage, wait longer between re-sends: a refund that cannot
        # continue-as-new while it is being sent keeps its history far from Temporal's limit
        # (about 1,000 events a day instead of 4,000).
        sent = self._first_sent_at
        long_outage = sent is not None and workflow.now() - sent > RESEND_SLOWER_AFTER
        cap = RESEND_BACKOFF_LONG if long_outage else RESEND_BACKOFF_MAX
        delay = min(RESEND_BACKOFF_FIRST * 2 ** min(cycle - 2, 20), cap)
        self._status.next_check_at = workflow.now() + delay
        self._touch()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._status.cancel_requested,
                timeout=delay,
                timeout_summary="back off before sending again",
            )
        self._status.next_check_at = None
        return self._canceled_before_submit(
            note="canceled before a re-send: lookups found no refund from the lost answer"
        )

    async def _reconcile(self, attempt_started: datetime, lookups: int) -> ProviderRefund | _Lookup:
        """Look for the refund a lost answer may have made; adopt it if exactly one fits."""
        validated = self._require_validated()
        expected = validated.amount_minor
        settle = timedelta(seconds=self._options.reconcile_settle_s)
        for _ in range(lookups):
            await workflow.sleep(settle, summary="let the provider settle")
            found = await self._call(
                "reconcile",
                lambda: self._provider_call(
                    RefundActivities.find_submitted,
                    FindRefundsInput(
                        request=self._request,
                        created_from=attempt_started - RECONCILE_MARGIN,
                        created_to=workflow.now() + RECONCILE_MARGIN,
                    ),
                    "look for a refund the lost answer may have made",
                ),
            )
            if isinstance(found, _Final):
                self._flag_attention(
                    f"The refund call's answer was lost and we could not look up at {self._p} "
                    f"what it made. {found.error.message}",
                    RESOLVE_HINT,
                )
                return _Lookup.UNRESOLVED
            matches = [
                r
                for r in found.refunds
                if r.refund_id not in self._claimed
                and r.refund_id not in self._excluded
                and r.amount_minor == expected
                and (r.currency is None or r.currency == validated.currency)
                and r.status is not ProviderRefundStatus.FAILED
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                ids = tuple(r.refund_id for r in matches)
                self._possible_refunds = tuple(dict.fromkeys(self._possible_refunds + ids))
                amount = format_minor(expected, validated.currency)
                self._flag_attention(
                    f"The refund call's answer was lost and {len(matches)} refunds of this "
                    f"amount exist at {self._p} ({amount}: {', '.join(ids)}): an operator must "
                    "decide which one is this refund.",
                    RESOLVE_HINT,
                )
                return _Lookup.UNRESOLVED
        return _Lookup.NONE_MADE

    async def _await_resolution(self) -> _Decision:
        """NEEDS_ATTENTION with nothing to watch: wait for the operator's `resolve`."""
        self._awaiting_resolution = True
        self._touch()
        while True:
            await workflow.wait_condition(
                lambda: (
                    self._decision is not None
                    or (self._status.cancel_requested and self._status.cancel_note is None)
                )
            )
            decision = self._decision
            if decision is not None:
                break
            # Nothing is known to exist at the provider, so there is nothing to cancel yet.
            self._status.cancel_note = (
                "cancel noted: this refund's outcome is unknown; resolve it (a resend ends "
                "it CANCELED if no refund is found, an adopted refund is cancelled at the "
                "provider where it allows)"
            )
            self._touch()
        self._awaiting_resolution = False
        self._decision = None
        if isinstance(decision, _Close):
            self._finish(decision.state, decision.message)
        return decision

    async def _check_adoptable(self, refund_id: str) -> ProviderRefund:
        """The named provider refund exists, is of this amount and currency, and no sibling
        claimed it; otherwise the update fails with the reason."""
        validated = self._require_validated()
        self._resolving = True
        try:
            polled = await self._poll(
                "adopt check", refund_id, f"check refund {refund_id} before adopting it"
            )
        finally:
            self._resolving = False
        if isinstance(polled, _Final):
            raise _refusal(f"cannot adopt {refund_id}: {polled.error.message}")
        if isinstance(polled, _BudgetSpent):
            raise _refusal(f"cannot adopt {refund_id}: the provider did not answer; try again")
        refund = polled.refund
        if refund.amount_minor is None or refund.currency is None:
            raise _refusal(
                f"cannot adopt {refund_id}: the provider does not state its amount and "
                "currency, so it cannot be shown to be this refund (resend or close instead)"
            )
        sent = self._first_sent_at
        if (
            sent is not None
            and refund.created_at is not None
            and refund.created_at < sent - RECONCILE_MARGIN
        ):
            raise _refusal(
                f"cannot adopt {refund_id}: it was made at {refund.created_at:%Y-%m-%d %H:%M:%S} "
                f"UTC, before this refund was first sent ({sent:%Y-%m-%d %H:%M:%S} UTC)"
            )
        if (refund.amount_minor, refund.currency) != (validated.amount_minor, validated.currency):
            raise _refusal(
                f"cannot adopt {refund_id}: it is {self._money(refund)}, this refund is "
                f"{format_minor(validated.amount_minor, validated.currency)}"
            )
        if self._decision is not None or self._status.is_final:
            raise _refusal("another resolution of this refund was applied meanwhile")
        return refund

    async def _watch(self) -> RefundStatus:
        self._batched = (
            not self._status.is_final
            and self._v5
            and self._request.provider in BATCHED_PROVIDERS
            and self._queue is not None
            and (self._batch_from_start or workflow.patched(MEWS_STATUS_BATCH_PATCH))
        )
        while not self._status.is_final:
            if isinstance(self._decision, _Close):
                close, self._decision = self._decision, None
                self._finish(close.state, close.message)
                break
            await self._handle_cancel()
            if self._status.is_final:
                break
            if self._batched and not self._declined:
                if not await self._batched_check():
                    continue
            else:
                await self._check_status()
                if self._status.is_final:
                    break
                self._check_attention()
                await self._wait_for_own_check()
            if self._status.is_final:
                break
            if self._should_continue_as_new():
                # Handlers finish first, and a cancel or resolution that came just now is
                # played out before the run hands over (an update waiting on it would
                # otherwise wait forever).
                await self._events_started()
                if not self._v2:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(self._carry())
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() or self._work_pending()
                )
                if not self._work_pending():
                    workflow.continue_as_new(self._carry())
        await self._unwatch()
        return await self._result()

    async def _wait_for_own_check(self) -> None:
        delay = self._next_delay()
        self._status.next_check_at = workflow.now() + delay
        self._touch()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._cancel_pending() or self._decision is not None or self._check_now,
                timeout=delay,
                timeout_summary="next status check",
            )
        self._status.next_check_at = None

    # ------------------------------------------------------------ batched status reads

    async def _batched_check(self) -> bool:
        """One step of watching through the status batch (workflows/status_batch.py, the
        refund's side of its contract): register when needed (first, for a new provider
        refund id or budget queue, for `check_now`, and when the watchdog expired), then wait
        for a result, a cancel, a decision or `check_now`. True when results were played out
        (a check to count toward continue-as-new)."""
        refund_id = self._require_refund().refund_id
        queue = self._queue
        if queue is None:
            raise _invariant_broken("batched status reads without a budget queue")
        now = workflow.now()
        if (
            self._check_now
            or self._watched != (refund_id, queue)
            or self._expected is None
            or now >= self._expected
        ):
            # The first check ever is read at once, as a refund reading on its own reads it.
            due_now = self._check_now or self._checks == 0
            self._check_now = False
            if not await self._register(refund_id, queue, due_now=due_now):
                # Not registered within a call budget: a check of its own this time.
                await self._check_status()
                if not self._status.is_final:
                    self._check_attention()
                    await self._wait_for_own_check()
                return True
        expected = self._expected
        if expected is None:
            raise _invariant_broken("registered without a watchdog time")
        if not self._batch_results:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        bool(self._batch_results)
                        or self._cancel_pending()
                        or self._decision is not None
                        or self._check_now
                    ),
                    timeout=max(expected - workflow.now(), timedelta(seconds=1)),
                    timeout_summary="batched status result (watchdog)",
                )
        results, self._batch_results = self._batch_results, []
        applied = False
        for result in results:
            if self._status.is_final:
                break
            applied = self._apply_batch_result(result) or applied
        return applied

    async def _register(self, refund_id: str, queue: str, *, due_now: bool) -> bool:
        """Register with the budget queue's status batch (signal-with-start, through an
        activity on this workflow's task queue); False when that did not succeed."""
        watch = WatchRefund(
            workflow_id=workflow.info().workflow_id,
            refund_id=refund_id,
            provider=self._request.provider,
            merchant=self._request.merchant,
            account_id=self._request.account_id,
            enterprise_id=self._request.enterprise_id,
            poll_initial_s=self._options.poll_initial_s,
            poll_max_s=self._options.poll_max_s,
            checks_so_far=self._checks,
            due_in_s=0 if due_now else None,
        )
        try:
            await workflow.execute_activity_method(
                StatusWatchActivities.register,
                RegisterWatchInput(budget_queue=queue, watch=watch),
                start_to_close_timeout=self._call_timeout,
                schedule_to_close_timeout=CALL_BUDGET,
                retry_policy=RETRY,
                summary=f"have refund {refund_id}'s status read in batches",
            )
        except ActivityError as err:
            self._watched = None
            self._expected = None
            workflow.logger.warning(
                "status batch registration failed: %s", _describe(err, "register")
            )
            return False
        self._watched = (refund_id, queue)
        due = registered_due_at(workflow.now(), watch)
        self._expected = expected_by(due)
        if not due_now:
            self._status.next_check_at = due
            self._touch()
        return True

    def _apply_batch_result(self, result: ProviderStatus) -> bool:
        """Play out one batched read, as `_check_status` plays out its own; False when it is
        not about the current provider refund (ignored)."""
        refund_id = self._require_refund().refund_id
        if result.refund_id != refund_id or self._watched is None:
            return False
        if result.outcome is StatusOutcome.DECLINED:
            # The batch is full: read on its own until the next run.
            self._declined = True
            self._watched = None
            self._expected = None
            return False
        self._checks = max(self._checks, result.checks)
        self._checks_this_run += 1
        if result.outcome is StatusOutcome.FOUND and result.refund is not None:
            self._adopt(result.refund)
            if self._status.is_final:
                # The batch stops watching a refund it told a final status.
                self._batch_ended = True
                return True
        elif result.outcome is StatusOutcome.NOT_FOUND or result.final_error:
            self._flag_attention(
                f"{self._p} refuses the status checks of refund {refund_id}. "
                f"{result.message or ''}".rstrip(),
                WATCH_HINT,
            )
        else:
            self._note_error(result.message or f"the batched status read at {self._p} failed")
        if result.next_check_at is None:
            # No longer watched by the batch: register again.
            self._watched = None
            self._expected = None
        else:
            self._expected = expected_by(result.next_check_at)
        self._status.next_check_at = result.next_check_at
        self._check_attention()
        self._touch()
        return True

    async def _unwatch(self) -> None:
        """Ended otherwise than by the batch's final result: tell the batch (best effort; a
        refund gone is dropped at its next result anyway)."""
        if self._watched is None or self._batch_ended:
            return
        _, queue = self._watched
        self._watched = None
        try:
            await workflow.get_external_workflow_handle(status_batch_id(queue)).signal(
                "unwatch", UnwatchRefund(workflow_id=workflow.info().workflow_id)
            )
        except FailureError:
            workflow.logger.info("status batch of %s was gone at unwatch", queue)

    def _work_pending(self) -> bool:
        return self._cancel_pending() or self._decision is not None

    async def _poll(
        self, step: str, refund_id: str, summary: str
    ) -> PolledRefund | _Final | _BudgetSpent:
        """One status read of a provider refund, within one call budget."""
        return await self._call_once(
            step,
            lambda: self._provider_read(
                RefundActivities.poll_status,
                PollInput(request=self._request, refund_id=refund_id),
                summary,
            ),
        )

    async def _check_status(self) -> None:
        self._check_now = False
        refund_id = self._require_refund().refund_id
        polled = await self._poll("status", refund_id, f"check refund {refund_id}")
        if isinstance(polled, _Final):
            self._flag_attention(
                f"{self._p} refuses the status checks of refund {refund_id}. "
                f"{polled.error.message}",
                WATCH_HINT,
            )
            if self._v2:
                # Refused checks back off and move toward continue-as-new like any other.
                self._checks += 1
                self._checks_this_run += 1
            return
        if isinstance(polled, _BudgetSpent):
            if self._v2:
                # A run whose checks keep failing still moves toward continue-as-new.
                self._checks_this_run += 1
            return
        self._checks += 1
        self._checks_this_run += 1
        self._adopt(polled.refund)

    async def _handle_cancel(self) -> None:
        if not self._cancel_pending():
            return
        refund_id = self._require_refund().refund_id
        self._cancel_handled = True
        reason = self._status.cancel_reason or "canceled by operator"

        def start() -> Awaitable[CancelAtProviderResult]:
            return self._provider_call(
                RefundActivities.cancel,
                CancelAtProviderInput(request=self._request, refund_id=refund_id, reason=reason),
                f"cancel refund {refund_id} at the provider",
            )

        answer: CancelAtProviderResult | _Final | _BudgetSpent
        if self._v2:
            answer = await self._call_once("cancel", start)
        else:
            answer = await self._call("cancel", start)
        if isinstance(answer, _Final):
            result = CancelAtProviderResult(canceled=False, note=answer.error.message)
        elif isinstance(answer, _BudgetSpent):
            result = CancelAtProviderResult(
                canceled=False,
                note=f"{self._p} did not answer the cancel in time. "
                + (self._status.last_error or ""),
            )
        else:
            result = answer
        if result.canceled:
            self._status.cancel_note = result.note
            if result.refund is not None:
                self._adopt(result.refund)
            # Only the provider's own word that the refund is cancelled ends it so.
            still_live = (
                result.refund
                if self._v2
                and result.refund is not None
                and result.refund.status is not ProviderRefundStatus.CANCELED
                else None
            )
            if still_live is not None and not self._status.is_final:
                self._status.cancel_note = (
                    f"{self._p} took the cancel but still shows the refund as "
                    f"{still_live.raw_status}: watching until final."
                )
                self._touch()
            elif not self._status.is_final:
                self._finish(
                    RefundState.CANCELED,
                    f"Canceled at {self._p} ({reason}).",
                )
        else:
            self._status.cancel_note = (
                f"Not canceled at {self._p}; the refund goes on, watching until final. "
                f"{result.note}"
            )
            self._touch()

    # ------------------------------------------------------------------ helpers

    def _provider_call(
        self, activity: Callable[[RefundActivities, P], Awaitable[R]], arg: P, summary: str
    ) -> Awaitable[R]:
        """One provider activity with the timeout, call budget and retry policy every provider
        call shares; :meth:`_call` runs it (loops over spent budgets, sorts failures)."""
        return workflow.execute_activity_method(
            activity,
            arg,
            task_queue=self._queue,
            start_to_close_timeout=self._call_timeout,
            schedule_to_close_timeout=CALL_BUDGET,
            retry_policy=RETRY,
            summary=summary,
        )

    async def _provider_read(
        self,
        activity: Callable[[RefundActivities, P], Awaitable[R]],
        arg: P,
        summary: str,
        *,
        counted: bool = False,
    ) -> R:
        """A provider read (no money moves): with local reads (patch local-provider-reads),
        first one attempt as a local activity in this workflow task; whatever it ends with
        other than an answer (an error, a refusal, a timeout), the ordinary activity then
        decides: a refusal at once, anything else after the wait the provider asked for
        (Retry-After) or the retry policy's first interval, so that a failing provider is not
        called twice at once. ``counted``: a failed local try counts in the status's
        ``attempts`` (the payment check's tries)."""
        if not self._local_reads:
            return await self._provider_call(activity, arg, summary)
        try:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=self._call_timeout,
                retry_policy=LOCAL_READ_RETRY,
                summary=summary,
            )
        except FailureError as err:
            cause = _local_failure(err)
            if counted:
                self._status.attempts += 1
            if not (isinstance(cause, ApplicationError) and cause.non_retryable):
                wait = RETRY.initial_interval
                if isinstance(cause, ApplicationError) and cause.next_retry_delay is not None:
                    # Retry-After, within one call budget (the activity's bound on waiting).
                    wait = min(max(wait, cause.next_retry_delay), CALL_BUDGET)
                await workflow.sleep(wait, summary="before the read as an activity")
        return await self._provider_call(activity, arg, summary)

    async def _call_once(
        self, step: str, start: Callable[[], Awaitable[R]]
    ) -> R | _Final | _BudgetSpent:
        """Run an activity within one call budget: its result, `_Final` on a final "no", or
        `_BudgetSpent` (the last error noted and the attention deadline checked)."""
        try:
            return await start()
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                return _Final(cause)
            self._note_error(_describe(err, f"the {_STEP_WORDS.get(step, step)} at {self._p}"))
            self._check_attention()
            if self._queue is not None:
                # The budget queue may have changed (profiles regrouped, or none polls the old
                # one any more): look it up again before the next call.
                await self._route(before_submit=False)
            return _BudgetSpent()

    async def _call(self, step: str, start: Callable[[], Awaitable[R]]) -> R | _Final:
        """Run an activity, calling again each time its budget runs out: its result, or
        `_Final` on a final "no"."""
        while True:
            outcome = await self._call_once(step, start)
            if not isinstance(outcome, _BudgetSpent):
                return outcome

    def _canceled_before_submit(self, note: str | None = None) -> bool:
        if not self._status.cancel_requested:
            return False
        self._cancel_handled = True
        reason = self._status.cancel_reason or "canceled by operator"
        self._status.cancel_note = note or (
            f"canceled before submit: {self._p} was never asked for the refund"
        )
        self._finish(
            RefundState.CANCELED,
            f"Canceled before the refund was sent to {self._p}: nothing was refunded ({reason}).",
        )
        return True

    def _cancel_pending(self) -> bool:
        return self._status.cancel_requested and not self._cancel_handled

    def _adopt(self, refund: ProviderRefund) -> None:
        # Paynow's status answer states no amounts: what an earlier answer confirmed stays.
        if refund.amount_minor is not None and refund.currency is not None:
            self._status.confirmed_amount_minor = refund.amount_minor
            self._status.confirmed_currency = refund.currency
        elif refund.amount_minor is not None:
            self._status.confirmed_amount_minor = refund.amount_minor
        if refund.payer_amount_minor is not None:
            self._status.payer_amount_minor = refund.payer_amount_minor
        if refund.voucher_amount_minor is not None:
            self._status.voucher_amount_minor = refund.voucher_amount_minor
        self._refund = refund
        self._status.provider_refund_id = refund.refund_id
        self._status.provider_status = refund.raw_status
        self._index_provider_refund_id()
        outcome = {
            ProviderRefundStatus.SUCCEEDED: RefundState.SUCCEEDED,
            ProviderRefundStatus.FAILED: RefundState.FAILED,
            ProviderRefundStatus.CANCELED: RefundState.CANCELED,
        }.get(refund.status)
        if outcome is not None:
            self._finish(outcome, self._outcome_message(outcome, refund))
        elif self._status.state is not RefundState.NEEDS_ATTENTION:
            self._set_state(RefundState.PENDING)
        else:
            self._touch()
        if self._lean:
            self._upsert({})

    def _outcome_message(self, outcome: RefundState, refund: ProviderRefund) -> str:
        """The final sentence for the provider's final status: what happened, at which
        provider, what to do; the provider's status (and reason) kept once."""
        s = self._status
        what = (
            f"the refund of {describe_amount(s.amount_minor, s.currency)} on payment {s.payment_id}"
        )
        said = refund.raw_status + (f": {refund.failure_reason}" if refund.failure_reason else "")
        if outcome is RefundState.SUCCEEDED:
            note = self._unconfirmed_money_note() if self._v2 else ""
            return f"{self._p} made {what} ({self._p} status {said}){note}."
        if outcome is RefundState.FAILED:
            return (
                f"{self._p} reports that {what} failed ({self._p} status {said}): check the "
                f"payment at {self._p}, and start a new refund if it is still owed."
            )
        return f"{self._p} canceled {what} ({self._p} status {said})."

    def _unconfirmed_money_note(self) -> str:
        s = self._status
        if s.confirmed_amount_minor is None:
            return f"; {self._p} did not state the amount refunded"
        if s.confirmed_currency is None:
            return (
                f"; {self._p} does not state a refund's currency (its refunds are in the "
                "payment's currency)"
            )
        if (s.confirmed_amount_minor, s.confirmed_currency) != (s.amount_minor, s.currency):
            confirmed = format_minor(s.confirmed_amount_minor, s.confirmed_currency)
            return f"; {self._p} confirmed {confirmed}"
        return ""

    def _check_attention(self) -> None:
        if self._status.is_final or self._status.state is RefundState.NEEDS_ATTENTION:
            return
        now = workflow.now()
        started = self._status.started_at or now
        deadline = started + timedelta(seconds=self._options.attention_after_s)
        may_last = self._refund.pending_may_last_s if self._refund is not None else None
        if self._v2 and may_last is not None and self._submitted_at is not None:
            # A documented provider wait (Paynow's awaiting refunds) is not a problem yet.
            deadline = max(
                deadline, self._submitted_at + timedelta(seconds=may_last) + ATTENTION_GRACE
            )
        if now >= deadline:
            hours = (now - started).total_seconds() / 3600
            status = self._status.provider_status
            where = (
                f"{self._p} last showed it as {status}"
                if status
                else f"it is still {self._status.state.value} (see the last error)"
            )
            hint = WATCH_HINT if self._refund is not None else None
            self._flag_attention(f"The refund is not final after {hours:.1f} h: {where}.", hint)

    def _flag_attention(self, reason: str, actions: str | None = None) -> None:
        self._status.attention_reason = reason
        self._status.attention_actions = actions
        self._set_state(RefundState.NEEDS_ATTENTION)

    def _record_resolution(self, params: ResolveRequest, outcome: str) -> None:
        self._status.resolutions.append(
            Resolution(
                action=params.action,
                reason=params.reason,
                by=params.by,
                at=workflow.now(),
                refund_id=params.refund_id,
                close_as=params.close_as,
                outcome=outcome,
            )
        )
        self._status.attention_actions = None
        workflow.logger.info(
            "refund resolved by operator: %s",
            outcome,
            extra={"resolution": params.action.value, "resolved_by": params.by or ""},
        )
        self._touch()

    def _note_error(self, message: str) -> None:
        self._status.last_error = message
        self._touch()

    def _next_delay(self) -> timedelta:
        # The first wait is poll_initial_s, then it doubles up to poll_max_s.
        exponent = min(max(self._checks - 1, 0), 30)
        seconds = min(self._options.poll_initial_s * 2**exponent, self._options.poll_max_s)
        return timedelta(seconds=seconds)

    def _should_continue_as_new(self) -> bool:
        return (
            self._checks_this_run >= self._options.checks_per_run
            or workflow.info().is_continue_as_new_suggested()
        )

    def _require_validated(self) -> ValidatedRefund:
        if self._validated is None:
            raise _invariant_broken("the refund was not validated")
        return self._validated

    def _require_refund(self) -> ProviderRefund:
        if self._refund is None:
            raise _invariant_broken("no provider refund to watch")
        return self._refund

    def _carry(self) -> RefundWorkflowInput:
        if self._submitted_at is None or self._status.started_at is None:
            raise _invariant_broken("continue-as-new before submit")
        s = self._status
        return RefundWorkflowInput(
            request=self._request,
            options=self._options,
            carried=CarriedState(
                state=s.state,
                validated=self._require_validated(),
                refund=self._require_refund(),
                started_at=s.started_at,
                submitted_at=self._submitted_at,
                attempts=s.attempts,
                checks=self._checks,
                last_error=s.last_error,
                attention_reason=s.attention_reason,
                cancel_requested=s.cancel_requested,
                cancel_reason=s.cancel_reason,
                cancel_handled=self._cancel_handled,
                cancel_note=s.cancel_note,
                attention_actions=s.attention_actions,
                resolutions=tuple(s.resolutions),
                confirmed_amount_minor=s.confirmed_amount_minor,
                confirmed_currency=s.confirmed_currency,
                payer_amount_minor=s.payer_amount_minor,
                voucher_amount_minor=s.voucher_amount_minor,
                events=tuple(s.events),
            ),
        )

    def _finish(self, state: RefundState, message: str) -> None:
        if state not in FINAL_STATES:
            raise _invariant_broken(f"finishing in {state.value}, which is not a final state")
        self._status.message = message
        self._status.finished_at = workflow.now()
        self._status.next_check_at = None
        self._status.attention_actions = None
        self._set_state(state)
        record_refund_finished(
            self._request.provider.value,
            state.value,
            started_at=self._status.started_at,
            finished_at=self._status.finished_at,
        )

    def _send_event(self, state: RefundState, url: str) -> None:
        """Hand one outcome event to its own delivery workflow (it outlives this one).

        No patch: a request with a notify_url cannot be in a history recorded before events
        existed (the field was unknown, and requests refuse unknown fields)."""
        number = len(self._status.events) + 1
        key = self._request.idempotency_key
        digest = hashlib.sha256(f"{self._request.workflow_id}/{number}/{state.value}".encode())
        event = OutcomeEvent(
            event_id=f"evt_{digest.hexdigest()[:32]}",
            type=f"refund.{state.value.lower()}",
            state=state,
            created_at=workflow.now(),
        )
        self._status.events.append(event)
        body = json.dumps(
            {
                "type": event.type,
                "timestamp": event.created_at.isoformat(),
                "data": self._status.model_dump(mode="json", exclude={"events"}),
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        self._event_starts.append(
            asyncio.create_task(
                self._start_event_delivery(
                    f"{EVENT_WORKFLOW_PREFIX}{key}:{number}",
                    EventInput(event=event, url=url, body=body, options=self._options),
                )
            )
        )

    async def _start_event_delivery(self, workflow_id: str, params: EventInput) -> None:
        host = urlsplit(params.url).hostname
        try:
            await workflow.start_child_workflow(
                RefundEventWorkflow.run,
                params,
                id=workflow_id,
                task_queue=workflow.info().task_queue,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"{params.event.type} of {self._request.workflow_id} to {host}",
            )
        except WorkflowAlreadyStartedError:
            # Started before (a reset replaying past it): that delivery stands.
            workflow.logger.info("outcome event delivery %s already started", workflow_id)

    async def _events_started(self) -> None:
        """Every outcome event's delivery has been started (before the run ends or hands
        over): an event is never lost with the run."""
        await workflow.wait_condition(lambda: all(t.done() for t in self._event_starts))

    def _index_provider_refund_id(self) -> None:
        refund_id = self._status.provider_refund_id
        if self._lean:
            # Sent with the next upsert (a state change, or the flush after the status).
            if self._index_refund_id and refund_id:
                self._attributes_due[REFUND_PROVIDER_REFUND_ID] = refund_id
            return
        if self._index_refund_id and refund_id and refund_id != self._indexed_refund_id:
            workflow.upsert_search_attributes([REFUND_PROVIDER_REFUND_ID.value_set(refund_id)])
            self._indexed_refund_id = refund_id

    def _upsert(self, values: dict[SearchAttributeKey[str], str]) -> None:
        """Upsert search attributes: before lean-upserts every call, after it only values
        that change, together with those due."""
        if self._lean:
            wanted = {**self._attributes_due, **values}
            self._attributes_due = {}
            values = {k: v for k, v in wanted.items() if self._attributes_now.get(k.name) != v}
        if values:
            workflow.upsert_search_attributes([k.value_set(v) for k, v in values.items()])
            self._attributes_now.update({k.name: v for k, v in values.items()})

    def _set_state(self, state: RefundState) -> None:
        previous = self._status.state
        self._status.state = state
        self._upsert({REFUND_STATE: state.value})
        self._touch()
        if state is not previous and state in EVENT_STATES and self._request.notify_url:
            self._send_event(state, self._request.notify_url)
        if state is self._logged_state:
            return
        self._logged_state = state
        # Not logged while replaying; workflow_id and run_id are added by the SDK.
        workflow.logger.info(
            "refund is %s",
            state.value,
            extra={"refund_state": state.value, "provider": self._request.provider.value},
        )

    def _touch(self) -> None:
        self._status.updated_at = workflow.now()
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        s = self._status
        lines = [f"**{s.state.value}**"]
        if s.provider_refund_id:
            lines.append(f"provider refund `{s.provider_refund_id}`: {s.provider_status}")
        if s.confirmed_amount_minor is not None and s.confirmed_currency:
            lines.append(
                "provider confirmed " + format_minor(s.confirmed_amount_minor, s.confirmed_currency)
            )
        if s.next_check_at:
            lines.append(f"next check {s.next_check_at.isoformat(timespec='seconds')}")
        for label, value in (
            ("attention", s.attention_reason),
            ("what to do", s.attention_actions),
            ("cancel", s.cancel_note),
            ("last error", s.last_error),
            ("outcome", s.message),
        ):
            if value:
                lines.append(f"{label}: {value}")
        for r in s.resolutions:
            who = f" by {r.by}" if r.by else ""
            lines.append(
                f"resolved{who} at {r.at.isoformat(timespec='seconds')}: {r.outcome} ({r.reason})"
            )
        lines.append(
            "Cancel: the `cancel` signal and Temporal's Request Cancellation do the same safe "
            "thing (never abandon a provider call); Terminate is unsafe."
        )
        return "\n\n".join(lines)

    @property
    def _p(self) -> str:
        """The provider as people write it (``Paynow``)."""
        return provider_title(self._request.provider.value)

    def _money(self, refund: ProviderRefund) -> str:
        if refund.amount_minor is not None and refund.currency:
            return format_minor(refund.amount_minor, refund.currency)
        return "amount not stated by the provider"

    def _amount_summary(self, verb: str) -> str:
        s = self._status
        amount = describe_amount(s.amount_minor, s.currency)
        return f"{verb} {amount} at {self._request.provider.value}"

    async def _result(self) -> RefundStatus:
        await self._events_started()
        # The run never ends with an update still running (its caller would get no answer).
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status.model_copy()


def _local_failure(err: FailureError) -> BaseException | None:
    """What a local activity failed with. It comes wrapped in an ActivityError while the
    local activity runs, but as recorded in its marker (unwrapped: an ApplicationError, a
    TimeoutError, ...) when the history is replayed; callers catch FailureError, so that
    both forms take the same path."""
    return err.cause if isinstance(err, ActivityError) else err


def _invariant_broken(what: str) -> ApplicationError:
    """A bug, said plainly instead of a bare ``assert`` (which would fail the workflow task
    and be retried forever): raised in the run it fails the workflow, in an update handler
    the update; never retried."""
    return ApplicationError(f"invariant broken: {what}", type="InvariantBroken", non_retryable=True)


def _refusal(message: str) -> ApplicationError:
    """A refused resolution: the update fails with this; the refund is unchanged."""
    return ApplicationError(message, type="ResolutionRefused", non_retryable=True)


# A workflow step as people say it, in "the ... at Paynow".
_STEP_WORDS = {
    "validate": "check of the payment",
    "submit": "refund call",
    "status": "status check",
    "cancel": "cancel",
    "reconcile": "lookup of the refund whose answer was lost",
    "adopt check": "check of the refund to adopt",
}


def _describe(err: BaseException, call: str) -> str:
    """The innermost message of a failure chain: the provider error's sentence and words
    (credential-free), or, for a call that timed out, a sentence saying so."""
    messages: list[str] = []
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, ActivityTimeoutError):
            kind = current.type.name.lower() if current.type else "timeout"
            messages.append(
                f"No answer in time to {call} (timeout: {kind}): it is tried again "
                "automatically; nothing to do unless it lasts."
            )
        elif isinstance(current, ApplicationError):
            messages.append(current.message)
        current = current.__cause__
    return messages[-1] if messages else str(err)


# Last: the lane workflow and its refunds signal each other, so each module imports the other
# once its own class exists; either can then be imported first (in the worker and in the
# workflow sandbox alike). Passed through: here they only name signals and a child workflow,
# and the sandbox would otherwise run both modules again for every refund it loads
# (docs/performance.md, "Worker CPU").
with workflow.unsafe.imports_passed_through():
    from workflows.events import RefundEventWorkflow
    from workflows.payment_lane import RefundLaneWorkflow
