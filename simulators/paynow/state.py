"""The Paynow simulator's state: payments, refunds, their state machine and idempotency.

Every method takes the lock for its whole check-then-act, so two concurrent creates under one
Idempotency-Key still make one refund. Methods answer ``(HTTP status, JSON body)``; the
HTTP layer (:mod:`simulators.paynow.app`) only authenticates and validates shapes.

Refund state machine (Paynow's documented flow): NEW -> PENDING -> SUCCESSFUL | FAILED, and
NEW -> CANCELLED. Each status read advances a refund one step along its scenario's timeline
(see :mod:`simulators.paynow.seed`). An *awaiting* refund (merchant balance short) stays NEW
until its payment is funded (``fund``, or by itself after the scenario's number of reads),
and Paynow cancels it (CANCELLED) once it has waited ``awaiting_expiry_s`` (120 h by default,
as documented) on the simulator's clock, which ``advance_clock`` moves forward.

Idempotency: a successful POST is stored under its Idempotency-Key with a fingerprint of the
request (operation, target and the parsed JSON body; spacing, key order and null fields
ignored). The same key with the same fingerprint replays the stored answer and changes
nothing. The same key with another request is answered 422 ``VALIDATION_ERROR``: Paynow's
behaviour there is unconfirmed, and a loud refusal is the safe model. Failed POSTs are not
stored, so a retry after ``INSUFFICIENT_BALANCE_FUNDS`` is evaluated afresh.

Shops: each payment belongs to one shop (``shop``, :data:`DEFAULT_SHOP` unless created for
another); each call names the shop its Api-Key belongs to, and another shop's payment or
refund is answered as an unknown one (404). Idempotency keys are kept per shop.

Error bodies are ``{statusCode, errors: [{errorType, message}]}`` and carry only errorTypes
Paynow documents (``VALIDATION_ERROR``, ``INSUFFICIENT_BALANCE_FUNDS``, ``UNAUTHORIZED``,
``NOT_FOUND``, ``INTERNAL_SERVER_ERROR``, ``SYSTEM_TEMPORARILY_UNAVAILABLE``) or, for the
refund amount rules, types that only unofficial third-party client code names
(``REFUND_AMOUNT_TOO_LARGE``, ``REFUND_AMOUNT_TOO_SMALL``; ``REFUND_POSSIBILITY_EXPIRED`` and
``INSUFFICIENT_CARD_BALANCE_FUNDS`` exist there too but no scenario here answers them). Those
four are UNCONFIRMED: no Paynow page shows them. Message texts are the simulator's own words;
clients must key on status and errorType, never on them. Business refusals:

* payment not CONFIRMED: 400 ``VALIDATION_ERROR`` (Paynow: "only payments in CONFIRMED can be
  refunded"; which errorType it answers is undocumented, VALIDATION_ERROR is the documented
  catch-all);
* over-refund (more than the payment minus its live refunds): 400 ``REFUND_AMOUNT_TOO_LARGE``
  (unconfirmed type);
* below the minimum (1 PLN card, 0.01 PLN otherwise): 400 ``REFUND_AMOUNT_TOO_SMALL``
  (unconfirmed type);
* ``transfers`` on a payment that is not a marketplace payment, a marketplace payment refunded
  without transfers, or transfers whose gross amounts do not add up to the refund amount:
  400 ``VALIDATION_ERROR``. The docs only say transfers are "used only for Marketplace
  refunds"; the other two rules are the harshest plausible reading (unconfirmed);
* cancel of a refund that is not NEW: 400 ``VALIDATION_ERROR``. The cancel endpoint documents
  200/401/404/500/503 only, so any refusal is undocumented; this one is a plausible guess;
* insufficient merchant balance: 400 ``INSUFFICIENT_BALANCE_FUNDS`` (a documented type).
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from simulators.common import SimulatorCore
from simulators.paynow.seed import (
    AWAITING_EXPIRY_S,
    MINIMUM_REFUND_MINOR,
    SCENARIOS,
    SEED_PAYMENTS,
    Scenario,
)

FINAL_REFUND_STATUSES = frozenset({"SUCCESSFUL", "FAILED", "CANCELLED"})
_INACTIVE_REFUND_STATUSES = frozenset({"FAILED", "CANCELLED"})
_ID_ALPHABET = string.ascii_uppercase + string.digits

Answer = tuple[int, dict[str, Any]]

# The shop of the simulator's own demo keys, holding every seeded payment.
DEFAULT_SHOP = "default"

# The errorTypes Paynow documents, and the unofficial ones (third-party client code only).
VALIDATION_ERROR = "VALIDATION_ERROR"
INSUFFICIENT_BALANCE_FUNDS = "INSUFFICIENT_BALANCE_FUNDS"
UNAUTHORIZED = "UNAUTHORIZED"
NOT_FOUND = "NOT_FOUND"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
SYSTEM_TEMPORARILY_UNAVAILABLE = "SYSTEM_TEMPORARILY_UNAVAILABLE"
REFUND_AMOUNT_TOO_LARGE = "REFUND_AMOUNT_TOO_LARGE"  # unconfirmed
REFUND_AMOUNT_TOO_SMALL = "REFUND_AMOUNT_TOO_SMALL"  # unconfirmed
REFUND_POSSIBILITY_EXPIRED = "REFUND_POSSIBILITY_EXPIRED"  # unconfirmed
INSUFFICIENT_CARD_BALANCE_FUNDS = "INSUFFICIENT_CARD_BALANCE_FUNDS"  # unconfirmed
ERROR_TYPES = frozenset(
    {
        VALIDATION_ERROR,
        INSUFFICIENT_BALANCE_FUNDS,
        UNAUTHORIZED,
        NOT_FOUND,
        INTERNAL_SERVER_ERROR,
        SYSTEM_TEMPORARILY_UNAVAILABLE,
        REFUND_AMOUNT_TOO_LARGE,
        REFUND_AMOUNT_TOO_SMALL,
        REFUND_POSSIBILITY_EXPIRED,
        INSUFFICIENT_CARD_BALANCE_FUNDS,
    }
)

# The type a bare status gets (faults, and the simulator's own refusals without a business
# type). Paynow documents no 403, 408, 409 or 429, and no errorType for them: they get the
# nearest documented type (a refusal of permission is UNAUTHORIZED; "come back later" is
# SYSTEM_TEMPORARILY_UNAVAILABLE), never an invented one.
_TYPE_BY_STATUS: dict[int, str] = {
    400: VALIDATION_ERROR,
    401: UNAUTHORIZED,
    403: UNAUTHORIZED,
    404: NOT_FOUND,
    408: SYSTEM_TEMPORARILY_UNAVAILABLE,
    429: SYSTEM_TEMPORARILY_UNAVAILABLE,
    500: INTERNAL_SERVER_ERROR,
    503: SYSTEM_TEMPORARILY_UNAVAILABLE,
}


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return INTERNAL_SERVER_ERROR if status >= 500 else VALIDATION_ERROR


def error_answer(status: int, message: str, error_type: str | None = None) -> Answer:
    """Paynow's error body ``{statusCode, errors: [{errorType, message}]}``."""
    kind = error_type or error_type_for(status)
    if kind not in ERROR_TYPES:
        raise ValueError(f"{kind!r} is not an errorType Paynow (or its known clients) uses")
    return status, {"statusCode": status, "errors": [{"errorType": kind, "message": message}]}


