"""A Mews Connector API simulator: ``payments/refund`` and ``payments/getAll``.

It follows the public docs (seed page "Refund payment" and /work/shared/PROVIDERS.md), and
chooses where they are silent. Choices, all unconfirmed upstream:

* Errors use Mews' body ``{Message, RequestId, Details}``; every response, errors and faults
  included, carries a ``Request-Id`` header equal to the body's ``RequestId``.
* Missing or wrong ``ClientToken``/``AccessToken`` -> 401. A missing ``Client`` -> 400.
* **Tenants.** Each :class:`MewsTenant` holds a ``ClientToken``/``AccessToken`` pair and the
  enterprises its token reaches: an enterprise's own token reaches one, a Portfolio Access
  Token several (PROVIDERS.md, Mews: "Each property (enterprise) has its own AccessToken; a
  Portfolio Access Token covers several"). A token sees and refunds only its enterprises'
  payments; another enterprise's payment is "Invalid PaymentId." (400). The journal records
  each request's tenant and a digest of its access token, never the token. Seeded: tenant
  ``default`` (the demo token, enterprise :data:`ENTERPRISE_ID`) and ``portfolio`` (the demo
  portfolio token, the same enterprise); ``PUT /_sim/tenants/{name}`` adds or replaces one.
* A Portfolio Access Token needs ``EnterpriseId`` on ``payments/refund`` (400 without it);
  with a normal token ``EnterpriseId`` is ignored, as documented.
* Malformed JSON, non-UUID ids, an empty ``Reason``, a ``ValueToRefund`` that is not a number,
  is zero or negative or has more decimals than the currency -> 400.
* An unknown payment (or one on another enterprise, or a refund given as ``PaymentId``) -> 400
  "Invalid PaymentId."; a payment on another account -> 400 "Invalid AccountId."
  (Mews lists "invalid identifier of a resource" under 400).
* Business rules -> 403 (the seed page's 403: "a business-logic check is violated") with
  ``{Message, RequestId, Details}`` and a message for people: :data:`MSG_NOT_REFUNDABLE_TYPE`,
  :data:`MSG_NOT_CHARGED`, :data:`MSG_EXCEEDS`. Which of 400 and 403
  Mews uses for these is unconfirmed (PROVIDERS.md, Mews, "Unconfirmed"); both are final. The
  wording is ours, not Mews': **no client may rely on it**, only on the status.
* Several partial refunds are allowed; the live ones (not Failed/Canceled) plus the new one
  may not exceed the payment. No ``ValueToRefund`` means the whole payment. Mews knows which
  payment a refund refunded; it just never says so (below).
* **No idempotency**: every accepted refund request makes a new refund.
* A refund is a payment of ``Kind: Refund`` on the **same account** as the payment refunded,
  and carries **no link** to that payment (PROVIDERS.md, Mews: "A customer account holds many
  payments"). An account holds many payments (see :mod:`simulators.mews.seed`), so a lookup by
  account cannot attribute a refund to one of them.
* Sign: the refund answer's ``Amount.Value`` is positive (seed page: "Absolute value"). The
  sign of a refund's ``Amount`` in getAll is undocumented (PROVIDERS.md: "payments may show
  negative values"); the harsher reading is taken: **negative** ``GrossValue``/``NetValue``.
* getAll (PROVIDERS.md, Mews, getAll):

  - ``Limitation.Count`` 1..1000 is required; ``Limitation.Cursor`` optional.
  - At least one **filter**: ``PaymentIds`` (<= 1000), ``AccountIds`` (<= 100), ``BillIds``,
    ``ReservationIds``, or an interval ``CreatedUtc``/``UpdatedUtc``/``ChargedUtc``/
    ``ClosedUtc``; else 400. ``States`` and (Portfolio token) ``EnterpriseIds`` narrow a
    filtered query but are not filters: alone they get the 400. ``Currency`` is **not a
    filter**: it converts every ``Amount`` into that currency (at the fixed made-up
    :data:`SIM_EUR_RATES`; 400 for a pair the simulator cannot convert), ``OriginalAmount``
    keeps the payment's own. Fields the docs do not list are ignored (they filter nothing).
  - Intervals ``{StartUtc, EndUtc}`` are half-open, ``StartUtc <= x < EndUtc``, and at most
    three calendar months long (400 beyond). Simulated payments sit on no bill and are never
    closed: ``BillIds``, ``ReservationIds`` and ``ClosedUtc`` are valid filters matching none.
  - Order: the docs state none that a client could rely on; the harsher reading is taken,
    **newest first** (``CreatedUtc`` then ``Id``, descending). ``Cursor`` is the ``Id`` of the
    last (oldest) item returned, null on an empty page; the next page holds the items after
    it in that order. A cursor naming no payment -> 400.
* Rate limit: ``rate_limit`` accepted requests per ``AccessToken`` per sliding
  ``rate_window_s``, then 429 with ``Retry-After`` in whole seconds.

Extra control routes:

* ``POST /_sim/payments`` makes a fresh payment of a scenario (201); ``enterprise_id`` puts it
  on another enterprise (default :data:`ENTERPRISE_ID`, or the given account's).
* ``PUT /_sim/tenants/{name}`` ``{"client_token", "access_token", "enterprise_ids"?,
  "portfolio"?}``: add a tenant, or replace its credentials (a rotation: the old ones are
  refused from then on); an enterprise's own token names one enterprise (a new one when
  unset), a portfolio token at least one. ``GET /_sim/tenants`` lists them, tokens as digests.
* ``GET /_sim/refunds``: every refund with its state, each status read that returned it
  (``reads``: when, and the state it showed) and each change of state (``changes``).
* ``POST /_sim/refunds/{id}/settle`` (body optional, ``{"state": "Charged" | "Failed" |
  "Canceled"}``, default the end of its scenario's script): the refund reaches that final state
  now, without a read, as Mews' side moves on by itself; later reads keep it there. 404 for no
  such refund, 409 when it is final already (nothing changes, nothing is announced).
* ``POST /_sim/refunds/settle`` (body optional, ``{"state"}`` as above, default ``Charged``):
  every refund of scenario ``held`` not final yet reaches that state now, at once, as the
  per-refund settle does -> 200 ``{"settled", "state"}`` (``settled``: how many).
* ``POST /_sim/webhooks`` ``{"url", "duplicates", "max_attempts", "retry_delay_s"}``: send a
  ``PaymentUpdated`` general webhook for every change of a refund's state from now on:
  creation, each step a read makes, a settle (:mod:`simulators.mews.webhooks`);
  ``DELETE /_sim/webhooks`` stops them; ``GET /_sim/webhooks`` shows the configuration (the
  URL's token masked) and every delivery.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from core.money import CURRENCY_EXPONENTS, minor_to_decimal
from simulators.common import (
    FaultMiddleware,
    SimulatorCore,
    control_routes,
    credential_digest,
    note_tenant,
)
from simulators.mews.seed import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_TOKEN,
    DEFAULT_PORTFOLIO_TOKEN,
    ENTERPRISE_ID,
    INTEGRATION_ID,
    PAYMENT_STATES,
    REFUND_SCRIPTS,
    REFUNDABLE_TYPES,
    SEEDED_PAYMENTS,
    TEMPLATES,
    Scenario,
)
from simulators.mews.webhooks import WebhookConfig, WebhookSender

API = "/api/connector/v1"

MSG_NOT_REFUNDABLE_TYPE = (
    "Payments of type {type} cannot be refunded. "
    "Only CreditCardPayment and AlternativePayment payments can be refunded."
)
MSG_NOT_CHARGED = "The payment is not charged (state {state}) and cannot be refunded."
MSG_EXCEEDS = (
    "The amount to refund ({asked}) exceeds the amount of the payment left to refund ({left})."
)
MSG_BAD_TOKENS = "Invalid ClientToken or AccessToken, or the token has expired."
MSG_RATE_LIMITED = "Too many requests. The limit is {limit} requests per {window} seconds."

MAX_COUNT = 1000
MAX_ACCOUNT_IDS = 100
# Not documented for BillIds/ReservationIds: the PaymentIds cap is taken.
MAX_OTHER_IDS = 1000
INTERVALS = ("CreatedUtc", "UpdatedUtc", "ChargedUtc", "ClosedUtc")
# Made-up conversion rates for getAll's Currency (EUR per unit): the demo currencies
# (PROVIDERS.md: "demo accepts GBP, EUR, USD").
SIM_EUR_RATES: dict[str, Decimal] = {
    "EUR": Decimal(1),
    "GBP": Decimal("1.17"),
    "USD": Decimal("0.92"),
}
MAX_INTERVAL_MONTHS = 3
_DEAD = ("Failed", "Canceled")
_FINAL = ("Charged", "Failed", "Canceled")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# The request id of the request being served, shared by the middleware and the handlers.
_REQUEST_ID: ContextVar[str | None] = ContextVar("mews_sim_request_id", default=None)


class MewsRequestError(Exception):
    """Ends a request with a Mews error answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Mews' ``ConnectorApiExceptionResult``."""
    return {"Message": message, "RequestId": _REQUEST_ID.get(), "Details": None}


