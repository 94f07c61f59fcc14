"""services/page/domain.py: pricing on the server, driver-typed amounts, request fingerprints and the
order's forward-only status."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import SecretStr

from services.page.domain import (
    OrderStatus,
    after_credit_applied,
    after_payment_failed,
    after_payment_needs_review,
    after_payment_succeeded,
    moves_of,
    parse_major_amount,
    request_fingerprint,
)
from services.payments.processors.sandbox.config import SandboxSettings
from shared.pricing import InvalidTopup, PricedTopup, price_topup
from shared.settings import AmountSettings, Fee, Package

AMOUNTS = AmountSettings(
    min_minor=500,
    max_minor=50000,
    custom_allowed=True,
    packages=[
        Package(id="p10", amount_minor=1000),
        Package(id="p25", amount_minor=2500, bonus_minor=100),
    ],
)
PACKAGES_ONLY = AmountSettings(min_minor=500, max_minor=50000, custom_allowed=False, packages=AMOUNTS.packages)
INTEGRATION = SandboxSettings(
    processor="sandbox",
    methods=["card", "wallet", "bank"],
    fees={"wallet": Fee(fixed_minor=20, rate_bp=150), "bank": Fee(rate_bp=50)},
    api_key=SecretStr("sk_test_0123456789abcdef"),
    webhook_secret=SecretStr("whsec_test_0123456789"),
)


def price(body: dict[str, Any], amounts: AmountSettings = AMOUNTS) -> PricedTopup:
    return price_topup(body, amounts, INTEGRATION, "EUR")


def refused(body: dict[str, Any], amounts: AmountSettings = AMOUNTS) -> InvalidTopup:
    with pytest.raises(InvalidTopup) as info:
        price(body, amounts)
    return info.value


# --- pricing -----------------------------------------------------------------------------------


def test_package_without_bonus_default_method() -> None:
    assert price({"package_id": "p10"}) == PricedTopup(
        package_id="p10", amount_minor=1000, bonus_minor=0, fee_minor=0, currency="EUR", method="card"
    )


def test_package_with_bonus_and_fee() -> None:
    priced = price({"package_id": "p25", "method": "wallet"})
    # fee = 20 fixed + 1.5 % of 25.00 (37.5 -> 38, half up)
    assert priced == PricedTopup(
        package_id="p25", amount_minor=2500, bonus_minor=100, fee_minor=58, currency="EUR", method="wallet"
    )
    assert priced.charge_minor == 2558


def test_custom_amount() -> None:
    priced = price({"amount_minor": 1234, "method": "card"})
    assert priced == PricedTopup(
        package_id=None, amount_minor=1234, bonus_minor=0, fee_minor=0, currency="EUR", method="card"
    )
    assert priced.charge_minor == 1234


@pytest.mark.parametrize(
    ("amount", "method", "fee"),
    [
        (1000, "wallet", 35),  # 20 + 15
        (1033, "wallet", 35),  # 20 + 15.495 -> 15
        (1034, "wallet", 36),  # 20 + 15.51 -> 16
        (1100, "bank", 6),  # 5.5 -> 6 (half up)
        (1099, "bank", 5),  # 5.495 -> 5
        (50000, "bank", 250),
        (50000, "card", 0),
    ],
)
def test_fee_is_fixed_plus_basis_points_rounded_half_up(amount: int, method: str, fee: int) -> None:
    priced = price({"amount_minor": amount, "method": method})
    assert priced.fee_minor == fee
    assert priced.charge_minor == amount + fee


def test_custom_amount_never_gets_a_bonus() -> None:
    # Even when it equals a package's amount.
    assert price({"amount_minor": 2500}).bonus_minor == 0


def test_currency_is_passed_through() -> None:
    assert price_topup({"package_id": "p10"}, AMOUNTS, INTEGRATION, "BGN").currency == "BGN"


def test_default_method_is_the_first_method() -> None:
    other = INTEGRATION.model_copy(update={"methods": ["wallet", "card"]})
    priced = price_topup({"amount_minor": 1000}, AMOUNTS, other, "EUR")
    assert priced.method == "wallet"
    assert priced.fee_minor == 35


@pytest.mark.parametrize("field", ["amount", "user_id", "bonus_minor", "fee_minor", "currency"])
def test_unknown_field_is_refused(field: str) -> None:
    error = refused({"package_id": "p10", field: 1})
    assert error.field == field
    assert field in error.detail


def test_client_cannot_set_its_own_fee_or_bonus() -> None:
    assert refused({"amount_minor": 1000, "fee_minor": 0}).field == "fee_minor"
    assert refused({"amount_minor": 1000, "bonus_minor": 500}).field == "bonus_minor"


@pytest.mark.parametrize("body", [{}, {"method": "card"}, {"package_id": "p10", "amount_minor": 1000}])
def test_exactly_one_of_package_and_amount(body: dict[str, Any]) -> None:
    assert refused(body).field == "package_id"


@pytest.mark.parametrize("amount", [1000.0, 10.5, "1000", True, False, None, [1000], {"v": 1000}])
def test_non_integer_amount_is_refused(amount: Any) -> None:
    error = refused({"amount_minor": amount})
    assert error.field == "amount_minor"
    assert "integer" in error.detail


@pytest.mark.parametrize("amount", [500, 501, 49999, 50000])
def test_amount_within_range_including_boundaries(amount: int) -> None:
    assert price({"amount_minor": amount}).amount_minor == amount


@pytest.mark.parametrize("amount", [499, 50001, 0, -1, -1000, 10**20])
def test_amount_out_of_range(amount: int) -> None:
    error = refused({"amount_minor": amount})
    assert error.field == "amount_minor"
    assert "500" in error.detail
    assert "50000" in error.detail


@pytest.mark.parametrize("package_id", ["p99", "P10", "", None, 10, ["p10"]])
def test_unknown_package(package_id: Any) -> None:
    error = refused({"package_id": package_id})
    assert error.field == "package_id"
    assert "no such package" in error.detail


@pytest.mark.parametrize("method", ["paypal", "Card", "", None, ["card"]])
def test_unknown_method(method: Any) -> None:
    error = refused({"package_id": "p10", "method": method})
    assert error.field == "method"


def test_custom_not_allowed() -> None:
    error = refused({"amount_minor": 1000}, PACKAGES_ONLY)
    assert error.field == "amount_minor"
    assert "package" in error.detail
    # Packages still work.
    assert price({"package_id": "p25"}, PACKAGES_ONLY).amount_minor == 2500


# --- driver-typed amounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12,5", "EUR", 1250),
        ("12,50", "EUR", 1250),
        ("12", "EUR", 1200),
        (" 12.5 ", "EUR", 1250),
        ("0.01", "EUR", 1),
        ("12.500", "EUR", 1250),
        ("500", "JPY", 500),
        ("1.234", "KWD", 1234),
    ],
)
def test_parse_major_amount(text: str, currency: str, minor: int) -> None:
    result = parse_major_amount(text, currency)
    assert result == minor
    assert type(result) is int


@pytest.mark.parametrize(
    ("text", "currency"),
    [("12.505", "EUR"), ("0.001", "EUR"), ("500.5", "JPY"), ("1.2345", "KWD")],
)
def test_parse_major_amount_refuses_extra_decimals(text: str, currency: str) -> None:
    with pytest.raises(InvalidTopup) as info:
        parse_major_amount(text, currency)
    assert info.value.field == "amount_minor"


@pytest.mark.parametrize(
    "text", ["abc", "", " ", "12.50 EUR", "€12", "1,000.50", "1.2.3", "NaN", "nan", "Infinity", "-Infinity", "inf"]
)
def test_parse_major_amount_refuses_non_numbers(text: str) -> None:
    with pytest.raises(InvalidTopup) as info:
        parse_major_amount(text, "EUR")
    assert info.value.field == "amount_minor"


@pytest.mark.parametrize("text", ["sNaN", "1e999999999", "1E+1000000"])
def test_parse_major_amount_refuses_exotic_decimals_cleanly(text: str) -> None:
    # A driver types these into the form: they must be InvalidTopup (422), never a decimal signal (500).
    with pytest.raises(InvalidTopup) as info:
        parse_major_amount(text, "EUR")
    assert info.value.field == "amount_minor"


# --- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order() -> None:
    a = {"package_id": "p10", "method": "card"}
    b = {"method": "card", "package_id": "p10"}
    assert request_fingerprint(a) == request_fingerprint(b)


@pytest.mark.parametrize(
    "other",
    [
        {"package_id": "p25", "method": "card"},
        {"package_id": "p10", "method": "wallet"},
        {"package_id": "p10"},
        {"amount_minor": 1000, "method": "card"},
    ],
)
def test_fingerprint_differs_for_different_bodies(other: dict[str, Any]) -> None:
    assert request_fingerprint({"package_id": "p10", "method": "card"}) != request_fingerprint(other)


def test_fingerprint_distinguishes_value_types() -> None:
    assert request_fingerprint({"amount_minor": 1000}) != request_fingerprint({"amount_minor": "1000"})


def test_fingerprint_is_stable_hex() -> None:
    fingerprint = request_fingerprint({"package_id": "p10"})
    assert fingerprint == request_fingerprint({"package_id": "p10"})
    assert len(fingerprint) == 64
    int(fingerprint, 16)


# --- order status -------------------------------------------------------------------------------

O = OrderStatus  # noqa: E741


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (O.PENDING, O.PAID),
        (O.FAILED, O.PAID),
        (O.EXPIRED, O.PAID),
        (O.UNDER_REVIEW, O.PAID),  # an operator credited it
        (O.PAID, None),
        (O.CREDITED, None),
    ],
)
def test_after_payment_succeeded(status: OrderStatus, expected: OrderStatus | None) -> None:
    assert after_payment_succeeded(status) == expected


@pytest.mark.parametrize(
    ("status", "payment_status", "expected"),
    [
        (O.PENDING, "failed", O.FAILED),
        (O.PENDING, "expired", O.EXPIRED),
        # Older payments versions sent needs_review as a failure: it is held for review, not failed.
        (O.PENDING, "needs_review", O.UNDER_REVIEW),
        (O.FAILED, "needs_review", O.UNDER_REVIEW),
        (O.CREDITED, "needs_review", None),
        # An operator refunded a payment under review.
        (O.UNDER_REVIEW, "rejected", O.REFUNDED),
        (O.PENDING, "rejected", O.REFUNDED),
        (O.REFUNDED, "needs_review", None),
        (O.REFUNDED, "rejected", None),
        (O.PAID, "rejected", None),
        (O.CREDITED, "rejected", None),
        (O.FAILED, "rejected", None),
        (O.UNDER_REVIEW, "failed", None),
        (O.UNDER_REVIEW, "expired", None),
        (O.PAID, "failed", None),
        (O.PAID, "expired", None),
        (O.CREDITED, "failed", None),
        (O.CREDITED, "expired", None),
        (O.FAILED, "expired", None),
        (O.EXPIRED, "failed", None),
        (O.FAILED, "failed", None),
    ],
)
def test_after_payment_failed(status: OrderStatus, payment_status: str, expected: OrderStatus | None) -> None:
    assert after_payment_failed(status, payment_status) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (O.PENDING, O.CREDITED),
        (O.PAID, O.CREDITED),
        (O.FAILED, O.CREDITED),
        (O.EXPIRED, O.CREDITED),
        (O.CREDITED, None),
    ],
)
def test_after_credit_applied(status: OrderStatus, expected: OrderStatus | None) -> None:
    assert after_credit_applied(status) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (O.PENDING, O.UNDER_REVIEW),
        # A late success for the wrong amount after a failure or expiry: the money may be taken.
        (O.FAILED, O.UNDER_REVIEW),
        (O.EXPIRED, O.UNDER_REVIEW),
        (O.UNDER_REVIEW, None),
        (O.PAID, None),
        (O.CREDITED, None),
    ],
)
def test_after_payment_needs_review(status: OrderStatus, expected: OrderStatus | None) -> None:
    assert after_payment_needs_review(status) == expected


def test_every_status_has_an_answer_to_every_event() -> None:
    for status in O:
        for payment_status in ("failed", "expired", "rejected", "needs_review"):
            assert after_payment_failed(status, payment_status) in (*O, None)
        assert after_payment_succeeded(status) in (*O, None)
        assert after_payment_needs_review(status) in (*O, None)
        assert after_credit_applied(status) in (*O, None)


def apply(status: OrderStatus, event: str) -> OrderStatus:
    if event == "succeeded":
        new = after_payment_succeeded(status)
    elif event == "failed":
        new = after_payment_failed(status, "failed")
    elif event == "expired":
        new = after_payment_failed(status, "expired")
    elif event == "needs_review":
        new = after_payment_needs_review(status)
    elif event == "rejected":
        new = after_payment_failed(status, "rejected")
    else:
        new = after_credit_applied(status)
    return new or status


@pytest.mark.parametrize(
    "events", [*itertools.permutations(["succeeded", "credited", "failed"]), ("credited", "succeeded")]
)
def test_credited_in_any_order_and_never_back(events: tuple[str, ...]) -> None:
    status = O.PENDING
    credited = False
    for event in events:
        status = apply(status, event)
        credited = credited or event == "credited"
        if credited:
            assert status is O.CREDITED
    assert status is O.CREDITED


@pytest.mark.parametrize("events", list(itertools.permutations(["succeeded", "failed", "expired"])))
def test_success_in_any_order_is_never_undone(events: tuple[str, ...]) -> None:
    status = O.PENDING
    paid = False
    for event in events:
        status = apply(status, event)
        paid = paid or event == "succeeded"
        if paid:
            assert status is O.PAID
    assert status is O.PAID


@pytest.mark.parametrize("events", [("failed", "expired"), ("expired", "failed"), ("failed", "failed")])
def test_first_failure_wins(events: tuple[str, ...]) -> None:
    status = O.PENDING
    for event in events:
        status = apply(status, event)
    assert status is (O.FAILED if events[0] == "failed" else O.EXPIRED)


@pytest.mark.parametrize("event", ["succeeded", "credited", "failed", "expired"])
def test_duplicates_change_nothing(event: str) -> None:
    once = apply(O.PENDING, event)
    assert apply(once, event) is once


@pytest.mark.parametrize(
    ("events", "final"),
    [
        (("needs_review", "succeeded", "credited"), O.CREDITED),  # settled --credit
        (("needs_review", "credited", "succeeded"), O.CREDITED),
        (("needs_review", "rejected"), O.REFUNDED),  # settled --reject
        (("failed", "needs_review", "rejected"), O.REFUNDED),
        (("needs_review", "rejected", "needs_review"), O.REFUNDED),  # a replayed review does not reopen it
        (("needs_review", "failed"), O.UNDER_REVIEW),  # a late failure does not end a review
    ],
)
def test_review_ends_credited_or_refunded(events: tuple[str, ...], final: OrderStatus) -> None:
    status = O.PENDING
    for event in events:
        status = apply(status, event)
    assert status is final


def test_moves_of_lists_every_status_an_event_moves_from() -> None:
    assert moves_of(after_credit_applied) == [
        (status, OrderStatus.CREDITED) for status in OrderStatus if status is not OrderStatus.CREDITED
    ]
    assert moves_of(lambda status: after_payment_failed(status, "expired")) == [
        (OrderStatus.PENDING, OrderStatus.EXPIRED)
    ]