def new_paynow_id(first: str = "") -> str:
    """A random id in Paynow's shape ``XXXX-XXX-XXX-XXX`` (optionally with a first letter)."""
    head = first + "".join(secrets.choice(_ID_ALPHABET) for _ in range(4 - len(first)))
    groups = ("".join(secrets.choice(_ID_ALPHABET) for _ in range(3)) for _ in range(3))
    return "-".join((head, *groups))


@dataclass
class SimPayment:
    payment_id: str
    scenario: Scenario
    amount_minor: int
    currency: str
    status: str
    method: str
    # Refunded before the simulator started (not refunds of ours).
    earlier_refunds_minor: int = 0
    marketplace: bool = False
    # Paid with a voucher card; its refunds are split between the buyer and the voucher.
    voucher_minor: int = 0
    # The merchant balance now covers this payment's refunds (``fund``).
    funded: bool = False
    shop: str = DEFAULT_SHOP


@dataclass
class SimRefund:
    refund_id: str
    payment_id: str
    amount_minor: int
    status: str
    timeline: tuple[str, ...]
    final_failure_reason: str | None
    created_at: datetime
    failure_reason: str | None = None
    reads: int = 0
    # Awaiting the merchant balance: NEW until funded, or until ``funded_after_reads`` reads.
    awaiting: bool = False
    funded_after_reads: int | None = None
    awaiting_reads: int = 0

    def advance(self) -> None:
        """One status read: one step along the timeline; cancelled refunds stay put."""
        if self.status == "CANCELLED" or not self.timeline:
            return
        if self.awaiting:
            self.awaiting_reads += 1
            if self.funded_after_reads is None or self.awaiting_reads <= self.funded_after_reads:
                return
            self.awaiting = False  # the balance came: this read starts the timeline
        self.reads += 1
        self.status = self.timeline[min(self.reads, len(self.timeline)) - 1]
        if self.status == "FAILED":
            self.failure_reason = self.final_failure_reason

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"refundId": self.refund_id, "status": self.status}
        if self.failure_reason is not None:
            body["failureReason"] = self.failure_reason
        return body


