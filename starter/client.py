"""The Python API other services import to start and follow refunds.

Idempotency rule: the workflow id is ``refund:<idempotency key>`` and ids are never reused
(``REJECT_DUPLICATE``), for as long as the namespace retains the refund. Starting again with
the same key and the same request (same fingerprint) attaches to the existing refund, running
or finished; the same key with any difference is an :class:`IdempotencyConflictError`.
Requests are checked offline before anything starts, so bad input never reaches a provider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.models import (
    REFUND_PAYMENT_ID,
    REFUND_PROVIDER,
    REFUND_STATE,
    WORKFLOW_ID_PREFIX,
    EventDelivery,
    OutcomeEvent,
    ProviderName,
    RefundOptions,
    RefundRequest,
    RefundState,
    RefundStatus,
    workflow_id_for,
)
from core.money import describe_amount
from core.notify_urls import NotifyUrlError, check_notify_url
from core.settings import Settings
from providers.errors import InvalidRequestError
from providers.registry import check_request
from starter.connection import connect
from telemetry.tracing import traced, tracing_interceptor
from workflows.events import RefundEventWorkflow
from workflows.models import (
    CancelAnswer,
    CancelRequest,
    CheckNow,
    RefundWorkflowInput,
    ResolveAnswer,
    ResolveRequest,
)
from workflows.names import signal_name, workflow_type_name
from workflows.refund import EVENT_WORKFLOW_PREFIX, RefundWorkflow

WORKFLOW_TYPE = workflow_type_name(RefundWorkflow)


class RefundClientError(Exception):
    """Base of the starter's errors; the message is one clear line for people."""


class IdempotencyConflictError(RefundClientError):
    """The key is already used by a refund with a different request. ``fields`` names the
    request fields that differ (empty when the first request could not be read)."""

    def __init__(self, key: str, fields: Sequence[str] = ()) -> None:
        super().__init__(conflict_message(key, fields))
        self.key = key
        self.fields = tuple(fields)

    def naming_fields(self, name: Callable[[str], str]) -> str:
        """The message with the differing fields named by ``name`` (the CLI names flags)."""
        return conflict_message(self.key, [name(f) for f in self.fields])


def conflict_message(key: str, differing: Sequence[str]) -> str:
    differs = (
        f"a refund request that differs in {_join(differing)}"
        if differing
        else "a different refund request"
    )
    return (
        f"idempotency conflict: key {key!r} is already used by {differs}; use a new key "
        "for a new refund (or repeat the first request exactly to attach to it)"
    )


class RefundNotFoundError(RefundClientError):
    """No refund has this key (or the namespace no longer retains it)."""


class RefundTooLateError(RefundClientError):
    """The refund is already final: too late to cancel it."""


class TemporalUnavailableError(RefundClientError):
    """Temporal did not answer in time (unavailable, or the call's deadline passed); the
    refund is unchanged as far as this call knows. Worth retrying."""


class ResolutionRefusedError(RefundClientError):
    """The refund refused an operator's `resolve`: not in NEEDS_ATTENTION, already final, or
    the provider refund to adopt does not check out. The refund is unchanged; the message is
    the workflow's reason."""


@dataclass(frozen=True)
class StartedRefund:
    key: str
    workflow_id: str
    created: bool
    """False when an identical earlier request was found and attached to."""


@dataclass(frozen=True)
class RefundListItem:
    """One refund as the visibility store lists it (search attributes and memo)."""

    key: str
    workflow_id: str
    state: str | None
    provider: str | None
    payment_id: str | None
    amount: str
    execution_status: str
    started_at: datetime | None


@dataclass(frozen=True)
class RefundPage:
    """One page of :meth:`RefundClient.list_page`; ``next_page_token`` is None on the last."""

    items: list[RefundListItem]
    next_page_token: bytes | None


def summary_line(request: RefundRequest) -> str:
    """The one-line summary the Temporal UI shows for a refund."""
    amount = describe_amount(request.amount_minor, request.currency)
    return (
        f"Refund {amount} of {request.provider.value} payment {request.payment_id} "
        f"(key {request.idempotency_key})"
    )


