"""Transactional outbox: events are written in the same transaction as the state change that caused
them, and a relay publishes them with confirms afterwards. Rows are claimed with ``FOR UPDATE SKIP
LOCKED`` so several relays can run, and deleted only once the broker confirmed every message of the
batch; a crash in between republishes, and the consumers' inbox absorbs the duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange

from shared.db import Connection
from shared.logging import get_logger
from shared.messages import Contract, Envelope, envelope_for
from shared.metrics import OUTBOX_OLDEST_AGE, OUTBOX_PENDING, OUTBOX_PUBLISHED

log = get_logger(__name__)

NOTIFY_CHANNEL = "outbox"  # notified by a trigger on insert (shared/migrations/002)
BATCH_SIZE = 200
IDLE_POLL_S = 1.0
FAILURE_BACKOFF_S = 1.0
GAUGE_INTERVAL_S = 5.0
PUBLISH_TIMEOUT_S = 30.0


async def enqueue(
    conn: Connection,
    payload: Contract,
    *,
    producer: str,
    correlation_id: str,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    """Add an event to the outbox inside the caller's transaction."""
    envelope = envelope_for(
        payload,
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    await conn.execute(
        "INSERT INTO outbox (message_id, routing_key, correlation_id, body) VALUES ($1, $2, $3, $4)",
        envelope.id,
        envelope.type,
        envelope.correlation_id,
        envelope.model_dump_json().encode(),
    )
    return envelope


class OutboxRelay:
    def __init__(self, service: str, dsn: str, pool: asyncpg.Pool, exchange: AbstractExchange) -> None:
        self.service = service
        self.dsn = dsn
        self.pool = pool
        self.exchange = exchange
        self._wake = asyncio.Event()
        self._gauges_at = 0.0

    async def run(self) -> None:
        # A connection of its own for LISTEN (not from the pool: it lives as long as the relay),
        # opened again whenever the database dropped it.
        listener: asyncpg.Connection | None = None
        try:
            while True:
                # Cleared before the batch, not after: a commit notified during the batch must still
                # wake the next round instead of waiting out the idle poll.
                self._wake.clear()
                try:
                    if listener is None or listener.is_closed():
                        listener = await self._listen()
                    published = await self.publish_batch()
                    await self._update_gauges()
                except Exception as exc:
                    # Whatever went wrong (database, broker, a channel being restored), the relay must
                    # outlive it: the rows stay and are published on a later round.
                    log.warning("outbox_publish_failed", error=repr(exc))
                    await asyncio.sleep(FAILURE_BACKOFF_S)
                    continue
                if published < BATCH_SIZE:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close(timeout=5)

    async def _listen(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(self.dsn, timeout=10)
        await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        return connection

    async def publish_batch(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, message_id, routing_key, correlation_id, body FROM outbox"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                BATCH_SIZE,
            )
            if not rows:
                return 0
            # Confirms are awaited together: one fsync round trip for the batch, not one per message.
            await asyncio.gather(
                *(
                    self.exchange.publish(
                        aio_pika.Message(
                            body=bytes(row["body"]),
                            content_type="application/json",
                            message_id=str(row["message_id"]),
                            correlation_id=row["correlation_id"],
                            type=row["routing_key"],
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=row["routing_key"],
                        mandatory=True,
                        timeout=PUBLISH_TIMEOUT_S,
                    )
                    for row in rows
                )
            )
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
        OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)

    async def _update_gauges(self) -> None:
        now = time.monotonic()
        if now - self._gauges_at < GAUGE_INTERVAL_S:
            return
        self._gauges_at = now
        row = await self.pool.fetchrow(
            "SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS age FROM outbox"
        )
        assert row is not None
        OUTBOX_PENDING.labels(self.service).set(row["pending"])
        OUTBOX_OLDEST_AGE.labels(self.service).set(float(row["age"] or 0))
