"""Provider webhooks in: Mews' general webhook at ``POST /webhooks/mews/{token}``.

Mews authenticates a webhook by a secret token in the URL the receiver registered, wants a
2xx within 5 s and sends again later otherwise (PROVIDERS.md, Mews). Of its events only
``PaymentUpdated`` matters here; its ``Value`` names the payment that changed, ``{Id}``, and a
Mews refund is a payment whose ``Id`` is the refund id the workflow stores and indexes
(``RefundProviderRefundId``). Each such event makes the refund's workflow read the status now
(the ``check_now`` signal) instead of at its next scheduled check; nothing else is believed
from the webhook. So unknown ids, repeats and events of finished refunds change nothing, and
polling stays the fallback for whatever a webhook misses.

* **Token**: compared in constant time (digests of both, so not even its length shows) with
  ``MEWS_WEBHOOK_TOKEN``; a wrong token and an unconfigured one both answer the same 404 as
  any unknown route, so a caller cannot tell which.
* **Time**: the work is bounded by :data:`BUDGET_S`, well inside Mews' 5 s. Visibility is
  eventually consistent, so an id not found is looked up again every :data:`LOOKUP_EVERY_S`
  until the budget is spent (a webhook may announce a refund before the workflow has even
  heard its id), then left to polling. Temporal not reachable: 503, so Mews sends it again.
* **Secrecy**: the token is in the path, so nothing here logs or answers the path: problems
  name :data:`MASKED_PATH`, and :class:`MaskWebhookToken` masks it in uvicorn's access log
  and error log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.alias_generators import to_pascal
from temporalio.service import RPCError

from api.problems import (
    ProblemKind,
    describe_field_errors,
    field_errors,
    problem_response,
    problem_responses,
)
from core.models import ProviderName
from starter.client import RefundClientError

log = logging.getLogger("refunds.api")

MEWS_PATH = "/webhooks/mews/{token}"
MASKED_PATH = "/webhooks/mews/***"
PAYMENT_UPDATED = "PaymentUpdated"
CHECK_REASON = "Mews PaymentUpdated webhook"
# Within Mews' 5 s, with room for the answer.
BUDGET_S = 3.0
LOOKUP_EVERY_S = 0.25
# Refunds looked up at once (a message may hold many events).
CONCURRENCY = 8

_TOKEN_IN_PATH = re.compile(r"(/webhooks/mews/)[^/?#\s\"']+")


class WebhookService(Protocol):
    """What the webhook needs of ``starter.client.RefundClient`` (tests pass a fake)."""

    async def check_now_by_provider_refund_id(
        self, provider: ProviderName, refund_id: str, *, reason: str = ...
    ) -> int: ...


class MewsEvent(BaseModel):
    """One event of a general webhook; ``Value`` is read only for ``PaymentUpdated``."""

    model_config = ConfigDict(alias_generator=to_pascal, extra="ignore", frozen=True)

    discriminator: Annotated[str, Field(min_length=1, max_length=100)]
    value: Any = None


class PaymentUpdatedValue(BaseModel):
    model_config = ConfigDict(alias_generator=to_pascal, extra="ignore", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=100)]


class MewsWebhook(BaseModel):
    """Mews' general webhook message."""

    model_config = ConfigDict(alias_generator=to_pascal, extra="ignore", frozen=True)

    enterprise_id: str | None = None
    integration_id: str | None = None
    events: Annotated[list[MewsEvent], Field(max_length=1000)]


class WebhookAnswer(BaseModel):
    """What was done: ``PaymentUpdated`` events read, refunds told to check now."""

    model_config = ConfigDict(frozen=True)

    payment_updated: int = Field(description="PaymentUpdated events in the message")
    signalled: int = Field(description="running refunds told to read their status now")


webhooks = APIRouter(tags=["webhooks"])


