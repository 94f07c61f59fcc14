"""Moves orders forward from payment and credit events (in any order, each applied once)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from services.page import domain, store
from services.page.domain import OrderStatus
from shared.db import Connection
from shared.logging import get_logger
from shared.messages import CreditApplied, Envelope, PaymentFailed, PaymentNeedsReview, PaymentSucceeded

log = get_logger(__name__)


async def _move(
    conn: Connection,
    order_id: uuid.UUID,
    transition: Callable[[OrderStatus], OrderStatus | None],
    *,
    reason: str | None = None,
    balance_minor: int | None = None,
) -> None:
    order = await store.lock_order(conn, order_id)
    if order is None:
        log.warning("event_for_unknown_order", order_id=str(order_id))
        return
    new_status = transition(order.status)
    if new_status is not None:
        await store.set_status(conn, order.id, new_status, reason=reason, balance_minor=balance_minor)
        log.info("order_status_changed", order_id=str(order.id), status=new_status.value)


async def on_payment_succeeded(conn: Connection, envelope: Envelope, event: PaymentSucceeded) -> None:
    await _move(conn, event.order_id, domain.after_payment_succeeded)
    # For the receipt, whatever the status became (credit.applied may have overtaken this event).
    await store.record_payment(conn, event.order_id, event.processor_reference, envelope.occurred_at)


async def on_payment_failed(conn: Connection, _envelope: Envelope, event: PaymentFailed) -> None:
    await _move(
        conn,
        event.order_id,
        lambda status: domain.after_payment_failed(status, event.status),
        reason=event.reason,
    )


async def on_payment_needs_review(conn: Connection, _envelope: Envelope, event: PaymentNeedsReview) -> None:
    await _move(conn, event.order_id, domain.after_payment_needs_review, reason=event.reason)


async def on_credit_applied(conn: Connection, _envelope: Envelope, event: CreditApplied) -> None:
    await _move(conn, event.order_id, domain.after_credit_applied, balance_minor=event.balance_minor)
