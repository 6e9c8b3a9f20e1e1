"""Money: an integer number of minor units plus an ISO 4217 code.

Amounts never travel as floats inside the system. The only float in the whole path is Mews'
``ValueToRefund`` (a JSON number), and it is produced from and read back into :class:`Decimal`
at the wire, exactly:

* minor units -> ``Decimal`` by shifting the exponent (no rounding is possible);
* ``Decimal`` -> JSON number: ``float(decimal)``. Python's ``float.__repr__`` is the shortest
  string that round-trips, so any decimal with at most 15 significant digits prints back as
  itself (IEEE 754 doubles hold 15 decimal digits exactly). :data:`MAX_EXACT_DIGITS` caps
  amounts to stay inside that guarantee;
* JSON number -> ``Decimal``: ``Decimal(repr(value))``, then a check that it has no more
  fraction digits than the currency allows. Anything else is refused, never rounded.
"""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# ISO 4217 minor-unit exponents. Currencies absent here are refused rather than guessed.
CURRENCY_EXPONENTS: dict[str, int] = {
    # 0 decimals
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # 3 decimals
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # 4 decimals
    "CLF": 4, "UYW": 4,
    # 2 decimals
    "AED": 2, "AUD": 2, "BGN": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2,
    "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2,
    "INR": 2, "MAD": 2, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "PHP": 2, "PLN": 2,
    "RON": 2, "RSD": 2, "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TRY": 2, "TWD": 2,
    "UAH": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

# Doubles represent every decimal of up to 15 significant digits exactly through repr().
MAX_EXACT_DIGITS = 15
MAX_MINOR_UNITS = 10**MAX_EXACT_DIGITS - 1


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def _known_currency(code: str) -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValueError(f"unknown or unsupported ISO 4217 currency code {code!r}")
    return code


CurrencyCode = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", examples=["PLN"]), AfterValidator(_known_currency)
]
"""An upper-case ISO 4217 code whose exponent we know."""

MinorUnits = Annotated[int, Field(gt=0, le=MAX_MINOR_UNITS, strict=True)]
"""A strictly positive amount in the currency's smallest unit (grosz, cent, fils...)."""


def exponent(currency: str) -> int:
    """Number of fraction digits of ``currency``; raises :class:`MoneyError` if unknown."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"unknown or unsupported ISO 4217 currency code {currency!r}") from None


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Exact major-unit value: ``1234 PLN`` -> ``Decimal('12.34')``."""
    return Decimal(amount_minor).scaleb(-exponent(currency))


def decimal_to_minor(value: Decimal, currency: str) -> int:
    """Exact minor units of a major-unit decimal; refuses sub-minor fractions."""
    if not value.is_finite():
        raise MoneyError(f"amount {value} is not a finite number")
    # scaleb rounds to the context precision (28 digits by default), which would turn
    # 12.34999999999999999999999999999 into a whole 1235; give it room for every digit.
    exact = Context(prec=max(28, len(value.as_tuple().digits)))
    scaled = value.scaleb(exponent(currency), context=exact)
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"amount {value} has more decimals than {currency} allows ({exponent(currency)})"
        )
    minor = int(scaled)
    if abs(minor) > MAX_MINOR_UNITS:
        raise MoneyError(f"amount {value} {currency} is too large to handle exactly")
    return minor


def parse_major(text: str, currency: str) -> int:
    """Parse an amount as people write it ("12.34") into minor units, exactly.

    Refuses signs, exponents, thousands separators and more decimals than the currency has,
    so a typo can never move a different amount of money.
    """
    cleaned = text.strip()
    if (
        not cleaned
        # ASCII only: str.isdigit() also accepts other scripts' digits and superscripts.
        or not all(ch in "0123456789." for ch in cleaned)
        or cleaned.count(".") > 1
    ):
        raise MoneyError(f"amount {text!r} is not a plain positive number like 12.34")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise MoneyError(f"amount {text!r} is not a number") from None
    minor = decimal_to_minor(value, currency)
    if minor <= 0:
        raise MoneyError(f"amount {text!r} must be greater than zero")
    return minor


def minor_to_wire_float(amount_minor: int, currency: str) -> float:
    """Mews' JSON number for an amount; exact by the module's 15-digit argument."""
    if abs(amount_minor) > MAX_MINOR_UNITS:
        raise MoneyError(f"amount {amount_minor} minor units is too large to send exactly")
    return float(minor_to_decimal(amount_minor, currency))


def wire_float_to_minor(value: float | int | Decimal, currency: str) -> int:
    """Minor units of a JSON number read from a provider; refuses anything inexact."""
    if isinstance(value, bool):
        raise MoneyError("a boolean is not an amount")
    dec = value if isinstance(value, Decimal) else Decimal(repr(value))
    return decimal_to_minor(dec, currency)


def format_minor(amount_minor: int, currency: str) -> str:
    """Human form: ``1234, "PLN"`` -> ``"12.34 PLN"``."""
    exp = exponent(currency)
    return f"{minor_to_decimal(amount_minor, currency):.{exp}f} {currency}"


class Money(BaseModel):
    """An amount in minor units with its currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_minor: MinorUnits
    currency: CurrencyCode

    def __str__(self) -> str:
        return format_minor(self.amount_minor, self.currency)


WHOLE_PAYMENT = "whole payment"


def describe_amount(amount_minor: int | None, currency: str | None) -> str:
    """``12.34 PLN`` for people; ``whole payment`` when no amount was asked for (the provider
    then refunds what is left of the payment). The one place this wording lives."""
    if amount_minor is None or not currency:
        return WHOLE_PAYMENT
    try:
        return format_minor(amount_minor, currency)
    except MoneyError:
        return f"{amount_minor} (minor units) {currency}"