@webhooks.post(
    MEWS_PATH,
    response_model=WebhookAnswer,
    summary="Mews general webhook: PaymentUpdated makes the refund check its status now",
    description=(
        "Authenticated by the secret token in the path (`MEWS_WEBHOOK_TOKEN`); a wrong or "
        "unconfigured token answers 404. Events other than PaymentUpdated are ignored. "
        "Answers within about 3 s; unknown payment ids and repeats are harmless."
    ),
    responses=problem_responses(404, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/MewsWebhook"}}
            },
        }
    },
)
async def mews_webhook(token: str, request: Request) -> JSONResponse:
    if not token_matches(token, request.app.state.mews_webhook_token):
        return problem_response(ProblemKind.NOT_FOUND, "not found", instance=MASKED_PATH)
    try:
        refund_ids = payment_updated_ids(await request.body())
    except ValidationError as err:
        return _invalid(err.errors(), prefix=["body"])
    except _BadEvent as bad:
        return _invalid(bad.errors, prefix=["body", "Events", bad.index, "Value"])
    service: WebhookService | None = request.app.state.service
    if service is None:
        return _unavailable("not connected to Temporal yet")
    try:
        signalled = await check_now(service, refund_ids, budget_s=BUDGET_S)
    except (RPCError, RefundClientError) as err:
        # Mews sends it again later; the refund is polled meanwhile.
        log.warning("Mews webhook: Temporal did not answer (%s)", type(err).__name__)
        return _unavailable("Temporal did not answer")
    log.info(
        "Mews webhook: %d PaymentUpdated event(s), %d refund(s) told to check now",
        len(refund_ids),
        signalled,
    )
    answer = WebhookAnswer(payment_updated=len(refund_ids), signalled=signalled)
    return JSONResponse(answer.model_dump())


class _BadEvent(Exception):
    def __init__(self, index: int, errors: list[Any]) -> None:
        super().__init__(f"event {index}")
        self.index = index
        self.errors = errors


def payment_updated_ids(body: bytes) -> list[str]:
    """The payment ids of the message's ``PaymentUpdated`` events, in order."""
    message = MewsWebhook.model_validate_json(body)
    found: list[str] = []
    for index, event in enumerate(message.events):
        if event.discriminator != PAYMENT_UPDATED:
            continue
        try:
            found.append(PaymentUpdatedValue.model_validate(event.value).id)
        except ValidationError as err:
            raise _BadEvent(index, list(err.errors())) from None
    return found


def _invalid(errors: list[Any], *, prefix: list[str | int]) -> JSONResponse:
    found = field_errors(errors, prefix=prefix)
    return problem_response(
        ProblemKind.VALIDATION, describe_field_errors(found), instance=MASKED_PATH, errors=found
    )


def token_matches(presented: str, configured: SecretStr | None) -> bool:
    """Constant time, whatever the lengths; never true without a configured token."""
    expected = configured.get_secret_value() if configured is not None else ""
    if not expected:
        return False
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


async def check_now(
    service: WebhookService, refund_ids: list[str], *, budget_s: float = BUDGET_S
) -> int:
    """Tell the running refund of each id to check now; ids not found (yet) are looked up
    again until ``budget_s`` is spent. Returns how many workflows were signalled."""
    deadline = time.monotonic() + budget_s
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(refund_id: str) -> int:
        while True:
            async with gate:
                found = await service.check_now_by_provider_refund_id(
                    ProviderName.MEWS, refund_id, reason=CHECK_REASON
                )
            if found or time.monotonic() + LOOKUP_EVERY_S >= deadline:
                return found
            await asyncio.sleep(LOOKUP_EVERY_S)

    # Repeats in one message are one lookup.
    unique = list(dict.fromkeys(refund_ids))
    if not unique:
        return 0
    tasks = [asyncio.create_task(one(refund_id)) for refund_id in unique]
    try:
        done, _ = await asyncio.wait(tasks, timeout=max(0.0, budget_s) + 1.0)
    finally:
        for task in tasks:
            task.cancel()
    # A lookup still hanging past the budget is given up (polling will see the change).
    return sum(task.result() for task in done)


def _unavailable(detail: str) -> JSONResponse:
    return problem_response(
        ProblemKind.UNAVAILABLE, detail, instance=MASKED_PATH, headers={"Retry-After": "5"}
    )


def mask_token(text: str) -> str:
    """``text`` with the token of any Mews webhook path in it masked."""
    return _TOKEN_IN_PATH.sub(r"\1***", text)


class MaskWebhookToken(logging.Filter):
    """Masks the webhook token in a record's message and arguments (uvicorn's access log
    passes the path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_token(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_token(a) if isinstance(a, str) else a for a in record.args)
        return True


# Loggers that may see a request's path: uvicorn's access log and its error log.
MASKED_LOGGERS = ("uvicorn.access", "uvicorn.error")


def install_log_filter() -> None:
    """Mask the token wherever uvicorn logs a path (idempotent)."""
    for name in MASKED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskWebhookToken) for f in logger.filters):
            logger.addFilter(MaskWebhookToken())


def openapi_schemas() -> dict[str, Any]:
    """The request body's schemas, for the OpenAPI document's components."""
    schema = MewsWebhook.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    found: dict[str, Any] = schema.pop("$defs", {})
    found["MewsWebhook"] = schema
    return found