class RefundClient:
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        options: RefundOptions,
        allow_private_notify_urls: bool = False,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.options = options
        # REFUNDS_EVENTS_ALLOW_PRIVATE: a notify_url may resolve to a private address.
        self.allow_private_notify_urls = allow_private_notify_urls

    @classmethod
    async def connect(
        cls, settings: Settings, *, environ: Mapping[str, str] | None = None
    ) -> RefundClient:
        """Connect as ``starter.connection.connect`` does (the settings, then the SDK's
        ``TEMPORAL_*`` configuration; ``environ`` read instead of the environment and .env)."""
        return cls(
            await connect(settings, interceptors=[tracing_interceptor()], environ=environ),
            task_queue=settings.refunds_task_queue,
            options=options_from_settings(settings),
            allow_private_notify_urls=settings.refunds_events_allow_private,
        )

    def handle(self, key: str) -> WorkflowHandle[RefundWorkflow, RefundStatus]:
        return self.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id_for(key))

    async def start(
        self,
        request: RefundRequest,
        traceparent: str | None = None,
        *,
        started_by: str | None = None,
    ) -> StartedRefund:
        """Start the refund, or attach to the identical one already started with this key.

        Traced as ``refund.start`` under the caller's current span, or under ``traceparent``
        (a W3C ``traceparent`` value) when given; the workflow's spans continue that trace.
        ``started_by`` (who sent it, e.g. an API key's name) goes into the memo beside the
        fingerprint, never into the request: who asks does not change which refund it is.
        """
        with traced(
            "refund.start",
            attributes={
                "refunds.key": request.idempotency_key,
                "refunds.provider": request.provider.value,
            },
            traceparent=traceparent,
        ) as span:
            started = await self._start(request, started_by)
            span.set_attribute("refunds.created", started.created)
            return started

    async def _start(self, request: RefundRequest, started_by: str | None) -> StartedRefund:
        try:
            await self._start_workflow(
                request, WorkflowIDConflictPolicy.FAIL, started_by=started_by
            )
        except WorkflowAlreadyStartedError:
            existing = await self._fingerprint_of(request.idempotency_key)
            if existing != request.fingerprint() and existing not in (
                request.legacy_fingerprints()
            ):
                fields = await self._differing(request)
                raise IdempotencyConflictError(request.idempotency_key, fields) from None
            return StartedRefund(request.idempotency_key, request.workflow_id, created=False)
        return StartedRefund(request.idempotency_key, request.workflow_id, created=True)

    async def start_canceled(self, request: RefundRequest, reason: str) -> None:
        """Start a refund with its `cancel` signal already delivered (signal-with-start): the
        first thing the workflow sees is the cancel, so the provider is never asked.

        The server refuses conflict policy FAIL for signal-with-start, so with a key whose
        refund is *running* already the signal would cancel that refund: for fresh keys only
        (the demo's), never as a way to start an ordinary refund.
        """
        await self._start_workflow(
            request,
            WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=signal_name(RefundWorkflow.cancel),
            start_signal_args=[CancelRequest(reason=reason)],
        )

    async def _start_workflow(
        self,
        request: RefundRequest,
        conflict: WorkflowIDConflictPolicy,
        *,
        start_signal: str | None = None,
        start_signal_args: Sequence[Any] = (),
        started_by: str | None = None,
    ) -> None:
        """The one way refunds are started: offline checks first, then the workflow with its
        id, memo, search attributes and UI summary."""
        check_request(request)
        if request.notify_url is not None:
            try:
                await check_notify_url(
                    request.notify_url, allow_private=self.allow_private_notify_urls
                )
            except NotifyUrlError as err:
                raise InvalidRequestError(str(err), provider=request.provider.value) from None
        await self.client.start_workflow(
            RefundWorkflow.run,
            RefundWorkflowInput(request=request, options=self.options),
            id=request.workflow_id,
            task_queue=self.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=conflict,
            memo=_memo(request, started_by),
            search_attributes=_search_attributes(request),
            static_summary=summary_line(request),
            start_signal=start_signal,
            start_signal_args=start_signal_args,
        )

    async def _fingerprint_of(self, key: str) -> str | None:
        handle = self.handle(key)
        description = await handle.describe()
        memo = await description.memo()
        value = memo.get("fingerprint")
        if isinstance(value, str):
            return value
        # Started by another SDK without our memo: read the request from the history.
        started = await self._request_of(key)
        return None if started is None else started.fingerprint()

    async def _request_of(self, key: str) -> RefundRequest | None:
        """The request the refund with this key was started with (its start event)."""
        async for event in self.handle(key).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded = await self.client.data_converter.decode(
                    list(payloads), [RefundWorkflowInput]
                )
                started = decoded[0]
                assert isinstance(started, RefundWorkflowInput)
                return started.request
        return None

    async def _differing(self, request: RefundRequest) -> list[str]:
        """The fields of the request that differ from the refund already started with its
        key (the fingerprints decided; this only explains, so an unreadable first request
        gives none)."""
        try:
            existing = await self._request_of(request.idempotency_key)
        except Exception:  # the explanation is best effort; the conflict stands regardless
            existing = None
        return [] if existing is None else _differing_fields(existing, request)

    async def status(self, key: str) -> RefundStatus:
        status = await self._refund_status(key)
        if status.events:
            status.events = [
                await self._delivery(key, number, event)
                for number, event in enumerate(status.events, start=1)
            ]
        return status

    async def _delivery(self, key: str, number: int, event: OutcomeEvent) -> OutcomeEvent:
        """How the delivery of a refund's ``number``th outcome event stands: asked of its
        delivery workflow (the refund only knows it started it)."""
        if event.delivery is not EventDelivery.SENDING:
            return event
        handle = self.client.get_workflow_handle_for(
            RefundEventWorkflow.run, f"{EVENT_WORKFLOW_PREFIX}{key}:{number}"
        )
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                return await handle.query(RefundEventWorkflow.delivery)
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
        except (RPCError, WorkflowFailureError):
            # Not started yet (the refund is starting it) or gone: what the refund knows.
            pass
        return event

    async def _refund_status(self, key: str) -> RefundStatus:
        handle = self.handle(key)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
            if description.status == WorkflowExecutionStatus.RUNNING:
                return await handle.query(RefundWorkflow.status)
        except RPCError as err:
            raise _not_found(err, key) from None
        except WorkflowFailureError as err:
            raise RefundClientError(f"refund {key!r} failed unexpectedly: {err.cause}") from None
        raise RefundClientError(
            f"refund {key!r} ended as {description.status.name if description.status else '?'}"
            " (terminated or timed out by an operator)"
        )

    async def cancel(self, key: str, reason: str) -> RefundStatus:
        """Send the `cancel` signal; returns the status seen right after."""
        if not reason.strip():
            raise RefundClientError("a cancel needs a reason")
        current = await self.status(key)
        if current.is_final:
            raise RefundClientError(
                f"refund {key!r} is already {current.state.value}: too late to cancel"
            )
        handle = self.handle(key)
        try:
            await handle.signal(RefundWorkflow.cancel, CancelRequest(reason=reason))
        except RPCError as err:
            raise _not_found(err, key) from None
        return await self.status(key)

    async def request_cancel(self, key: str, reason: str) -> CancelAnswer:
        """Cancel through the `request_cancel` update: an immediate answer, canceled or not
        and why. "Too late" (already final) raises :class:`RefundClientError`."""
        if not reason.strip():
            raise RefundClientError("a cancel needs a reason")
        try:
            # The SDK types an async update's answer as the handler's coroutine.
            answer = cast(
                CancelAnswer,
                await self.handle(key).execute_update(
                    RefundWorkflow.request_cancel, CancelRequest(reason=reason)
                ),
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise _not_found(err, key) from None
            # A finished workflow takes no updates: say it is too late, if it exists.
            final = await self.status(key)
            raise RefundTooLateError(
                f"too late to cancel: the refund is already {final.state.value}"
            ) from None
        except WorkflowUpdateFailedError as err:
            # The update's validator refused it: the refund is final already.
            raise RefundTooLateError(f"refund {key!r}: {err.cause}") from None
        assert isinstance(answer, CancelAnswer)
        return answer

    async def resolve(self, key: str, request: ResolveRequest) -> ResolveAnswer:
        """An operator's decision for a refund in `NEEDS_ATTENTION`, through the `resolve`
        update: adopt a provider refund (checked at the provider first), re-send, or close.

        Returns once the workflow has taken the decision (a close: once the refund is final).
        A refusal (wrong state, already final, a refund that cannot be adopted) raises
        :class:`ResolutionRefusedError` with the workflow's reason; nothing changed then."""
        try:
            answer = cast(
                ResolveAnswer,
                await self.handle(key).execute_update(RefundWorkflow.resolve, request),
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise _not_found(err, key) from None
            # A finished workflow takes no updates: say so, if the refund exists at all.
            final = await self.status(key)
            raise ResolutionRefusedError(
                f"refund {key!r}: nothing to resolve: the refund is already {final.state.value}"
            ) from None
        except WorkflowUpdateFailedError as err:
            # The workflow's reason, without the failure type ("ResolutionRefused: ...").
            cause = err.cause
            reason = cause.message if isinstance(cause, FailureError) else str(cause)
            raise ResolutionRefusedError(f"refund {key!r}: {reason}") from None
        assert isinstance(answer, ResolveAnswer)
        return answer

    async def wait(self, key: str) -> RefundStatus:
        try:
            return await self.handle(key).result()
        except RPCError as err:
            raise _not_found(err, key) from None
        except WorkflowFailureError as err:
            # Business outcomes complete the workflow; this is a bug or an operator's terminate.
            raise RefundClientError(f"refund {key!r} did not complete: {err.cause}") from None

    async def list(
        self,
        *,
        state: RefundState | None = None,
        provider: ProviderName | None = None,
        limit: int = 100,
    ) -> list[RefundListItem]:
        query = _list_query(state, provider, None)
        return [
            await _list_item(execution)
            async for execution in self.client.list_workflows(query, limit=limit)
        ]

    async def list_page(
        self,
        *,
        state: RefundState | None = None,
        provider: ProviderName | None = None,
        payment_id: str | None = None,
        page_size: int = 50,
        page_token: bytes | None = None,
    ) -> RefundPage:
        """One page of refunds from visibility, newest first; pass the page's
        ``next_page_token`` back for the next one (opaque bytes, from Temporal)."""
        query = _list_query(state, provider, payment_id)
        pages = self.client.list_workflows(query, page_size=page_size, next_page_token=page_token)
        await pages.fetch_next_page()
        items = [await _list_item(execution) for execution in pages.current_page or ()]
        return RefundPage(items, pages.next_page_token)

    async def check_now_by_provider_refund_id(
        self, provider: ProviderName, refund_id: str, *, reason: str = "provider webhook"
    ) -> int:
        """Tell the running refund that the provider knows as ``refund_id`` to read its status
        now (the `check_now` signal), as a provider's webhook about that refund asks. Returns
        how many workflows were signalled: 0 for an id no running refund has indexed (unknown,
        finished, or just submitted: visibility is eventually consistent, so the caller may
        look again shortly). Harmless to repeat."""
        query = " AND ".join(
            [
                f'WorkflowType="{WORKFLOW_TYPE}"',
                f'RefundProvider="{provider.value}"',
                f"RefundProviderRefundId={_quoted(refund_id)}",
                'ExecutionStatus="Running"',
            ]
        )
        workflow_ids = {
            execution.id async for execution in self.client.list_workflows(query, limit=10)
        }
        signalled = 0
        for workflow_id in sorted(workflow_ids):
            # No run id: a refund that continued as new is signalled in its current run.
            handle = self.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id)
            try:
                await handle.signal(RefundWorkflow.check_now, CheckNow(reason=reason))
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                # It ended after visibility listed it: nothing left to check.
                continue
            signalled += 1
        return signalled

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """Temporal answers a health check within ``timeout_s``."""
        try:
            return await self.client.service_client.check_health(
                timeout=timedelta(seconds=timeout_s)
            )
        except (RPCError, RuntimeError):
            return False


def _memo(request: RefundRequest, started_by: str | None = None) -> dict[str, Any]:
    """What a start records beside the input: the fingerprint (idempotency), the amount
    (for `list`) and, when known, who started it."""
    memo: dict[str, Any] = {
        "fingerprint": request.fingerprint(),
        "amount_minor": request.amount_minor,
        "currency": request.currency,
    }
    if started_by is not None:
        memo["started_by"] = started_by
    return memo


def _list_query(
    state: RefundState | None, provider: ProviderName | None, payment_id: str | None
) -> str:
    clauses = [f'WorkflowType="{WORKFLOW_TYPE}"']
    if state is not None:
        clauses.append(f'RefundState="{state.value}"')
    if provider is not None:
        clauses.append(f'RefundProvider="{provider.value}"')
    if payment_id is not None:
        clauses.append(f"RefundPaymentId={_quoted(payment_id)}")
    return " AND ".join(clauses)


def _quoted(value: str) -> str:
    """A visibility query string literal: backslashes and double quotes escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def _list_item(execution: WorkflowExecution) -> RefundListItem:
    attrs = execution.typed_search_attributes
    memo = await execution.memo()
    amount_minor, currency = memo.get("amount_minor"), memo.get("currency")
    amount = describe_amount(
        amount_minor if isinstance(amount_minor, int) else None,
        currency if isinstance(currency, str) else None,
    )
    return RefundListItem(
        key=execution.id.removeprefix(WORKFLOW_ID_PREFIX),
        workflow_id=execution.id,
        state=attrs.get(REFUND_STATE),
        provider=attrs.get(REFUND_PROVIDER),
        payment_id=attrs.get(REFUND_PAYMENT_ID),
        amount=amount,
        execution_status=execution.status.name if execution.status else "UNKNOWN",
        started_at=execution.start_time,
    )


def _search_attributes(request: RefundRequest) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(REFUND_STATE, RefundState.VALIDATING.value),
            SearchAttributePair(REFUND_PROVIDER, request.provider.value),
            SearchAttributePair(REFUND_PAYMENT_ID, request.payment_id),
        ]
    )


def options_from_settings(settings: Settings) -> RefundOptions:
    return RefundOptions(
        poll_initial_s=settings.refunds_poll_initial_s,
        poll_max_s=settings.refunds_poll_max_s,
        attention_after_s=settings.refunds_attention_after_s,
        call_timeout_s=settings.refunds_call_timeout_s,
        reconcile_settle_s=settings.refunds_reconcile_settle_s,
        reconcile_lookups=settings.refunds_reconcile_lookups,
        events_retry_initial_s=settings.refunds_events_retry_initial_s,
        events_retry_max_s=settings.refunds_events_retry_max_s,
        events_give_up_after_s=settings.refunds_events_give_up_after_s,
    )


def _differing_fields(existing: RefundRequest, new: RefundRequest) -> list[str]:
    """The request fields (model names, in model order) whose values differ."""
    return [
        name
        for name in RefundRequest.model_fields
        if name != "idempotency_key" and getattr(existing, name) != getattr(new, name)
    ]


def _join(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(names) < 2:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _not_found(err: RPCError, key: str) -> RefundClientError:
    if err.status == RPCStatusCode.NOT_FOUND:
        return RefundNotFoundError(f"no refund with key {key!r}")
    if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return TemporalUnavailableError(
            f"Temporal did not answer for refund {key!r}: {err.message}"
        )
    return RefundClientError(f"Temporal error for refund {key!r}: {err.message}")
