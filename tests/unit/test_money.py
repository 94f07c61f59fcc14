"""shared/money.py: exponents, exact conversion to major units, basis points, strict minor units."""

from __future__ import annotations

from decimal import Decimal

import iso4217
import pytest

from shared.money import CURRENCY_EXPONENTS, MoneyError, basis_points, currency_exponent, require_minor, to_major

# ISO 4217 minor units of currencies withdrawn from the current list (List One) that evtopup still
# accepts, from ISO 4217 List Three (historic denominations): the Bulgarian lev (BGN, minor unit 2)
# was replaced by the euro on 2026-01-01 and left List One then; processors still settle old payments in it.
WITHDRAWN_MINOR_UNITS = {"BGN": 2}


def iso_minor_units(currency: str) -> int | None:
    """The minor units of ``currency`` in the ISO 4217 table shipped by the ``iso4217`` package
    (the maintenance agency's XML), or None where ISO gives none ("N.A.") or does not list it."""
    entry = iso4217.raw_table.get(currency)
    if entry is None or not str(entry["CcyMnrUnts"]).isdigit():
        return WITHDRAWN_MINOR_UNITS.get(currency)
    return int(entry["CcyMnrUnts"])


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_every_listed_exponent_is_the_iso_4217_minor_unit(currency: str) -> None:
    assert len(currency) == 3 and currency.isupper()
    assert iso_minor_units(currency) is not None, f"{currency} is not an ISO 4217 currency"
    assert currency_exponent(currency) == iso_minor_units(currency)


def test_the_iso_table_is_real_data() -> None:
    # Guards the test above against an empty or unreadable table that would make it vacuous.
    assert len(iso4217.raw_table) > 150
    assert (iso_minor_units("EUR"), iso_minor_units("JPY"), iso_minor_units("KWD")) == (2, 0, 3)
    assert (iso_minor_units("HUF"), iso_minor_units("ISK"), iso_minor_units("CLF")) == (2, 0, 4)


def test_withdrawn_currencies_really_are_withdrawn() -> None:
    # Once a currency is back on List One, its minor unit must come from the table, not from here.
    assert not set(WITHDRAWN_MINOR_UNITS) & set(iso4217.raw_table)


@pytest.mark.parametrize(("currency", "exponent"), [("EUR", 2), ("BGN", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3)])
def test_currency_exponent_known(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["XYZ", "eur", "EURO", "", "BTC"])
def test_currency_exponent_unknown_is_refused(currency: str) -> None:
    with pytest.raises(MoneyError, match="unsupported currency"):
        currency_exponent(currency)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("amount_minor", "currency", "expected"),
    [
        (10050, "EUR", "100.50"),
        (1, "EUR", "0.01"),
        (0, "EUR", "0.00"),
        (100, "EUR", "1.00"),
        (500, "JPY", "500"),
        (1234, "KWD", "1.234"),
        (1000, "KWD", "1.000"),
        (9223372036854775807, "EUR", "92233720368547758.07"),  # the largest BIGINT
    ],
)
def test_to_major_is_exact(amount_minor: int, currency: str, expected: str) -> None:
    major = to_major(amount_minor, currency)
    assert isinstance(major, Decimal)
    assert major == Decimal(expected)
    # The exponent is kept, so "100.50" prints as "100.50" and not "100.5".
    assert str(major) == expected


def test_to_major_unknown_currency_is_refused() -> None:
    with pytest.raises(MoneyError):
        to_major(100, "XYZ")


@pytest.mark.parametrize(
    ("amount_minor", "rate_bp", "expected"),
    [
        (1000, 150, 15),  # 1.5 % of 10.00 = 0.15
        (0, 150, 0),
        (1000, 0, 0),
        (1, 5000, 1),  # 0.5 -> 1 (half up)
        (1, 4999, 0),  # 0.4999 -> 0
        (3, 5000, 2),  # 1.5 -> 2 (half up, not half even)
        (5, 5000, 3),  # 2.5 -> 3 (half up, not half even)
        (333, 150, 5),  # 4.995 -> 5
        (330, 150, 5),  # 4.95 -> 5
        (329, 150, 5),  # 4.935 -> 5
        (299, 150, 4),  # 4.485 -> 4
        (100, 50, 1),  # 0.5 -> 1
        (99, 50, 0),  # 0.495 -> 0
        (12345, 10_000, 12345),  # 100 %
        (10**20, 1, 10**16),  # large amounts stay exact integers
    ],
)
def test_basis_points_rounds_half_up(amount_minor: int, rate_bp: int, expected: int) -> None:
    result = basis_points(amount_minor, rate_bp)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(("amount_minor", "rate_bp"), [(-1, 100), (100, -1), (-100, -100)])
def test_basis_points_refuses_negative(amount_minor: int, rate_bp: int) -> None:
    with pytest.raises(MoneyError, match=r"^amount and rate must not be negative$"):
        basis_points(amount_minor, rate_bp)


@pytest.mark.parametrize("value", [0, 1, 1250, -5, 10**30])
def test_require_minor_accepts_int(value: int) -> None:
    assert require_minor(value, "amount_minor") == value


@pytest.mark.parametrize("value", [True, False, 10.0, 10.5, "10", "1250", None, Decimal("10"), [10]])
def test_require_minor_refuses_non_int(value: object) -> None:
    with pytest.raises(MoneyError, match="amount_minor must be an integer"):
        require_minor(value, "amount_minor")
