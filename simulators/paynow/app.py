"""The Paynow v3 simulator: the refund routes, request authentication and ``/_sim`` controls.

Every v3 call is checked as Paynow documents it, in this order:

1. ``Api-Key`` missing or wrong -> 401 ``UNAUTHORIZED``;
2. ``Idempotency-Key`` missing or longer than 45 characters -> 400 ``VALIDATION_ERROR``;
3. ``Signature`` missing or not the v3 signature of the received ``Api-Key`` and
   ``Idempotency-Key`` headers, query parameters and raw body -> 401 ``UNAUTHORIZED``;
4. path and body shapes (payment id pattern, amount, reason, transfers) -> 400
   ``VALIDATION_ERROR`` naming the field.

Business rules and the refund state machine live in :mod:`simulators.paynow.state`.

Besides the shared control routes (:func:`simulators.common.control_routes`),
``POST /_sim/payments`` creates a payment: JSON ``{"scenario", "amount_minor"?, "currency"?,
"status"?, "method"?: "card" | "blik", "refunded_minor"?}`` -> 201 ``{"payment_id",
"currency", "amount_minor", "status", "method", "scenario", "refunded_minor"}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.common import CONTROL_PREFIX, FaultMiddleware, SimulatorCore, control_routes
from simulators.paynow.seed import (
    DEFAULT_AMOUNT_MINOR,
    DEFAULT_API_KEY,
    DEFAULT_CURRENCY,
    DEFAULT_SIGNATURE_KEY,
    SCENARIOS,
)
from simulators.paynow.state import Answer, PaynowState, error_answer

PAYMENT_ID = re.compile(r"^([a-zA-Z0-9]{4}(-[a-zA-Z0-9]{3}){3})$")
REASONS = frozenset({"RMA", "REFUND_BEFORE_14", "REFUND_AFTER_14", "OTHER"})
MAX_AMOUNT = 9_999_999_999
MAX_TRANSFER_AMOUNT = 100_000_000
MAX_IDEMPOTENCY_KEY = 45


def paynow_error_body(status: int, message: str) -> dict[str, Any]:
    """The error body faults answer with (``FaultMiddleware``'s ``error_body``)."""
    return error_answer(status, message)[1]


def _request_id_header() -> dict[str, str]:
    return {"X-Request-Id": str(uuid.uuid4())}


def _respond(answer: Answer) -> Response:
    status, body = answer
    return JSONResponse(body, status, headers=_request_id_header())


def expected_signature(
    *,
    api_key: str,
    idempotency_key: str,
    parameters: dict[str, list[str]],
    body: str,
    signature_key: str,
) -> str:
    """What the ``Signature`` of a v3 request with these received parts must be."""
    message = json.dumps(
        {
            "headers": {"Api-Key": api_key, "Idempotency-Key": idempotency_key},
            "parameters": {name: parameters[name] for name in sorted(parameters)},
            "body": body,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    mac = hmac.new(signature_key.encode(), message.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _is_amount(value: object, maximum: int, *, positive: bool) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (value > 0 if positive else value >= 0) and value <= maximum


def validate_create_body(data: object) -> str | None:
    """The first field problem of a create-refund body, or ``None`` when it is well formed."""
    if not isinstance(data, dict):
        return "body: must be a JSON object"
    if "amount" not in data:
        return "amount: is required"
    if not _is_amount(data["amount"], MAX_AMOUNT, positive=True):
        return "amount: must be a positive integer of at most 10 digits"
    reason = data.get("reason")
    if reason is not None and reason not in REASONS:
        return f"reason: must be one of {', '.join(sorted(REASONS))}"
    transfers = data.get("transfers")
    if transfers is None:
        return None
    if not isinstance(transfers, list):
        return "transfers: must be an array"
    for index, transfer in enumerate(transfers):
        where = f"transfers[{index}]"
        if not isinstance(transfer, dict):
            return f"{where}: must be an object"
        seller = transfer.get("sellerId")
        if not isinstance(seller, str) or not 1 <= len(seller) <= 15:
            return f"{where}.sellerId: must be a string of 1 to 15 characters"
        for name in ("grossAmount", "feeAmount"):
            if not _is_amount(transfer.get(name), MAX_TRANSFER_AMOUNT, positive=False):
                return f"{where}.{name}: must be an integer from 0 to {MAX_TRANSFER_AMOUNT}"
    return None


class NewPayment(BaseModel):
    """``POST /_sim/payments``."""

    model_config = ConfigDict(extra="forbid")

    scenario: str
    amount_minor: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)] = DEFAULT_AMOUNT_MINOR
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = DEFAULT_CURRENCY
    status: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    method: Literal["card", "blik"] = "card"
    refunded_minor: Annotated[int, Field(ge=0, strict=True)] | None = None


class PaynowSimulator:
    """An in-memory Paynow v3 refunds API behind :class:`FaultMiddleware`."""

    def __init__(
        self, *, api_key: str = DEFAULT_API_KEY, signature_key: str = DEFAULT_SIGNATURE_KEY
    ) -> None:
        self._api_key = api_key
        self._signature_key = signature_key
        self.core = SimulatorCore()
        self.state = PaynowState(self.core)
        routes = [
            Route("/v3/payments/{payment_id}/refunds", self._create_refund, methods=["POST"]),
            Route("/v3/payments/{payment_id}/status", self._payment_status, methods=["GET"]),
            Route("/v3/refunds/{refund_id}/status", self._refund_status, methods=["GET"]),
            Route("/v3/refunds/{refund_id}/cancel", self._cancel_refund, methods=["POST"]),
            Route(f"{CONTROL_PREFIX}/payments", self._add_payment, methods=["POST"]),
            *control_routes(self.core, reset=self.state.reset, payments=self.payments),
        ]
        self.app = FaultMiddleware(
            Starlette(routes=routes),
            core=self.core,
            error_body=paynow_error_body,
            error_headers=_request_id_header,
        )

    def reset(self) -> None:
        """Back to the seeded payments, with no refunds, faults or journal."""
        self.core.reset()
        self.state.reset()

    def payments(self) -> list[dict[str, Any]]:
        return self.state.payments()

    async def _authenticate(self, request: Request) -> tuple[str, str] | Response:
        """``(idempotency key, raw body text)`` of a genuine v3 request, or the refusal."""
        api_key = request.headers.get("Api-Key")
        if api_key is None or not hmac.compare_digest(api_key.encode(), self._api_key.encode()):
            return _respond(error_answer(401, "Missing or invalid Api-Key"))
        idempotency_key = request.headers.get("Idempotency-Key")
        if not idempotency_key:
            return _respond(error_answer(400, "Idempotency-Key: header is required"))
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            return _respond(
                error_answer(400, "Idempotency-Key: must be at most 45 characters long")
            )
        raw = await request.body()
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _respond(error_answer(400, "body: must be UTF-8 encoded JSON"))
        parameters: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            parameters.setdefault(name, []).append(value)
        expected = expected_signature(
            api_key=api_key,
            idempotency_key=idempotency_key,
            parameters=parameters,
            body=body,
            signature_key=self._signature_key,
        )
        signature = request.headers.get("Signature", "")
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return _respond(error_answer(401, "Missing or invalid Signature"))
        return idempotency_key, body

    async def _create_refund(self, request: Request) -> Response:
        checked = await self._authenticate(request)
        if isinstance(checked, Response):
            return checked
        idempotency_key, body = checked
        payment_id = request.path_params["payment_id"]
        if not PAYMENT_ID.match(payment_id):
            return _respond(error_answer(400, "paymentId: must match XXXX-XXX-XXX-XXX"))
        try:
            data: Any = json.loads(body)
        except ValueError:
            return _respond(error_answer(400, "body: must be valid JSON"))
        problem = validate_create_body(data)
        if problem is not None:
            return _respond(error_answer(400, problem))
        # Spacing, key order and null fields do not make a different request.
        meaningful = {name: value for name, value in data.items() if value is not None}
        fingerprint = json.dumps(
            {"operation": "create", "paymentId": payment_id, "body": meaningful}, sort_keys=True
        )
        return _respond(
            self.state.create_refund(
                payment_id,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                amount_minor=data["amount"],
            )
        )

    async def _payment_status(self, request: Request) -> Response:
        checked = await self._authenticate(request)
        if isinstance(checked, Response):
            return checked
        payment_id = request.path_params["payment_id"]
        if not PAYMENT_ID.match(payment_id):
            return _respond(error_answer(400, "paymentId: must match XXXX-XXX-XXX-XXX"))
        return _respond(self.state.payment_status(payment_id))

    async def _refund_status(self, request: Request) -> Response:
        checked = await self._authenticate(request)
        if isinstance(checked, Response):
            return checked
        return _respond(self.state.refund_status(request.path_params["refund_id"]))

    async def _cancel_refund(self, request: Request) -> Response:
        checked = await self._authenticate(request)
        if isinstance(checked, Response):
            return checked
        idempotency_key, body = checked
        refund_id = request.path_params["refund_id"]
        fingerprint = json.dumps({"operation": "cancel", "refundId": refund_id, "body": body})
        return _respond(
            self.state.cancel_refund(
                refund_id, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
        )

    async def _add_payment(self, request: Request) -> Response:
        try:
            spec = NewPayment.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        scenario = SCENARIOS.get(spec.scenario)
        if scenario is None:
            known = ", ".join(sorted(SCENARIOS))
            return JSONResponse(
                {"error": f"unknown scenario {spec.scenario!r}; known: {known}"}, 422
            )
        if spec.refunded_minor is not None and spec.refunded_minor > spec.amount_minor:
            return JSONResponse({"error": "refunded_minor must not exceed amount_minor"}, 422)
        payment = self.state.add_payment(
            scenario,
            amount_minor=spec.amount_minor,
            currency=spec.currency,
            method=spec.method,
            status=spec.status,
            refunded_minor=spec.refunded_minor,
        )
        keys = ("payment_id", "currency", "amount_minor", "status", "method", "scenario")
        return JSONResponse(
            {**{k: payment[k] for k in keys}, "refunded_minor": payment["refunded_minor"]}, 201
        )