@dataclass
class _Stored:
    fingerprint: str
    answer: Answer


@dataclass
class PaynowState:
    core: SimulatorCore
    awaiting_expiry_s: float = AWAITING_EXPIRY_S
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _payments: dict[str, SimPayment] = field(default_factory=dict)
    _refunds: dict[str, SimRefund] = field(default_factory=dict)
    _by_key: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    # How far the simulator's clock runs ahead of the wall clock.
    _clock_offset_s: float = 0.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._refunds.clear()
            self._by_key.clear()
            self._clock_offset_s = 0.0
            self._payments = {}
            for seed in SEED_PAYMENTS:
                self._payments[seed.payment_id] = self._payment(
                    seed.payment_id,
                    SCENARIOS[seed.scenario],
                    amount_minor=seed.amount_minor,
                    currency=seed.currency,
                    method=seed.method,
                )

    # --- The clock ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._clock_offset_s)

    def now(self) -> datetime:
        with self._lock:
            return self._now()

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the simulator's now forward; awaiting refunds past their time are cancelled."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._clock_offset_s += seconds
            self._expire_awaiting()
            return {"now": self._now().isoformat(), "offset_s": self._clock_offset_s}

    def _expire_awaiting(self) -> None:
        """Paynow cancels an awaiting refund not funded within ``awaiting_expiry_s``."""
        now = self._now()
        for refund in self._refunds.values():
            if (
                refund.awaiting
                and refund.status == "NEW"
                and (now - refund.created_at).total_seconds() >= self.awaiting_expiry_s
            ):
                refund.status = "CANCELLED"
                refund.awaiting = False

    # --- Payments ----------------------------------------------------------------------------

    @staticmethod
    def _payment(
        payment_id: str,
        scenario: Scenario,
        *,
        amount_minor: int,
        currency: str,
        method: str,
        status: str | None = None,
        refunded_minor: int | None = None,
        marketplace: bool | None = None,
        voucher_minor: int | None = None,
    ) -> SimPayment:
        earlier = (
            refunded_minor
            if refunded_minor is not None
            else amount_minor * scenario.refunded_percent // 100
        )
        return SimPayment(
            payment_id=payment_id,
            scenario=scenario,
            amount_minor=amount_minor,
            currency=currency,
            status=status or scenario.payment_status,
            method=method,
            earlier_refunds_minor=earlier,
            marketplace=scenario.marketplace if marketplace is None else marketplace,
            voucher_minor=(
                amount_minor * scenario.voucher_percent // 100
                if voucher_minor is None
                else voucher_minor
            ),
        )

    def _refunded_minor(self, payment: SimPayment) -> int:
        ours = sum(
            r.amount_minor
            for r in self._refunds.values()
            if r.payment_id == payment.payment_id and r.status not in _INACTIVE_REFUND_STATUSES
        )
        return payment.earlier_refunds_minor + ours

    def _describe(self, payment: SimPayment) -> dict[str, Any]:
        return {
            "payment_id": payment.payment_id,
            "scenario": payment.scenario.name,
            "status": payment.status,
            "method": payment.method,
            "currency": payment.currency,
            "amount_minor": payment.amount_minor,
            "refunded_minor": self._refunded_minor(payment),
            "marketplace": payment.marketplace,
            "voucher_minor": payment.voucher_minor,
            "funded": payment.funded,
            "shop": payment.shop,
            "refund_ids": [
                r.refund_id for r in self._refunds.values() if r.payment_id == payment.payment_id
            ],
        }

    def payments(self) -> list[dict[str, Any]]:
        with self._lock:
            self._expire_awaiting()
            return [self._describe(p) for p in self._payments.values()]

    def add_payment(
        self,
        scenario: Scenario,
        *,
        amount_minor: int,
        currency: str,
        method: str,
        status: str | None = None,
        refunded_minor: int | None = None,
        marketplace: bool | None = None,
        voucher_minor: int | None = None,
        shop: str = DEFAULT_SHOP,
    ) -> dict[str, Any]:
        with self._lock:
            payment_id = new_paynow_id()
            while payment_id in self._payments:
                payment_id = new_paynow_id()
            payment = self._payment(
                payment_id,
                scenario,
                amount_minor=amount_minor,
                currency=currency,
                method=method,
                status=status,
                refunded_minor=refunded_minor,
                marketplace=marketplace,
                voucher_minor=voucher_minor,
            )
            payment.shop = shop
            self._payments[payment_id] = payment
            return self._describe(payment)

    def fund(self, payment_id: str) -> dict[str, Any] | None:
        """The merchant balance now covers this payment: its awaiting refunds move on (their
        next read gives PENDING) and later refunds are neither refused nor kept waiting.
        ``None`` for an unknown payment."""
        with self._lock:
            self._expire_awaiting()
            payment = self._payments.get(payment_id)
            if payment is None:
                return None
            payment.funded = True
            released = []
            for refund in self._refunds.values():
                if refund.payment_id == payment_id and refund.awaiting:
                    refund.awaiting = False
                    released.append(refund.refund_id)
            return {"payment_id": payment_id, "released_refund_ids": released}

    def settle_held(self, status: str) -> int:
        """Every refund of scenario ``held`` not final yet takes ``status`` (SUCCESSFUL or
        FAILED) now and keeps it; how many did."""
        settled = 0
        with self._lock:
            for refund in self._refunds.values():
                payment = self._payments[refund.payment_id]
                if payment.scenario.name == "held" and refund.status not in FINAL_REFUND_STATUSES:
                    refund.status, refund.timeline = status, ()
                    refund.awaiting = False
                    settled += 1
        return settled

    def _shop_payment(self, payment_id: str, shop: str) -> SimPayment | None:
        """The payment, if it is this shop's: another shop's is as unknown as a missing one."""
        payment = self._payments.get(payment_id)
        return payment if payment is not None and payment.shop == shop else None

    def _shop_refund(self, refund_id: str, shop: str) -> SimRefund | None:
        refund = self._refunds.get(refund_id)
        if refund is None or self._shop_payment(refund.payment_id, shop) is None:
            return None
        return refund

    def payment_status(self, payment_id: str, *, shop: str = DEFAULT_SHOP) -> Answer:
        with self._lock:
            payment = self._shop_payment(payment_id, shop)
            if payment is None:
                return error_answer(404, f"Payment {payment_id} not found")
            return 200, {"paymentId": payment.payment_id, "status": payment.status}

    # --- Refunds -----------------------------------------------------------------------------

    def create_refund(
        self,
        payment_id: str,
        *,
        idempotency_key: str,
        fingerprint: str,
        amount_minor: int,
        transfers: list[dict[str, Any]] | None = None,
        shop: str = DEFAULT_SHOP,
    ) -> Answer:
        """``transfers`` is ``None`` when the body had no (or a null) ``transfers`` field."""
        with self._lock:
            replay = self._replay((shop, idempotency_key), fingerprint)
            if replay is not None:
                return replay
            self._expire_awaiting()
            payment = self._shop_payment(payment_id, shop)
            if payment is None:
                return error_answer(404, f"Payment {payment_id} not found")
            problem = self._transfers_problem(payment, amount_minor, transfers)
            if problem is not None:
                return error_answer(400, problem)
            if payment.status != "CONFIRMED":
                return error_answer(
                    400,
                    f"Payment {payment_id} cannot be refunded in status {payment.status}",
                )
            minimum = MINIMUM_REFUND_MINOR.get(payment.method, 1)
            if amount_minor < minimum:
                return error_answer(
                    400,
                    f"amount: {amount_minor} is below the minimum refund of {minimum} "
                    f"for {payment.method} payments",
                    REFUND_AMOUNT_TOO_SMALL,
                )
            available = payment.amount_minor - self._refunded_minor(payment)
            if amount_minor > available:
                return error_answer(
                    400,
                    f"amount: {amount_minor} is more than the {available} left to refund "
                    f"of {payment.amount_minor} {payment.currency}",
                    REFUND_AMOUNT_TOO_LARGE,
                )
            scenario = payment.scenario
            if scenario.insufficient_funds and not payment.funded:
                return error_answer(
                    400,
                    "Insufficient funds on the merchant balance to make the refund",
                    INSUFFICIENT_BALANCE_FUNDS,
                )
            refund_id = new_paynow_id("R")
            while refund_id in self._refunds:
                refund_id = new_paynow_id("R")
            awaiting = scenario.awaiting and not payment.funded
            refund = SimRefund(
                refund_id=refund_id,
                payment_id=payment_id,
                amount_minor=amount_minor,
                status="NEW" if awaiting else scenario.created_status,
                timeline=scenario.timeline,
                final_failure_reason=scenario.failure_reason,
                created_at=self._now(),
                awaiting=awaiting,
                funded_after_reads=scenario.funded_after_reads,
            )
            self._refunds[refund_id] = refund
            self.core.record_refund(
                payment_id=payment_id,
                refund_id=refund_id,
                amount_minor=amount_minor,
                idempotency_key=idempotency_key,
            )
            body: dict[str, Any] = {"refundId": refund_id, "status": refund.status}
            if payment.voucher_minor:
                # Both fields only with a voucher reservation (the seed page). How Paynow
                # splits a partial refund is undocumented: here in proportion to the payment.
                voucher = amount_minor * payment.voucher_minor // payment.amount_minor
                body["payerAmount"] = amount_minor - voucher
                body["voucherAmount"] = voucher
            answer: Answer = (201, body)
            self._by_key[shop, idempotency_key] = _Stored(fingerprint, answer)
            return answer

    @staticmethod
    def _transfers_problem(
        payment: SimPayment, amount_minor: int, transfers: list[dict[str, Any]] | None
    ) -> str | None:
        if not payment.marketplace:
            if transfers is not None:
                return (
                    f"transfers: payment {payment.payment_id} is not a marketplace payment; "
                    "transfers are used only for marketplace refunds"
                )
            return None
        # Harsh readings (unconfirmed): a marketplace refund must say which sellers pay it
        # back, and all of it.
        if not transfers:
            return f"transfers: are required to refund marketplace payment {payment.payment_id}"
        gross = sum(int(t["grossAmount"]) for t in transfers)
        if gross != amount_minor:
            return f"transfers: grossAmount adds up to {gross}, not the amount {amount_minor}"
        return None

    def refund_status(self, refund_id: str, *, shop: str = DEFAULT_SHOP) -> Answer:
        with self._lock:
            self._expire_awaiting()
            refund = self._shop_refund(refund_id, shop)
            if refund is None:
                return error_answer(404, f"Refund {refund_id} not found")
            refund.advance()
            return 200, refund.status_body()

    def cancel_refund(
        self,
        refund_id: str,
        *,
        idempotency_key: str,
        fingerprint: str,
        shop: str = DEFAULT_SHOP,
    ) -> Answer:
        with self._lock:
            replay = self._replay((shop, idempotency_key), fingerprint)
            if replay is not None:
                return replay
            self._expire_awaiting()
            refund = self._shop_refund(refund_id, shop)
            if refund is None:
                return error_answer(404, f"Refund {refund_id} not found")
            if refund.status != "NEW":
                return error_answer(
                    400,
                    f"Refund {refund_id} cannot be cancelled in status {refund.status}",
                )
            refund.status = "CANCELLED"
            refund.awaiting = False
            answer: Answer = (200, refund.status_body())
            self._by_key[shop, idempotency_key] = _Stored(fingerprint, answer)
            return answer

    def _replay(self, key: tuple[str, str], fingerprint: str) -> Answer | None:
        stored = self._by_key.get(key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            return error_answer(
                422,
                f"Idempotency-Key {key[1]} was already used with a different "
                "request; use a new key for a new request",
            )
        return stored.answer
