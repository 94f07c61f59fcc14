"""Operator review of payments the processor confirmed for other terms than were charged: list them,
and settle each once, by crediting the driver what they ordered or by rejecting it (the operator
refunds the driver at the processor). The decision, the payment's new status and the event that
announces it commit in one transaction."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.payments import domain, service, store
from services.payments.domain import PaymentStatus, ReviewDecision, ReviewRefused

REVIEW_LIST_LIMIT_MAX = 1000


async def payments_in_review(pool: asyncpg.Pool, limit: int) -> list[dict[str, Any]]:
    return [
        {
            "payment_id": str(row["id"]),
            "order_id": str(row["order_id"]),
            "user_id": row["user_id"],
            "integration_id": row["integration_id"],
            "processor_reference": row["processor_reference"],
            "amount_minor": row["amount_minor"],
            "bonus_minor": row["bonus_minor"],
            "fee_minor": row["fee_minor"],
            "charge_minor": row["charge_minor"],
            "currency": row["currency"],
            "reason": row["status_reason"],
            "since": row["updated_at"].isoformat(),
        }
        for row in await store.payments_in_review(pool, min(limit, REVIEW_LIST_LIMIT_MAX))
    ]


async def settle(
    pool: asyncpg.Pool, payment_id: uuid.UUID, decision: ReviewDecision, decided_by: str, note: str
) -> PaymentStatus:
    """Settle a payment held for review; :class:`ReviewRefused` says why not (unknown payment, not
    held for review, already settled). Returns the payment's new status."""
    if not decided_by.strip() or not note.strip():
        raise ReviewRefused("a review needs who decided (--by) and why (--note)")
    async with pool.acquire() as conn, conn.transaction():
        payment = await store.lock_payment(conn, payment_id)
        if payment is None:
            raise ReviewRefused(f"no payment {payment_id}")
        earlier = await store.get_review(conn, payment_id)
        if earlier is not None:
            decided_at = earlier["decided_at"].isoformat()
            raise ReviewRefused(f"already settled: {earlier['decision']} by {earlier['decided_by']} at {decided_at}")
        new_status = domain.settle_review(payment.status, decision)
        await store.insert_review(conn, payment.id, decision, decided_by.strip(), note.strip())
        reason = (
            f"credited after review by {decided_by.strip()}"
            if decision is ReviewDecision.CREDIT
            else "the processor confirmed other terms than were charged; refunded after review"
        )
        await service.move_payment(conn, payment, new_status, reason, None)
        if new_status is PaymentStatus.SUCCEEDED:
            # A refund or chargeback that came while the payment was held applies now.
            await store.look_again_at_events_of(conn, payment.id)
    return new_status
