"""The delivery rules of services/crediting/domain.py without I/O: one call per transfer for paid plus
bonus, what evidence settles a lost answer, and what the operator may do."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.crediting import domain
from shared.messages import PaymentSucceeded

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def payment(amount: int = 2500, bonus: int = 150, fee: int = 25, user: str = "1001") -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id=user,
        integration_id="main",
        processor="sandbox",
        processor_reference="ref-1",
        amount_minor=amount,
        bonus_minor=bonus,
        fee_minor=fee,
        currency="EUR",
    )


def test_one_call_per_top_up_for_paid_plus_bonus_never_the_fee() -> None:
    event = payment()
    transfer = domain.topup_transfer(event)
    intent = domain.delivery_intent(transfer, event.processor_reference).change
    assert (intent.direction, intent.amount_minor, intent.currency) == ("credit", 2650, "EUR")
    assert str(event.order_id) in intent.reason
    assert json.loads(intent.app_info) == {
        "source": "evtopup",
        "topup": str(event.order_id),
        "payment": str(event.payment_id),
        "transfer": transfer.id,
        "processor_reference": "ref-1",
    }
    assert " " not in intent.app_info  # compact


def test_adjustments_credit_or_debit_the_user_and_balance() -> None:
    credit = domain.adjustment_transfer("1001", 500, "EUR", "goodwill", "ops")
    debit = domain.adjustment_transfer("1001", -300, "EUR", "chargeback", "ops")
    assert sum(p.amount_minor for p in credit.postings) == 0 == sum(p.amount_minor for p in debit.postings)
    assert credit.user_credit_minor == 500 and debit.user_credit_minor == -300
    assert credit.id != domain.adjustment_transfer("1001", 500, "EUR", "goodwill", "ops").id
    assert "ops" not in domain.delivery_intent(credit).change.reason  # the driver sees the reason, not who wrote it
    debit_intent = domain.delivery_intent(debit).change
    assert (debit_intent.direction, debit_intent.amount_minor) == ("debit", 300)
    assert "chargeback" in debit_intent.reason
    with pytest.raises(domain.RefusedCredit):
        domain.adjustment_transfer("1001", 0, "EUR", "nothing", "ops")
    with pytest.raises(domain.RefusedCredit):
        domain.adjustment_transfer("1001", 5, "EUR", "  ", "ops")


def test_a_reversal_undoes_every_posting() -> None:
    original = domain.topup_transfer(payment())
    reversal = domain.reversal_transfer(original, "ops", "AMPECO refuses the user")
    assert reversal.user_credit_minor == -original.user_credit_minor
    assert sum(p.amount_minor for p in reversal.postings) == 0
    assert {(p.account, p.amount_minor) for p in reversal.postings} == {
        (p.account, -p.amount_minor) for p in original.postings
    }


def test_only_the_built_in_ledger_and_test_money_are_confirmed_in_the_ledger() -> None:
    assert domain.confirmed_in_ledger("ledger", "production")
    assert domain.confirmed_in_ledger("ampeco", "test")
    assert not domain.confirmed_in_ledger("ampeco", "production")


def test_a_user_id_the_csms_cannot_have_is_refused() -> None:
    from services.payments.processors.sandbox.config import SandboxSettings

    integration = SandboxSettings.model_validate(
        {"processor": "sandbox", "methods": ["card"], "api_key": "k" * 20, "webhook_secret": "w" * 20}
    )
    event = payment(user="driver-1")
    with pytest.raises(domain.RefusedCredit):
        domain.credit_environment(event, {"main": integration}, r"^[1-9][0-9]{0,17}$")
    assert domain.credit_environment(payment(user="77"), {"main": integration}, r"^[1-9][0-9]{0,17}$") == "production"


def sent(delivery_id: int, amount: str, at_s: float, direction: str = "credit") -> domain.SentDelivery:
    return domain.SentDelivery(delivery_id, direction, Decimal(amount), T0 + timedelta(seconds=at_s))  # type: ignore[arg-type]


def change(amount: str, at_s: float, direction: str = "credit") -> domain.ObservedChange:
    return domain.ObservedChange(direction, Decimal(amount), T0 + timedelta(seconds=at_s))  # type: ignore[arg-type]


def test_a_change_goes_to_the_oldest_matching_delivery_sent_before_it() -> None:
    deliveries = [sent(1, "10.00", 0), sent(2, "25.00", 10), sent(3, "10.00", 20)]
    assert domain.assign_notification(change("10", 25), deliveries) == 1
    assert domain.assign_notification(change("10", 25), deliveries[1:]) == 3
    assert domain.assign_notification(change("25", 11), deliveries) == 2
    assert domain.assign_notification(change("10", 25, "debit"), deliveries) is None
    assert domain.assign_notification(change("99", 25), deliveries) is None


def test_a_change_from_before_a_call_is_never_its_evidence() -> None:
    assert domain.assign_notification(change("10", 0), [sent(1, "10", 60)]) is None
    # AMPECO's clock may be a little behind ours.
    assert domain.assign_notification(change("10", 57), [sent(1, "10", 60)]) == 1


@given(
    earlier=st.integers(min_value=0, max_value=6),
    last_applied=st.booleans(),
    lost=st.lists(st.booleans(), min_size=7, max_size=7),
    order=st.randoms(use_true_random=False),
    gaps=st.lists(st.floats(min_value=0, max_value=20), min_size=7, max_size=7),
    amounts=st.lists(st.sampled_from(["10", "25"]), min_size=7, max_size=7),
)
def test_the_call_in_flight_is_matched_only_if_it_was_applied(
    earlier: int, last_applied: bool, lost: list[bool], order: object, gaps: list[float], amounts: list[str]
) -> None:
    """One call per user at a time: every earlier delivery of the user was applied (a call found not
    applied is sent again, as the newest). Whatever notifications are lost, delayed or reordered,
    the newest call is matched only if AMPECO applied it."""
    import random

    assert isinstance(order, random.Random)
    clock = 0.0
    deliveries = []
    for index in range(earlier + 1):
        clock += gaps[index]
        deliveries.append(sent(index, amounts[index], clock))
    applied = [True] * earlier + [last_applied]
    notes = [
        change(amounts[i], deliveries[i].sent_at.timestamp() - T0.timestamp() + 0.5)
        for i in range(earlier + 1)
        if applied[i] and not lost[i]
    ]
    order.shuffle(notes)
    unmatched = list(deliveries)
    for note in notes:
        chosen = domain.assign_notification(note, unmatched)
        unmatched = [d for d in unmatched if d.id != chosen]
    last_matched = deliveries[-1] not in unmatched
    assert not last_matched or last_applied


def settle(
    before: str | None,
    now: str | None,
    seconds: float = 120,
    notified: bool = False,
    direction: str = "credit",
    moved_on: bool = True,
) -> object:
    return domain.settle_by_balance(
        direction,  # type: ignore[arg-type]
        Decimal("25.00"),
        None if before is None else Decimal(before),
        None if now is None else Decimal(now),
        seconds_since_sent=seconds,
        notified_since_sent=notified,
        tenant_moved_on=moved_on,
        not_applied_after_s=60,
    )


def test_the_balance_settles_a_lost_answer_only_when_unambiguous() -> None:
    assert settle("10.00", "35.000") == "applied"
    assert settle("40", "15", direction="debit") == "applied"
    assert settle("10.00", "10.00") == "not_applied"
    assert settle("10.00", "10.00", seconds=30) is None  # too soon: an accepted action may still show
    assert settle("10.00", "10.00", notified=True) is None  # something changed meanwhile
    assert settle("10.00", "35.00", notified=True) is None  # ...so even the exact amount proves nothing
    assert settle("10.00", "10.00", moved_on=False) is None  # AMPECO has not shown it got further
    assert settle("10.00", "20.00") is None  # another change in between
    assert settle(None, "35") is None and settle("10", None) is None  # balance hidden


def test_operator_verdicts() -> None:
    assert domain.operator_resolution("uncertain", "applied") == "delivered"
    assert domain.operator_resolution("failed", "not_applied") == "pending"
    assert domain.operator_resolution("failed", "abandon") == "abandoned"
    with pytest.raises(domain.RefusedAction):
        domain.operator_resolution("uncertain", "abandon")  # it may have been applied
    for state in ("pending", "sending", "delivered", "abandoned"):
        with pytest.raises(domain.RefusedAction):
            domain.operator_resolution(state, "applied")


def test_backoff_doubles_to_its_cap() -> None:
    assert [domain.retry_backoff_s(n, 10) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
