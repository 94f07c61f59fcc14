"""The payment state machine, without I/O. Events arrive at least once and in any order, so a
transition is decided from the current state and the event alone, and never moves a payment back:
once succeeded, a payment stays succeeded; a late success after a failure or an expiry still counts,
because the processor took the money."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.payments.processors.base import EventKind, ProcessorEvent


class PaymentStatus(StrEnum):
    CREATED = "created"  # our row exists; the processor has not confirmed the checkout yet
    PENDING = "pending"  # the driver is paying
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"  # the processor reported something we must not act on blindly


OPEN = frozenset({PaymentStatus.CREATED, PaymentStatus.PENDING})
# Where each event may take a payment from each state; anything not listed changes nothing.
TRANSITIONS: dict[tuple[PaymentStatus, EventKind], PaymentStatus] = {
    **{(s, EventKind.SUCCEEDED): PaymentStatus.SUCCEEDED for s in (*OPEN, PaymentStatus.FAILED, PaymentStatus.EXPIRED)},
    **{(s, EventKind.FAILED): PaymentStatus.FAILED for s in OPEN},
    **{(s, EventKind.EXPIRED): PaymentStatus.EXPIRED for s in OPEN},
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
    if target is PaymentStatus.SUCCEEDED and (event.amount_minor, event.currency) != (charge_minor, currency):
        # Never credit an amount the processor did not confirm; an operator looks at it.
        return Decision(
            PaymentStatus.NEEDS_REVIEW,
            f"processor confirmed {event.amount_minor} {event.currency}, expected {charge_minor} {currency}",
        )
    return Decision(target, event.reason)
