"""The Paynow simulator's state: payments, refunds, their state machine and idempotency.

Every method takes the lock for its whole check-then-act, so two concurrent creates under one
Idempotency-Key still make one refund. Methods answer ``(HTTP status, JSON body)``; the
HTTP layer (:mod:`simulators.paynow.app`) only authenticates and validates shapes.

Refund state machine (Paynow's documented flow): NEW -> PENDING -> SUCCESSFUL | FAILED, and
NEW -> CANCELLED. Each status read advances a refund one step along its scenario's timeline
(see :mod:`simulators.paynow.seed`).

Idempotency: a successful POST is stored under its Idempotency-Key with a fingerprint of the
request (operation, target and the parsed JSON body; spacing, key order and null fields
ignored). The same key with the
same fingerprint replays the stored answer and changes nothing. The same key with another
request is answered 422 ``VALIDATION_ERROR``: Paynow's behaviour there is unconfirmed, and a
loud refusal is the safe model. Failed POSTs are not stored, so a retry after
``INSUFFICIENT_BALANCE_FUNDS`` is evaluated afresh.

Business refusals, whose exact Paynow errorTypes are unconfirmed (the adapter keys on these
messages, see ``providers/paynow/adapter.py``), all 400 ``VALIDATION_ERROR``:

* payment not CONFIRMED: "Payment ... is not CONFIRMED (status ...): only CONFIRMED payments
  can be refunded";
* over-refund: "Refund amount ... exceeds the amount available for refund (...)";
* below the minimum: "amount: ... is below the minimum refund ...";
* cancel of a refund that is not NEW: "Refund ... cannot be cancelled: its status is ...,
  only NEW refunds can be cancelled".

Insufficient merchant balance is 400 ``INSUFFICIENT_BALANCE_FUNDS`` (a documented type).
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass, field
from typing import Any

from simulators.common import SimulatorCore
from simulators.paynow.seed import (
    MINIMUM_REFUND_MINOR,
    SCENARIOS,
    SEED_PAYMENTS,
    Scenario,
)

FINAL_REFUND_STATUSES = frozenset({"SUCCESSFUL", "FAILED", "CANCELLED"})
_INACTIVE_REFUND_STATUSES = frozenset({"FAILED", "CANCELLED"})
_ID_ALPHABET = string.ascii_uppercase + string.digits

Answer = tuple[int, dict[str, Any]]

ERROR_TYPES: dict[int, str] = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    503: "SYSTEM_TEMPORARILY_UNAVAILABLE",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "INTERNAL_SERVER_ERROR" if status >= 500 else "VALIDATION_ERROR"


def error_answer(status: int, message: str, error_type: str | None = None) -> Answer:
    """Paynow's error body ``{statusCode, errors: [{errorType, message}]}``."""
    return status, {
        "statusCode": status,
        "errors": [{"errorType": error_type or error_type_for(status), "message": message}],
    }


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


