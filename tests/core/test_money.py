"""Money: exact minor units at every boundary, refusals instead of rounding."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.money import (
    CURRENCY_EXPONENTS,
    MAX_EXACT_DIGITS,
    MAX_MINOR_UNITS,
    Money,
    MoneyError,
    decimal_to_minor,
    exponent,
    format_minor,
    minor_to_decimal,
    minor_to_wire_float,
    parse_major,
    wire_float_to_minor,
)

# One currency per exponent the table knows.
CURRENCY_PER_EXPONENT = {0: "JPY", 2: "EUR", 3: "BHD", 4: "CLF"}

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
amounts = st.integers(min_value=1, max_value=MAX_MINOR_UNITS)


def test_every_exponent_has_a_sample_currency() -> None:
    assert set(CURRENCY_EXPONENTS.values()) == set(CURRENCY_PER_EXPONENT)
    for exp, code in CURRENCY_PER_EXPONENT.items():
        assert exponent(code) == exp


def test_max_minor_units_has_exactly_the_exact_digits() -> None:
    assert len(str(MAX_MINOR_UNITS)) == MAX_EXACT_DIGITS
    assert MAX_EXACT_DIGITS <= 15  # a double holds 15 significant decimal digits


# --- the wire float: minor -> float -> minor ---------------------------------------------------


@pytest.mark.parametrize("currency", sorted(CURRENCY_PER_EXPONENT.values()))
@settings(max_examples=300, deadline=None)
@given(amount=amounts)
def test_wire_float_round_trips_exactly(currency: str, amount: int) -> None:
    wire = minor_to_wire_float(amount, currency)
    assert isinstance(wire, float)
    assert wire_float_to_minor(wire, currency) == amount
    # The JSON text a provider reads is exactly the decimal amount.
    assert Decimal(repr(wire)) == minor_to_decimal(amount, currency)


@settings(max_examples=300, deadline=None)
@given(currency=currencies, amount=amounts, negative=st.booleans())
def test_wire_float_round_trips_for_every_known_currency(
    currency: str, amount: int, negative: bool
) -> None:
    signed = -amount if negative else amount
    assert wire_float_to_minor(minor_to_wire_float(signed, currency), currency) == signed


@pytest.mark.parametrize("currency", sorted(CURRENCY_PER_EXPONENT.values()))
@pytest.mark.parametrize("amount", [1, 9, 10, 99, 100, 101, 10**14, MAX_MINOR_UNITS])
def test_wire_float_round_trips_at_the_edges(currency: str, amount: int) -> None:
    assert wire_float_to_minor(minor_to_wire_float(amount, currency), currency) == amount


@settings(max_examples=200, deadline=None)
@given(
    exp=st.sampled_from(sorted(CURRENCY_PER_EXPONENT)),
    amount=st.integers(min_value=0, max_value=10**13),
    extra_digit=st.integers(min_value=1, max_value=9),
)
def test_wire_float_with_a_sub_minor_digit_is_refused(
    exp: int, amount: int, extra_digit: int
) -> None:
    currency = CURRENCY_PER_EXPONENT[exp]
    # One more fraction digit than the currency has, at most 15 significant digits in all.
    too_precise = Decimal(amount * 10 + extra_digit).scaleb(-(exp + 1))
    with pytest.raises(MoneyError, match="more decimals"):
        wire_float_to_minor(float(too_precise), currency)
    with pytest.raises(MoneyError, match="more decimals"):
        wire_float_to_minor(too_precise, currency)


def test_ten_plus_twenty_cents_goes_out_as_point_three() -> None:
    assert minor_to_wire_float(10 + 20, "EUR") == 0.3
    assert repr(minor_to_wire_float(30, "EUR")) == "0.3"
    assert wire_float_to_minor(0.3, "EUR") == 30


def test_float_sum_point_one_plus_point_two_is_refused_not_rounded() -> None:
    inexact = 0.1 + 0.2
    assert repr(inexact) == "0.30000000000000004"
    with pytest.raises(MoneyError, match="more decimals than EUR allows"):
        wire_float_to_minor(inexact, "EUR")


def test_largest_amount_goes_out_and_back() -> None:
    assert minor_to_wire_float(999_999_999_999_999, "EUR") == 9_999_999_999_999.99
    assert wire_float_to_minor(9_999_999_999_999.99, "EUR") == 999_999_999_999_999
    assert wire_float_to_minor(999_999_999_999_999.0, "JPY") == 999_999_999_999_999


def test_amount_beyond_the_exact_range_is_refused_both_ways() -> None:
    with pytest.raises(MoneyError, match="too large"):
        minor_to_wire_float(MAX_MINOR_UNITS + 1, "EUR")
    with pytest.raises(MoneyError, match="too large"):
        minor_to_wire_float(-(MAX_MINOR_UNITS + 1), "EUR")
    with pytest.raises(MoneyError, match="too large"):
        wire_float_to_minor(1e15, "JPY")
    with pytest.raises(MoneyError, match="too large"):
        wire_float_to_minor(10_000_000_000_000.0, "EUR")


def test_three_decimal_currency() -> None:
    assert wire_float_to_minor(1.234, "BHD") == 1234
    assert minor_to_wire_float(1234, "BHD") == 1.234
    assert wire_float_to_minor(1.2, "BHD") == 1200
    with pytest.raises(MoneyError):
        wire_float_to_minor(1.2345, "BHD")


def test_four_decimal_currency() -> None:
    assert wire_float_to_minor(0.0001, "CLF") == 1
    assert minor_to_wire_float(1, "CLF") == 0.0001
    with pytest.raises(MoneyError):
        wire_float_to_minor(0.00015, "CLF")


def test_zero_decimal_currency() -> None:
    assert wire_float_to_minor(1500, "JPY") == 1500
    assert wire_float_to_minor(1500.0, "JPY") == 1500
    assert minor_to_wire_float(1500, "JPY") == 1500.0
    with pytest.raises(MoneyError, match="more decimals than JPY allows"):
        wire_float_to_minor(12.5, "JPY")


def test_wire_accepts_ints_and_decimals() -> None:
    assert wire_float_to_minor(12, "PLN") == 1200
    assert wire_float_to_minor(Decimal("12.34"), "PLN") == 1234
    assert wire_float_to_minor(-12.34, "PLN") == -1234


@pytest.mark.parametrize("flag", [True, False])
def test_wire_refuses_booleans(flag: bool) -> None:
    with pytest.raises(MoneyError, match="boolean"):
        wire_float_to_minor(flag, "PLN")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_wire_refuses_non_finite_floats(value: float) -> None:
    with pytest.raises(MoneyError, match="not a finite number"):
        wire_float_to_minor(value, "PLN")


# --- decimals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "sNaN", "-NaN", "Infinity", "-Infinity", "inf"])
def test_decimal_to_minor_refuses_non_finite(text: str) -> None:
    with pytest.raises(MoneyError, match="not a finite number"):
        decimal_to_minor(Decimal(text), "PLN")


def test_decimal_to_minor_is_exact() -> None:
    assert decimal_to_minor(Decimal("12.34"), "PLN") == 1234
    assert decimal_to_minor(Decimal("12.340000"), "PLN") == 1234
    assert decimal_to_minor(Decimal("1.2E+3"), "PLN") == 120_000
    assert decimal_to_minor(Decimal("0"), "PLN") == 0
    with pytest.raises(MoneyError, match="more decimals"):
        decimal_to_minor(Decimal("12.345"), "PLN")


def test_decimal_to_minor_does_not_round_beyond_28_digits() -> None:
    # 31 significant digits: the default decimal context would round this to a whole 1235.
    with pytest.raises(MoneyError, match="more decimals"):
        decimal_to_minor(Decimal("12.34999999999999999999999999999"), "PLN")
    with pytest.raises(MoneyError, match="more decimals"):
        decimal_to_minor(Decimal("1.0000000000000000000000000001"), "PLN")
    with pytest.raises(MoneyError, match="more decimals"):
        wire_float_to_minor(Decimal("0.100000000000000000000000000000001"), "EUR")


@settings(max_examples=200, deadline=None)
@given(currency=currencies, amount=amounts)
def test_minor_to_decimal_and_back(currency: str, amount: int) -> None:
    value = minor_to_decimal(amount, currency)
    assert value == Decimal(amount) / (10 ** exponent(currency))
    assert decimal_to_minor(value, currency) == amount


# --- parsing what people type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "PLN", 1234),
        ("12", "PLN", 1200),
        ("0.01", "PLN", 1),
        ("12.3", "PLN", 1230),
        ("12.340", "PLN", 1234),
        (".5", "PLN", 50),
        ("12.", "PLN", 1200),
        (" 12.3 ", "PLN", 1230),
        ("\t12.34\n", "PLN", 1234),
        ("1.234", "BHD", 1234),
        ("1500", "JPY", 1500),
        ("0.0001", "CLF", 1),
        ("9999999999999.99", "EUR", MAX_MINOR_UNITS),
    ],
)
def test_parse_major_accepts_plain_amounts(text: str, currency: str, minor: int) -> None:
    assert parse_major(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        ("-1", "PLN", "plain positive number"),
        ("+1", "PLN", "plain positive number"),
        ("1e3", "PLN", "plain positive number"),
        ("1E3", "PLN", "plain positive number"),
        ("1,000.00", "PLN", "plain positive number"),
        ("12,34", "PLN", "plain positive number"),
        ("1 000", "PLN", "plain positive number"),
        ("1.2.3", "PLN", "plain positive number"),
        ("", "PLN", "plain positive number"),
        ("   ", "PLN", "plain positive number"),
        ("abc", "PLN", "plain positive number"),
        ("NaN", "PLN", "plain positive number"),
        ("Infinity", "PLN", "plain positive number"),
        ("0x10", "PLN", "plain positive number"),
        ("1_000", "PLN", "plain positive number"),
        ("\u0661\u0662", "PLN", "plain positive number"),  # Arabic-Indic digits
        ("\uff11\uff12", "PLN", "plain positive number"),  # full-width digits
        ("\u00b2", "PLN", "plain positive number"),  # superscript two
        (".", "PLN", "not a number"),
        ("0", "PLN", "greater than zero"),
        ("0.00", "PLN", "greater than zero"),
        ("12.345", "PLN", "more decimals than PLN allows"),
        ("12.5", "JPY", "more decimals than JPY allows"),
        ("1.2345", "BHD", "more decimals than BHD allows"),
        ("12.34999999999999999999999999999", "PLN", "more decimals than PLN allows"),
        ("10000000000000.00", "EUR", "too large"),
    ],
)
def test_parse_major_refuses(text: str, currency: str, reason: str) -> None:
    with pytest.raises(MoneyError, match=reason):
        parse_major(text, currency)


@settings(max_examples=200, deadline=None)
@given(currency=currencies, amount=amounts)
def test_parse_major_reads_back_what_format_minor_writes(currency: str, amount: int) -> None:
    number, code = format_minor(amount, currency).split(" ")
    assert code == currency
    assert parse_major(number, currency) == amount


# --- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1234, "PLN", "12.34 PLN"),
        (5, "EUR", "0.05 EUR"),
        (100, "EUR", "1.00 EUR"),
        (1234, "BHD", "1.234 BHD"),
        (1500, "JPY", "1500 JPY"),
        (1, "CLF", "0.0001 CLF"),
        (MAX_MINOR_UNITS, "EUR", "9999999999999.99 EUR"),
    ],
)
def test_format_minor(amount: int, currency: str, text: str) -> None:
    assert format_minor(amount, currency) == text


# --- currencies --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["XYZ", "eur", "EURO", "", "BTC"])
def test_unknown_currency_is_a_money_error_everywhere(code: str) -> None:
    with pytest.raises(MoneyError, match="unknown or unsupported"):
        exponent(code)
    with pytest.raises(MoneyError):
        minor_to_decimal(100, code)
    with pytest.raises(MoneyError):
        minor_to_wire_float(100, code)
    with pytest.raises(MoneyError):
        wire_float_to_minor(1.0, code)
    with pytest.raises(MoneyError):
        parse_major("1.00", code)
    with pytest.raises(MoneyError):
        format_minor(100, code)
    with pytest.raises(MoneyError):
        decimal_to_minor(Decimal(1), code)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


# --- the Money model ---------------------------------------------------------------------------


def test_money_model_accepts_a_valid_amount() -> None:
    money = Money(amount_minor=1234, currency="PLN")
    assert money.amount_minor == 1234
    assert money.currency == "PLN"
    assert str(money) == "12.34 PLN"


def test_money_model_boundaries() -> None:
    assert Money(amount_minor=1, currency="EUR").amount_minor == 1
    assert Money(amount_minor=MAX_MINOR_UNITS, currency="EUR").amount_minor == MAX_MINOR_UNITS


@pytest.mark.parametrize(
    "amount", [0, -1, MAX_MINOR_UNITS + 1, True, False, 12.0, 12.5, "12", Decimal(12), None]
)
def test_money_model_refuses_bad_amounts(amount: Any) -> None:
    with pytest.raises(ValidationError):
        Money.model_validate({"amount_minor": amount, "currency": "PLN"})


@pytest.mark.parametrize("currency", ["pln", "XYZ", "PLNX", "PL", "", 985, None])
def test_money_model_refuses_bad_currencies(currency: Any) -> None:
    with pytest.raises(ValidationError):
        Money.model_validate({"amount_minor": 100, "currency": currency})


def test_money_model_is_frozen_and_closed() -> None:
    money = Money(amount_minor=100, currency="PLN")
    with pytest.raises(ValidationError):
        money.amount_minor = 200  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Money.model_validate({"amount_minor": 100, "currency": "PLN", "value": 1.0})


def test_money_model_json_round_trip() -> None:
    money = Money(amount_minor=999_999_999_999_999, currency="BHD")
    assert Money.model_validate(money.model_dump(mode="json")) == money
    assert Money.model_validate_json(money.model_dump_json()) == money
    assert money.model_dump(mode="json") == {
        "amount_minor": 999_999_999_999_999,
        "currency": "BHD",
    }
