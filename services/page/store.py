"""SQL for top-up orders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.page.domain import NextStep, OrderStatus, next_step
from shared.db import record_to
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


# A payment or credit event applied to its order with the message's inbox row, in one statement
# (follows shared.amqp.INBOX_CTE). $3: the order; $4, $5: the moves the event allows, from and to
# (domain.moves_of), applied to the status the order has once locked; $6, $7: the reason and the
# balance a move records; $8, $9: a success's processor reference (the latest announced) and when it
# first succeeded, for the receipt, recorded whether or not the status moves.
ORDER_EVENT_SQL = (
    ", current AS (SELECT id, status FROM orders WHERE id = $3 AND EXISTS (SELECT FROM first_time) FOR UPDATE)"
    ", moved AS (UPDATE orders SET status = COALESCE(m.to_status, orders.status),"
    "  status_reason = CASE WHEN m.to_status IS NULL THEN orders.status_reason"
    "   ELSE COALESCE($6, orders.status_reason) END,"
    "  balance_minor = CASE WHEN m.to_status IS NULL THEN orders.balance_minor"
    "   ELSE COALESCE($7, orders.balance_minor) END,"
    "  updated_at = CASE WHEN m.to_status IS NULL THEN orders.updated_at ELSE now() END,"
    "  processor_reference = COALESCE($8, orders.processor_reference),"
    "  paid_at = CASE WHEN $8::text IS NULL THEN orders.paid_at ELSE COALESCE(orders.paid_at, $9) END"
    "  FROM current LEFT JOIN unnest($4::text[], $5::text[]) AS m(from_status, to_status)"
    "   ON m.from_status = current.status"
    "  WHERE orders.id = current.id AND (m.to_status IS NOT NULL OR $8::text IS NOT NULL)"
    "  RETURNING m.to_status)"
    " SELECT EXISTS (SELECT FROM first_time) AS first_time, EXISTS (SELECT FROM current) AS known,"
    " (SELECT to_status FROM moved) AS new_status"
)


def order_event_args(
    order_id: uuid.UUID,
    moves: list[tuple[OrderStatus, OrderStatus]],
    *,
    reason: str | None = None,
    balance_minor: int | None = None,
    payment: tuple[str, datetime] | None = None,
) -> tuple[object, ...]:
    """The parameters of :data:`ORDER_EVENT_SQL` after the inbox's."""
    reference, paid_at = payment if payment is not None else (None, None)
    return (
        order_id,
        [str(from_status) for from_status, _ in moves],
        [str(to) for _, to in moves],
        reason,
        balance_minor,
        reference,
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
