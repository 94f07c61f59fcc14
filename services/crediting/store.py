"""SQL for the ledger: transfers, their postings, and driver balances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from services.crediting.domain import PRODUCTION, Posting, Transfer, user_account
from shared.db import Connection, record_to
from shared.messages import Environment


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a transfer: ``created`` False means it already existed, the same."""

    created: bool
    balance_minor: int


class TransferConflict(Exception):
    """A transfer with this id exists with other data: never a second posting, never silently acked."""


async def _load_transfer(conn: Connection, transfer_id: str) -> Transfer:
    row = await conn.fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
    assert row is not None
    postings = await conn.fetch(
        "SELECT account, entry_kind, amount_minor FROM postings WHERE transfer_id = $1 ORDER BY id",
        transfer_id,
    )
    return record_to(
        Transfer, row, postings=tuple(Posting(p["account"], p["entry_kind"], p["amount_minor"]) for p in postings)
    )


async def record_transfer(conn: Connection, transfer: Transfer, correlation_id: str) -> Recorded:
    """Within the caller's transaction: post ``transfer`` once and move the driver's balance."""
    created = await conn.fetchval(
        "INSERT INTO transfers (id, kind, environment, payment_id, order_id, user_id, amount_minor, bonus_minor,"
        " fee_minor, currency, correlation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT DO NOTHING RETURNING true",
        transfer.id,
        transfer.kind,
        transfer.environment,
        transfer.payment_id,
        transfer.order_id,
        transfer.user_id,
        transfer.amount_minor,
        transfer.bonus_minor,
        transfer.fee_minor,
        transfer.currency,
        correlation_id,
    )
    if not created:
        existing = await _load_transfer(conn, transfer.id)
        if existing != transfer:
            raise TransferConflict(f"transfer {transfer.id} exists with different data")
        return Recorded(False, await balance(conn, transfer.user_id, transfer.currency, transfer.environment))
    await conn.executemany(
        "INSERT INTO postings (transfer_id, account, entry_kind, amount_minor, currency) VALUES ($1, $2, $3, $4, $5)",
        [(transfer.id, p.account, p.entry_kind, p.amount_minor, transfer.currency) for p in transfer.postings],
    )
    new_balance: int = await conn.fetchval(
        "INSERT INTO user_balances (user_id, currency, environment, balance_minor) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (user_id, currency, environment) DO UPDATE"
        " SET balance_minor = user_balances.balance_minor + EXCLUDED.balance_minor, updated_at = now()"
        " RETURNING balance_minor",
        transfer.user_id,
        transfer.currency,
        transfer.environment,
        transfer.user_credit_minor,
    )
    return Recorded(True, new_balance)


async def balance(
    conn: Connection | asyncpg.Pool, user_id: str, currency: str, environment: Environment = PRODUCTION
) -> int:
    value = await conn.fetchval(
        "SELECT balance_minor FROM user_balances WHERE user_id = $1 AND currency = $2 AND environment = $3",
        user_id,
        currency,
        environment,
    )
    return int(value or 0)


async def entries(
    pool: asyncpg.Pool, user_id: str, currency: str, limit: int, environment: Environment = PRODUCTION
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT p.id, p.entry_kind, p.amount_minor, p.currency, p.created_at, t.id AS transfer_id,"
        " t.kind, t.payment_id, t.order_id FROM postings p JOIN transfers t ON t.id = p.transfer_id"
        " WHERE p.account = $1 AND p.currency = $2 ORDER BY p.id DESC LIMIT $3",
        user_account(user_id, environment),
        currency,
        limit,
    )
    return [
        {
            "id": row["id"],
            "transfer_id": row["transfer_id"],
            "kind": row["kind"],
            "entry_kind": row["entry_kind"],
            "amount_minor": row["amount_minor"],
            "currency": row["currency"],
            "payment_id": str(row["payment_id"]),
            "order_id": str(row["order_id"]),
            "created_at": row["created_at"].isoformat(),
        }
        for row in rows
    ]
