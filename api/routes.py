"""The routes: `/v1/refunds` (start, status with long-poll, list, cancel, resolve) and the
health probes. Each only starts, queries or updates refund workflows through the service
(``RefundClient``); errors are raised as domain errors and answered by ``api.problems``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode

from api.auth import Caller, caller
from api.keys import Scope
from api.models import (
    CancelBody,
    Health,
    RefundAccepted,
    RefundCreate,
    RefundList,
    RefundSummary,
    ResolveBody,
)
from api.problems import (
    ApiProblem,
    FieldError,
    ProblemKind,
    describe_field_errors,
    field_errors,
    problem_responses,
)
from core.models import (
    IdempotencyKey,
    ProviderName,
    RefundRequest,
    RefundState,
    RefundStatus,
)
from starter.client import RefundPage, StartedRefund
from workflows.models import CancelAnswer, CancelRequest, ResolveAnswer, ResolveRequest

log = logging.getLogger("refunds.api")

# `?wait=` is capped here; the status is asked for this often while waiting.
MAX_WAIT_S = 60.0
WAIT_POLL_S = 0.25


class RefundService(Protocol):
    """What the routes need of ``starter.client.RefundClient`` (tests pass a fake)."""

    async def start(
        self,
        request: RefundRequest,
        traceparent: str | None = None,
        *,
        started_by: str | None = None,
    ) -> StartedRefund: ...

    async def status(self, key: str) -> RefundStatus: ...

    async def list_page(
        self,
        *,
        state: RefundState | None = None,
        provider: ProviderName | None = None,
        payment_id: str | None = None,
        page_size: int = 50,
        page_token: bytes | None = None,
    ) -> RefundPage: ...

    async def request_cancel(self, key: str, reason: str) -> CancelAnswer: ...

    async def resolve(self, key: str, request: ResolveRequest) -> ResolveAnswer: ...

    async def reachable(self, timeout_s: float = 2.0) -> bool: ...


def service(request: Request) -> RefundService:
    """The connected service, or 503 while Temporal has not been reached yet."""
    found: RefundService | None = request.app.state.service
    if found is None:
        raise ApiProblem(
            ProblemKind.UNAVAILABLE,
            "not connected to Temporal yet; retry later",
            headers={"Retry-After": "5"},
        )
    return found


Service = Annotated[RefundService, Depends(service)]
Key = Annotated[IdempotencyKey, Path(description="The refund's idempotency key.")]
Reader = Annotated[Caller, Security(caller, scopes=[Scope.READ.value])]
Writer = Annotated[Caller, Security(caller, scopes=[Scope.WRITE.value])]
Operator = Annotated[Caller, Security(caller, scopes=[Scope.OPERATE.value])]

refunds = APIRouter(prefix="/v1/refunds", tags=["refunds"])
health = APIRouter(tags=["health"])

# Every /v1 route may answer these.
COMMON = (401, 403, 422, 503)


@refunds.post(
    "",
    status_code=201,
    response_model=RefundAccepted,
    summary="Start a refund (idempotent by the Idempotency-Key header)",
    responses={
        200: {
            "model": RefundAccepted,
            "description": "The same key and request again: the first answer, unchanged",
        },
        **problem_responses(*COMMON, 409, 413),
    },
)
async def create_refund(
    who: Writer,
    service: Service,
    body: RefundCreate,
    response: Response,
    idempotency_key: Annotated[
        IdempotencyKey,
        Header(
            alias="Idempotency-Key",
            description="The refund's key: the same key and request attach to one refund.",
        ),
    ],
    traceparent: Annotated[
        str | None, Header(description="W3C trace context to continue (optional).")
    ] = None,
) -> RefundAccepted:
    try:
        fields = {**body.model_dump(), "idempotency_key": idempotency_key}
        if fields.get("notify_url") is None and who.notify_url is not None:
            # The key's default endpoint, as if the caller had sent it.
            fields["notify_url"] = who.notify_url
        request = RefundRequest.model_validate(fields)
    except ValidationError as err:
        raise _invalid(err, rename={"idempotency_key": "header.Idempotency-Key"}) from None
    started = await service.start(request, traceparent, started_by=who.name)
    if started.created:
        log.info("refund %s started by API key %s", request.idempotency_key, who.name)
    else:
        response.status_code = 200
    return RefundAccepted(
        key=request.idempotency_key,
        workflow_id=request.workflow_id,
        status_url=f"/v1/refunds/{request.idempotency_key}",
        request=request,
    )


@refunds.get(
    "/{key}",
    response_model=RefundStatus,
    summary="A refund's status; `wait` long-polls until it is final or its state changes",
    responses=problem_responses(*COMMON, 404),
)
async def get_refund(
    who: Reader,
    service: Service,
    key: Key,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description=(
                "Seconds (at most 60) to wait for the refund to become final or change "
                "state (or provider status) before answering; 0 answers at once."
            ),
        ),
    ] = 0,
) -> RefundStatus:
    first = await service.status(key)
    if wait <= 0 or first.is_final:
        return first
    deadline = time.monotonic() + wait
    while True:
        await asyncio.sleep(max(0.0, min(WAIT_POLL_S, deadline - time.monotonic())))
        current = await service.status(key)
        changed = (current.state, current.provider_status) != (first.state, first.provider_status)
        if current.is_final or changed or time.monotonic() >= deadline:
            return current


@refunds.get(
    "",
    response_model=RefundList,
    summary="Refunds from the visibility store, newest first, a page at a time",
    responses=problem_responses(*COMMON),
)
async def list_refunds(
    who: Reader,
    service: Service,
    state: RefundState | None = None,
    provider: ProviderName | None = None,
    payment_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: Annotated[
        str | None,
        Query(min_length=1, max_length=4096, description="`next_page_token` of the last page"),
    ] = None,
) -> RefundList:
    token = _decode_token(page_token) if page_token is not None else None
    try:
        page = await service.list_page(
            state=state,
            provider=provider,
            payment_id=payment_id,
            page_size=page_size,
            page_token=token,
        )
    except RPCError as err:
        # A token with a valid check that the server still cannot read (made to pass it).
        if token is not None and err.status in (
            RPCStatusCode.INVALID_ARGUMENT,
            RPCStatusCode.UNKNOWN,
        ):
            raise _bad_page_token() from None
        raise
    return RefundList(
        items=[RefundSummary.model_validate(item, from_attributes=True) for item in page.items],
        next_page_token=(_encode_token(page.next_page_token) if page.next_page_token else None),
    )


@refunds.post(
    "/{key}/cancel",
    response_model=CancelAnswer,
    summary="Cancel a refund and wait for the answer (the `request_cancel` update)",
    responses=problem_responses(*COMMON, 404, 409, 413),
)
async def cancel_refund(
    who: Operator, service: Service, key: Key, body: CancelBody
) -> CancelAnswer:
    reason = f"{body.reason} (by {who.name})"
    # The workflow's own payload model has the last word on the reason.
    CancelRequest(reason=reason)
    answer = await service.request_cancel(key, reason)
    log.info("refund %s: cancel requested by API key %s: %s", key, who.name, answer.note)
    return answer


@refunds.post(
    "/{key}/resolve",
    response_model=ResolveAnswer,
    summary="An operator's decision for a refund in NEEDS_ATTENTION (the `resolve` update)",
    responses=problem_responses(*COMMON, 404, 409, 413),
)
async def resolve_refund(
    who: Operator, service: Service, key: Key, body: ResolveBody
) -> ResolveAnswer:
    try:
        resolution = ResolveRequest.model_validate({**body.model_dump(), "by": who.name})
    except ValidationError as err:
        raise _invalid(err) from None
    answer = await service.resolve(key, resolution)
    log.info("refund %s resolved (%s) by API key %s", key, resolution.action.value, who.name)
    return answer


@health.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@health.get(
    "/readyz",
    response_model=Health,
    summary="Temporal is reachable",
    responses=problem_responses(503),
)
async def readyz(request: Request) -> Health:
    found: RefundService | None = request.app.state.service
    if found is None or not await found.reachable():
        raise ApiProblem(
            ProblemKind.UNAVAILABLE,
            "Temporal is not reachable",
            headers={"Retry-After": "5"},
        )
    return Health(status="ready")


def _invalid(err: ValidationError, rename: dict[str, str] | None = None) -> ApiProblem:
    errors = field_errors(err.errors(), prefix=["body"], rename=rename)
    return ApiProblem(ProblemKind.VALIDATION, describe_field_errors(errors), errors=errors)


def _bad_page_token() -> ApiProblem:
    message = "not a page token this service gave out"
    return ApiProblem(
        ProblemKind.VALIDATION,
        f"query.page_token: {message}",
        errors=[FieldError(loc=["query", "page_token"], msg=message, type="page_token")],
    )


# A page token is Temporal's, with a check of its own after it: a token this service did not
# give out is refused here (422) instead of reaching the server, which answers some garbage
# with an internal error only after the client's retries.
TOKEN_CHECK_BYTES = 8


def _token_check(token: bytes) -> bytes:
    return hashlib.sha256(b"refunds page token\0" + token).digest()[:TOKEN_CHECK_BYTES]


def _encode_token(token: bytes) -> str:
    return base64.urlsafe_b64encode(token + _token_check(token)).decode()


def _decode_token(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise _bad_page_token() from None
    token, check = raw[:-TOKEN_CHECK_BYTES], raw[-TOKEN_CHECK_BYTES:]
    if not token or not hmac.compare_digest(check, _token_check(token)):
        raise _bad_page_token()
    return token
