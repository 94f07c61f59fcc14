"""services/crediting/domain.py: money that goes back from a payment (refunds, disputes) comes off the
ledger in shares that add up exactly, never below zero (the rest is a receivable), and an undo mirrors
what was taken, whichever arrives first."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.crediting.domain import (
    BONUS_EXPENSE_ACCOUNT,
    FEE_REVENUE_ACCOUNT,
    RefusedCredit,
    Transfer,
    clearing_account,
    is_payment_reversal,
    payment_reversal_transfer,
    receivable_account,
    reversal_debit_cap,
    share_minor,
    shortfall_transfer,
    topup_transfer,
    undo_transfer,
    user_account,
)
from shared.messages import PaymentReversalUndone, PaymentReversed, PaymentSucceeded

PAYMENT = uuid.UUID("00000000-0000-4000-8000-000000000001")


def reversed_event(
    reversed_minor: int, before: int = 0, *, amount: int = 1000, fee: int = 0, bonus: int = 0, cause_id: str = "re_1"
) -> PaymentReversed:
    return PaymentReversed(
        payment_id=PAYMENT,
        order_id=uuid.uuid4(),
        user_id="42",
        integration_id="stripe_main",
        cause="refund",
        cause_id=cause_id,
        reversed_minor=reversed_minor,
        reversed_before_minor=before,
        amount_minor=amount,
        bonus_minor=bonus,
        fee_minor=fee,
        currency="EUR",
    )


def by_account(transfer: Transfer) -> dict[str, int]:
    totals: dict[str, int] = {}
    for posting in transfer.postings:
        totals[posting.account] = totals.get(posting.account, 0) + posting.amount_minor
    return totals


def test_a_full_refund_takes_back_paid_bonus_and_fee_exactly() -> None:
    transfer = payment_reversal_transfer(
        reversed_event(1050, amount=1000, fee=50, bonus=100), "production", 5000, "proportional", emptied=False
    )
    assert by_account(transfer) == {
        clearing_account("stripe_main"): 1050,
        user_account("42"): -1100,
        FEE_REVENUE_ACCOUNT: -50,
        BONUS_EXPENSE_ACCOUNT: 100,
    }
    assert transfer.id == "refund:stripe_main:re_1"
    assert transfer.user_credit_minor == -1100


def test_the_bonus_stays_with_the_driver_when_so_configured() -> None:
    transfer = payment_reversal_transfer(reversed_event(1000, bonus=100), "production", 5000, "keep", emptied=False)
    assert transfer.user_credit_minor == -1000
    assert BONUS_EXPENSE_ACCOUNT not in by_account(transfer)


def test_what_the_balance_cannot_give_back_becomes_a_receivable() -> None:
    transfer = payment_reversal_transfer(
        reversed_event(1000, bonus=100), "production", 300, "proportional", emptied=False
    )
    totals = by_account(transfer)
    assert totals[user_account("42")] == -300
    assert totals[receivable_account("42")] == -800
    assert sum(totals.values()) == 0


def test_nothing_left_on_the_balance_owes_it_all() -> None:
    transfer = payment_reversal_transfer(reversed_event(500), "production", 0, "proportional", emptied=False)
    assert user_account("42") not in by_account(transfer)
    assert by_account(transfer)[receivable_account("42")] == -500


def test_test_money_is_reversed_in_test_accounts() -> None:
    transfer = payment_reversal_transfer(reversed_event(500), "test", 1000, "proportional", emptied=False)
    assert set(by_account(transfer)) == {clearing_account("stripe_main", "test"), user_account("42", "test")}


def test_taking_back_more_than_was_charged_is_refused() -> None:
    with pytest.raises(RefusedCredit):
        payment_reversal_transfer(
            reversed_event(600, before=500, amount=1000), "production", 5000, "proportional", emptied=False
        )


@given(
    amount=st.integers(1, 10**7),
    fee=st.integers(0, 10**5),
    bonus=st.integers(0, 10**6),
    cuts=st.lists(st.integers(1, 10**6), min_size=1, max_size=8),
)
def test_partial_refunds_add_up_to_exactly_the_top_up(amount: int, fee: int, bonus: int, cuts: list[int]) -> None:
    """However a payment is refunded in parts, the parts take back exactly what the top-up gave:
    no minor unit lost or taken twice, every transfer balanced."""
    charge = amount + fee
    slices, left = [], charge
    for cut in cuts:
        part = min(cut, left)
        if part:
            slices.append(part)
            left -= part
    if left:
        slices.append(left)
    before, user_total, fee_total = 0, 0, 0
    for index, part in enumerate(slices):
        event = reversed_event(part, before, amount=amount, fee=fee, bonus=bonus, cause_id=f"re_{index}")
        transfer = payment_reversal_transfer(event, "production", 10**9, "proportional", emptied=False)
        assert sum(p.amount_minor for p in transfer.postings) == 0
        user_total += transfer.user_credit_minor
        fee_total += by_account(transfer).get(FEE_REVENUE_ACCOUNT, 0)
        before += part
    assert user_total == -(amount + bonus)
    assert fee_total == -fee


@given(part=st.integers(0, 10**6), before=st.integers(0, 10**6), whole=st.integers(1, 10**6))
def test_a_share_is_never_negative_nor_more_than_its_slice(part: int, before: int, whole: int) -> None:
    after = min(whole, before + 1 + part % whole)
    before = min(before, after)
    share = share_minor(part, before, after, whole)
    assert 0 <= share <= part * (after - before) // whole + 1


def test_an_undo_mirrors_the_reversal_exactly() -> None:
    reversal = payment_reversal_transfer(
        reversed_event(1000, bonus=100), "production", 300, "proportional", emptied=False
    )
    undo = undo_transfer(undo_event(), "production", reversal)
    assert undo.id == f"undo:{reversal.id}"
    assert {(p.account, -p.amount_minor) for p in undo.postings} == {
        (p.account, p.amount_minor) for p in reversal.postings
    }
    assert undo.user_credit_minor == 300


def test_an_undo_before_its_reversal_is_an_empty_marker_and_empties_the_reversal() -> None:
    marker = undo_transfer(undo_event(), "production", None)
    assert marker.postings == ()
    late = payment_reversal_transfer(reversed_event(1000), "production", 5000, "proportional", emptied=True)
    assert late.postings == ()
    assert late.id == "refund:stripe_main:re_1"


def undo_event() -> PaymentReversalUndone:
    return PaymentReversalUndone(
        payment_id=PAYMENT, user_id="42", integration_id="stripe_main", cause="refund", cause_id="re_1", currency="EUR"
    )


def test_a_full_refund_after_a_top_up_leaves_every_account_at_zero() -> None:
    paid = PaymentSucceeded(
        payment_id=PAYMENT,
        order_id=uuid.uuid4(),
        user_id="42",
        integration_id="stripe_main",
        processor="stripe",
        processor_reference="cs_1",
        amount_minor=2500,
        bonus_minor=150,
        fee_minor=75,
        currency="EUR",
    )
    topup = topup_transfer(paid)
    refund = payment_reversal_transfer(
        reversed_event(2575, amount=2500, fee=75, bonus=150),
        "production",
        topup.user_credit_minor,
        "proportional",
        emptied=False,
    )
    totals = by_account(topup)
    for account, amount in by_account(refund).items():
        totals[account] = totals.get(account, 0) + amount
    assert set(totals.values()) == {0}


@pytest.mark.parametrize(
    ("amount", "balance", "currency", "cap"),
    [
        (2500, Decimal("25.00"), "EUR", None),  # all of it is there
        (2500, Decimal("30.00"), "EUR", None),
        (2500, Decimal("7.00"), "EUR", 700),  # spent 18.00: take what is there
        (2500, Decimal("7.005"), "EUR", 700),  # never more than the balance, to the minor unit
        (2500, Decimal("0"), "EUR", 0),
        (2500, Decimal("-3.00"), "EUR", 0),  # a balance already below zero gives nothing
        (2500, None, "EUR", None),  # hidden balance: AMPECO decides
        (2500, Decimal("1.250"), "KWD", 1250),
        (2500, Decimal("1000"), "JPY", 1000),
    ],
)
def test_a_reversal_debit_takes_at_most_what_the_csms_balance_holds(
    amount: int, balance: Decimal | None, currency: str, cap: int | None
) -> None:
    assert reversal_debit_cap(amount, balance, currency) == cap


def test_a_shortfall_moves_what_was_not_taken_from_the_balance_to_what_is_owed() -> None:
    reversal = payment_reversal_transfer(reversed_event(1000), "production", 1000, "proportional", emptied=False)
    shortfall = shortfall_transfer(reversal, 800, attempt=2)
    assert shortfall.id == "shortfall:refund:stripe_main:re_1:2"
    assert by_account(shortfall) == {user_account("42"): 800, receivable_account("42"): -800}
    assert is_payment_reversal(reversal.id) and not is_payment_reversal(shortfall.id)


def test_undoing_a_capped_reversal_gives_back_only_what_was_taken_and_cancels_what_is_owed() -> None:
    """The driver had 300 of a 1000 top-up left when it was charged back (700 owed); the dispute is
    won: the driver gets the 300 back and owes nothing; the top-up's accounts are as before."""
    reversal = payment_reversal_transfer(reversed_event(1000), "production", 1000, "proportional", emptied=False)
    shortfall = shortfall_transfer(reversal, 700, attempt=1)
    undo = undo_transfer(undo_event(), "production", reversal, [shortfall])
    assert undo.user_credit_minor == 300
    totals: dict[str, int] = {}
    for transfer in (reversal, shortfall, undo):
        for account, amount in by_account(transfer).items():
            totals[account] = totals.get(account, 0) + amount
    assert set(totals.values()) == {0}
