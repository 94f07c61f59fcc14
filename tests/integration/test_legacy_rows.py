"""Rows written by an older version must not block or mislabel anything after an upgrade: a
correlation id of any text (the edge accepted it then) and payments made before they recorded an
environment."""

from __future__ import annotations

import re
import uuid

import asyncpg
import pytest

from services.payments import store
from shared import db
from shared.logging import CORRELATION_ID_PATTERN
from shared.messages import decode
from shared.outbox import enqueue
from tests import factories
from tests.harness import Stack

pytestmark = [pytest.mark.broker]


async def test_an_old_correlation_id_never_makes_an_event_unreadable(scratch_pool: asyncpg.Pool) -> None:
    payload = factories.payment_succeeded(payment_id=uuid.uuid4(), order_id=uuid.uuid4())
    async with scratch_pool.acquire() as conn:
        envelope = await enqueue(conn, payload, producer="payments", correlation_id="req 42 {legacy}")
    row = await scratch_pool.fetchrow("SELECT correlation_id, body FROM outbox WHERE message_id = $1", envelope.id)
    assert row is not None
    assert row["correlation_id"] != "req 42 {legacy}"
    assert re.fullmatch(CORRELATION_ID_PATTERN, row["correlation_id"])
    decoded, _ = decode(bytes(row["body"]))
    assert decoded.correlation_id == row["correlation_id"]


async def test_payments_of_test_integrations_made_before_environments_are_test_money(stack: Stack) -> None:
    pool = await db.create_pool(stack.dsn("payments"), 2)
    try:
        old, new = uuid.uuid4(), uuid.uuid4()
        for payment_id, created_at in ((old, "now() - interval '10 years'"), (new, "now()")):
            await pool.execute(
                "INSERT INTO payments (id, order_id, user_id, integration_id, processor, method, amount_minor,"
                " bonus_minor, fee_minor, charge_minor, currency, status, correlation_id, environment, created_at)"
                " VALUES ($1, $2, 'tester-1', 'sandbox_trial', 'sandbox', 'card', 1000, 0, 0, 1000, 'EUR',"
                f" 'expired', 'legacy', 'production', {created_at})",
                payment_id,
                uuid.uuid4(),
            )
        assert await store.mark_older_test_payments(pool, ["sandbox_trial"]) >= 1
        environments = {
            r["id"]: r["environment"]
            for r in await pool.fetch("SELECT id, environment FROM payments WHERE id = ANY($1::uuid[])", [old, new])
        }
        # Only what predates the migration is relabelled; a new row says what payments wrote.
        assert environments == {old: "test", new: "production"}
        assert await store.mark_older_test_payments(pool, ["sandbox_trial"]) == 0
        await pool.execute("DELETE FROM payments WHERE id = ANY($1::uuid[])", [old, new])
    finally:
        await pool.close()
