"""services/payments/domain.py: the payment state machine, decided from state and event alone, and
the healing rules (polling, re-announcing, unmatched events, review)."""

from __future__ import annotations

import itertools

import pytest

from services.payments.domain import (
    PAYMENT_KINDS,
    TRANSITIONS,
    UNKNOWN_EVENT_MAX_AGE_S,
    UNKNOWN_EVENT_MAX_ATTEMPTS,
    Decision,
    MoneyMove,
    PaymentStatus,
    PollAction,
    ReturnDecision,
    ReturnState,
    ReviewDecision,
    ReviewRefused,
    decide,
    decide_return,
    doubling_backoff_s,
    next_announce_in_s,
    next_poll_in_s,
    next_reexamination_in_s,
    poll_action,
    poll_lease_s,
    refundable_minor,
    settle_review,
)
from services.payments.processors.base import EventKind, PaymentRef, ProcessorEvent

S = PaymentStatus
K = EventKind
CHARGE = 2558
CURRENCY = "EUR"


def event(
    kind: EventKind, amount: int | None = CHARGE, currency: str | None = CURRENCY, reason: str | None = None
) -> ProcessorEvent:
    return ProcessorEvent(
        event_id=f"evt_{kind}",
        payment=PaymentRef(processor_reference="chk_1"),
        kind=kind,
        amount_minor=amount,
        currency=currency,
        reason=reason,
    )


# Every (status, event kind) pair and where it must lead; None = nothing changes.
EXPECTED: dict[tuple[PaymentStatus, EventKind], PaymentStatus | None] = {
    (S.CREATED, K.PENDING): S.PENDING,
    (S.CREATED, K.SUCCEEDED): S.SUCCEEDED,
    (S.CREATED, K.FAILED): S.FAILED,
    (S.CREATED, K.EXPIRED): S.EXPIRED,
    (S.PENDING, K.PENDING): None,
    (S.PENDING, K.SUCCEEDED): S.SUCCEEDED,
    (S.PENDING, K.FAILED): S.FAILED,
    (S.PENDING, K.EXPIRED): S.EXPIRED,
    (S.SUCCEEDED, K.PENDING): None,
    (S.SUCCEEDED, K.SUCCEEDED): None,
    (S.SUCCEEDED, K.FAILED): None,
    (S.SUCCEEDED, K.EXPIRED): None,
    (S.FAILED, K.PENDING): None,
    (S.FAILED, K.SUCCEEDED): S.SUCCEEDED,
    (S.FAILED, K.FAILED): None,
    (S.FAILED, K.EXPIRED): None,
    (S.EXPIRED, K.PENDING): None,
    (S.EXPIRED, K.SUCCEEDED): S.SUCCEEDED,
    (S.EXPIRED, K.FAILED): None,
    (S.EXPIRED, K.EXPIRED): None,
    (S.NEEDS_REVIEW, K.PENDING): None,
    (S.NEEDS_REVIEW, K.SUCCEEDED): None,
    (S.NEEDS_REVIEW, K.FAILED): None,
    (S.NEEDS_REVIEW, K.EXPIRED): None,
    (S.REJECTED, K.PENDING): None,
    (S.REJECTED, K.SUCCEEDED): None,
    (S.REJECTED, K.FAILED): None,
    (S.REJECTED, K.EXPIRED): None,
    # Approved by the driver, to be completed by us (PayPal's capture).
    (S.CREATED, K.APPROVED): S.APPROVED,
    (S.PENDING, K.APPROVED): S.APPROVED,
    (S.APPROVED, K.PENDING): None,
    (S.APPROVED, K.APPROVED): None,
    (S.APPROVED, K.SUCCEEDED): S.SUCCEEDED,
    (S.APPROVED, K.FAILED): S.FAILED,
    (S.APPROVED, K.EXPIRED): S.EXPIRED,
    (S.SUCCEEDED, K.APPROVED): None,
    (S.FAILED, K.APPROVED): None,
    (S.EXPIRED, K.APPROVED): None,
    (S.NEEDS_REVIEW, K.APPROVED): None,
    (S.REJECTED, K.APPROVED): None,
}


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(PaymentStatus, PAYMENT_KINDS))


@pytest.mark.parametrize(("status", "kind"), list(EXPECTED), ids=lambda v: str(v))
def test_every_status_and_event(status: PaymentStatus, kind: EventKind) -> None:
    assert decide(status, CHARGE, CURRENCY, event(kind)).new_status == EXPECTED[(status, kind)]


def test_transitions_table_agrees() -> None:
    for (status, kind), target in EXPECTED.items():
        assert TRANSITIONS.get((status, kind)) == target


