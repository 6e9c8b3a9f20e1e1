"""RFC 9457 problem details: every error the API answers, and the one table mapping domain
errors to them.

Each kind of error has a stable ``type`` URI (``urn:refunds:problem:<kind>``): clients branch
on it, never on ``title`` or ``detail``, which are for people. Handlers raise domain errors
(``IdempotencyConflictError``, ``RefundNotFoundError``, ...) or :class:`ApiProblem`; the
handlers installed by :func:`install_problem_handlers` turn them into
``application/problem+json`` answers, FastAPI's own 422/404/405 included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from providers.errors import InvalidRequestError
from starter.client import (
    IdempotencyConflictError,
    RefundClientError,
    RefundNotFoundError,
    RefundTooLateError,
    ResolutionRefusedError,
    TemporalUnavailableError,
)

log = logging.getLogger("refunds.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:refunds:problem:"


class ProblemKind(StrEnum):
    VALIDATION = "validation"
    CONFLICT = "conflict"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    REFUSED = "refused"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @property
    def type_uri(self) -> str:
        return f"{TYPE_PREFIX}{self.value}"


@dataclass(frozen=True)
class KindInfo:
    status: int
    title: str


KINDS: Mapping[ProblemKind, KindInfo] = {
    ProblemKind.VALIDATION: KindInfo(422, "The request is not valid"),
    ProblemKind.CONFLICT: KindInfo(409, "The idempotency key is used by a different request"),
    ProblemKind.NOT_FOUND: KindInfo(404, "Not found"),
    ProblemKind.METHOD_NOT_ALLOWED: KindInfo(405, "Method not allowed"),
    ProblemKind.UNAUTHORIZED: KindInfo(401, "A valid API key is required"),
    ProblemKind.FORBIDDEN: KindInfo(403, "The API key lacks the scope this needs"),
    ProblemKind.REFUSED: KindInfo(409, "The refund refused the request"),
    ProblemKind.PAYLOAD_TOO_LARGE: KindInfo(413, "The request body is too large"),
    ProblemKind.UNAVAILABLE: KindInfo(503, "Temporal is not reachable"),
    ProblemKind.INTERNAL: KindInfo(500, "Internal error"),
}


class FieldError(BaseModel):
    """One bad input: where (``["body", "amount_minor"]``, ``["header", "Idempotency-Key"]``)
    and what is wrong with it."""

    model_config = ConfigDict(frozen=True)

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(description="Stable URI of the kind of error: urn:refunds:problem:<kind>")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="validation: each bad field")
    fields: list[str] | None = Field(
        default=None, description="conflict: the request fields that differ"
    )


class ApiProblem(Exception):
    """Raised by handlers and dependencies: answered as the problem of ``kind``."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[FieldError] | None = None,
        fields: Sequence[str] | None = None,
    ) -> None:
        super().__init__(detail or KINDS[kind].title)
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None
        self.fields = list(fields) if fields is not None else None


def problem_response(
    kind: ProblemKind,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] | None = None,
    fields: Sequence[str] | None = None,
) -> JSONResponse:
    info = KINDS[kind]
    problem = Problem(
        type=kind.type_uri,
        title=info.title,
        status=info.status,
        detail=detail,
        instance=instance,
        errors=list(errors) if errors is not None else None,
        fields=list(fields) if fields is not None else None,
    )
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=info.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def field_errors(
    errors: Sequence[Any],
    *,
    prefix: Sequence[str | int] = (),
    rename: Mapping[str, str] | None = None,
) -> list[FieldError]:
    """Pydantic's error list as :class:`FieldError` s, never echoing the input (it may be
    large, or hold what the caller should not see again in a log). ``prefix`` places errors of
    a model validated by hand (``["body"]``); ``rename`` maps a model field to where the
    caller sent it (``idempotency_key`` -> ``["header", "Idempotency-Key"]``)."""
    found: list[FieldError] = []
    for error in errors:
        loc: list[str | int] = [p if isinstance(p, int) else str(p) for p in error["loc"]]
        if loc and rename and isinstance(loc[0], str) and loc[0] in rename:
            loc = [*rename[loc[0]].split("."), *loc[1:]]
        else:
            loc = [*prefix, *loc]
        message = str(error["msg"]).removeprefix("Value error, ")
        found.append(FieldError(loc=loc, msg=message, type=str(error["type"])))
    return found


