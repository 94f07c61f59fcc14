"""Transactional outbox: events are written in the same transaction as the state change that caused
them, and a relay publishes them with confirms afterwards.

The relay claims a batch in a short transaction (a lease: ``next_attempt_at`` moved past the publish
timeout, rows taken ``FOR UPDATE SKIP LOCKED``, so several relays can run), publishes each message
on its own with confirms, concurrently and with no transaction open, and deletes exactly the rows
the broker confirmed. A crash in between republishes once the lease runs out, and the consumers'
inbox absorbs the duplicate. A row the broker can never take (it cannot be encoded as an AMQP
message, or it keeps coming back unroutable) is parked with its reason and never holds back the
others; anything else (broker down, slow, refusing) is retried with backoff and never parked."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange

from shared.amqp import PUBLISH_TIMEOUT_S
from shared.db import Connection, rounds_on_notify
from shared.logging import accept_correlation_id, get_logger
from shared.messages import Contract, Envelope, envelope_for
from shared.metrics import OUTBOX_OLDEST_AGE, OUTBOX_PARKED, OUTBOX_PENDING, OUTBOX_PUBLISHED

log = get_logger(__name__)

NOTIFY_CHANNEL = "outbox"  # notified by a trigger on insert (shared/migrations/002)
BATCH_SIZE = 200
# A claimed row is left alone by other relays this long: past the publish timeout, with a margin.
CLAIM_LEASE_S = PUBLISH_TIMEOUT_S + 10
IDLE_POLL_S = 1.0
FAILURE_BACKOFF_S = 1.0
# A row that failed is tried again after 0.5 s, doubling up to this (a broker outage is waited out).
RETRY_INITIAL_BACKOFF_S = 0.5
RETRY_MAX_BACKOFF_S = 10.0
# A row returned as unroutable this many times in a row is parked: with the alternate exchange
# in place nothing is returned, so it is a row no topology fix is coming for.
PARK_AFTER_RETURNS = 5
GAUGE_INTERVAL_S = 5.0
ERROR_TEXT_MAX = 500


async def enqueue(
    conn: Connection,
    payload: Contract,
    *,
    producer: str,
    correlation_id: str,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    """Add an event to the outbox inside the caller's transaction. A correlation id stored by an
    older version (any text) is replaced here, so that it can never make the event unreadable."""
    envelope = envelope_for(
        payload,
        producer=producer,
        correlation_id=accept_correlation_id(correlation_id),
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


@dataclass(frozen=True)
class BatchResult:
    published: int
    parked: int
    retrying: int

    @property
    def claimed(self) -> int:
        return self.published + self.parked + self.retrying


@dataclass(frozen=True)
class ParkedMessage:
    id: int
    message_id: str
    routing_key: str
    reason: str
    parked_at: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class _Returned(Exception):
    pass


class OutboxRelay:
    def __init__(
        self, service: str, dsn: str, pool: asyncpg.Pool, exchange: AbstractExchange, *, publisher: str | None = None
    ) -> None:
        """``exchange`` must be on a channel with confirms that raises on returns; ``publisher`` is
        the broker user of the connection, stamped on each message as ``user_id`` (which the broker
        verifies), so that consumers know which service published it."""
        self.service = service
        self.publisher = publisher
        self.dsn = dsn
        self.pool = pool
        self.exchange = exchange
        self._wake = asyncio.Event()

    async def run(self) -> None:
        # The gauges have a loop of their own: the backlog alert must see a broker outage, when
        # no batch ever succeeds.
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._relay_forever())
            tasks.create_task(self._update_gauges_forever())

    async def _relay_forever(self) -> None:
        # A failed batch (the database unreachable) leaves its rows where they are.
        await rounds_on_notify(
            self.dsn,
            NOTIFY_CHANNEL,
            self._wake,
            self._publish_round,
            idle_s=IDLE_POLL_S,
            failure_backoff_s=FAILURE_BACKOFF_S,
            failure_event="outbox_relay_failed",
        )

    async def _publish_round(self) -> bool:
        return (await self.publish_batch()).claimed >= BATCH_SIZE

    async def _claim(self) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $2)"
                " WHERE id IN (SELECT id FROM outbox WHERE parked_at IS NULL AND next_attempt_at <= now()"
                "  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, message_id, routing_key, correlation_id, body, attempts, returns",
                BATCH_SIZE,
                CLAIM_LEASE_S,
            )
        )

    async def _publish(self, row: asyncpg.Record) -> None:
        message = aio_pika.Message(
            body=bytes(row["body"]),
            content_type="application/json",
            message_id=str(row["message_id"]),
            correlation_id=row["correlation_id"],
            type=row["routing_key"],
            user_id=self.publisher,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            # The whole publish is bounded: on a robust connection that is reconnecting, it would
            # otherwise wait for the channel to come back.
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.exchange.publish(message, routing_key=row["routing_key"], mandatory=True)
        except aio_pika.exceptions.PublishError as exc:
            raise _Returned(f"returned by the broker: {exc!r}") from None

    async def publish_batch(self) -> BatchResult:
        """Claim up to :data:`BATCH_SIZE` rows, publish each, and settle each row by its own outcome."""
        rows = await self._claim()
        if not rows:
            return BatchResult(0, 0, 0)
        # Confirms are awaited together: one fsync round trip for the batch, not one per message.
        outcomes = await asyncio.gather(*(self._publish(row) for row in rows), return_exceptions=True)
        published: list[int] = []
        parked: list[tuple[int, str]] = []
        retrying: list[tuple[int, str, bool]] = []  # (id, error, returned)
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome is None:
                published.append(row["id"])
            elif isinstance(outcome, TypeError | ValueError):
                # Raised while encoding the frame (e.g. a property over 255 bytes): inherent to the row.
                parked.append((row["id"], f"cannot be encoded as an AMQP message: {outcome}"))
            elif isinstance(outcome, _Returned) and row["returns"] + 1 >= PARK_AFTER_RETURNS:
                parked.append((row["id"], f"unroutable after {row['returns'] + 1} returns: {outcome}"))
            elif isinstance(outcome, Exception):
                retrying.append((row["id"], repr(outcome), isinstance(outcome, _Returned)))
            else:
                raise outcome  # cancellation of the relay itself
        if published:
            await self.pool.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", published)
            OUTBOX_PUBLISHED.labels(self.service).inc(len(published))
        if parked:
            await self.pool.execute(
                "UPDATE outbox SET parked_at = now(), parked_reason = p.reason, attempts = attempts + 1"
                " FROM unnest($1::bigint[], $2::text[]) AS p(id, reason) WHERE outbox.id = p.id",
                [i for i, _ in parked],
                [reason[:ERROR_TEXT_MAX] for _, reason in parked],
            )
            for row_id, reason in parked:
                log.error("outbox_message_parked", outbox_id=row_id, reason=reason)
        if retrying:
            await self.pool.execute(
                "UPDATE outbox SET attempts = attempts + 1, returns = returns + f.returned::int, last_error = f.error,"
                " next_attempt_at = now() + make_interval(secs => least($4, $5 * power(2, least(attempts, 16))))"
                " FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, error, returned) WHERE outbox.id = f.id",
                [i for i, _, _ in retrying],
                [error[:ERROR_TEXT_MAX] for _, error, _ in retrying],
                [returned for _, _, returned in retrying],
                RETRY_MAX_BACKOFF_S,
                RETRY_INITIAL_BACKOFF_S,
            )
            log.warning("outbox_publish_failed", rows=len(retrying), error=retrying[0][1])
        return BatchResult(len(published), len(parked), len(retrying))

    async def _update_gauges_forever(self) -> None:
        while True:
            try:
                await self.update_gauges()
            except Exception as exc:
                log.warning("outbox_gauges_failed", error=repr(exc))
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def update_gauges(self) -> None:
        row = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending,"
            " extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)) AS age,"
            " count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked FROM outbox"
        )
        assert row is not None
        OUTBOX_PENDING.labels(self.service).set(row["pending"])
        OUTBOX_OLDEST_AGE.labels(self.service).set(float(row["age"] or 0))
        OUTBOX_PARKED.labels(self.service).set(row["parked"])


async def list_parked(conn: Connection, limit: int) -> list[ParkedMessage]:
    rows = await conn.fetch(
        "SELECT id, message_id, routing_key, parked_reason, parked_at FROM outbox"
        " WHERE parked_at IS NOT NULL ORDER BY id LIMIT $1",
        limit,
    )
    return [
        ParkedMessage(
            id=row["id"],
            message_id=str(row["message_id"]),
            routing_key=row["routing_key"],
            reason=row["parked_reason"],
            parked_at=row["parked_at"].isoformat(),
        )
        for row in rows
    ]


async def unpark(conn: Connection, outbox_id: int) -> bool:
    """Give a parked row back to the relay (after fixing its cause); False if no such parked row."""
    unparked = await conn.fetchval(
        "UPDATE outbox SET parked_at = NULL, parked_reason = NULL, attempts = 0, returns = 0, next_attempt_at = now()"
        " WHERE id = $1 AND parked_at IS NOT NULL RETURNING true",
        outbox_id,
    )
    return bool(unparked)
