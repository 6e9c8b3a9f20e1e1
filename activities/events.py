"""Delivering a refund's outcome events: one signed HTTP POST per attempt.

Signed per the Standard Webhooks spec with its reference library (``standardwebhooks``):
headers ``webhook-id`` (the event's id, the same on every attempt), ``webhook-timestamp``
(this attempt's time) and ``webhook-signature``. The signing secret
(``REFUNDS_EVENTS_SECRET``, ``whsec_...``) lives on the worker only. One attempt per
activity execution: `RefundEventWorkflow` owns the retries, so each attempt and its error
show in the refund's status.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from pydantic import BaseModel, ConfigDict
from standardwebhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.notify_urls import NotifyUrlError, check_notify_url
from core.settings import Settings

# A receiver's answer body is kept only this long in an error (it is the receiver's text).
ANSWER_EXCERPT = 200
USER_AGENT = "refund-orchestrator-events/1"


class DeliverEventInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    url: str
    body: str


class EventRefusedError(Exception):
    """The event may never be sent to this URL (the address rules): no retry helps."""


class EventActivities:
    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        secret = settings.refunds_events_secret
        self._signer = Webhook(secret.get_secret_value()) if secret is not None else None
        self._allow_private = settings.refunds_events_allow_private
        self._http = http or httpx.AsyncClient(
            timeout=settings.refunds_http_timeout_s,
            follow_redirects=False,  # a redirect could lead anywhere, past the address rules
            headers={"User-Agent": USER_AGENT},
        )

    @activity.defn(name="deliver_refund_event")
    async def deliver(self, params: DeliverEventInput) -> None:
        """One attempt. Raises ``EventRefused`` (non-retryable) when the URL may never be
        used, an ApplicationError saying what the receiver answered otherwise."""
        if self._signer is None:
            raise ApplicationError(
                "the worker has no REFUNDS_EVENTS_SECRET to sign events with: set it "
                "(whsec_ and base64 of 24-64 random bytes) and restart the worker",
                type="EventNotSigned",
            )
        try:
            await check_notify_url(params.url, allow_private=self._allow_private)
        except NotifyUrlError as err:
            raise ApplicationError(str(err), type="EventRefused", non_retryable=True) from None
        now = datetime.now(UTC)
        headers = {
            "webhook-id": params.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(params.event_id, now, params.body),
            "content-type": "application/json",
        }
        try:
            answer = await self._http.post(
                params.url, content=params.body.encode(), headers=headers
            )
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"{type(err).__name__} sending to the receiver: {err}", type="EventNotDelivered"
            ) from None
        if not answer.is_success:
            excerpt = " ".join(answer.text[:ANSWER_EXCERPT].split())
            raise ApplicationError(
                f"the receiver answered HTTP {answer.status_code}"
                + (f": {excerpt}" if excerpt else ""),
                type="EventNotDelivered",
            )

    async def aclose(self) -> None:
        await self._http.aclose()
