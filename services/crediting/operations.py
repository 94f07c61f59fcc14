"""What the operator does with deliveries evidence could not settle: list them, and resolve one
after checking AMPECO's back office (applied, or not applied and delivered again), each action
audited with who and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.crediting import domain, service, store
from services.crediting.metrics import DELIVERIES_NOT_APPLIED

LISTED_STATES = {
    "open": ["pending", "sending", "uncertain", "failed"],
    "awaiting-operator": ["pending", "uncertain", "failed"],
    **{state: [state] for state in store.DELIVERY_STATES},
}


def _awaits_operator(row: asyncpg.Record, resolve_after_s: float) -> bool:
    if row["state"] == "uncertain":
        return row["escalated_at"] is not None
    if row["state"] == "pending":
        return bool((datetime.now(UTC) - row["created_at"]).total_seconds() > resolve_after_s)
    return True


def _as_dict(row: asyncpg.Record) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}


async def list_deliveries(pool: asyncpg.Pool, state: str, limit: int, resolve_after_s: float) -> list[dict[str, Any]]:
    """Deliveries in ``state`` (a state, ``open`` or ``awaiting-operator``: failed ones, uncertain
    ones past ``csms.uncertain_resolve_after_s``, and pending ones older than that, which the
    tenant keeps refusing before they are sent), oldest first, with their audit trail."""
    awaiting_only = state == "awaiting-operator"
    rows = await store.list_deliveries(pool, LISTED_STATES[state], limit)
    listed = []
    for row in rows:
        if awaiting_only and not _awaits_operator(row, resolve_after_s):
            continue
        actions = await pool.fetch(
            "SELECT action, from_state, to_state, actor, why, created_at FROM delivery_actions"
            " WHERE delivery_id = $1 ORDER BY id",
            row["id"],
        )
        listed.append({**_as_dict(row), "actions": [_as_dict(a) for a in actions]})
    return listed


async def resolve_delivery(pool: asyncpg.Pool, delivery_id: int, verdict: domain.Verdict, by: str, why: str) -> str:
    """The operator's verdict on an uncertain or failed delivery; the state it is in now."""
    if not by.strip() or not why.strip():
        raise domain.RefusedAction("--by and --why are both required and kept in the audit record")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT state FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id)
        if row is None:
            raise domain.RefusedAction(f"no delivery {delivery_id}")
        new_state = domain.operator_resolution(row["state"], verdict)
        if verdict == "applied":
            await service.settle_delivered(conn, delivery_id, "operator", None, actor=by, why=why)
        elif verdict == "abandon":
            await service.abandon_delivery(conn, delivery_id, by, why)
        else:
            await store.settle_not_applied(conn, delivery_id, by, why, (row["state"],))
            DELIVERIES_NOT_APPLIED.labels("operator").inc()
    return new_state


async def receivables(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """What drivers owe the operator: the shares of refunds and chargebacks their balance could not
    give back (``domain.receivable_account``), per driver, currency and environment, largest first."""
    rows = await pool.fetch(
        "SELECT p.account, p.currency, -sum(p.amount_minor)::bigint AS owed_minor, max(p.created_at) AS since,"
        " array_agg(DISTINCT p.transfer_id) AS transfers FROM postings p"
        " WHERE p.account LIKE 'receivable:user:%' OR p.account LIKE 'test:receivable:user:%'"
        " GROUP BY p.account, p.currency HAVING sum(p.amount_minor) <> 0 ORDER BY 3 DESC"
    )
    return [
        {
            "user_id": row["account"].split("receivable:user:", 1)[1],
            "environment": domain.TEST if row["account"].startswith(f"{domain.TEST}:") else domain.PRODUCTION,
            "owed_minor": row["owed_minor"],
            "currency": row["currency"].strip(),
            "last_at": row["since"].isoformat(),
            "transfers": sorted(row["transfers"]),
        }
        for row in rows
    ]
