"""SQL for top-up orders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.page.domain import NextStep, OrderStatus, next_step
from shared.db import Connection, record_to
from shared.pricing import PricedTopup


@dataclass(frozen=True)
class Order:
    id: uuid.UUID
    user_id: str
    request_hash: str
    package_id: str | None
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    currency: str
    method: str
    integration_id: str
    status: OrderStatus
    redirect_url: str | None
    balance_minor: int | None
    correlation_id: str
    # Set once the checkout exists (with a redirect URL, or none for a prompt on the driver's phone).
    payment_id: uuid.UUID | None = None
    # For history and receipts: when the order was made, when its payment succeeded, and the
    # processor's reference for the payment (from payment.succeeded).
    created_at: datetime | None = None
    paid_at: datetime | None = None
    processor_reference: str | None = None
    # The operator's terms version in force when the order was made (operator.terms_version).
    terms_version: str | None = None

    @property
    def next_step(self) -> NextStep | None:
        return next_step(self.payment_id, self.redirect_url)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Order:
        return record_to(cls, row, status=OrderStatus(row["status"]))


async def insert_or_get_order(
    pool: asyncpg.Pool,
    *,
    user_id: str,
    idempotency_key: str,
    request_hash: str,
    priced: PricedTopup,
    integration_id: str,
    correlation_id: str,
    terms_version: str | None = None,
) -> Order:
    """The order for (user, key): created now, or the one an earlier request with this key made
    (with the terms version it was made under)."""
    row = await pool.fetchrow(
        "INSERT INTO orders (id, user_id, idempotency_key, request_hash, package_id, amount_minor, bonus_minor,"
        " fee_minor, currency, method, integration_id, correlation_id, terms_version)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING *",
        uuid.uuid4(),
        user_id,
        idempotency_key,
        request_hash,
        priced.package_id,
        priced.amount_minor,
        priced.bonus_minor,
        priced.fee_minor,
        priced.currency,
        priced.method,
        integration_id,
        correlation_id,
        terms_version,
    )
    if row is None:
        row = await pool.fetchrow(
            "SELECT * FROM orders WHERE user_id = $1 AND idempotency_key = $2", user_id, idempotency_key
        )
    assert row is not None
    return Order.from_row(row)


async def record_checkout(
    pool: asyncpg.Pool, order_id: uuid.UUID, payment_id: uuid.UUID, redirect_url: str | None
) -> Order:
    """The checkout payments created: its payment, and where the driver goes (None: the processor
    prompted the driver's phone)."""
    row = await pool.fetchrow(
        "UPDATE orders SET payment_id = $2, redirect_url = $3, updated_at = now() WHERE id = $1 RETURNING *",
        order_id,
        payment_id,
        redirect_url,
    )
    assert row is not None
    return Order.from_row(row)


async def get_order(pool: asyncpg.Pool, order_id: uuid.UUID, user_id: str) -> Order | None:
    row = await pool.fetchrow("SELECT * FROM orders WHERE id = $1 AND user_id = $2", order_id, user_id)
    return Order.from_row(row) if row else None


async def lock_order(conn: Connection, order_id: uuid.UUID) -> Order | None:
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)
    return Order.from_row(row) if row else None


async def set_status(
    conn: Connection,
    order_id: uuid.UUID,
    status: OrderStatus,
    *,
    reason: str | None = None,
    balance_minor: int | None = None,
) -> None:
    await conn.execute(
        "UPDATE orders SET status = $2, status_reason = COALESCE($3, status_reason),"
        " balance_minor = COALESCE($4, balance_minor), updated_at = now() WHERE id = $1",
        order_id,
        status,
        reason,
        balance_minor,
    )


async def record_payment(conn: Connection, order_id: uuid.UUID, processor_reference: str, paid_at: datetime) -> None:
    """What a receipt shows of the payment: the processor's reference (the latest announced) and
    when it first succeeded."""
    await conn.execute(
        "UPDATE orders SET processor_reference = $2, paid_at = COALESCE(paid_at, $3) WHERE id = $1",
        order_id,
        processor_reference,
        paid_at,
    )


async def list_orders(
    pool: asyncpg.Pool, user_id: str, limit: int, before: tuple[datetime, uuid.UUID] | None = None
) -> list[Order]:
    """The driver's top-ups that reached the processor, newest first; ``before``: only older than
    this (``created_at``, ``id``), the keyset of the history's next page."""
    if before is None:
        rows = await pool.fetch(
            "SELECT * FROM orders WHERE user_id = $1 AND payment_id IS NOT NULL"
            " ORDER BY created_at DESC, id DESC LIMIT $2",
            user_id,
            limit,
        )
    else:
        rows = await pool.fetch(
            "SELECT * FROM orders WHERE user_id = $1 AND payment_id IS NOT NULL AND (created_at, id) < ($3, $4)"
            " ORDER BY created_at DESC, id DESC LIMIT $2",
            user_id,
            limit,
            *before,
        )
    return [Order.from_row(row) for row in rows]


# NOTIFYed with an order's id (the payload) on commit whenever its status, balance or checkout
# changed (a trigger: migrations/004), for the return pages following it live (events.py).
ORDER_CHANGES_CHANNEL = "order_status"
