"""SQL for the ledger: transfers, their postings, and driver balances."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from services.crediting.csms.ampeco.wire import BalanceNotification
from services.crediting.domain import PRODUCTION, DeliveryIntent, Posting, Transfer, user_account
from shared.db import Connection, record_to
from shared.messages import Environment


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a transfer: ``created`` False means it already existed, the same."""

    created: bool
    balance_minor: int


class InsufficientBalance(Exception):
    """A debit larger than the driver's balance in the ledger."""


class TransferConflict(Exception):
    """A transfer with this id exists with other data: never a second posting, never silently acked."""


async def load_transfer(conn: Connection, transfer_id: str) -> Transfer:
    row = await conn.fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
    assert row is not None
    postings = await conn.fetch(
        "SELECT account, entry_kind, amount_minor FROM postings WHERE transfer_id = $1 ORDER BY id",
        transfer_id,
    )
    return record_to(
        Transfer,
        row,
        currency=row["currency"].strip(),
        postings=tuple(Posting(p["account"], p["entry_kind"], p["amount_minor"]) for p in postings),
    )


async def transfers_with_prefix(conn: Connection, prefix: str) -> list[Transfer]:
    ids = await conn.fetch("SELECT id FROM transfers WHERE starts_with(id, $1) ORDER BY created_at, id", prefix)
    return [await load_transfer(conn, row["id"]) for row in ids]