def describe_field_errors(errors: Sequence[FieldError]) -> str:
    """The problem's one-line detail: ``body.currency: ...; header.Idempotency-Key: ...``."""
    return "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)


# Domain error -> problem kind. Order matters: subclasses before their bases.
DOMAIN_ERRORS: tuple[tuple[type[Exception], ProblemKind], ...] = (
    (IdempotencyConflictError, ProblemKind.CONFLICT),
    (RefundNotFoundError, ProblemKind.NOT_FOUND),
    (RefundTooLateError, ProblemKind.REFUSED),
    (ResolutionRefusedError, ProblemKind.REFUSED),
    (TemporalUnavailableError, ProblemKind.UNAVAILABLE),
    (InvalidRequestError, ProblemKind.VALIDATION),
)

_UNAVAILABLE_RPC = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


def kind_of(err: Exception) -> ProblemKind:
    for error_type, kind in DOMAIN_ERRORS:
        if isinstance(err, error_type):
            return kind
    if isinstance(err, RPCError) and err.status in _UNAVAILABLE_RPC:
        return ProblemKind.UNAVAILABLE
    return ProblemKind.INTERNAL


def _detail_of(err: Exception, kind: ProblemKind) -> str:
    if isinstance(err, InvalidRequestError):
        return err.message
    if kind is ProblemKind.INTERNAL:
        if isinstance(err, RefundClientError):
            # The starter's errors are one line written for people (no payloads, no keys).
            return str(err)
        # Never an unknown exception's text: it could carry anything. The log has it.
        return "the request could not be completed; the error is logged"
    if kind is ProblemKind.UNAVAILABLE:
        return "Temporal did not answer; retry later"
    return str(err)


def _path(request: Request) -> str:
    return request.url.path


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return problem_response(
            exc.kind,
            exc.detail,
            instance=_path(request),
            headers=exc.headers,
            errors=exc.errors,
            fields=exc.fields,
        )

    async def on_request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        return problem_response(
            ProblemKind.VALIDATION,
            describe_field_errors(errors),
            instance=_path(request),
            errors=errors,
        )

    async def on_model_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError)
        errors = field_errors(exc.errors(), prefix=["body"])
        return problem_response(
            ProblemKind.VALIDATION,
            describe_field_errors(errors),
            instance=_path(request),
            errors=errors,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's "There was an error parsing the body" (not UTF-8, say): bad input.
            message = str(exc.detail)
            return problem_response(
                ProblemKind.VALIDATION,
                f"body: {message}",
                instance=_path(request),
                errors=[FieldError(loc=["body"], msg=message, type="body_unreadable")],
            )
        kind = {
            404: ProblemKind.NOT_FOUND,
            405: ProblemKind.METHOD_NOT_ALLOWED,
            401: ProblemKind.UNAUTHORIZED,
            403: ProblemKind.FORBIDDEN,
            413: ProblemKind.PAYLOAD_TOO_LARGE,
            422: ProblemKind.VALIDATION,
        }.get(exc.status_code, ProblemKind.INTERNAL)
        detail = None if kind is ProblemKind.INTERNAL else str(exc.detail)
        return problem_response(
            kind, detail, instance=_path(request), headers=getattr(exc, "headers", None)
        )

    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        kind = kind_of(exc)
        if kind is ProblemKind.INTERNAL:
            log.error("%s %s failed", request.method, _path(request), exc_info=exc)
        fields = exc.fields if isinstance(exc, IdempotencyConflictError) else None
        headers = {"Retry-After": "5"} if kind is ProblemKind.UNAVAILABLE else None
        detail = _detail_of(exc, kind)
        errors = None
        if isinstance(exc, InvalidRequestError):
            # The provider's offline checks judge the request as a whole.
            errors = [FieldError(loc=["body"], msg=detail, type="invalid_request")]
        return problem_response(
            kind,
            detail,
            instance=_path(request),
            fields=fields,
            headers=headers,
            errors=errors,
        )

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(ValidationError, on_model_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RefundClientError, on_domain)
    app.add_exception_handler(InvalidRequestError, on_domain)
    app.add_exception_handler(RPCError, on_domain)
    app.add_exception_handler(Exception, on_domain)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of a route's problem answers (problem+json only)."""
    described = {info.status: info.title for info in KINDS.values()}
    described[409] = "Idempotency conflict, or the refund refused it (too late, not resolvable)"
    return {
        status: {
            "description": described.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