@dataclass
class SimRefund:
    refund_id: str
    payment_id: str
    amount_minor: int
    status: str
    timeline: tuple[str, ...]
    final_failure_reason: str | None
    failure_reason: str | None = None
    reads: int = 0

    def advance(self) -> None:
        """One status read: one step along the timeline; cancelled refunds stay put."""
        if self.status == "CANCELLED" or not self.timeline:
            return
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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _payments: dict[str, SimPayment] = field(default_factory=dict)
    _refunds: dict[str, SimRefund] = field(default_factory=dict)
    _by_key: dict[str, _Stored] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._refunds.clear()
            self._by_key.clear()
            self._payments = {}
            for seed in SEED_PAYMENTS:
                self._payments[seed.payment_id] = self._payment(
                    seed.payment_id,
                    SCENARIOS[seed.scenario],
                    amount_minor=seed.amount_minor,
                    currency=seed.currency,
                    method=seed.method,
                )

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
            "refund_ids": [
                r.refund_id for r in self._refunds.values() if r.payment_id == payment.payment_id
            ],
        }

    def payments(self) -> list[dict[str, Any]]:
        with self._lock:
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
            )
            self._payments[payment_id] = payment
            return self._describe(payment)

    def payment_status(self, payment_id: str) -> Answer:
        with self._lock:
            payment = self._payments.get(payment_id)
            if payment is None:
                return error_answer(404, f"Payment {payment_id} not found")
            return 200, {"paymentId": payment.payment_id, "status": payment.status}

    def create_refund(
        self, payment_id: str, *, idempotency_key: str, fingerprint: str, amount_minor: int
    ) -> Answer:
        with self._lock:
            replay = self._replay(idempotency_key, fingerprint)
            if replay is not None:
                return replay
            payment = self._payments.get(payment_id)
            if payment is None:
                return error_answer(404, f"Payment {payment_id} not found")
            if payment.status != "CONFIRMED":
                return error_answer(
                    400,
                    f"Payment {payment_id} is not CONFIRMED (status {payment.status}): "
                    "only CONFIRMED payments can be refunded",
                )
            minimum = MINIMUM_REFUND_MINOR.get(payment.method, 1)
            if amount_minor < minimum:
                return error_answer(
                    400,
                    f"amount: {amount_minor} is below the minimum refund of {minimum} "
                    f"for {payment.method} payments",
                )
            available = payment.amount_minor - self._refunded_minor(payment)
            if amount_minor > available:
                return error_answer(
                    400,
                    f"Refund amount {amount_minor} exceeds the amount available for refund "
                    f"({available} of {payment.amount_minor} {payment.currency})",
                )
            if payment.scenario.insufficient_funds:
                return error_answer(
                    400,
                    "Insufficient funds on the merchant balance to make the refund",
                    "INSUFFICIENT_BALANCE_FUNDS",
                )
            refund_id = new_paynow_id("R")
            while refund_id in self._refunds:
                refund_id = new_paynow_id("R")
            scenario = payment.scenario
            refund = SimRefund(
                refund_id=refund_id,
                payment_id=payment_id,
                amount_minor=amount_minor,
                status=scenario.created_status,
                timeline=scenario.timeline,
                final_failure_reason=scenario.failure_reason,
            )
            self._refunds[refund_id] = refund
            self.core.record_refund(
                payment_id=payment_id,
                refund_id=refund_id,
                amount_minor=amount_minor,
                idempotency_key=idempotency_key,
            )
            answer: Answer = (201, {"refundId": refund_id, "status": refund.status})
            self._by_key[idempotency_key] = _Stored(fingerprint, answer)
            return answer

    def refund_status(self, refund_id: str) -> Answer:
        with self._lock:
            refund = self._refunds.get(refund_id)
            if refund is None:
                return error_answer(404, f"Refund {refund_id} not found")
            refund.advance()
            return 200, refund.status_body()

    def cancel_refund(self, refund_id: str, *, idempotency_key: str, fingerprint: str) -> Answer:
        with self._lock:
            replay = self._replay(idempotency_key, fingerprint)
            if replay is not None:
                return replay
            refund = self._refunds.get(refund_id)
            if refund is None:
                return error_answer(404, f"Refund {refund_id} not found")
            if refund.status != "NEW":
                return error_answer(
                    400,
                    f"Refund {refund_id} cannot be cancelled: its status is {refund.status}, "
                    "only NEW refunds can be cancelled",
                )
            refund.status = "CANCELLED"
            answer: Answer = (200, refund.status_body())
            self._by_key[idempotency_key] = _Stored(fingerprint, answer)
            return answer

    def _replay(self, idempotency_key: str, fingerprint: str) -> Answer | None:
        stored = self._by_key.get(idempotency_key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            return error_answer(
                422,
                f"Idempotency-Key {idempotency_key} was already used with a different "
                "request; use a new key for a new request",
            )
        return stored.answer
