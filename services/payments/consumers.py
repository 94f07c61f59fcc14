"""Payments learns from the ledger which successes were credited (the sweeper announces the others)."""

from __future__ import annotations

from services.payments import store
from shared.db import Connection
from shared.messages import CreditApplied, Envelope


async def on_credit_applied(conn: Connection, _envelope: Envelope, event: CreditApplied) -> None:
    await store.mark_credited(conn, event.payment_id)
