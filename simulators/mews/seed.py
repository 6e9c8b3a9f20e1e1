"""The Mews simulator's fixed world: demo tokens, scenarios and seeded payments.

Every id here is a fixed UUID, so scripts, docs and tests can name them across runs.

A Mews customer account holds many payments (a guest's stay, deposits, extras), and a refund is
a payment of ``Kind: Refund`` on the same account with no documented link to the payment it
refunds (PROVIDERS.md, Mews: "A customer account holds many payments"). So the seed has both:

* one payment per scenario, each on its own account (``a1c0ffee-000N-...``);
* a **shared account** :data:`SHARED_ACCOUNT_ID` (``a1c0ffee-0100-4b2c-9d3e-4f5a6b7c8d00``)
  holding two Charged ``CreditCardPayment`` payments, both of scenario ``succeeds``:
  :data:`SHARED_PAYMENT_A_ID` (``6d1b2c3a-0101-...``, 250.50 EUR, ten minutes older) and
  :data:`SHARED_PAYMENT_B_ID` (``6d1b2c3a-0102-...``, 100.00 EUR). Refunds of either land on
  that account, indistinguishable by payment in ``payments/getAll``.

``POST /_sim/payments`` with an ``account_id`` adds a payment to an existing account.

Scenarios say how a payment behaves when refunded. A refund starts in the first state of its
scenario's script; every ``payments/getAll`` read that returns it by ``PaymentIds`` moves it one
step on, and the last state stays. A ``held`` refund stays ``Pending`` on every read until
``POST /_sim/refunds/settle`` (or ``/_sim/refunds/{id}/settle``) settles it: a refund Mews takes
long to process, for tests and benchmarks of many pending refunds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Made-up tokens for the simulator only; they have the shape of nothing real.
DEFAULT_CLIENT_TOKEN = "SIMULATOR-DEMO-CLIENT-TOKEN-4F1C9A7E2B"
DEFAULT_ACCESS_TOKEN = "SIMULATOR-DEMO-ACCESS-TOKEN-8D3B6E0A51"
DEFAULT_PORTFOLIO_TOKEN = "SIMULATOR-DEMO-PORTFOLIO-TOKEN-2C7E5D9F03"

# The one enterprise (hotel) every simulated payment belongs to.
ENTERPRISE_ID = "3b0f6a2e-5c1d-4e8f-9a70-1d2c3b4a5e60"
# The integration (this service's connection to that enterprise) its webhooks name.
INTEGRATION_ID = "7c4e1f0a-2b3d-4c5e-8f60-9a1b2c3d4e70"

REFUNDABLE_TYPES = ("CreditCardPayment", "AlternativePayment")
PAYMENT_STATES = ("Charged", "Canceled", "Pending", "Failed", "Verifying")


class Scenario(StrEnum):
    SUCCEEDS = "succeeds"
    SUCCEEDS_IMMEDIATELY = "succeeds_immediately"
    FAILS = "fails"
    SLOW = "slow"
    NOT_REFUNDABLE_TYPE = "not_refundable_type"
    NOT_CHARGED = "not_charged"
    PARTLY_REFUNDED = "partly_refunded"
    HELD = "held"


_SUCCEEDS = ("Pending", "Pending", "Charged")

# State of a refund after 0, 1, 2, ... reads by PaymentIds.
REFUND_SCRIPTS: dict[Scenario, tuple[str, ...]] = {
    Scenario.SUCCEEDS: _SUCCEEDS,
    Scenario.SUCCEEDS_IMMEDIATELY: ("Charged",),
    Scenario.FAILS: ("Pending", "Pending", "Failed"),
    Scenario.SLOW: ("Pending",) * 11 + ("Charged",),
    # The next three are refused (or partly) before any refund exists; if one is made anyway
    # (partly_refunded's remainder), it behaves like `succeeds`.
    Scenario.NOT_REFUNDABLE_TYPE: _SUCCEEDS,
    Scenario.NOT_CHARGED: _SUCCEEDS,
    Scenario.PARTLY_REFUNDED: _SUCCEEDS,
    # Pending until settled through the control API.
    Scenario.HELD: ("Pending",),
}


@dataclass(frozen=True)
class PaymentTemplate:
    """What a payment of a scenario looks like unless the creator says otherwise."""

    amount_minor: int
    currency: str
    type: str = "CreditCardPayment"
    state: str = "Charged"
    refunded_minor: int = 0


TEMPLATES: dict[Scenario, PaymentTemplate] = {
    Scenario.SUCCEEDS: PaymentTemplate(10_000, "GBP"),
    Scenario.SUCCEEDS_IMMEDIATELY: PaymentTemplate(5_000, "EUR", type="AlternativePayment"),
    Scenario.FAILS: PaymentTemplate(7_550, "GBP"),
    Scenario.SLOW: PaymentTemplate(2_000, "EUR"),
    Scenario.NOT_REFUNDABLE_TYPE: PaymentTemplate(3_000, "GBP", type="CashPayment"),
    Scenario.NOT_CHARGED: PaymentTemplate(4_000, "EUR", state="Pending"),
    Scenario.PARTLY_REFUNDED: PaymentTemplate(10_000, "GBP", refunded_minor=6_000),
    Scenario.HELD: PaymentTemplate(10_000, "GBP"),
}


@dataclass(frozen=True)
class SeedPayment:
    payment_id: str
    account_id: str
    scenario: Scenario
    # Only for payments seeded with an earlier refund (partly_refunded).
    earlier_refund_id: str | None = None
    # Overrides of the scenario's template.
    amount_minor: int | None = None
    currency: str | None = None
    # Created this many seconds before the other seeded payments (which are an hour old).
    older_by_s: int = 0


SHARED_ACCOUNT_ID = "a1c0ffee-0100-4b2c-9d3e-4f5a6b7c8d00"
SHARED_PAYMENT_A_ID = "6d1b2c3a-0101-4a5b-8c6d-7e8f9a0b1c11"
SHARED_PAYMENT_B_ID = "6d1b2c3a-0102-4a5b-8c6d-7e8f9a0b1c12"


SEEDED_PAYMENTS: tuple[SeedPayment, ...] = (
    SeedPayment(
        "6d1b2c3a-0001-4a5b-8c6d-7e8f9a0b1c01",
        "a1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01",
        Scenario.SUCCEEDS,
    ),
    SeedPayment(
        "6d1b2c3a-0002-4a5b-8c6d-7e8f9a0b1c02",
        "a1c0ffee-0002-4b2c-9d3e-4f5a6b7c8d02",
        Scenario.SUCCEEDS_IMMEDIATELY,
    ),
    SeedPayment(
        "6d1b2c3a-0003-4a5b-8c6d-7e8f9a0b1c03",
        "a1c0ffee-0003-4b2c-9d3e-4f5a6b7c8d03",
        Scenario.FAILS,
    ),
    SeedPayment(
        "6d1b2c3a-0004-4a5b-8c6d-7e8f9a0b1c04",
        "a1c0ffee-0004-4b2c-9d3e-4f5a6b7c8d04",
        Scenario.SLOW,
    ),
    SeedPayment(
        "6d1b2c3a-0005-4a5b-8c6d-7e8f9a0b1c05",
        "a1c0ffee-0005-4b2c-9d3e-4f5a6b7c8d05",
        Scenario.NOT_REFUNDABLE_TYPE,
    ),
    SeedPayment(
        "6d1b2c3a-0006-4a5b-8c6d-7e8f9a0b1c06",
        "a1c0ffee-0006-4b2c-9d3e-4f5a6b7c8d06",
        Scenario.NOT_CHARGED,
    ),
    SeedPayment(
        "6d1b2c3a-0007-4a5b-8c6d-7e8f9a0b1c07",
        "a1c0ffee-0007-4b2c-9d3e-4f5a6b7c8d07",
        Scenario.PARTLY_REFUNDED,
        earlier_refund_id="7e2c3d4b-0007-4b6c-9d7e-8f9a0b1c2d07",
    ),
    SeedPayment(
        "6d1b2c3a-0008-4a5b-8c6d-7e8f9a0b1c08",
        "a1c0ffee-0008-4b2c-9d3e-4f5a6b7c8d08",
        Scenario.HELD,
    ),
    # Two payments on one account (see the module docstring).
    SeedPayment(
        SHARED_PAYMENT_A_ID,
        SHARED_ACCOUNT_ID,
        Scenario.SUCCEEDS,
        amount_minor=25_050,
        currency="EUR",
        older_by_s=600,
    ),
    SeedPayment(
        SHARED_PAYMENT_B_ID,
        SHARED_ACCOUNT_ID,
        Scenario.SUCCEEDS,
        amount_minor=10_000,
        currency="EUR",
    ),
)

# The first (single-account) seeded payment of each scenario: reversed, so the first wins.
SEEDED_BY_SCENARIO: dict[Scenario, SeedPayment] = {p.scenario: p for p in reversed(SEEDED_PAYMENTS)}