async def transfer_exists(conn: Connection, transfer_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM transfers WHERE id = $1", transfer_id))


async def lock_balance(conn: Connection, user_id: str, currency: str, environment: Environment) -> int:
    """The driver's balance, locked until the caller's transaction ends (a debit is sized from it)."""
    value = await conn.fetchval(
        "SELECT balance_minor FROM user_balances WHERE user_id = $1 AND currency = $2 AND environment = $3 FOR UPDATE",
        user_id,
        currency,
        environment,
    )
    return int(value or 0)


# A transfer's row, once (by its id): $1 to $13 of both statements below.
INSERT_TRANSFER = (
    "INSERT INTO transfers (id, kind, environment, payment_id, order_id, user_id, amount_minor, bonus_minor,"
    " fee_minor, currency, correlation_id, reason, actor)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
# A credit (the top-up's path) in one round trip: the transfer, its postings ($14 to $16) and the
# driver's balance ($17 added) only if the transfer is new; foreign keys are checked at the end of
# the statement, so the postings may name the transfer inserted beside them.
INSERT_CREDIT = (
    f"WITH created AS ({INSERT_TRANSFER})"
    ", posted AS (INSERT INTO postings (transfer_id, account, entry_kind, amount_minor, currency)"
    "  SELECT created.id, p.account, p.entry_kind, p.amount_minor, $10"
    "  FROM created, unnest($14::text[], $15::text[], $16::bigint[]) WITH ORDINALITY AS p(account, entry_kind,"
    "   amount_minor, n) ORDER BY p.n)"
    ", balance AS (INSERT INTO user_balances (user_id, currency, environment, balance_minor)"
    "  SELECT $6, $10, $3, $17 FROM created"
    "  ON CONFLICT (user_id, currency, environment) DO UPDATE"
    "  SET balance_minor = user_balances.balance_minor + EXCLUDED.balance_minor, updated_at = now()"
    "  RETURNING balance_minor)"
    " SELECT EXISTS (SELECT FROM created) AS created, (SELECT balance_minor FROM balance) AS balance_minor"
)


async def record_transfer(conn: Connection, transfer: Transfer, correlation_id: str) -> Recorded:
    """Within the caller's transaction: post ``transfer`` once and move the driver's balance."""
    row = (
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
        transfer.reason,
        transfer.actor,
    )
    if transfer.user_credit_minor >= 0:
        credit = await conn.fetchrow(
            INSERT_CREDIT,
            *row,
            [p.account for p in transfer.postings],
            [p.entry_kind for p in transfer.postings],
            [p.amount_minor for p in transfer.postings],
            transfer.user_credit_minor,
        )
        assert credit is not None
        if credit["created"]:
            return Recorded(True, credit["balance_minor"])
        return await _recorded_before(conn, transfer)
    if not await conn.fetchval(INSERT_TRANSFER, *row):
        return await _recorded_before(conn, transfer)
    await conn.executemany(
        "INSERT INTO postings (transfer_id, account, entry_kind, amount_minor, currency) VALUES ($1, $2, $3, $4, $5)",
        [(transfer.id, p.account, p.entry_kind, p.amount_minor, transfer.currency) for p in transfer.postings],
    )
    # A debit: the balance must be there (its CHECK refuses going below zero).
    new_balance: int | None = await conn.fetchval(
        "UPDATE user_balances SET balance_minor = balance_minor + $4, updated_at = now()"
        " WHERE user_id = $1 AND currency = $2 AND environment = $3 RETURNING balance_minor",
        transfer.user_id,
        transfer.currency,
        transfer.environment,
        transfer.user_credit_minor,
    )
    if new_balance is None:
        raise InsufficientBalance(f"user {transfer.user_id} has no {transfer.currency} balance to debit")
    return Recorded(True, new_balance)


async def _recorded_before(conn: Connection, transfer: Transfer) -> Recorded:
    """A transfer already posted: the same one (a redelivery), or :class:`TransferConflict`."""
    existing = await load_transfer(conn, transfer.id)
    if existing != transfer:
        raise TransferConflict(f"transfer {transfer.id} exists with different data")
    return Recorded(False, await balance(conn, transfer.user_id, transfer.currency, transfer.environment))


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


# --- Deliveries to an external CSMS ---------------------------------------------------------------

OPEN_STATES = ("pending", "sending", "uncertain")
DELIVERY_STATES = (*OPEN_STATES, "delivered", "failed")


async def add_delivery(conn: Connection, intent: DeliveryIntent, correlation_id: str) -> int:
    """Within the transfer's transaction: the intent to carry it to the CSMS."""
    delivery_id: int = await conn.fetchval(
        "INSERT INTO deliveries (transfer_id, user_id, direction, amount_minor, currency, reason, app_info,"
        " correlation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        intent.transfer_id,
        intent.change.user_id,
        intent.change.direction,
        intent.change.amount_minor,
        intent.change.currency,
        intent.change.reason,
        intent.change.app_info,
        correlation_id,
    )
    return delivery_id


async def delivery_of_transfer(conn: Connection, transfer_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM deliveries WHERE transfer_id = $1", transfer_id)
    return row


async def expire_leases(conn: Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """Deliveries whose dispatcher stopped mid-call (crashed, killed): one never sent goes back to
    pending; one that was sent is uncertain, since its call may have been applied."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "UPDATE deliveries SET"
        " state = CASE WHEN sent_at IS NULL THEN 'pending' ELSE 'uncertain' END,"
        " uncertain_since = CASE WHEN sent_at IS NULL THEN NULL ELSE now() END,"
        " last_outcome = CASE WHEN sent_at IS NULL THEN 'dispatcher stopped before the call'"
        "  ELSE 'dispatcher stopped before the outcome of its call was written' END,"
        " lease_until = NULL, next_attempt_at = now(), updated_at = now()"
        " WHERE state = 'sending' AND lease_until < now() RETURNING id, user_id, state"
    )
    return rows


async def claim_deliveries(conn: Connection | asyncpg.Pool, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Due deliveries, at most one per user and only for users with none in flight (the oldest of
    each user's first), taken ``SKIP LOCKED`` so that several dispatchers share the work; each gets
    a lease past which another dispatcher takes it as stopped."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "WITH due AS ("
        " SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.next_attempt_at <= now()"
        "  AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.user_id = d.user_id"
        "   AND o.state IN ('sending', 'uncertain'))"
        "  AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.user_id = d.user_id"
        "   AND o.state = 'pending' AND o.id < d.id)"
        " ORDER BY d.next_attempt_at, d.id LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " UPDATE deliveries d SET state = 'sending', attempts = d.attempts + 1, sent_at = NULL,"
        " balance_before = NULL, lease_until = now() + make_interval(secs => $2), updated_at = now()"
        " FROM due WHERE d.id = due.id RETURNING d.*",
        limit,
        lease_s,
    )
    return rows


async def mark_sent(pool: asyncpg.Pool, delivery_id: int, attempt: int, balance_before: Decimal | None) -> bool:
    """Committed just before the call: from here on the call may have been applied."""
    marked = await pool.fetchval(
        "UPDATE deliveries SET sent_at = now(), balance_before = $3, updated_at = now()"
        " WHERE id = $1 AND attempts = $2 AND state = 'sending' RETURNING true",
        delivery_id,
        attempt,
        balance_before,
    )
    return bool(marked)


async def release_delivery(pool: asyncpg.Pool, delivery_id: int, attempt: int, retry_in_s: float, outcome: str) -> None:
    """Certainly not applied: pending again, tried after ``retry_in_s``."""
    async with pool.acquire() as conn, conn.transaction():
        released = await conn.fetchval(
            "UPDATE deliveries SET state = 'pending', sent_at = NULL, lease_until = NULL, last_outcome = $4,"
            " next_attempt_at = now() + make_interval(secs => $3), updated_at = now()"
            " WHERE id = $1 AND attempts = $2 AND state = 'sending' RETURNING true",
            delivery_id,
            attempt,
            retry_in_s,
            outcome[:500],
        )
        if released:
            await unmatch_notifications(conn, delivery_id)


async def unmatch_notifications(conn: Connection, delivery_id: int) -> None:
    """A delivery sent again starts without evidence: whatever matched its earlier call did not
    come from it (that call was not applied)."""
    await conn.execute("UPDATE csms_notifications SET delivery_id = NULL WHERE delivery_id = $1", delivery_id)


async def mark_uncertain(pool: asyncpg.Pool, delivery_id: int, attempt: int, outcome: str) -> None:
    await pool.execute(
        "UPDATE deliveries SET state = 'uncertain', uncertain_since = now(), lease_until = NULL,"
        " last_outcome = $3, updated_at = now() WHERE id = $1 AND attempts = $2 AND state = 'sending'",
        delivery_id,
        attempt,
        outcome[:500],
    )


async def mark_failed(pool: asyncpg.Pool, delivery_id: int, attempt: int, outcome: str) -> None:
    await pool.execute(
        "UPDATE deliveries SET state = 'failed', lease_until = NULL, last_outcome = $3, updated_at = now()"
        " WHERE id = $1 AND attempts = $2 AND state = 'sending'",
        delivery_id,
        attempt,
        outcome[:500],
    )


async def settle_delivered(
    conn: Connection,
    delivery_id: int,
    settled_by: str,
    balance_after: Decimal | None,
    *,
    attempt: int | None = None,
    actor: str | None = None,
    why: str = "",
) -> asyncpg.Record | None:
    """Within the caller's transaction: the delivery is applied in the CSMS (its answer, evidence or
    the operator said so). None if it had already been settled (by another dispatcher, or evidence
    that arrived first). Anything but the call's own answer is audited."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE deliveries d SET state = 'delivered', settled_at = now(), settled_by = $2, balance_after = $3,"
        " lease_until = NULL, updated_at = now()"
        " FROM (SELECT id, state FROM deliveries WHERE id = $1 FOR UPDATE) old"
        " WHERE d.id = old.id AND d.state IN ('sending', 'uncertain', 'failed')"
        " AND ($4::int IS NULL OR d.attempts = $4) RETURNING d.*, old.state AS from_state",
        delivery_id,
        settled_by,
        balance_after,
        attempt,
    )
    if row is not None and settled_by != "response":
        action = f"settled_{settled_by}"
        await audit(conn, delivery_id, action, row["from_state"], "delivered", actor or settled_by, why)
    return row


async def settle_not_applied(
    conn: Connection, delivery_id: int, actor: str, why: str, from_states: tuple[str, ...]
) -> bool:
    """The call was not applied: pending again, to be delivered again at once."""
    row = await conn.fetchrow(
        "UPDATE deliveries d SET state = 'pending', sent_at = NULL, uncertain_since = NULL, escalated_at = NULL,"
        " next_attempt_at = now(), lease_until = NULL, updated_at = now()"
        " FROM (SELECT id, state FROM deliveries WHERE id = $1 FOR UPDATE) old"
        " WHERE d.id = old.id AND d.state = ANY($2::text[]) RETURNING old.state AS from_state",
        delivery_id,
        list(from_states),
    )
    if row is None:
        return False
    await unmatch_notifications(conn, delivery_id)
    await audit(conn, delivery_id, "settled_not_applied", row["from_state"], "pending", actor, why)
    await conn.execute("SELECT pg_notify('deliveries', '')")
    return True


async def audit(
    conn: Connection, delivery_id: int, action: str, from_state: str, to_state: str, actor: str, why: str
) -> None:
    await conn.execute(
        "INSERT INTO delivery_actions (delivery_id, action, from_state, to_state, actor, why)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        delivery_id,
        action,
        from_state,
        to_state,
        actor,
        why[:1000],
    )


async def uncertain_deliveries(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT d.*, EXTRACT(EPOCH FROM now() - d.sent_at)::float8 AS seconds_since_sent,"
        # Any change of the user's balance notified since the call, but the call's own: the balance
        # then moved for another reason too, and says nothing about the call.
        " EXISTS (SELECT 1 FROM csms_notifications n WHERE n.user_id = d.user_id"
        "  AND n.received_at >= d.sent_at AND n.delivery_id IS DISTINCT FROM d.id) AS notified_since_sent,"
        # AMPECO has since confirmed a change we asked for after this call: its queue moved past it.
        " EXISTS (SELECT 1 FROM csms_notifications n JOIN deliveries o ON o.id = n.delivery_id"
        "  WHERE n.received_at > d.sent_at AND o.sent_at > d.sent_at AND o.id <> d.id) AS tenant_moved_on,"
        " (SELECT n.id FROM csms_notifications n WHERE n.delivery_id = d.id) AS matched_notification"
        " FROM deliveries d WHERE d.state = 'uncertain' ORDER BY d.uncertain_since LIMIT $1",
        limit,
    )
    return rows


async def escalate_uncertain(pool: asyncpg.Pool, older_than_s: float) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "UPDATE deliveries SET escalated_at = now(), updated_at = now() WHERE state = 'uncertain'"
        " AND escalated_at IS NULL AND sent_at < now() - make_interval(secs => $1) RETURNING id, user_id",
        older_than_s,
    )
    return rows


async def record_notification(conn: Connection, identity_sha256: bytes, note: BalanceNotification) -> int | None:
    """The notification once; None for a duplicate (or a replay) of one already received."""
    notification_id: int | None = await conn.fetchval(
        "INSERT INTO csms_notifications (identity_sha256, user_id, credit, debit, updated_balance, currency,"
        " change_type, transaction_id, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (identity_sha256) DO NOTHING RETURNING id",
        identity_sha256,
        note.user_id,
        note.credit,
        note.debit,
        note.updated_balance,
        note.currency,
        note.type,
        note.transaction_id,
        note.occurred_at,
    )
    return notification_id


async def unmatched_sent_deliveries(conn: Connection, user_id: str, since_s: float) -> list[asyncpg.Record]:
    """The user's deliveries whose call went out (recently) and that no notification is matched to,
    locked for the caller's transaction so that two notifications never take the same one."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT d.id, d.direction, d.amount_minor, d.currency, d.sent_at, d.state FROM deliveries d"
        " WHERE d.user_id = $1 AND d.sent_at IS NOT NULL AND d.sent_at > now() - make_interval(secs => $2)"
        " AND d.state IN ('sending', 'uncertain', 'delivered')"
        " AND NOT EXISTS (SELECT 1 FROM csms_notifications n WHERE n.delivery_id = d.id)"
        " ORDER BY d.id FOR UPDATE",
        user_id,
        since_s,
    )
    return rows


async def match_notification(conn: Connection, notification_id: int, delivery_id: int) -> None:
    await conn.execute("UPDATE csms_notifications SET delivery_id = $2 WHERE id = $1", notification_id, delivery_id)


async def signing_keys(conn: Connection | asyncpg.Pool) -> list[str | None]:
    """Each subscription's key; None stands for the configured static API token."""
    return [row["signing_key"] for row in await conn.fetch("SELECT signing_key FROM csms_subscriptions")]


async def save_subscription(
    conn: Connection | asyncpg.Pool, subscription_id: str, callback_url: str, key: str | None
) -> None:
    await conn.execute(
        "INSERT INTO csms_subscriptions (id, callback_url, signing_key) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET callback_url = EXCLUDED.callback_url, signing_key = EXCLUDED.signing_key",
        subscription_id,
        callback_url,
        key,
    )


async def known_subscriptions(conn: Connection | asyncpg.Pool) -> set[str]:
    return {row["id"] for row in await conn.fetch("SELECT id FROM csms_subscriptions")}


async def list_deliveries(
    conn: Connection | asyncpg.Pool, states: list[str], limit: int, escalated_only: bool = False
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, transfer_id, user_id, direction, amount_minor, currency, reason, state, attempts, sent_at,"
        " uncertain_since, escalated_at, settled_at, settled_by, last_outcome, created_at FROM deliveries"
        " WHERE state = ANY($1::text[]) AND (NOT $3 OR escalated_at IS NOT NULL) ORDER BY id LIMIT $2",
        states,
        limit,
        escalated_only,
    )
    return rows
