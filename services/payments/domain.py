"""The payment state machine, without I/O. Events arrive at least once and in any order, so a
transition is decided from the current state and the event alone, and never moves a payment back:
once succeeded, a payment stays succeeded; a late success after a failure or an expiry still counts,
because the processor took the money.

Also the healing rules: when to ask the processor again, when to announce an uncredited success
again, how long to keep looking for the payment of an unmatched event, and how an operator settles a
payment held for review."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from services.payments.processors.base import DISPUTES, MONEY_BACK, EventKind, ProcessorEvent


class PaymentStatus(StrEnum):
    CREATED = "created"  # our row exists; the processor has not confirmed the checkout yet
    PENDING = "pending"  # the driver is paying
    APPROVED = "approved"  # the driver approved; we complete it at the processor (PayPal's capture)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"  # the processor reported something we must not act on blindly
    REJECTED = "rejected"  # held for review, then refunded at the processor by an operator


OPEN = frozenset({PaymentStatus.CREATED, PaymentStatus.PENDING, PaymentStatus.APPROVED})
# The kinds that move a payment's status (the others move money back: ``decide_return``).
PAYMENT_KINDS = frozenset(EventKind) - MONEY_BACK - DISPUTES
# Where each event may take a payment from each state; anything not listed changes nothing.
TRANSITIONS: dict[tuple[PaymentStatus, EventKind], PaymentStatus] = {
    **{(s, EventKind.SUCCEEDED): PaymentStatus.SUCCEEDED for s in (*OPEN, PaymentStatus.FAILED, PaymentStatus.EXPIRED)},
    **{(s, EventKind.FAILED): PaymentStatus.FAILED for s in OPEN},
    **{(s, EventKind.EXPIRED): PaymentStatus.EXPIRED for s in OPEN},
    **{(s, EventKind.APPROVED): PaymentStatus.APPROVED for s in (PaymentStatus.CREATED, PaymentStatus.PENDING)},
    (PaymentStatus.CREATED, EventKind.PENDING): PaymentStatus.PENDING,
}


@dataclass(frozen=True)
class Decision:
    new_status: PaymentStatus | None  # None: the event changes nothing (duplicate, late, stale)
    reason: str | None = None


def decide(status: PaymentStatus, charge_minor: int, currency: str, event: ProcessorEvent) -> Decision:
    target = TRANSITIONS.get((status, event.kind))
    if target is None:
        return Decision(None)
    if target in (PaymentStatus.SUCCEEDED, PaymentStatus.APPROVED) and (event.amount_minor, event.currency) != (
        charge_minor,
        currency,
    ):
        # Never credit an amount the processor did not confirm; an operator looks at it.
        return Decision(
            PaymentStatus.NEEDS_REVIEW,
            f"processor confirmed {event.amount_minor} {event.currency}, expected {charge_minor} {currency}",
        )
    return Decision(target, event.reason)


# --- money coming back: refunds and disputes ------------------------------------------------------


class ReturnState(StrEnum):
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"
    OPENED = "opened"
    WON = "won"
    LOST = "lost"


RETURN_STATE_OF: dict[EventKind, ReturnState] = {
    EventKind.REFUNDED: ReturnState.REFUNDED,
    EventKind.REFUND_FAILED: ReturnState.REFUND_FAILED,
    EventKind.DISPUTE_OPENED: ReturnState.OPENED,
    EventKind.DISPUTE_WON: ReturnState.WON,
    EventKind.DISPUTE_LOST: ReturnState.LOST,
}
# In these states the processor holds the money back from the operator: the driver's balance too.
DEBITED_STATES = frozenset({ReturnState.REFUNDED, ReturnState.OPENED, ReturnState.LOST})
# Which state may follow which, for one refund or one dispute; events arrive in any order and more
# than once. A failed refund stays failed; a dispute the operator won can still be charged back again
# (Adyen's SECOND_CHARGEBACK), but a late "opened" after the outcome changes nothing.
RETURN_TRANSITIONS: frozenset[tuple[ReturnState | None, ReturnState]] = frozenset(
    {
        (None, ReturnState.REFUNDED),
        (None, ReturnState.REFUND_FAILED),
        (ReturnState.REFUNDED, ReturnState.REFUND_FAILED),
        (None, ReturnState.OPENED),
        (None, ReturnState.WON),
        (None, ReturnState.LOST),
        (ReturnState.OPENED, ReturnState.WON),
        (ReturnState.OPENED, ReturnState.LOST),
        (ReturnState.LOST, ReturnState.WON),
        (ReturnState.WON, ReturnState.LOST),
    }
)


class MoneyMove(StrEnum):
    TAKE = "take"  # the money left the operator: take it from the driver's balance
    GIVE_BACK = "give_back"  # the money came back to the operator: undo the last take


@dataclass(frozen=True)
class ReturnDecision:
    new_state: ReturnState | None  # None: the event changes nothing
    move: MoneyMove | None = None


def is_money_back(kind: EventKind) -> bool:
    return kind in MONEY_BACK or kind in DISPUTES


def decide_return(current: ReturnState | None, debited: bool, kind: EventKind) -> ReturnDecision:
    """One refund's or dispute's next state, and whether money moves: the balance follows whether the
    processor holds the money back (``DEBITED_STATES``), each change of that at most once."""
    target = RETURN_STATE_OF[kind]
    if (current, target) not in RETURN_TRANSITIONS:
        return ReturnDecision(None)
    should_be_debited = target in DEBITED_STATES
    if should_be_debited and not debited:
        return ReturnDecision(target, MoneyMove.TAKE)
    if debited and not should_be_debited:
        return ReturnDecision(target, MoneyMove.GIVE_BACK)
    return ReturnDecision(target)


def refundable_minor(charge_minor: int, returned_minor: int, requested_open_minor: int) -> int:
    """What an operator may still ask the processor to refund: the charge, less what came back
    already, less refunds asked for and not yet confirmed."""
    return max(0, charge_minor - returned_minor - requested_open_minor)


def with_requested_amount(event: ProcessorEvent, charge_minor: int, currency: str) -> ProcessorEvent:
    """A success stated by a processor that vouches for no amount (``Capabilities.states_amount``):
    a payment it confirms paid was paid for what we asked."""
    if event.amount_minor is not None:
        return event
    return dataclasses.replace(event, amount_minor=charge_minor, currency=currency)


def doubling_backoff_s(step: int, first_s: float, max_s: float) -> float:
    """``first_s`` at step 0, doubling each step, never more than ``max_s``."""
    return min(max_s, first_s * float(2 ** min(max(step, 0), 60)))


# --- polling --------------------------------------------------------------------------------------


class PollAction(StrEnum):
    ASK = "ask"  # ask the processor where the payment stands
    COMPLETE = "complete"  # the driver approved: complete the payment at the processor (capture)
    EXPIRE_UNCONFIRMED = "expire_unconfirmed"  # expire it here: the processor never confirmed a checkout
    WAIT = "wait"  # nothing to ask yet: look again later
    RETIRE = "retire"  # never poll it again


NEVER_POLLED = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.NEEDS_REVIEW, PaymentStatus.REJECTED})


def poll_action(
    status: PaymentStatus, has_reference: bool, since_change_s: float, grace_s: float, unconfirmed_expire_after_s: float
) -> PollAction:
    """What the poller does with a payment that is due. Failed and expired payments are still asked
    about for ``grace_s``, so a late success is credited. A payment whose checkout creation never
    returned a reference was never shown to the driver (the redirect URL comes with the reference):
    it expires once a checkout would have expired anyway. (A phone prompt whose answer was lost may
    still be on the driver's phone: its confirmed callback is kept as an unmatched event for the
    operator, see the README's M-Pesa section.)"""
    if status in NEVER_POLLED:
        return PollAction.RETIRE
    if status is PaymentStatus.APPROVED:
        return PollAction.COMPLETE
    if status in (PaymentStatus.FAILED, PaymentStatus.EXPIRED):
        return PollAction.ASK if has_reference and since_change_s <= grace_s else PollAction.RETIRE
    if not has_reference:
        return PollAction.EXPIRE_UNCONFIRMED if since_change_s >= unconfirmed_expire_after_s else PollAction.WAIT
    return PollAction.ASK


def next_poll_in_s(polls_without_change: int, interval_s: float, max_backoff_s: float) -> float:
    """After the n-th poll that changed nothing (still pending, or the processor failed to answer):
    ``interval_s``, then doubling, up to ``max_backoff_s``."""
    return doubling_backoff_s(polls_without_change - 1, interval_s, max_backoff_s)


def poll_lease_s(call_timeout_s: float, batch: int, concurrency: int, interval_s: float) -> float:
    """How far a claim pushes ``next_poll_at``: long enough for the whole batch to be asked, so no
    other replica takes the same payments meanwhile, and short enough to retry after a crash."""
    rounds = -(-batch // concurrency)
    return call_timeout_s * rounds + interval_s


# --- the credit safety net ------------------------------------------------------------------------


def next_announce_in_s(announce_count: int, sweep_after_s: float, max_backoff_s: float) -> float:
    """After the n-th re-announcement of a success still not credited: twice ``sweep_after_s``, then
    doubling, up to ``max_backoff_s``: a crediting outage is not flooded."""
    return doubling_backoff_s(announce_count, sweep_after_s, max_backoff_s)


# --- events for payments we do not know (yet) -----------------------------------------------------

# An event that raced its checkout finds its payment within seconds; one still unmatched after this
# long (or this many looks) is not ours, or needs a person.
UNKNOWN_EVENT_MAX_AGE_S = 24 * 3600.0
UNKNOWN_EVENT_MAX_ATTEMPTS = 20


def next_reexamination_in_s(attempts: int, age_s: float, interval_s: float, max_backoff_s: float) -> float | None:
    """After the n-th look that found no payment: when to look again, or None to give up."""
    if attempts >= UNKNOWN_EVENT_MAX_ATTEMPTS or age_s >= UNKNOWN_EVENT_MAX_AGE_S:
        return None
    return doubling_backoff_s(attempts - 1, interval_s, max_backoff_s)


# --- operator review ------------------------------------------------------------------------------


class ReviewDecision(StrEnum):
    CREDIT = "credit"  # the driver is credited what they ordered
    REJECT = "reject"  # the operator refunds the driver at the processor


class ReviewRefused(Exception):
    """The payment is not waiting for a review (never was, or already settled)."""


def settle_review(status: PaymentStatus, decision: ReviewDecision) -> PaymentStatus:
    if status is not PaymentStatus.NEEDS_REVIEW:
        raise ReviewRefused(f"the payment is {status.value}, not needs_review")
    return PaymentStatus.SUCCEEDED if decision is ReviewDecision.CREDIT else PaymentStatus.REJECTED
