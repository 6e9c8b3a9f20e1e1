"""`RefundEventWorkflow`: delivers one outcome event of a refund to its ``notify_url``.

Started by `RefundWorkflow` as a child that outlives it (parent close policy ABANDON): a
receiver that is down never holds the refund open, blocks it or changes it. It tries once per
activity execution and waits on durable timers in between (``events_retry_initial_s``
doubling up to ``events_retry_max_s``), so every attempt and its error show in the
``delivery`` query (and in the refund's status), until delivered or the event is
``events_give_up_after_s`` old (3 days by default). At-least-once: a receiver may see an
event again (a lost 2xx); the ``webhook-id`` header is the same on every attempt.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.events import DeliverEventInput, EventActivities
    from core.models import EventDelivery, OutcomeEvent
    from workflows.models import EventInput

# One attempt per activity execution; a stuck receiver is cut off by this.
ATTEMPT_TIMEOUT = timedelta(seconds=60)


@workflow.defn(name="RefundEventWorkflow")
class RefundEventWorkflow:
    @workflow.init
    def __init__(self, params: EventInput) -> None:
        self._event = params.event.model_copy()

    @workflow.query(name="delivery")
    def delivery(self) -> OutcomeEvent:
        return self._event

    @workflow.run
    async def run(self, params: EventInput) -> OutcomeEvent:
        options = params.options
        give_up_at = self._event.created_at + timedelta(seconds=options.events_give_up_after_s)
        delay = timedelta(seconds=options.events_retry_initial_s)
        longest = timedelta(seconds=options.events_retry_max_s)
        while True:
            self._event.attempts += 1
            self._event.next_attempt_at = None
            try:
                await workflow.execute_activity_method(
                    EventActivities.deliver,
                    DeliverEventInput(
                        event_id=self._event.event_id, url=params.url, body=params.body
                    ),
                    start_to_close_timeout=ATTEMPT_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    summary=f"deliver {self._event.type}, attempt {self._event.attempts}",
                )
            except ActivityError as err:
                cause = err.cause
                self._event.last_error = (
                    cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                )
                refused = isinstance(cause, ApplicationError) and cause.non_retryable
                if refused or workflow.now() + delay > give_up_at:
                    self._event.delivery = EventDelivery.GIVEN_UP
                    workflow.logger.warning(
                        "outcome event %s given up after %d attempts: %s",
                        self._event.event_id,
                        self._event.attempts,
                        self._event.last_error,
                    )
                    return self._event
                self._event.next_attempt_at = workflow.now() + delay
                await workflow.sleep(delay, summary="wait before delivering again")
                delay = min(delay * 2, longest)
                continue
            self._event.delivery = EventDelivery.DELIVERED
            self._event.delivered_at = workflow.now()
            self._event.last_error = None
            return self._event
