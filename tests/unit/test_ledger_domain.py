"""services/crediting/domain.py: the postings of a paid top-up."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from services.crediting.domain import (
    BONUS_EXPENSE_ACCOUNT,
    FEE_REVENUE_ACCOUNT,
    TOPUP,
    Posting,
    clearing_account,
    topup_transfer,
    transfer_id,
    user_account,
)
from tests.factories import ORDER_ID, PAYMENT_ID
from tests.factories import payment_succeeded as paid


def test_account_names() -> None:
    assert user_account("user-42") == "user:user-42"
    assert clearing_account("sandbox_demo") == "processor:sandbox_demo"
    assert FEE_REVENUE_ACCOUNT == "revenue:fees"


def test_full_topup_postings() -> None:
    transfer = topup_transfer(paid())
    assert Counter(transfer.postings) == Counter(
        [
            Posting("processor:sandbox_demo", "charged", -2558),
            Posting("user:user-42", "paid", 2500),
            Posting("revenue:fees", "fee", 58),
            Posting(BONUS_EXPENSE_ACCOUNT, "bonus", -100),
            Posting("user:user-42", "bonus", 100),
        ]
    )
    assert len(transfer.postings) == 5


@pytest.mark.parametrize(
    ("amount", "bonus", "fee"), [(2500, 100, 58), (1000, 0, 0), (1000, 0, 35), (5000, 300, 0), (1, 0, 0), (1, 1, 1)]
)
def test_postings_sum_to_zero(amount: int, bonus: int, fee: int) -> None:
    transfer = topup_transfer(paid(amount_minor=amount, bonus_minor=bonus, fee_minor=fee))
    assert sum(p.amount_minor for p in transfer.postings) == 0


@pytest.mark.parametrize(("amount", "bonus", "fee"), [(2500, 100, 58), (1000, 0, 0), (1000, 0, 35), (5000, 300, 0)])
def test_user_credit_is_amount_plus_bonus(amount: int, bonus: int, fee: int) -> None:
    transfer = topup_transfer(paid(amount_minor=amount, bonus_minor=bonus, fee_minor=fee))
    assert transfer.user_credit_minor == amount + bonus
    # The processor clearing account is charged what the driver paid: amount + fee, never the bonus.
    clearing = [p for p in transfer.postings if p.account == clearing_account("sandbox_demo")]
    assert clearing == [Posting("processor:sandbox_demo", "charged", -(amount + fee))]


def test_fee_goes_to_revenue_not_to_the_user() -> None:
    transfer = topup_transfer(paid(fee_minor=58))
    fees = [p for p in transfer.postings if p.account == FEE_REVENUE_ACCOUNT]
    assert fees == [Posting(FEE_REVENUE_ACCOUNT, "fee", 58)]
    assert all(p.entry_kind != "fee" for p in transfer.postings if p.account == "user:user-42")


def test_bonus_is_a_separate_entry() -> None:
    transfer = topup_transfer(paid(bonus_minor=100))
    user = [p for p in transfer.postings if p.account == "user:user-42"]
    assert sorted(user, key=lambda p: p.entry_kind) == [
        Posting("user:user-42", "bonus", 100),
        Posting("user:user-42", "paid", 2500),
    ]
    assert [p for p in transfer.postings if p.account == BONUS_EXPENSE_ACCOUNT] == [
        Posting(BONUS_EXPENSE_ACCOUNT, "bonus", -100)
    ]


def test_zero_fee_and_zero_bonus_make_no_postings() -> None:
    transfer = topup_transfer(paid(bonus_minor=0, fee_minor=0))
    assert Counter(transfer.postings) == Counter(
        [Posting("processor:sandbox_demo", "charged", -2500), Posting("user:user-42", "paid", 2500)]
    )


@pytest.mark.parametrize(("bonus", "fee"), [(0, 0), (0, 5), (5, 0), (5, 5)])
def test_no_zero_postings(bonus: int, fee: int) -> None:
    transfer = topup_transfer(paid(bonus_minor=bonus, fee_minor=fee))
    assert all(p.amount_minor != 0 for p in transfer.postings)
    assert (FEE_REVENUE_ACCOUNT in {p.account for p in transfer.postings}) == (fee > 0)
    assert (BONUS_EXPENSE_ACCOUNT in {p.account for p in transfer.postings}) == (bonus > 0)


def test_transfer_carries_the_event() -> None:
    transfer = topup_transfer(paid())
    assert transfer.kind == TOPUP
    assert transfer.payment_id == PAYMENT_ID
    assert transfer.order_id == ORDER_ID
    assert transfer.user_id == "user-42"
    assert (transfer.amount_minor, transfer.bonus_minor, transfer.fee_minor) == (2500, 100, 58)
    assert transfer.currency == "EUR"


def test_transfer_id_is_derived_from_the_payment() -> None:
    transfer = topup_transfer(paid())
    assert transfer.id == transfer_id(TOPUP, PAYMENT_ID) == f"topup:{PAYMENT_ID}"


def test_same_event_gives_an_equal_transfer() -> None:
    # A redelivered payment.succeeded must be recognised as the same transfer.
    assert topup_transfer(paid()) == topup_transfer(paid())


def test_different_amount_same_payment_is_a_conflicting_transfer() -> None:
    first, second = topup_transfer(paid()), topup_transfer(paid(amount_minor=2600))
    assert first.id == second.id
    assert first != second


@pytest.mark.parametrize(
    "change",
    [
        {"amount_minor": 2501},
        {"bonus_minor": 0},
        {"bonus_minor": 101},
        {"fee_minor": 0},
        {"fee_minor": 57},
        {"user_id": "user-43"},
        {"order_id": uuid.UUID("33333333-3333-4333-8333-333333333333")},
        {"currency": "BGN"},
        {"integration_id": "sandbox_other"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_other_term_of_the_same_payment_is_a_conflicting_transfer(change: dict[str, object]) -> None:
    # The store compares a redelivered transfer with the recorded one: every term must take part, or a
    # second announcement with other amounts would pass for a redelivery (and never be dead-lettered).
    first, second = topup_transfer(paid()), topup_transfer(paid(**change))
    assert first.id == second.id
    assert first != second


def test_the_same_payment_as_test_money_is_a_conflicting_transfer() -> None:
    production, test = topup_transfer(paid(), "production"), topup_transfer(paid(), "test")
    assert production.id == test.id
    assert production != test


def test_different_payment_gives_a_different_transfer_id() -> None:
    other = topup_transfer(paid(payment_id=uuid.uuid4()))
    assert other.id != topup_transfer(paid()).id


def test_transfer_id_depends_on_the_kind() -> None:
    assert transfer_id("topup", PAYMENT_ID) != transfer_id("refund", PAYMENT_ID)