@pytest.mark.parametrize("kind", sorted(PAYMENT_KINDS))
def test_succeeded_is_never_left(kind: EventKind) -> None:
    # Not even by a mismatching event: a succeeded payment has been credited.
    for amount, currency in [(CHARGE, CURRENCY), (1, CURRENCY), (CHARGE, "USD"), (None, None)]:
        assert decide(S.SUCCEEDED, CHARGE, CURRENCY, event(kind, amount, currency)) == Decision(None)


@pytest.mark.parametrize("status", [S.FAILED, S.EXPIRED])
def test_late_success_after_failure_counts(status: PaymentStatus) -> None:
    assert decide(status, CHARGE, CURRENCY, event(K.SUCCEEDED)) == Decision(S.SUCCEEDED, None)


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("kind", [K.FAILED, K.EXPIRED])
def test_failure_never_overrides_a_final_state(status: PaymentStatus, kind: EventKind) -> None:
    decision = decide(status, CHARGE, CURRENCY, event(kind))
    if status in (S.CREATED, S.PENDING, S.APPROVED):
        assert decision.new_status == (S.FAILED if kind is K.FAILED else S.EXPIRED)
    else:
        assert decision.new_status is None


@pytest.mark.parametrize("status", [S.CREATED, S.PENDING, S.FAILED, S.EXPIRED])
@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (CHARGE - 1, CURRENCY),
        (CHARGE + 1, CURRENCY),
        (2500, CURRENCY),
        (CHARGE, "USD"),
        (None, CURRENCY),
        (CHARGE, None),
    ],
)
def test_mismatch_on_success_needs_review(status: PaymentStatus, amount: int | None, currency: str | None) -> None:
    decision = decide(status, CHARGE, CURRENCY, event(K.SUCCEEDED, amount, currency))
    assert decision.new_status is S.NEEDS_REVIEW
    assert decision.reason is not None
    assert f"expected {CHARGE} {CURRENCY}" in decision.reason
    assert f"confirmed {amount} {currency}" in decision.reason


@pytest.mark.parametrize("kind", [K.FAILED, K.EXPIRED, K.PENDING])
def test_amount_is_not_checked_for_non_success(kind: EventKind) -> None:
    decision = decide(S.CREATED, CHARGE, CURRENCY, event(kind, amount=1, currency="USD"))
    assert decision.new_status is not S.NEEDS_REVIEW
    assert decision.new_status is not None


def test_failure_reason_is_carried() -> None:
    decision = decide(S.PENDING, CHARGE, CURRENCY, event(K.FAILED, reason="card declined"))
    assert decision == Decision(S.FAILED, "card declined")


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("kind", list(K))
def test_duplicates_change_nothing(status: PaymentStatus, kind: EventKind) -> None:
    first = decide(status, CHARGE, CURRENCY, event(kind))
    after = first.new_status or status
    assert decide(after, CHARGE, CURRENCY, event(kind)).new_status is None


@pytest.mark.parametrize("order", list(itertools.permutations([K.PENDING, K.SUCCEEDED, K.FAILED, K.EXPIRED])))
def test_any_order_with_a_success_ends_succeeded(order: tuple[EventKind, ...]) -> None:
    status = S.CREATED
    seen_success = False
    for kind in order:
        decision = decide(status, CHARGE, CURRENCY, event(kind))
        status = decision.new_status or status
        seen_success = seen_success or kind is K.SUCCEEDED
        if seen_success:
            assert status is S.SUCCEEDED
    assert status is S.SUCCEEDED


# --- backoff ----------------------------------------------------------------------------------------


def test_doubling_backoff_starts_at_first_doubles_and_is_capped() -> None:
    assert [doubling_backoff_s(step, 1.0, 10.0) for step in range(6)] == [1, 2, 4, 8, 10, 10]
    assert doubling_backoff_s(-3, 1.0, 10.0) == 1.0
    assert doubling_backoff_s(10**6, 30.0, 900.0) == 900.0  # no overflow for huge steps


def test_poll_backoff_schedule() -> None:
    # After the 1st, 2nd... poll that changed nothing: 30 s, 60 s, 120 s... at most 900 s.
    assert [next_poll_in_s(n, 30.0, 900.0) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


def test_poll_backoff_never_exceeds_the_maximum_even_below_the_interval() -> None:
    assert next_poll_in_s(1, 30.0, 10.0) == 10.0


@pytest.mark.parametrize(
    ("timeout_s", "batch", "concurrency", "interval_s", "lease_s"),
    [(10.0, 50, 10, 30.0, 80.0), (10.0, 51, 10, 30.0, 90.0), (1.0, 1, 10, 1.0, 2.0), (2.0, 10, 1, 0.5, 20.5)],
)
def test_poll_lease_covers_the_whole_batch_of_timeouts(
    timeout_s: float, batch: int, concurrency: int, interval_s: float, lease_s: float
) -> None:
    assert poll_lease_s(timeout_s, batch, concurrency, interval_s) == lease_s


# --- what the poller does ----------------------------------------------------------------------------

GRACE_S = 3600.0
UNCONFIRMED_S = 1800.0


def action(status: PaymentStatus, has_reference: bool = True, since_change_s: float = 60.0) -> PollAction:
    return poll_action(status, has_reference, since_change_s, GRACE_S, UNCONFIRMED_S)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.NEEDS_REVIEW, S.REJECTED])
