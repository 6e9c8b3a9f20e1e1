"""The Mews simulator's general webhooks: a ``PaymentUpdated`` event whenever a refund's state
changes, POSTed to a URL set with ``POST /_sim/webhooks``.

What Mews documents (PROVIDERS.md, Mews; Mews' events/wh-faq): the general webhook's body is
``{EnterpriseId, IntegrationId, Events: [{Discriminator, Value}]}``, a ``PaymentUpdated``
event's ``Value`` is ``{Id}`` (the payment, here the refund, that changed: nothing more, read
it with ``payments/getAll``); the receiver is authenticated by a secret token in the URL it
gave; Mews wants a 2xx within 5 s and retries later otherwise.

Where the docs are silent, the harshest plausible reading:

* **At least once.** With ``duplicates`` on (the default) every message is delivered twice,
  the copy right after the first delivery's answer: a receiver must be idempotent.
* **As soon as the change is made.** A refund's creation is announced while the refund call
  is still being answered, so the receiver may hear of a refund before the client that made
  it knows its id (nothing can find it yet).
* **No order.** Each message goes in its own task; a later change may arrive first.
* **Retries.** No 2xx within 5 s (or no connection) is a failed delivery, tried again
  ``retry_delay_s`` later, ``max_attempts`` tries in all (Mews says only "later").
* One event per message (Mews may put several in one; a receiver reads the list anyway).

Nothing is sent while no URL is set: the simulator then behaves exactly as without this
module. The URL holds the receiver's secret, so it is never shown whole (``GET
/_sim/webhooks`` shows it with the last path segment masked) and deliveries record no URL.
The configuration survives ``POST /_sim/reset`` (like credentials); the delivery log does not.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

# How long Mews waits for a 2xx (PROVIDERS.md, Mews).
ANSWER_WITHIN_S = 5.0
DISCRIMINATOR = "PaymentUpdated"


class WebhookConfig(BaseModel):
    """Body of ``POST /_sim/webhooks``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=8, max_length=2048)
    duplicates: bool = True
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_delay_s: float = Field(default=1.0, ge=0, le=600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = httpx.URL(value)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("url must be an absolute http(s) URL")
        return value


def masked(url: str) -> str:
    """The URL with its last path segment (where Mews receivers keep the token) masked."""
    parsed = httpx.URL(url)
    head, _, last = parsed.path.rstrip("/").rpartition("/")
    path = f"{head}/***" if last else parsed.path
    return str(parsed.copy_with(path=path, query=None, fragment=None))


@dataclass
class Delivery:
    """One POST of one message: which copy and try, and what the receiver answered."""

    message_id: str
    refund_ids: list[str]
    copy: int
    attempt: int
    sent_at: datetime
    answered_at: datetime | None = None
    status: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "refund_ids": self.refund_ids,
            "copy": self.copy,
            "attempt": self.attempt,
            "sent_at": self.sent_at.isoformat(),
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "status": self.status,
            "error": self.error,
        }


class WebhookSender:
    """Sends ``PaymentUpdated`` events in the background of the simulator's event loop."""

    def __init__(self, *, enterprise_id: str, integration_id: str) -> None:
        self.enterprise_id = enterprise_id
        self.integration_id = integration_id
        self._lock = threading.Lock()
        self._config: WebhookConfig | None = None
        self._deliveries: list[Delivery] = []
        # Running deliveries, kept referenced until done.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> WebhookConfig | None:
        return self._config

    def configure(self, config: WebhookConfig | None) -> None:
        with self._lock:
            self._config = config

    def clear_log(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            config = self._config
            return {
                "url": masked(config.url) if config else None,
                "duplicates": config.duplicates if config else None,
                "max_attempts": config.max_attempts if config else None,
                "retry_delay_s": config.retry_delay_s if config else None,
                "deliveries": [d.as_json() for d in self._deliveries],
            }

    def payment_updated(self, *refund_ids: str) -> None:
        """Announce that these refunds changed: one message each, sent in the background.
        Call from the event loop serving the simulator; does nothing without a URL."""
        config = self._config
        if config is None:
            return
        loop = asyncio.get_running_loop()
        for refund_id in refund_ids:
            task = loop.create_task(self._send(config, refund_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def body(self, refund_id: str) -> dict[str, Any]:
        return {
            "EnterpriseId": self.enterprise_id,
            "IntegrationId": self.integration_id,
            "Events": [{"Discriminator": DISCRIMINATOR, "Value": {"Id": refund_id}}],
        }

    async def _send(self, config: WebhookConfig, refund_id: str) -> None:
        message_id = str(uuid.uuid4())
        body = self.body(refund_id)
        async with httpx.AsyncClient(timeout=ANSWER_WITHIN_S) as client:
            for copy in range(1, 3 if config.duplicates else 2):
                await self._deliver(client, config, message_id, refund_id, body, copy)

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        config: WebhookConfig,
        message_id: str,
        refund_id: str,
        body: dict[str, Any],
        copy: int,
    ) -> None:
        for attempt in range(1, config.max_attempts + 1):
            delivery = Delivery(message_id, [refund_id], copy, attempt, datetime.now(UTC))
            with self._lock:
                self._deliveries.append(delivery)
            started = time.monotonic()
            try:
                response = await client.post(config.url, json=body)
            except httpx.HTTPError as err:
                # The class only: an error's text may quote the URL, which holds the token.
                delivery.error = type(err).__name__
            else:
                delivery.status = response.status_code
                if time.monotonic() - started > ANSWER_WITHIN_S:
                    delivery.error = "answered after 5 s"
            delivery.answered_at = datetime.now(UTC)
            answered = delivery.status is not None and 200 <= delivery.status < 300
            if answered and delivery.error is None:
                return
            if attempt < config.max_attempts:
                await asyncio.sleep(config.retry_delay_s)
