"""services/payments/domain.py: the payment state machine, decided from state and event alone."""

from __future__ import annotations

import itertools

import pytest

from services.payments.domain import TRANSITIONS, Decision, PaymentStatus, decide
from services.payments.processors.base import EventKind, ProcessorEvent

S = PaymentStatus
K = EventKind
CHARGE = 2558
CURRENCY = "EUR"


def event(
    kind: EventKind, amount: int | None = CHARGE, currency: str | None = CURRENCY, reason: str | None = None
) -> ProcessorEvent:
    return ProcessorEvent(
        event_id=f"evt_{kind}",
        processor_reference="chk_1",
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
}


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(PaymentStatus, EventKind))


@pytest.mark.parametrize(("status", "kind"), list(EXPECTED), ids=lambda v: str(v))
def test_every_status_and_event(status: PaymentStatus, kind: EventKind) -> None:
    assert decide(status, CHARGE, CURRENCY, event(kind)).new_status == EXPECTED[(status, kind)]


def test_transitions_table_agrees() -> None:
    for (status, kind), target in EXPECTED.items():
        assert TRANSITIONS.get((status, kind)) == target


@pytest.mark.parametrize("kind", list(EventKind))
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
    if status in (S.CREATED, S.PENDING):
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