@pytest.mark.parametrize("has_reference", [True, False])
def test_settled_payments_are_never_polled(status: PaymentStatus, has_reference: bool) -> None:
    assert action(status, has_reference) is PollAction.RETIRE


@pytest.mark.parametrize("status", [S.CREATED, S.PENDING])
def test_open_payments_with_a_reference_are_asked_about_however_old(status: PaymentStatus) -> None:
    for since_change_s in (0.0, GRACE_S + 1, 10 * GRACE_S):
        assert action(status, True, since_change_s) is PollAction.ASK


@pytest.mark.parametrize("status", [S.FAILED, S.EXPIRED])
def test_failed_and_expired_are_asked_about_during_the_grace_period_only(status: PaymentStatus) -> None:
    assert action(status, True, 0.0) is PollAction.ASK
    assert action(status, True, GRACE_S) is PollAction.ASK
    assert action(status, True, GRACE_S + 0.001) is PollAction.RETIRE
    # Without a reference there is nothing to ask: a late success would come by webhook only.
    assert action(status, False, 1.0) is PollAction.RETIRE


@pytest.mark.parametrize("status", [S.CREATED, S.PENDING])
def test_checkout_never_confirmed_expires_once_it_would_have_expired(status: PaymentStatus) -> None:
    assert action(status, False, 0.0) is PollAction.WAIT
    assert action(status, False, UNCONFIRMED_S - 0.001) is PollAction.WAIT
    assert action(status, False, UNCONFIRMED_S) is PollAction.EXPIRE_UNCONFIRMED


def test_every_status_has_a_poll_action() -> None:
    for status, has_reference, since in itertools.product(S, [True, False], [0.0, GRACE_S * 2]):
        assert isinstance(action(status, has_reference, since), PollAction)


# --- the credit safety net ----------------------------------------------------------------------------


def test_reannouncements_back_off_from_twice_sweep_after_up_to_the_maximum() -> None:
    # The first announcement waits sweep_after_s after the success; then 600, 1200, 2400, 3600, 3600.
    assert [next_announce_in_s(n, 300.0, 3600.0) for n in range(1, 7)] == [600, 1200, 2400, 3600, 3600, 3600]


def test_reannouncements_in_a_ten_second_outage_reach_past_it() -> None:
    # With sweep_after_s = 5: at 5 s (lost in the outage), at 15 s (after it): converges.
    first_at = 5.0
    second_at = first_at + next_announce_in_s(1, 5.0, 3600.0)
    assert first_at < 10.0 < second_at <= 20.0


# --- events for payments not found ----------------------------------------------------------------


def test_unmatched_event_is_looked_at_again_with_backoff() -> None:
    assert [next_reexamination_in_s(n, 0.0, 30.0, 900.0) for n in range(1, 7)] == [30, 60, 120, 240, 480, 900]


def test_unmatched_event_is_given_up_after_enough_looks_or_age() -> None:
    assert next_reexamination_in_s(UNKNOWN_EVENT_MAX_ATTEMPTS - 1, 0.0, 30.0, 900.0) == 900.0
    assert next_reexamination_in_s(UNKNOWN_EVENT_MAX_ATTEMPTS, 0.0, 30.0, 900.0) is None
    assert next_reexamination_in_s(1, UNKNOWN_EVENT_MAX_AGE_S - 1, 30.0, 900.0) == 30.0
    assert next_reexamination_in_s(1, UNKNOWN_EVENT_MAX_AGE_S, 30.0, 900.0) is None


# --- review -----------------------------------------------------------------------------------------


def test_review_credit_makes_the_payment_succeeded() -> None:
    assert settle_review(S.NEEDS_REVIEW, ReviewDecision.CREDIT) is S.SUCCEEDED


def test_review_reject_makes_the_payment_rejected() -> None:
    assert settle_review(S.NEEDS_REVIEW, ReviewDecision.REJECT) is S.REJECTED


