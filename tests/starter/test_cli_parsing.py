"""`refunds start` arguments -> RefundRequest: amounts per currency, transfers, metadata."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from cli.main import build_parser
from cli.requests import build_request
from cli.runner import InputError, UsageError
from core.models import ProviderName, ReasonCode, Transfer

MEWS_PAYMENT = "6d1b2c3a-0001-4a5b-8c6d-7e8f9a0b1c01"
MEWS_ACCOUNT = "a1c0ffee-0001-4b2c-9d3e-4f5a6b7c8d01"


def parse(
    *extra: str, payment_id: str = "NOLV-8F9-08K-WGD", provider: str = "paynow"
) -> argparse.Namespace:
    base = ["start", "--provider", provider, "--payment-id", payment_id]
    base += ["--reason", "returned", "--key", "order-1"]
    return build_parser().parse_args([*base, *extra])


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "PLN", 1234),
        ("12.3", "PLN", 1230),
        ("12", "PLN", 1200),
        ("0.01", "EUR", 1),
        (" 12.34 ", "pln", 1234),
        ("500", "JPY", 500),
        ("1.234", "BHD", 1234),
    ],
)
def test_amount_is_major_units_of_the_currency(text: str, currency: str, minor: int) -> None:
    request = build_request(parse("--amount", text, "--currency", currency))
    assert request.amount_minor == minor
    assert request.currency == currency.upper()


@pytest.mark.parametrize(
    ("text", "currency", "fragment"),
    [
        ("12.345", "PLN", "more decimals than PLN allows (2)"),
        ("500.5", "JPY", "more decimals than JPY allows (0)"),
        ("-5", "PLN", "not a plain positive number"),
        ("1e3", "PLN", "not a plain positive number"),
        ("1,000.00", "PLN", "not a plain positive number"),
        ("0", "PLN", "greater than zero"),
    ],
)
def test_inexact_or_odd_amounts_are_refused_naming_the_flag(
    text: str, currency: str, fragment: str
) -> None:
    with pytest.raises(InputError) as caught:
        build_request(parse("--amount", text, "--currency", currency))
    message = str(caught.value)
    assert message.startswith("invalid --amount: ")
    assert fragment in message


def test_amount_and_currency_go_together() -> None:
    with pytest.raises(InputError, match="--amount: needs --currency"):
        build_request(parse("--amount", "12.34"))
    with pytest.raises(InputError, match="--currency: goes with --amount"):
        build_request(parse("--currency", "PLN"))


def test_no_amount_means_whole_payment() -> None:
    request = build_request(
        parse("--account-id", MEWS_ACCOUNT, provider="mews", payment_id=MEWS_PAYMENT)
    )
    assert request.amount_minor is None
    assert request.currency is None
    assert request.provider is ProviderName.MEWS


def test_every_field_reaches_the_request() -> None:
    args = parse(
        "--amount",
        "20.00",
        "--currency",
        "PLN",
        "--reason-code",
        "RMA",
        "--transfer",
        "seller-1:15.00:0.50",
        "--transfer",
        "seller-2:5:0",
        "--requester",
        "alice",
        "--meta",
        "ticket=T-1",
        "--meta",
        "note=a=b",
    )
    request = build_request(args)
    assert request.idempotency_key == "order-1"
    assert request.reason == "returned"
    assert request.reason_code is ReasonCode.RMA
    assert request.requester == "alice"
    assert request.metadata == {"ticket": "T-1", "note": "a=b"}
    assert request.transfers == (
        Transfer(seller_id="seller-1", gross_amount_minor=1500, fee_amount_minor=50),
        Transfer(seller_id="seller-2", gross_amount_minor=500, fee_amount_minor=0),
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("seller-1:15.00", "expected SELLER:GROSS:FEE"),
        (":1:0", "expected SELLER:GROSS:FEE"),
        ("seller-1:15.001:0", "more decimals than PLN allows"),
        ("seller-1:abc:0", "not a plain positive number"),
    ],
)
def test_bad_transfers_name_the_flag(spec: str, fragment: str) -> None:
    args = parse("--amount", "20", "--currency", "PLN", "--transfer", spec)
    with pytest.raises(InputError) as caught:
        build_request(args)
    assert str(caught.value).startswith("invalid --transfer: ")
    assert fragment in str(caught.value)


def test_transfers_need_a_currency() -> None:
    with pytest.raises(InputError, match="need --currency"):
        build_request(parse("--transfer", "s:1:0"))


def test_bad_meta() -> None:
    with pytest.raises(InputError, match="--meta: expected KEY=VALUE"):
        build_request(parse("--meta", "novalue"))


def test_model_rules_still_apply() -> None:
    with pytest.raises(ValidationError) as caught:
        build_request(parse("--key", "has spaces"))
    assert caught.value.errors()[0]["loc"] == ("idempotency_key",)


@pytest.mark.parametrize(
    "argv",
    [
        ["start"],
        ["start", "--provider", "stripe", "--payment-id", "x", "--reason", "r", "--key", "k"],
        ["list", "--limit", "0"],
        ["list", "--state", "DONE"],
        ["dev", "--temporal-port", "70000"],
        ["nope"],
    ],
)
def test_argparse_errors_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        build_parser().parse_args(argv)
    # The runner prints it after the one prefix of every error, `refunds: error: `.
    assert "error:" not in str(caught.value)
    assert "--help" in str(caught.value)
