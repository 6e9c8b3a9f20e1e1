"""The Paynow v3 simulator: the refund routes, request authentication and ``/_sim`` controls.

Every v3 call is checked as Paynow documents it, in this order:

1. ``Api-Key`` missing or wrong -> 401 ``UNAUTHORIZED``;
2. ``Idempotency-Key`` missing or longer than 45 characters -> 400 ``VALIDATION_ERROR``;
3. ``Signature`` missing or not the v3 signature of the received ``Api-Key`` and
   ``Idempotency-Key`` headers, query parameters and raw body -> 401 ``UNAUTHORIZED``;
4. ``Accept`` missing, or admitting no JSON (it may be ``*/*``), on any call, and
   ``Content-Type`` other than ``application/json`` on a call with a body (create refund), or a
   body on a call that takes none (cancel) -> 400 ``VALIDATION_ERROR``. The seed page marks
   both headers required but says nothing of what a request without them gets: the harshest
   plausible reading, a validation refusal (not 406/415, which Paynow documents nowhere);
5. path and body shapes (payment id and refund id pattern ``XXXX-XXX-XXX-XXX``, amount,
   reason, transfers) -> 400 ``VALIDATION_ERROR`` naming the field. The refund id pattern is
   not on the seed page: refund ids are held to the payment id's documented pattern (the
   harsh reading; Paynow's own refund ids have that shape).

Business rules and the refund state machine live in :mod:`simulators.paynow.state`; every
error body carries only errorTypes listed there.

**Shops.** "Each shop has its own Api-Key and Signature-Key" (PROVIDERS.md): the simulator
holds several shops (:class:`PaynowShop`), each with its own key pair and its own payments
and refunds. The ``Api-Key`` picks the shop, its Signature-Key must have signed the request,
and another shop's payment or refund is 404 ``NOT_FOUND``, as an unknown one. Idempotency keys
are kept per shop. The journal records each request's shop and a digest of its Api-Key, never
a key. The seeded shop is ``default`` (the demo keys, every seeded payment);
``PUT /_sim/shops/{name}`` ``{"api_key", "signature_key"}`` adds a shop or replaces its keys
(a rotation: the old ones are refused from then on); ``GET /_sim/shops`` lists the shops, keys
as digests; ``POST /_sim/payments`` takes ``"shop"`` (default ``default``).

Besides the shared control routes (:func:`simulators.common.control_routes`):

* ``POST /_sim/payments`` creates a payment: JSON ``{"scenario", "amount_minor"?, "currency"?,
  "status"?, "method"?: "card" | "blik", "refunded_minor"?, "marketplace"?, "voucher_minor"?}``
  -> 201 ``{"payment_id", "currency", "amount_minor", "status", "method", "scenario",
  "refunded_minor", "marketplace", "voucher_minor"}``.
* ``POST /_sim/payments/{payment_id}/fund``: the merchant balance now covers this payment:
  its awaiting refunds leave NEW on their next read (PENDING, then SUCCESSFUL), and later
  refunds are neither kept waiting nor refused for the balance -> 200 ``{"payment_id",
  "released_refund_ids"}``; 404 for an unknown payment.
* ``POST /_sim/refunds/settle`` (body optional, ``{"status": "SUCCESSFUL" | "FAILED"}``,
  default SUCCESSFUL): every refund of scenario ``held`` not final yet takes that status now
  and keeps it on later reads -> 200 ``{"settled", "status"}`` (``settled``: how many).
* ``POST /_sim/clock`` with ``{"advance_s": N}`` (N >= 0): moves the simulator's now N seconds
  forward (never back) -> 200 ``{"now", "offset_s"}``. Awaiting refunds still NEW 120 h
  (``awaiting_expiry_s``) after they were made are then CANCELLED, as Paynow does with
  awaiting refunds not funded in time. ``POST /_sim/reset`` puts the clock back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.common import (
    CONTROL_PREFIX,
    FaultMiddleware,
    SimulatorCore,
    control_routes,
    credential_digest,
    note_tenant,
)
from simulators.paynow.seed import (
    AWAITING_EXPIRY_S,
    DEFAULT_AMOUNT_MINOR,
    DEFAULT_API_KEY,
    DEFAULT_CURRENCY,
    DEFAULT_SIGNATURE_KEY,
    SCENARIOS,
)
from simulators.paynow.state import DEFAULT_SHOP, Answer, PaynowState, error_answer

PAYMENT_ID = re.compile(r"^([a-zA-Z0-9]{4}(-[a-zA-Z0-9]{3}){3})$")
# Undocumented for refunds: held to the payment id's pattern (see the module docstring).
REFUND_ID = PAYMENT_ID
REASONS = frozenset({"RMA", "REFUND_BEFORE_14", "REFUND_AFTER_14", "OTHER"})
MAX_AMOUNT = 9_999_999_999
MAX_TRANSFER_AMOUNT = 100_000_000
MAX_IDEMPOTENCY_KEY = 45
# Media ranges in an Accept header that admit a JSON answer.
_ACCEPTS_JSON = frozenset({"application/json", "application/*", "*/*"})
# Ten years: enough for any awaiting refund, small enough to stay a sane datetime.
MAX_CLOCK_STEP_S = 10 * 366 * 86_400.0


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


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def accepts_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header admits ``application/json`` (``*/*`` does)."""
    if not accept:
        return False
    return any(_media_type(item) in _ACCEPTS_JSON for item in accept.split(","))


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json``, with at most a UTF-8 charset (the body must be UTF-8 anyway)."""
    if not content_type or _media_type(content_type) != "application/json":
        return False
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True


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

    shop: Annotated[str, Field(min_length=1, max_length=64)] = DEFAULT_SHOP
    scenario: str
    amount_minor: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)] = DEFAULT_AMOUNT_MINOR
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = DEFAULT_CURRENCY
    status: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    method: Literal["card", "blik"] = "card"
    refunded_minor: Annotated[int, Field(ge=0, strict=True)] | None = None
    marketplace: Annotated[bool, Field(strict=True)] | None = None
    voucher_minor: Annotated[int, Field(ge=0, strict=True)] | None = None


class ShopKeys(BaseModel):
    """``PUT /_sim/shops/{name}``."""

    model_config = ConfigDict(extra="forbid")

    api_key: Annotated[str, Field(min_length=1, max_length=200)]
    signature_key: Annotated[str, Field(min_length=1, max_length=200)]


@dataclass(frozen=True)
class PaynowShop:
    """One shop: the key pair it signs with."""

    name: str
    api_key: str
    signature_key: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "api_key": credential_digest(self.api_key)}


class SettleHeld(BaseModel):
    """``POST /_sim/refunds/settle``."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["SUCCESSFUL", "FAILED"] = "SUCCESSFUL"


