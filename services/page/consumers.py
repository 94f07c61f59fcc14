"""Moves orders forward from payment and credit events (in any order, each applied once). Each event
is one statement with its inbox row (shared.amqp.InboxStatement): the page takes two events per
top-up, and one round trip each instead of five keeps it off the top-up's critical path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.page import domain, store
from services.page.domain import OrderStatus
from shared.amqp import InboxStatement, OneStatement
from shared.logging import get_logger
from shared.messages import CreditApplied, Envelope, PaymentFailed, PaymentNeedsReview, PaymentSucceeded

log = get_logger(__name__)


def _move(
    order_id: uuid.UUID,
    transition: Callable[[OrderStatus], OrderStatus | None],
    *,
    reason: str | None = None,
    balance_minor: int | None = None,
    payment: tuple[str, datetime] | None = None,
) -> InboxStatement:
    def settle(row: asyncpg.Record) -> None:
        if not row["first_time"]:
            return
        if not row["known"]:
            log.warning("event_for_unknown_order", order_id=str(order_id))
        elif row["new_status"] is not None:
            log.info("order_status_changed", order_id=str(order_id), status=row["new_status"])

    args = store.order_event_args(
        order_id, domain.moves_of(transition), reason=reason, balance_minor=balance_minor, payment=payment
    )
    return InboxStatement(store.ORDER_EVENT_SQL, args, settle)


def _payment_succeeded(envelope: Envelope, event: PaymentSucceeded) -> InboxStatement:
    # The receipt's reference and time are recorded whatever the status became (credit.applied may
    # have overtaken this event).
    return _move(
        event.order_id, domain.after_payment_succeeded, payment=(event.processor_reference, envelope.occurred_at)
    )


def _payment_failed(_envelope: Envelope, event: PaymentFailed) -> InboxStatement:
    return _move(event.order_id, lambda status: domain.after_payment_failed(status, event.status), reason=event.reason)


def _payment_needs_review(_envelope: Envelope, event: PaymentNeedsReview) -> InboxStatement:
    return _move(event.order_id, domain.after_payment_needs_review, reason=event.reason)


def _credit_applied(_envelope: Envelope, event: CreditApplied) -> InboxStatement:
    return _move(event.order_id, domain.after_credit_applied, balance_minor=event.balance_minor)


on_payment_succeeded = OneStatement(_payment_succeeded)
on_payment_failed = OneStatement(_payment_failed)
on_payment_needs_review = OneStatement(_payment_needs_review)
on_credit_applied = OneStatement(_credit_applied)
