"""The Paynow simulator's keys, scenarios and seeded payments.

The default keys are Paynow's public sandbox keys (the ones its signature test vectors use).
Every seeded payment has a fixed id matching Paynow's pattern, so demos and docs can name them;
tests that change state create their own payment through ``POST /_sim/payments`` instead.

A scenario decides how a payment answers a refund and how its refunds move. Each status read
of a refund advances it one step along ``timeline`` (the last step then repeats):

* ``succeeds``: refund created NEW; reads give PENDING, then SUCCESSFUL.
* ``succeeds_immediately``: refund created SUCCESSFUL.
* ``fails``: created NEW; reads give PENDING, then FAILED with ``CARD_BALANCE_ERROR``.
* ``awaiting``: created NEW, an "awaiting refund" (merchant balance short); the balance comes
  after 20 reads, so: NEW for 20 reads, then PENDING, then SUCCESSFUL. The one to cancel.
* ``awaiting_funds``: created NEW, awaiting a merchant balance that never comes by itself: NEW
  on every read until ``POST /_sim/payments/{id}/fund`` (then PENDING, then SUCCESSFUL), or
  CANCELLED by Paynow once it has waited 120 h on the simulator's clock (``POST /_sim/clock``).
  ``awaiting`` refunds are cancelled after 120 h the same way.
* ``slow``: created NEW; PENDING for 10 reads, then SUCCESSFUL.
* ``three_checks``: created NEW; PENDING for 2 reads, SUCCESSFUL at the third (the
  benchmark's refund that needs three status checks).
* ``held``: created NEW; PENDING on every read until ``POST /_sim/refunds/settle`` settles it
  (a refund the bank takes long to process: for tests and benchmarks of many pending refunds).
* ``not_confirmed``: the payment is PENDING; a refund is refused (400).
* ``partly_refunded``: 60% of the payment was refunded already (100.00 PLN, 60.00 gone).
* ``insufficient_funds``: a refund is refused with 400 ``INSUFFICIENT_BALANCE_FUNDS``
  (until the payment is funded).
* ``marketplace``: a marketplace payment: its refunds must carry ``transfers`` (see
  :mod:`simulators.paynow.state`); every other payment refuses them.
* ``voucher``: 40% of the payment was paid with a voucher card: the create answer states
  ``payerAmount`` and ``voucherAmount``. Other payments' answers state neither (the seed page:
  both fields "will only be included if a voucher reservation was used").
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_API_KEY = "97a55694-5478-43b5-b406-fb49ebfdd2b5"
DEFAULT_SIGNATURE_KEY = "b305b996-bca5-4404-a0b7-2ccea3d2b64b"

DEFAULT_AMOUNT_MINOR = 10_000
DEFAULT_CURRENCY = "PLN"
# Paynow's minimum refund: 1 PLN for card payments, one grosz otherwise.
MINIMUM_REFUND_MINOR = {"card": 100, "blik": 1}
# How long Paynow lets an awaiting refund wait for the merchant balance before cancelling it:
# 120 h by default (configurable per shop at Paynow; here per simulator).
AWAITING_EXPIRY_S = 120 * 3600.0


@dataclass(frozen=True)
class Scenario:
    name: str
    payment_status: str = "CONFIRMED"
    created_status: str = "NEW"
    timeline: tuple[str, ...] = ("PENDING", "SUCCESSFUL")
    failure_reason: str | None = None
    insufficient_funds: bool = False
    # Share of the payment refunded before the simulator started, in percent.
    refunded_percent: int = 0
    # Refunds wait in NEW for the merchant balance ("awaiting refund"); the balance comes by
    # itself after this many status reads, or only when funded (None).
    awaiting: bool = False
    funded_after_reads: int | None = None
    marketplace: bool = False
    # Share of the payment paid with a voucher card, in percent.
    voucher_percent: int = 0


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("succeeds"),
        Scenario("succeeds_immediately", created_status="SUCCESSFUL", timeline=()),
        Scenario("fails", timeline=("PENDING", "FAILED"), failure_reason="CARD_BALANCE_ERROR"),
        Scenario("awaiting", awaiting=True, funded_after_reads=20),
        Scenario("awaiting_funds", awaiting=True),
        Scenario("slow", timeline=("PENDING",) * 10 + ("SUCCESSFUL",)),
        Scenario("three_checks", timeline=("PENDING", "PENDING", "SUCCESSFUL")),
        Scenario("held", timeline=("PENDING",)),
        Scenario("not_confirmed", payment_status="PENDING"),
        Scenario("partly_refunded", refunded_percent=60),
        Scenario("insufficient_funds", insufficient_funds=True),
        Scenario("marketplace", marketplace=True),
        Scenario("voucher", voucher_percent=40),
    )
}


@dataclass(frozen=True)
class SeedPayment:
    payment_id: str
    scenario: str
    amount_minor: int = DEFAULT_AMOUNT_MINOR
    currency: str = DEFAULT_CURRENCY
    method: str = "card"


SEED_PAYMENTS: tuple[SeedPayment, ...] = (
    SeedPayment("SUCC-EED-S00-001", "succeeds"),
    SeedPayment("SUCC-IMM-000-001", "succeeds_immediately"),
    SeedPayment("FAIL-S00-000-001", "fails"),
    SeedPayment("AWAI-TNG-000-001", "awaiting"),
    SeedPayment("AWAI-FND-000-001", "awaiting_funds"),
    SeedPayment("SLOW-000-000-001", "slow"),
    SeedPayment("THRE-CHK-000-001", "three_checks"),
    SeedPayment("HELD-000-000-001", "held"),
    SeedPayment("NCNF-000-000-001", "not_confirmed"),
    SeedPayment("PART-REF-000-001", "partly_refunded"),
    SeedPayment("NOFU-NDS-000-001", "insufficient_funds"),
    SeedPayment("BLIK-000-000-001", "succeeds", method="blik"),
    SeedPayment("MRKT-PLC-000-001", "marketplace"),
    SeedPayment("VOUC-HER-000-001", "voucher"),
)