def _error_response(err: MewsRequestError) -> Response:
    return JSONResponse(error_body(err.status, err.message), err.status, headers=err.headers)


class _MewsFaultMiddleware(FaultMiddleware):
    """The shared fault/journal middleware, plus a ``Request-Id`` on every response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        token = _REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                if "request-id" not in headers:
                    headers.append("Request-Id", request_id)
                message = {**message, "headers": headers.raw}
            await send(message)

        try:
            await super().__call__(scope, receive, send_with_id)
        finally:
            _REQUEST_ID.reset(token)


@dataclass
class _Entry:
    """One Mews payment: a seeded or created payment, or a refund (``kind == "Refund"``)."""

    id: str
    account_id: str
    enterprise_id: str
    kind: str
    type: str
    state: str
    currency: str
    # Signed: refunds are negative.
    amount_minor: int
    created_utc: datetime
    updated_utc: datetime
    scenario: Scenario
    charged_utc: datetime | None = None
    # Refunds only: the payment refunded (Mews' own bookkeeping, never shown in an answer),
    # the state script and where in it we are.
    refunded_payment_id: str | None = None
    script: tuple[str, ...] = ()
    step: int = 0
    # Refunds only, for ``GET /_sim/refunds``: (when, state shown) of each status read, and
    # (when, new state) of each change, creation first.
    reads: list[tuple[datetime, str]] = field(default_factory=list)
    changes: list[tuple[datetime, str]] = field(default_factory=list)


class _SlidingWindow:
    """At most ``limit`` admissions per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def admit(self, key: str) -> float | None:
        """``None`` when admitted, else the seconds until the oldest admission expires."""
        now = self._clock()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if len(seen) >= self.limit:
            return seen[0] + self.window_s - now
        seen.append(now)
        return None

    def clear(self) -> None:
        self._seen.clear()