@pytest.mark.parametrize("status", [s for s in S if s is not S.NEEDS_REVIEW])
@pytest.mark.parametrize("decision", list(ReviewDecision))
def test_only_a_payment_held_for_review_can_be_settled(status: PaymentStatus, decision: ReviewDecision) -> None:
    # Settling twice is refused too: after the first decision the payment is succeeded or rejected.
    with pytest.raises(ReviewRefused, match=status.value):
        settle_review(status, decision)


@pytest.mark.parametrize("kind", list(K))
def test_a_rejected_payment_never_moves_again(kind: EventKind) -> None:
    assert decide(S.REJECTED, CHARGE, CURRENCY, event(kind)) == Decision(None)


# --- money coming back: refunds and disputes ------------------------------------------------------

R = ReturnState
MOVE = MoneyMove


@pytest.mark.parametrize(
    ("current", "debited", "kind", "expected"),
    [
        # A refund: taken once, given back once if it fails after all; a failed refund stays failed.
        (None, False, K.REFUNDED, ReturnDecision(R.REFUNDED, MOVE.TAKE)),
        (R.REFUNDED, True, K.REFUNDED, ReturnDecision(None)),
        (R.REFUNDED, True, K.REFUND_FAILED, ReturnDecision(R.REFUND_FAILED, MOVE.GIVE_BACK)),
        (R.REFUND_FAILED, False, K.REFUND_FAILED, ReturnDecision(None)),
        (R.REFUND_FAILED, False, K.REFUNDED, ReturnDecision(None)),
        (None, False, K.REFUND_FAILED, ReturnDecision(R.REFUND_FAILED)),
        # A dispute: the money is withdrawn when it opens, given back when won, kept when lost.
        (None, False, K.DISPUTE_OPENED, ReturnDecision(R.OPENED, MOVE.TAKE)),
        (R.OPENED, True, K.DISPUTE_OPENED, ReturnDecision(None)),
        (R.OPENED, True, K.DISPUTE_WON, ReturnDecision(R.WON, MOVE.GIVE_BACK)),
        (R.OPENED, True, K.DISPUTE_LOST, ReturnDecision(R.LOST)),
        (None, False, K.DISPUTE_LOST, ReturnDecision(R.LOST, MOVE.TAKE)),
        (None, False, K.DISPUTE_WON, ReturnDecision(R.WON)),
        (R.WON, False, K.DISPUTE_OPENED, ReturnDecision(None)),
        (R.LOST, True, K.DISPUTE_OPENED, ReturnDecision(None)),
        (R.LOST, True, K.DISPUTE_LOST, ReturnDecision(None)),
        (R.LOST, True, K.DISPUTE_WON, ReturnDecision(R.WON, MOVE.GIVE_BACK)),
        # Charged back again after it was won (Adyen's second chargeback): taken again.
        (R.WON, False, K.DISPUTE_LOST, ReturnDecision(R.LOST, MOVE.TAKE)),
    ],
)
def test_each_refund_and_dispute_moves_money_at_most_once_per_change(
    current: ReturnState | None, debited: bool, kind: EventKind, expected: ReturnDecision
) -> None:
    assert decide_return(current, debited, kind) == expected


@pytest.mark.parametrize("kinds", list(itertools.permutations([K.DISPUTE_OPENED, K.DISPUTE_LOST, K.DISPUTE_LOST])))
def test_a_lost_dispute_takes_the_money_once_in_any_order(kinds: tuple[EventKind, ...]) -> None:
    state, debited, takes = None, False, 0
    for kind in kinds:
        decision = decide_return(state, debited, kind)
        if decision.new_state is not None:
            state = decision.new_state
        if decision.move is MoneyMove.TAKE:
            takes, debited = takes + 1, True
        assert decision.move is not MoneyMove.GIVE_BACK
    assert (state, debited, takes) == (R.LOST, True, 1)


def test_a_won_dispute_ends_with_the_money_back_whatever_came_first() -> None:
    for kinds in itertools.permutations([K.DISPUTE_OPENED, K.DISPUTE_WON]):
        state, debited = None, False
        for kind in kinds:
            decision = decide_return(state, debited, kind)
            state = decision.new_state or state
            if decision.move is not None:
                debited = decision.move is MoneyMove.TAKE
        assert (state, debited) == (R.WON, False)


@pytest.mark.parametrize(
    ("charge", "returned", "open_requests", "expected"),
    [(1000, 0, 0, 1000), (1000, 300, 200, 500), (1000, 900, 200, 0)],
)
def test_refundable_is_what_is_neither_returned_nor_asked_for(
    charge: int, returned: int, open_requests: int, expected: int
) -> None:
    assert refundable_minor(charge, returned, open_requests) == expected


def test_an_approved_payment_is_completed_by_the_poller() -> None:
    assert poll_action(S.APPROVED, True, 0.0, 3600.0, 3600.0) is PollAction.COMPLETE