class ClockStep(BaseModel):
    """``POST /_sim/clock``."""

    model_config = ConfigDict(extra="forbid")

    advance_s: Annotated[float, Field(ge=0, le=MAX_CLOCK_STEP_S, allow_inf_nan=False)]


class PaynowSimulator:
    """An in-memory Paynow v3 refunds API behind :class:`FaultMiddleware`."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        signature_key: str = DEFAULT_SIGNATURE_KEY,
        awaiting_expiry_s: float = AWAITING_EXPIRY_S,
    ) -> None:
        self._api_key = api_key
        self._signature_key = signature_key
        self._initial_shop = PaynowShop(DEFAULT_SHOP, api_key, signature_key)
        self._shops = {DEFAULT_SHOP: self._initial_shop}
        self.core = SimulatorCore()
        self.state = PaynowState(self.core, awaiting_expiry_s=awaiting_expiry_s)
        routes = [
            Route("/v3/payments/{payment_id}/refunds", self._create_refund, methods=["POST"]),
            Route("/v3/payments/{payment_id}/status", self._payment_status, methods=["GET"]),
            Route("/v3/refunds/{refund_id}/status", self._refund_status, methods=["GET"]),
            Route("/v3/refunds/{refund_id}/cancel", self._cancel_refund, methods=["POST"]),
            Route(f"{CONTROL_PREFIX}/payments", self._add_payment, methods=["POST"]),
            Route(f"{CONTROL_PREFIX}/payments/{{payment_id}}/fund", self._fund, methods=["POST"]),
            Route(f"{CONTROL_PREFIX}/clock", self._advance_clock, methods=["POST"]),
            Route(f"{CONTROL_PREFIX}/refunds/settle", self._settle_held, methods=["POST"]),
            Route(f"{CONTROL_PREFIX}/shops", self._list_shops, methods=["GET"]),
            Route(f"{CONTROL_PREFIX}/shops/{{name}}", self._put_shop, methods=["PUT"]),
            *control_routes(self.core, reset=self._reset_state, payments=self.payments),
        ]
        self.app = FaultMiddleware(
            Starlette(routes=routes),
            core=self.core,
            error_body=paynow_error_body,
            error_headers=_request_id_header,
        )

    def reset(self) -> None:
        """Back to the seeded payments and shop, with no refunds, faults or journal, and the
        clock."""
        self.core.reset()
        self._reset_state()

    def _reset_state(self) -> None:
        self._shops = {DEFAULT_SHOP: self._initial_shop}
        self.state.reset()

    def shops(self) -> list[dict[str, Any]]:
        return [shop.describe() for shop in self._shops.values()]

    def put_shop(self, name: str, keys: ShopKeys) -> PaynowShop:
        """Add shop ``name`` or replace its keys; ``ValueError`` when another shop has the key."""
        if any(s.api_key == keys.api_key and s.name != name for s in self._shops.values()):
            raise ValueError("that Api-Key belongs to another shop")
        shop = PaynowShop(name, keys.api_key, keys.signature_key)
        self._shops = {**self._shops, name: shop}
        return shop

    def _shop_of(self, api_key: str) -> PaynowShop | None:
        found = None
        for shop in self._shops.values():
            # Every shop compared, in constant time each: no early exit to time.
            if hmac.compare_digest(api_key.encode(), shop.api_key.encode()):
                found = shop
        return found

    async def _list_shops(self, _: Request) -> Response:
        return JSONResponse(self.shops())

    async def _put_shop(self, request: Request) -> Response:
        try:
            keys = ShopKeys.model_validate_json(await request.body())
            shop = self.put_shop(str(request.path_params["name"]), keys)
        except ValidationError as exc:
            return JSONResponse({"error": exc.errors(include_url=False, include_input=False)}, 422)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(shop.describe())

    def payments(self) -> list[dict[str, Any]]:
        return self.state.payments()

    async def _authenticate(
        self, request: Request, *, with_body: bool
    ) -> tuple[str, str, str] | Response:
        """``(idempotency key, raw body text, shop)`` of a genuine v3 request, or the refusal.

        ``with_body``: the call takes a JSON body (create refund); the others take none.
        """
        api_key = request.headers.get("Api-Key")
        shop = self._shop_of(api_key) if api_key is not None else None
        if shop is None:
            return _respond(error_answer(401, "Missing or invalid Api-Key"))
        note_tenant(shop.name, shop.api_key)
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
            api_key=shop.api_key,
            idempotency_key=idempotency_key,
            parameters=parameters,
            body=body,
            signature_key=shop.signature_key,
        )
        signature = request.headers.get("Signature", "")
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return _respond(error_answer(401, "Missing or invalid Signature"))
        # Required headers (docs silent on the answer: 400 VALIDATION_ERROR, the harsh reading).
        if not accepts_json(request.headers.get("Accept")):
            return _respond(
                error_answer(400, "Accept: header is required and must admit application/json")
            )
        if with_body and not is_json_content_type(request.headers.get("Content-Type")):
            return _respond(
                error_answer(400, "Content-Type: header is required and must be application/json")
            )
        if not with_body and body:
            # Docs: the cancel call has no body (signed with ""); a body is refused, not ignored.
            return _respond(error_answer(400, "body: this call takes no body"))
        return idempotency_key, body, shop.name

    async def _create_refund(self, request: Request) -> Response:
        checked = await self._authenticate(request, with_body=True)
        if isinstance(checked, Response):
            return checked
        idempotency_key, body, shop = checked
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
                transfers=data.get("transfers"),
                shop=shop,
            )
        )

    async def _payment_status(self, request: Request) -> Response:
        checked = await self._authenticate(request, with_body=False)
        if isinstance(checked, Response):
            return checked
        payment_id = request.path_params["payment_id"]
        if not PAYMENT_ID.match(payment_id):
            return _respond(error_answer(400, "paymentId: must match XXXX-XXX-XXX-XXX"))
        return _respond(self.state.payment_status(payment_id, shop=checked[2]))

    async def _refund_status(self, request: Request) -> Response:
        checked = await self._authenticate(request, with_body=False)
        if isinstance(checked, Response):
            return checked
        refund_id = request.path_params["refund_id"]
        if not REFUND_ID.match(refund_id):
            return _respond(error_answer(400, "refundId: must match XXXX-XXX-XXX-XXX"))
        return _respond(self.state.refund_status(refund_id, shop=checked[2]))

    async def _cancel_refund(self, request: Request) -> Response:
        checked = await self._authenticate(request, with_body=False)
        if isinstance(checked, Response):
            return checked
        idempotency_key, body, shop = checked
        refund_id = request.path_params["refund_id"]
        if not REFUND_ID.match(refund_id):
            return _respond(error_answer(400, "refundId: must match XXXX-XXX-XXX-XXX"))
        fingerprint = json.dumps({"operation": "cancel", "refundId": refund_id, "body": body})
        return _respond(
            self.state.cancel_refund(
                refund_id, idempotency_key=idempotency_key, fingerprint=fingerprint, shop=shop
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
        if spec.voucher_minor is not None and spec.voucher_minor > spec.amount_minor:
            return JSONResponse({"error": "voucher_minor must not exceed amount_minor"}, 422)
        if spec.shop not in self._shops:
            known = ", ".join(sorted(self._shops))
            return JSONResponse({"error": f"unknown shop {spec.shop!r}; known: {known}"}, 422)
        payment = self.state.add_payment(
            scenario,
            amount_minor=spec.amount_minor,
            currency=spec.currency,
            method=spec.method,
            status=spec.status,
            refunded_minor=spec.refunded_minor,
            marketplace=spec.marketplace,
            voucher_minor=spec.voucher_minor,
            shop=spec.shop,
        )
        keys = (
            "payment_id",
            "currency",
            "amount_minor",
            "status",
            "method",
            "scenario",
            "refunded_minor",
            "marketplace",
            "voucher_minor",
        )
        return JSONResponse({k: payment[k] for k in keys}, 201)

    async def _fund(self, request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        funded = self.state.fund(payment_id)
        if funded is None:
            return JSONResponse({"error": f"unknown payment {payment_id!r}"}, 404)
        return JSONResponse(funded)

    async def _settle_held(self, request: Request) -> Response:
        try:
            spec = SettleHeld.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        settled = self.state.settle_held(spec.status)
        return JSONResponse({"settled": settled, "status": spec.status})

    async def _advance_clock(self, request: Request) -> Response:
        try:
            step = ClockStep.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        return JSONResponse(self.state.advance_clock(step.advance_s))