class SettleRefund(BaseModel):
    """Body of ``POST /_sim/refunds/{id}/settle``; no state: the end of the refund's script."""

    model_config = ConfigDict(extra="forbid")

    state: str | None = None

    @field_validator("state")
    @classmethod
    def _final_state(cls, value: str | None) -> str | None:
        if value is not None and value not in _FINAL:
            raise ValueError(f"state must be one of {', '.join(_FINAL)}")
        return value


class CreatePayment(BaseModel):
    """Body of ``POST /_sim/payments``; unset fields come from the scenario's template."""

    model_config = ConfigDict(extra="forbid")

    scenario: Scenario
    amount_minor: int | None = Field(default=None, gt=0, le=10**15 - 1, strict=True)
    currency: str | None = None
    type: str | None = Field(default=None, min_length=1, max_length=64)
    state: str | None = None
    refunded_minor: int | None = Field(default=None, ge=0, strict=True)
    # An existing account to add the payment to (404 if unknown); a new account when unset.
    account_id: uuid.UUID | None = None
    # The enterprise (property) the payment belongs to: the account's, else ENTERPRISE_ID.
    enterprise_id: uuid.UUID | None = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None and value not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {value!r}")
        return value

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str | None) -> str | None:
        if value is not None and value not in PAYMENT_STATES:
            raise ValueError(f"state must be one of {', '.join(PAYMENT_STATES)}")
        return value


def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.match(value) is not None


def _wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plus_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _wire_amount(amount_minor: int, currency: str) -> float:
    # float(Decimal) is exact through repr for the <= 15 digits money ever has.
    return float(minor_to_decimal(amount_minor, currency))


def _format(amount_minor: int, currency: str) -> str:
    places = CURRENCY_EXPONENTS[currency]
    return f"{minor_to_decimal(amount_minor, currency):.{places}f} {currency}"


@dataclass(frozen=True)
class MewsTenant:
    """One set of credentials the simulator accepts, and the enterprises its token reaches."""

    name: str
    client_token: str
    access_token: str
    enterprise_ids: tuple[str, ...]
    portfolio: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enterprise_ids": list(self.enterprise_ids),
            "portfolio": self.portfolio,
            "access_token": credential_digest(self.access_token),
        }


class TenantSpec(BaseModel):
    """Body of ``PUT /_sim/tenants/{name}``."""

    model_config = ConfigDict(extra="forbid")

    client_token: str = Field(min_length=1, max_length=200)
    access_token: str = Field(min_length=1, max_length=200)
    enterprise_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=100)
    portfolio: bool = False


