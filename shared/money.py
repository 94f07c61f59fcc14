"""Money is an integer count of minor units plus an ISO 4217 currency; never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

# ISO 4217 minor-unit exponents for the currencies evtopup's processors settle in; a currency not
# listed here is refused rather than guessed.
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "BGN": 2,
    "RON": 2,
    "PLN": 2,
    "CZK": 2,
    "HUF": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "TRY": 2,
    "BRL": 2,
    "MXN": 2,
    "COP": 2,
    "INR": 2,
    "NGN": 2,
    "GHS": 2,
    "ZAR": 2,
    "KES": 2,
    "EGP": 2,
    "MYR": 2,
    "PHP": 2,
    "THB": 2,
    "SGD": 2,
    "AUD": 2,
    "CAD": 2,
    "NZD": 2,
    "IDR": 2,
    "UAH": 2,
    "AED": 2,
    "SAR": 2,
    "JPY": 0,
    "KRW": 0,
    "VND": 0,
    "CLP": 0,
    "ISK": 0,
    "UGX": 0,
    "RWF": 0,
    "XOF": 0,
    "XAF": 0,
    "KWD": 3,
    "BHD": 3,
    "JOD": 3,
    "OMR": 3,
    "TND": 3,
}


class MoneyError(ValueError):
    """An amount or currency that cannot be money."""


def currency_exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"unsupported currency {currency!r}") from None


def to_major(amount_minor: int, currency: str) -> Decimal:
    """The exact decimal amount in major units (10050 EUR minor -> Decimal('100.50'))."""
    return Decimal(amount_minor).scaleb(-currency_exponent(currency))


def from_major(amount: Decimal, currency: str) -> int:
    """The exact number of minor units in ``amount`` (Decimal('100.50') EUR -> 10050); an amount
    finer than the currency's minor unit is refused, never rounded."""
    minor = amount.scaleb(currency_exponent(currency))
    if not minor.is_finite() or minor != minor.to_integral_value():
        raise MoneyError(f"{amount} is not a whole number of {currency} minor units")
    return int(minor)


def basis_points(amount_minor: int, rate_bp: int) -> int:
    """``amount * rate_bp / 10_000`` rounded half up, in integers only."""
    if amount_minor < 0 or rate_bp < 0:
        raise MoneyError("amount and rate must not be negative")
    return (amount_minor * rate_bp + 5_000) // 10_000


def require_minor(value: object, field: str) -> int:
    """An integer amount of minor units; booleans and floats are refused, not rounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MoneyError(f"{field} must be an integer number of minor units")
    return value
