"""SQL for payments and processor events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from services.payments.domain import PaymentStatus
from services.payments.processors.base import ProcessorEvent
from shared.db import Connection, record_to


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    order_id: uuid.UUID
    user_id: str
    integration_id: str
    processor: str
    method: str
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    charge_minor: int
    currency: str
    status: PaymentStatus
    processor_reference: str | None
    redirect_url: str | None
    correlation_id: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Payment:
        return record_to(cls, row, status=PaymentStatus(row["status"]))


async def insert_payment(conn: Connection, payment: Payment) -> Payment:
    """Insert ``payment`` unless one exists for its order; returns the stored one either way."""
    row = await conn.fetchrow(
        "INSERT INTO payments (id, order_id, user_id, integration_id, processor, method, amount_minor,"
        " bonus_minor, fee_minor, charge_minor, currency, status, correlation_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING *",
        payment.id,
        payment.order_id,
        payment.user_id,
        payment.integration_id,
        payment.processor,
        payment.method,
        payment.amount_minor,
        payment.bonus_minor,
        payment.fee_minor,
        payment.charge_minor,
        payment.currency,
        payment.status,
        payment.correlation_id,
    )
    if row is None:
        row = await conn.fetchrow("SELECT * FROM payments WHERE order_id = $1", payment.order_id)
    assert row is not None
    return Payment.from_row(row)


async def record_checkout(
    conn: Connection | asyncpg.Pool, payment_id: uuid.UUID, reference: str, redirect_url: str
) -> None:
    await conn.execute(
        "UPDATE payments SET processor_reference = $2, redirect_url = $3, updated_at = now(),"
        " status = CASE WHEN status = 'created' THEN 'pending' ELSE status END WHERE id = $1",
        payment_id,
        reference,
        redirect_url,
    )


async def insert_event(conn: Connection, integration_id: str, event: ProcessorEvent, body: bytes | None) -> int | None:
    """Store a processor event; None if this event id was already received (a duplicate)."""
    event_row_id: int | None = await conn.fetchval(
        "INSERT INTO processor_events (integration_id, event_id, processor_reference, kind, body)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (integration_id, event_id) DO NOTHING RETURNING id",
        integration_id,
        event.event_id,
        event.processor_reference,
        event.kind,
        body,
    )
    return event_row_id


async def mark_event(conn: Connection, event_row_id: int, payment_id: uuid.UUID | None, outcome: str) -> None:
    await conn.execute(
        "UPDATE processor_events SET payment_id = $2, outcome = $3 WHERE id = $1",
        event_row_id,
        payment_id,
        outcome,
    )


async def lock_payment_by_reference(conn: Connection, integration_id: str, reference: str) -> Payment | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE integration_id = $1 AND processor_reference = $2 FOR UPDATE",
        integration_id,
        reference,
    )
    return Payment.from_row(row) if row else None


async def set_status(conn: Connection, payment_id: uuid.UUID, status: PaymentStatus, reason: str | None) -> None:
    await conn.execute(
        "UPDATE payments SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1",
        payment_id,
        status,
        reason,
    )


async def open_payments(pool: asyncpg.Pool, older_than_s: float, limit: int) -> list[Payment]:
    rows = await pool.fetch(
        "SELECT * FROM payments WHERE status = 'pending' AND processor_reference IS NOT NULL"
        " AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2",
        older_than_s,
        limit,
    )
    return [Payment.from_row(row) for row in rows]


async def touch(pool: asyncpg.Pool, payment_id: uuid.UUID) -> None:
    """Push a still-pending payment to the back of the poller's queue."""
    await pool.execute("UPDATE payments SET updated_at = now() WHERE id = $1 AND status = 'pending'", payment_id)


async def count_open(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT integration_id, count(*) AS n FROM payments WHERE status IN ('created', 'pending') GROUP BY 1"
    )
    return {row["integration_id"]: row["n"] for row in rows}