class MewsSimulator:
    """The simulator: ``.app`` to serve, ``.core`` for faults and the journal."""

    def __init__(
        self,
        *,
        client_token: str = DEFAULT_CLIENT_TOKEN,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        portfolio_access_token: str = DEFAULT_PORTFOLIO_TOKEN,
        rate_limit: int = 200,
        rate_window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_token = client_token
        self.access_token = access_token
        self.portfolio_access_token = portfolio_access_token
        self._initial_tenants = (
            MewsTenant("default", client_token, access_token, (ENTERPRISE_ID,)),
            MewsTenant("portfolio", client_token, portfolio_access_token, (ENTERPRISE_ID,), True),
        )
        self._tenants = {t.name: t for t in self._initial_tenants}
        # One clock for the rate limit and for timed (``duration_s``) faults.
        self.core = SimulatorCore(clock=clock)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._limiter = _SlidingWindow(rate_limit, rate_window_s, clock)
        self.webhooks = WebhookSender(enterprise_id=ENTERPRISE_ID, integration_id=INTEGRATION_ID)
        self._seed()
        routes = [
            Route(f"{API}/payments/refund", self._refund, methods=["POST"]),
            Route(f"{API}/payments/getAll", self._get_all, methods=["POST"]),
            *control_routes(self.core, reset=self._seed, payments=self.payments),
            Route("/_sim/payments", self._create_payment, methods=["POST"]),
            Route("/_sim/refunds", self._list_refunds, methods=["GET"]),
            Route("/_sim/refunds/{refund_id}/settle", self._settle, methods=["POST"]),
            Route("/_sim/refunds/settle", self._settle_held, methods=["POST"]),
            Route("/_sim/webhooks", self._set_webhooks, methods=["POST"]),
            Route("/_sim/tenants", self._list_tenants, methods=["GET"]),
            Route("/_sim/tenants/{name}", self._put_tenant, methods=["PUT"]),
            Route("/_sim/webhooks", self._get_webhooks, methods=["GET"]),
            Route("/_sim/webhooks", self._delete_webhooks, methods=["DELETE"]),
        ]
        starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_exception},
        )
        self.app = _MewsFaultMiddleware(starlette, core=self.core, error_body=error_body)

    # --- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the seeded payments, with an empty journal, no faults and no rate history."""
        self.core.reset()
        self._seed()

    def _seed(self) -> None:
        # Seeded payments are an hour old: recent enough for one getAll window.
        created = datetime.now(UTC) - timedelta(hours=1)
        self.webhooks.clear_log()
        with self._lock:
            self._tenants = {t.name: t for t in self._initial_tenants}
            self._entries.clear()
            self._limiter.clear()
            for seed in SEEDED_PAYMENTS:
                self._add_payment_locked(
                    scenario=seed.scenario,
                    payment_id=seed.payment_id,
                    account_id=seed.account_id,
                    created=created - timedelta(seconds=seed.older_by_s),
                    amount_minor=seed.amount_minor,
                    currency=seed.currency,
                    earlier_refund_id=seed.earlier_refund_id,
                )

    def _add_payment_locked(
        self,
        *,
        scenario: Scenario,
        payment_id: str,
        account_id: str,
        created: datetime,
        amount_minor: int | None = None,
        currency: str | None = None,
        type_: str | None = None,
        state: str | None = None,
        refunded_minor: int | None = None,
        earlier_refund_id: str | None = None,
        enterprise_id: str = ENTERPRISE_ID,
    ) -> _Entry:
        template = TEMPLATES[scenario]
        payment_state = state or template.state
        payment = _Entry(
            id=payment_id,
            account_id=account_id,
            enterprise_id=enterprise_id,
            kind="Payment",
            type=type_ or template.type,
            state=payment_state,
            currency=currency or template.currency,
            amount_minor=amount_minor if amount_minor is not None else template.amount_minor,
            created_utc=created,
            updated_utc=created,
            scenario=scenario,
            charged_utc=created if payment_state == "Charged" else None,
        )
        self._entries[payment.id] = payment
        earlier = refunded_minor if refunded_minor is not None else template.refunded_minor
        if earlier:
            refund_at = created + timedelta(seconds=1)
            refund = _Entry(
                id=earlier_refund_id or str(uuid.uuid4()),
                account_id=account_id,
                enterprise_id=enterprise_id,
                kind="Refund",
                type=payment.type,
                state="Charged",
                currency=payment.currency,
                amount_minor=-earlier,
                created_utc=refund_at,
                updated_utc=refund_at,
                scenario=scenario,
                charged_utc=refund_at,
                refunded_payment_id=payment.id,
                script=("Charged",),
            )
            self._entries[refund.id] = refund
        return payment

    def _refunded_minor_locked(self, payment_id: str) -> int:
        return sum(
            -entry.amount_minor
            for entry in self._entries.values()
            if entry.refunded_payment_id == payment_id and entry.state not in _DEAD
        )

    def _describe_locked(self, payment: _Entry) -> dict[str, Any]:
        return {
            "payment_id": payment.id,
            "account_id": payment.account_id,
            "enterprise_id": payment.enterprise_id,
            "currency": payment.currency,
            "amount_minor": payment.amount_minor,
            "type": payment.type,
            "state": payment.state,
            "scenario": payment.scenario.value,
            "refunded_minor": self._refunded_minor_locked(payment.id),
        }

    def payments(self) -> list[dict[str, Any]]:
        """Every payment (not refund), seeded first, as JSON-able dicts."""
        with self._lock:
            return [
                self._describe_locked(entry)
                for entry in self._entries.values()
                if entry.kind == "Payment"
            ]

    def refunds(self) -> list[dict[str, Any]]:
        """Every refund the simulator holds (seeded earlier refunds included)."""
        with self._lock:
            return [
                {
                    "refund_id": e.id,
                    "payment_id": e.refunded_payment_id,
                    "amount_minor": -e.amount_minor,
                    "currency": e.currency,
                    "state": e.state,
                }
                for e in self._entries.values()
                if e.kind == "Refund"
            ]

    def refund_history(self) -> list[dict[str, Any]]:
        """Every refund with its status reads and changes of state (``GET /_sim/refunds``)."""
        with self._lock:
            return [
                {
                    "refund_id": e.id,
                    "payment_id": e.refunded_payment_id,
                    "state": e.state,
                    "reads": [{"at": at.isoformat(), "state": state} for at, state in e.reads],
                    "changes": [{"at": at.isoformat(), "state": state} for at, state in e.changes],
                }
                for e in self._entries.values()
                if e.kind == "Refund"
            ]

    # --- shared request handling ----------------------------------------------------------

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "Wrong URL." if status == 404 else str(getattr(exc, "detail", "Error."))
        return JSONResponse(error_body(status, message), status)

    async def _authorised_body(self, request: Request) -> tuple[dict[str, Any], MewsTenant]:
        """The JSON body after the token, client and rate checks, and the tenant whose
        credentials it carried."""
        raw = await request.body()
        try:
            # Decimal keeps ValueToRefund exactly as sent: sub-cent checks see the real digits.
            body = json.loads(raw, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise MewsRequestError(400, "Invalid request: the body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise MewsRequestError(400, "Invalid request: the body must be a JSON object.")
        client_token, access_token = body.get("ClientToken"), body.get("AccessToken")
        with self._lock:
            tenant = next(
                (t for t in self._tenants.values() if t.access_token == access_token), None
            )
        if tenant is None or client_token != tenant.client_token:
            raise MewsRequestError(401, MSG_BAD_TOKENS)
        note_tenant(tenant.name, tenant.access_token)
        client = body.get("Client")
        if not isinstance(client, str) or not client.strip():
            raise MewsRequestError(400, "Client is required: the name and version of the client.")
        with self._lock:
            wait = self._limiter.admit(str(access_token))
        if wait is not None:
            raise MewsRequestError(
                429,
                MSG_RATE_LIMITED.format(
                    limit=self._limiter.limit, window=f"{self._limiter.window_s:g}"
                ),
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return body, tenant

    # --- payments/refund ------------------------------------------------------------------

    async def _refund(self, request: Request) -> Response:
        try:
            return JSONResponse(await self._do_refund(request))
        except MewsRequestError as err:
            return _error_response(err)

    async def _do_refund(self, request: Request) -> dict[str, Any]:
        body, tenant = await self._authorised_body(request)
        portfolio = tenant.portfolio
        enterprise_id = body.get("EnterpriseId")
        if portfolio:
            if enterprise_id is None:
                raise MewsRequestError(
                    400, "EnterpriseId is required when using a Portfolio Access Token."
                )
            if not _is_uuid(enterprise_id):
                raise MewsRequestError(400, "Invalid EnterpriseId.")
        payment_id, account_id = body.get("PaymentId"), body.get("AccountId")
        if not _is_uuid(payment_id):
            raise MewsRequestError(400, "Invalid PaymentId.")
        if not _is_uuid(account_id):
            raise MewsRequestError(400, "Invalid AccountId.")
        reason = body.get("Reason")
        if not isinstance(reason, str) or not reason.strip():
            raise MewsRequestError(400, "Reason is required and must not be empty.")
        value = body.get("ValueToRefund")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                raise MewsRequestError(400, "Invalid ValueToRefund: it must be a number.")
            value = Decimal(value)
            if not value.is_finite() or value <= 0:
                raise MewsRequestError(400, "Invalid ValueToRefund: it must be greater than 0.")

        with self._lock:
            payment = self._entries.get(str(payment_id).lower())
            if (
                payment is None
                or payment.kind != "Payment"
                or payment.enterprise_id not in tenant.enterprise_ids
                or (portfolio and str(enterprise_id).lower() != payment.enterprise_id)
            ):
                raise MewsRequestError(400, "Invalid PaymentId.")
            if payment.account_id != str(account_id).lower():
                raise MewsRequestError(400, "Invalid AccountId.")
            if value is None:
                asked_minor = payment.amount_minor
            else:
                places = CURRENCY_EXPONENTS[payment.currency]
                # Enough precision for every digit sent: scaleb must not round.
                exact = Context(prec=max(28, len(value.as_tuple().digits) + places))
                scaled = value.scaleb(places, context=exact)
                if scaled != scaled.to_integral_value():
                    raise MewsRequestError(
                        400,
                        f"Invalid ValueToRefund: {payment.currency} has {places} decimal places.",
                    )
                asked_minor = int(scaled)
            if payment.type not in REFUNDABLE_TYPES:
                raise MewsRequestError(403, MSG_NOT_REFUNDABLE_TYPE.format(type=payment.type))
            if payment.state != "Charged":
                raise MewsRequestError(403, MSG_NOT_CHARGED.format(state=payment.state))
            left = payment.amount_minor - self._refunded_minor_locked(payment.id)
            if asked_minor > left:
                raise MewsRequestError(
                    403,
                    MSG_EXCEEDS.format(
                        asked=_format(asked_minor, payment.currency),
                        left=_format(max(left, 0), payment.currency),
                    ),
                )
            now = datetime.now(UTC)
            script = REFUND_SCRIPTS[payment.scenario]
            refund = _Entry(
                id=str(uuid.uuid4()),
                account_id=payment.account_id,
                enterprise_id=payment.enterprise_id,
                kind="Refund",
                type=payment.type,
                state=script[0],
                currency=payment.currency,
                amount_minor=-asked_minor,
                created_utc=now,
                updated_utc=now,
                scenario=payment.scenario,
                charged_utc=now if script[0] == "Charged" else None,
                refunded_payment_id=payment.id,
                script=script,
                changes=[(now, script[0])],
            )
            self._entries[refund.id] = refund
        self.core.record_refund(
            payment_id=payment.id, refund_id=refund.id, amount_minor=asked_minor
        )
        # Announced at once: the webhook may arrive before this answer does.
        self.webhooks.payment_updated(refund.id)
        return {
            "PaymentId": payment.id,
            "RefundId": refund.id,
            "Type": refund.type,
            "Amount": {
                "Currency": refund.currency,
                "Value": _wire_amount(asked_minor, refund.currency),
            },
            "State": refund.state,
        }

    # --- payments/getAll ------------------------------------------------------------------

    async def _get_all(self, request: Request) -> Response:
        try:
            return JSONResponse(await self._do_get_all(request))
        except MewsRequestError as err:
            return _error_response(err)

    async def _do_get_all(self, request: Request) -> dict[str, Any]:
        body, tenant = await self._authorised_body(request)
        portfolio = tenant.portfolio
        limitation = body.get("Limitation")
        if not isinstance(limitation, dict):
            raise MewsRequestError(400, "Limitation is required.")
        count = limitation.get("Count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise MewsRequestError(400, f"Limitation.Count must be between 1 and {MAX_COUNT}.")
        cursor = limitation.get("Cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise MewsRequestError(400, "Invalid Limitation.Cursor.")

        # Filters (PROVIDERS.md, Mews, getAll: "only these count as filters").
        filters: list[Callable[[_Entry], bool]] = []
        payment_ids = _id_list(body, "PaymentIds", MAX_COUNT)
        if payment_ids is not None:
            filters.append(lambda e: e.id in payment_ids)
        account_ids = _id_list(body, "AccountIds", MAX_ACCOUNT_IDS)
        if account_ids is not None:
            filters.append(lambda e: e.account_id in account_ids)
        for name in ("BillIds", "ReservationIds"):
            if _id_list(body, name, MAX_OTHER_IDS) is not None:
                # No simulated payment sits on a bill or a reservation.
                filters.append(lambda e: False)
        for name in INTERVALS:
            interval = _interval(body, name)
            if interval is not None:
                filters.append(_in_interval(name, *interval))
        if not filters:
            raise MewsRequestError(
                400,
                "At least one filter must be specified (PaymentIds, AccountIds, BillIds, "
                "ReservationIds, CreatedUtc, UpdatedUtc, ChargedUtc or ClosedUtc).",
            )
        # Narrowing, not filters: they only apply next to a filter (checked above).
        narrowing: list[Callable[[_Entry], bool]] = []
        states = body.get("States")
        if states is not None:
            if (
                not isinstance(states, list)
                or not states
                or not all(isinstance(x, str) and x in PAYMENT_STATES for x in states)
            ):
                raise MewsRequestError(400, "Invalid States.")
            narrowing.append(lambda e: e.state in states)
        # A token sees its enterprises only: a normal token its one, a Portfolio token those
        # it covers, which EnterpriseIds may narrow further.
        narrowing.append(lambda e: e.enterprise_id in tenant.enterprise_ids)
        enterprise_ids = _id_list(body, "EnterpriseIds", MAX_COUNT) if portfolio else None
        if enterprise_ids is not None:
            narrowing.append(lambda e: e.enterprise_id in enterprise_ids)
        # Not a filter at all: the currency amounts are converted to.
        currency = body.get("Currency")
        if currency is not None and (
            not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS
        ):
            raise MewsRequestError(400, "Invalid Currency.")
        tests = filters + narrowing

        with self._lock:
            # Newest first (the harsher reading: the docs promise no order).
            matching = sorted(
                (e for e in self._entries.values() if all(test(e) for test in tests)),
                key=_order_key,
                reverse=True,
            )
            if cursor is not None:
                after = self._entries.get(cursor.lower())
                if after is None:
                    raise MewsRequestError(400, "Invalid Limitation.Cursor.")
                # The items after the cursor's in the same order, whether or not it matches.
                matching = [e for e in matching if _order_key(e) < _order_key(after)]
            page = matching[:count]
            changed: list[str] = []
            if payment_ids is not None:
                for entry in page:
                    if self._advance_locked(entry):
                        changed.append(entry.id)
                    if entry.kind == "Refund":
                        entry.reads.append((datetime.now(UTC), entry.state))
            rendered = [_render(entry, currency) for entry in page]
        self.webhooks.payment_updated(*changed)
        return {"Payments": rendered, "Cursor": page[-1].id if page else None}

    def _advance_locked(self, entry: _Entry) -> bool:
        """One step on along the refund's script; True when its state changed."""
        if entry.kind != "Refund" or not entry.script:
            return False
        entry.step = min(entry.step + 1, len(entry.script) - 1)
        state = entry.script[entry.step]
        if state == entry.state:
            return False
        self._set_state_locked(entry, state)
        return True

    def _set_state_locked(self, entry: _Entry, state: str) -> None:
        entry.state = state
        entry.updated_utc = datetime.now(UTC)
        entry.changes.append((entry.updated_utc, state))
        if state == "Charged":
            entry.charged_utc = entry.updated_utc

    # --- control ----------------------------------------------------------------------------

    async def _list_refunds(self, _: Request) -> Response:
        return JSONResponse(self.refund_history())

    async def _settle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            spec = SettleRefund.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            return JSONResponse(
                {
                    "error": exc.errors(
                        include_url=False, include_input=False, include_context=False
                    )
                },
                422,
            )
        refund_id = str(request.path_params["refund_id"]).lower()
        with self._lock:
            entry = self._entries.get(refund_id)
            if entry is None or entry.kind != "Refund":
                return JSONResponse({"error": f"no refund {refund_id}"}, 404)
            if entry.state in _FINAL:
                return JSONResponse({"error": f"refund {refund_id} is {entry.state} already"}, 409)
            state = spec.state or (entry.script[-1] if entry.script else "Charged")
            self._set_state_locked(entry, state)
            # Final for good: later reads keep this state.
            entry.script, entry.step = (state,), 0
        self.webhooks.payment_updated(refund_id)
        return JSONResponse({"refund_id": refund_id, "state": state})

    async def _settle_held(self, request: Request) -> Response:
        """Every ``held`` refund not final yet reaches the state asked (default Charged)."""
        try:
            spec = SettleRefund.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return JSONResponse(
                {
                    "error": exc.errors(
                        include_url=False, include_input=False, include_context=False
                    )
                },
                422,
            )
        state = spec.state or "Charged"
        settled: list[str] = []
        with self._lock:
            for entry in self._entries.values():
                if (
                    entry.kind == "Refund"
                    and entry.scenario is Scenario.HELD
                    and entry.state not in _FINAL
                ):
                    self._set_state_locked(entry, state)
                    entry.script, entry.step = (state,), 0
                    settled.append(entry.id)
        self.webhooks.payment_updated(*settled)
        return JSONResponse({"settled": len(settled), "state": state})

    async def _set_webhooks(self, request: Request) -> Response:
        try:
            config = WebhookConfig.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse(
                {
                    "error": exc.errors(
                        include_url=False, include_input=False, include_context=False
                    )
                },
                422,
            )
        self.webhooks.configure(config)
        return JSONResponse(self.webhooks.describe(), 201)

    async def _get_webhooks(self, _: Request) -> Response:
        return JSONResponse(self.webhooks.describe())

    async def _delete_webhooks(self, _: Request) -> Response:
        self.webhooks.configure(None)
        return Response(status_code=204)

    def tenants(self) -> list[dict[str, Any]]:
        """Every tenant, its access token as a digest."""
        with self._lock:
            return [t.describe() for t in self._tenants.values()]

    def put_tenant(self, name: str, spec: TenantSpec) -> MewsTenant:
        """Add tenant ``name`` or replace its credentials; ``ValueError`` when unusable."""
        if spec.enterprise_ids is None:
            if spec.portfolio:
                raise ValueError("a portfolio token needs enterprise_ids")
            enterprises: tuple[str, ...] = (str(uuid.uuid4()),)
        else:
            enterprises = tuple(str(e) for e in spec.enterprise_ids)
        if not spec.portfolio and len(enterprises) != 1:
            raise ValueError("an enterprise's own token reaches exactly one enterprise")
        tenant = MewsTenant(name, spec.client_token, spec.access_token, enterprises, spec.portfolio)
        with self._lock:
            if any(
                t.access_token == spec.access_token and t.name != name
                for t in self._tenants.values()
            ):
                raise ValueError("that access token belongs to another tenant")
            self._tenants[name] = tenant
        return tenant

    async def _list_tenants(self, _: Request) -> Response:
        return JSONResponse(self.tenants())

    async def _put_tenant(self, request: Request) -> Response:
        try:
            spec = TenantSpec.model_validate_json(await request.body())
            tenant = self.put_tenant(str(request.path_params["name"]), spec)
        except ValidationError as exc:
            return JSONResponse(
                {
                    "error": exc.errors(
                        include_url=False, include_input=False, include_context=False
                    )
                },
                422,
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(tenant.describe())

    async def _create_payment(self, request: Request) -> Response:
        try:
            spec = CreatePayment.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse(
                {
                    "error": exc.errors(
                        include_url=False, include_input=False, include_context=False
                    )
                },
                422,
            )
        template = TEMPLATES[spec.scenario]
        amount = spec.amount_minor if spec.amount_minor is not None else template.amount_minor
        refunded = (
            spec.refunded_minor if spec.refunded_minor is not None else template.refunded_minor
        )
        if refunded > amount:
            return JSONResponse({"error": "refunded_minor is more than amount_minor"}, 422)
        with self._lock:
            account_id = str(spec.account_id) if spec.account_id else str(uuid.uuid4())
            on_account = [e for e in self._entries.values() if e.account_id == account_id]
            if spec.account_id is not None and not on_account:
                return JSONResponse({"error": f"unknown account_id {account_id}"}, 404)
            enterprise_id = (
                str(spec.enterprise_id)
                if spec.enterprise_id
                else on_account[0].enterprise_id
                if on_account
                else ENTERPRISE_ID
            )
            payment = self._add_payment_locked(
                scenario=spec.scenario,
                payment_id=str(uuid.uuid4()),
                account_id=account_id,
                # A second in the past, so the payment sorts before anything refunded later.
                created=datetime.now(UTC) - timedelta(seconds=1),
                amount_minor=amount,
                currency=spec.currency,
                type_=spec.type,
                state=spec.state,
                refunded_minor=refunded,
                enterprise_id=enterprise_id,
            )
            described = self._describe_locked(payment)
        return JSONResponse(described, 201)


def _id_list(body: dict[str, Any], name: str, limit: int) -> set[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(_is_uuid(v) for v in value):
        raise MewsRequestError(400, f"Invalid {name}.")
    if len(value) > limit:
        raise MewsRequestError(400, f"{name} may hold at most {limit} items.")
    return {str(v).lower() for v in value}


def _interval(body: dict[str, Any], name: str) -> tuple[datetime, datetime] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MewsRequestError(400, f"Invalid {name}.")
    bounds: list[datetime] = []
    for key in ("StartUtc", "EndUtc"):
        text = value.get(key)
        try:
            moment = datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            moment = None
        # "Datetimes are ISO 8601 UTC" (PROVIDERS.md): another offset is refused, a time
        # without one is read as UTC.
        if moment is None or moment.utcoffset() not in (None, timedelta(0)):
            raise MewsRequestError(400, f"Invalid {name}.{key}: an ISO 8601 UTC time is needed.")
        bounds.append(moment.replace(tzinfo=UTC))
    start, end = bounds
    if end < start:
        raise MewsRequestError(400, f"Invalid {name}: EndUtc is before StartUtc.")
    if end > _plus_months(start, MAX_INTERVAL_MONTHS):
        raise MewsRequestError(
            400,
            f"Invalid {name}: the interval exceeds the maximum of {MAX_INTERVAL_MONTHS} months.",
        )
    return start, end


def _in_interval(name: str, start: datetime, end: datetime) -> Callable[[_Entry], bool]:
    """Half-open, ``start <= x < end`` (PROVIDERS.md, Mews, getAll); no time, no match."""

    def moment(entry: _Entry) -> datetime | None:
        if name == "CreatedUtc":
            return entry.created_utc
        if name == "UpdatedUtc":
            return entry.updated_utc
        if name == "ChargedUtc":
            return entry.charged_utc
        return None  # ClosedUtc: simulated payments are never closed.

    def test(entry: _Entry) -> bool:
        at = moment(entry)
        return at is not None and start <= at < end

    return test


def _order_key(entry: _Entry) -> tuple[datetime, str]:
    return entry.created_utc, entry.id


def _converted_minor(amount_minor: int, source: str, target: str) -> int:
    """``amount_minor`` of ``source`` in ``target`` minor units, at :data:`SIM_EUR_RATES`."""
    if source == target:
        return amount_minor
    if source not in SIM_EUR_RATES or target not in SIM_EUR_RATES:
        raise MewsRequestError(400, f"Invalid Currency: cannot convert {source} to {target}.")
    value = minor_to_decimal(amount_minor, source) * SIM_EUR_RATES[source] / SIM_EUR_RATES[target]
    return int(value.scaleb(CURRENCY_EXPONENTS[target]).quantize(Decimal(1), ROUND_HALF_EVEN))


def _render(entry: _Entry, currency: str | None = None) -> dict[str, Any]:
    own = _wire_amount(entry.amount_minor, entry.currency)
    original = {"Currency": entry.currency, "NetValue": own, "GrossValue": own, "TaxValues": []}
    amount = dict(original)
    if currency is not None and currency != entry.currency:
        converted = _converted_minor(entry.amount_minor, entry.currency, currency)
        value = _wire_amount(converted, currency)
        amount = {"Currency": currency, "NetValue": value, "GrossValue": value, "TaxValues": []}
    return {
        "Id": entry.id,
        "EnterpriseId": entry.enterprise_id,
        "AccountId": entry.account_id,
        "AccountType": "Customer",
        "Kind": entry.kind,
        "Type": entry.type,
        "State": entry.state,
        "Amount": amount,
        "OriginalAmount": original,
        "CreatedUtc": _wire_time(entry.created_utc),
        "UpdatedUtc": _wire_time(entry.updated_utc),
        "ChargedUtc": _wire_time(entry.charged_utc) if entry.charged_utc else None,
        "Notes": None,
    }
