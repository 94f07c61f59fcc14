"""Consumers and the service runtime on the real broker and database: a newer contract version is
deferred and processed once understood, a stop lets the handler running commit and ack before
anything it needs goes away, and the janitor removes old inbox rows only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY

from shared import amqp, db, messages
from shared.messages import Contract, Envelope, PaymentSucceeded, envelope_for
from shared.retention import INBOX_RETENTION_SQL, Janitor, RetentionRule
from shared.runtime import Runtime
from tests import factories
from tests.harness import Stack, eventually
from tests.integration.conftest import ScratchDb, temp_queue

pytestmark = [pytest.mark.broker]


class PaymentSucceededV2(Contract):
    """A version of payment.succeeded that a later deploy of this code understands."""

    TYPE: ClassVar[str] = "payment.succeeded"
    VERSION: ClassVar[int] = 2
    payment_id: uuid.UUID
    amount_minor: int


async def publish(broker: AbstractRobustConnection, routing_key: str, envelope: Envelope) -> None:
    channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(body=envelope.model_dump_json().encode(), message_id=str(envelope.id)),
        routing_key=routing_key,
        mandatory=True,
    )
    await channel.close()


def a_payment() -> PaymentSucceeded:
    return factories.payment_succeeded(payment_id=uuid.uuid4(), order_id=uuid.uuid4())


async def test_a_newer_version_is_deferred_then_processed_once_understood(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = await broker.channel()
    routing_key = f"test.deferred.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    applied: list[tuple[uuid.UUID, Any]] = []

    async def record(_conn: db.Connection, envelope: Envelope, payload: Any) -> None:
        applied.append((envelope.id, payload))

    handlers: dict[type[Contract], amqp.MessageHandler] = {PaymentSucceeded: record}
    consumer = amqp.IdempotentConsumer("test", amqp.QueueSpec(queue.name, (routing_key,)), scratch_pool, handlers)
    await consumer.start(broker, prefetch=5)
    payment_id = uuid.uuid4()
    v2 = envelope_for(a_payment(), producer="test", correlation_id="c-v2").model_copy(
        update={"version": 2, "data": {"payment_id": str(payment_id), "amount_minor": 700}}
    )
    await publish(broker, routing_key, v2)

    async def deferred() -> bool:
        row = await scratch_pool.fetchrow("SELECT version, reason FROM deferred_messages WHERE message_id = $1", v2.id)
        return row is not None and row["version"] == 2 and "payment.succeeded/v2" in row["reason"]

    await eventually(deferred, 10, "the v2 message was not deferred")
    labels = {"service": "test", "queue": queue.name, "outcome": "deferred"}
    assert REGISTRY.get_sample_value("evtopup_messages_processed_total", labels) == 1
    # Still not understood: it stays.
    assert await consumer.retry_deferred() == 0
    assert await scratch_pool.fetchval("SELECT count(*) FROM deferred_messages") == 1

    # The deploy that understands v2 arrives.
    monkeypatch.setitem(messages.CONTRACTS, ("payment.succeeded", 2), PaymentSucceededV2)
    handlers[PaymentSucceededV2] = record
    assert await consumer.retry_deferred() == 1
    assert applied == [(v2.id, PaymentSucceededV2(payment_id=payment_id, amount_minor=700))]
    assert await scratch_pool.fetchval("SELECT count(*) FROM deferred_messages") == 0
    assert await scratch_pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", v2.id) == 1
    assert REGISTRY.get_sample_value("evtopup_deferred_messages", {"service": "test", "queue": queue.name}) == 0
    await consumer.stop(10)
    # Acked when deferred: nothing is left in the queue.
    assert (await channel.declare_queue(queue.name, passive=True)).declaration_result.message_count == 0
    await queue.delete(if_unused=False, if_empty=False)


async def test_stop_cancels_the_consumer_and_lets_the_running_handler_commit_and_ack(
    stack: Stack, scratch: ScratchDb
) -> None:
    """Runtime.stop: consumers first (the handler running commits and acks), then background tasks,
    then the broker connection and the pool, which the handler needed until the end."""
    runtime = Runtime("test", stack.settings)
    runtime.connection = await amqp.connect_robust(stack.settings.amqp, None)
    runtime.pool = await db.create_pool(scratch.dsn, 2)
    order: list[str] = []
    handler_started = asyncio.Event()
    release_handler = asyncio.Event()
    channel = await runtime.connection.channel()
    routing_key = f"test.stop.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)

    async def slow(conn: db.Connection, envelope: Envelope, _payload: PaymentSucceeded) -> None:
        handler_started.set()
        await release_handler.wait()
        await conn.execute("SELECT 1")  # the pool is still open
        order.append("handler finished")

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            order.append("background task stopped")

    consumer = amqp.IdempotentConsumer(
        "test", amqp.QueueSpec(queue.name, (routing_key,)), runtime.pool, {PaymentSucceeded: slow}
    )
    await consumer.start(runtime.connection, prefetch=2)
    runtime.add_consumer(consumer)
    runtime.spawn(background())
    first = envelope_for(a_payment(), producer="test", correlation_id="c-stop")
    await publish(runtime.connection, routing_key, first)
    await asyncio.wait_for(handler_started.wait(), 10)

    stopping = asyncio.get_running_loop().create_task(runtime.stop())
    await eventually(lambda: asyncio.sleep(0, not consumer.consuming), 10, "the consumer was not cancelled")
    # Cancelled first: the handler is still running, and so are the tasks, the pool and the broker.
    assert order == []
    # A message arriving now is not taken (prefetch 2 would have let it in).
    second = envelope_for(a_payment(), producer="test", correlation_id="c-stop")
    await publish(runtime.connection, routing_key, second)
    release_handler.set()
    await asyncio.wait_for(stopping, 30)
    assert order == ["handler finished", "background task stopped"]
    assert runtime.pool.is_closing()
    assert runtime.connection.is_closed
    # The first was committed and acked before the connection closed; the second waits in the queue.
    assert [r["message_id"] for r in await scratch.pool.fetch("SELECT message_id FROM inbox")] == [first.id]
    check = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}")
    async with check:
        check_channel = await check.channel()
        declared = await check_channel.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 1
        await check_channel.queue_delete(queue.name)


async def test_the_janitor_removes_old_inbox_rows_only(scratch_pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    old = [uuid.uuid4() for _ in range(5)]
    recent = [uuid.uuid4() for _ in range(3)]
    await scratch_pool.executemany(
        "INSERT INTO inbox (message_id, message_type, received_at) VALUES ($1, 'payment.succeeded', $2)",
        [(i, now - timedelta(days=31)) for i in old] + [(i, now - timedelta(days=29)) for i in recent],
    )
    janitor = Janitor("test", scratch_pool, interval_s=3600)
    janitor.add(RetentionRule("inbox", INBOX_RETENTION_SQL, days=30))
    # Batches of 2: the rule is repeated while it fills its batch.
    assert await janitor.run_once(batch_size=2) == {"inbox": 5}
    left = {r["message_id"] for r in await scratch_pool.fetch("SELECT message_id FROM inbox")}
    assert left == set(recent)
    assert await janitor.run_once(batch_size=2) == {"inbox": 0}


async def test_without_the_inbox_a_handler_runs_on_every_delivery_and_records_nothing(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    """For a handler idempotent by itself (payments marking a payment credited): a redelivery runs it
    again, and no inbox row is written for it."""
    channel = await broker.channel()
    routing_key = f"test.no_inbox.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    seen: list[uuid.UUID] = []

    async def record(conn: db.Connection, envelope: Envelope, _payload: Any) -> None:
        assert not conn.is_in_transaction()  # one statement, in autocommit
        seen.append(envelope.id)

    consumer = amqp.IdempotentConsumer(
        "test", amqp.QueueSpec(queue.name, (routing_key,)), scratch_pool, {PaymentSucceeded: record}, inbox=False
    )
    await consumer.start(broker, prefetch=5)
    try:
        envelope = envelope_for(a_payment(), producer="test", correlation_id="c-no-inbox")
        await publish(broker, routing_key, envelope)
        await publish(broker, routing_key, envelope)  # the same message again, as a redelivery would be

        async def both_handled() -> bool:
            return len(seen) == 2

        await eventually(both_handled, 10, "the handler did not run for both")
        assert seen == [envelope.id, envelope.id]
        assert await scratch_pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", envelope.id) == 0
    finally:
        await consumer.stop(5)


async def test_a_deferred_message_that_fails_for_now_holds_back_none_after_it(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    channel = await broker.channel()
    routing_key = f"test.deferred_isolated.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    stuck, fine = a_payment(), a_payment()
    applied: list[uuid.UUID] = []

    async def record(_conn: db.Connection, _envelope: Envelope, payload: PaymentSucceeded) -> None:
        if payload.payment_id == stuck.payment_id:
            raise asyncpg.PostgresConnectionError("the database is restarting")
        applied.append(payload.payment_id)

    consumer = amqp.IdempotentConsumer(
        "test", amqp.QueueSpec(queue.name, (routing_key,)), scratch_pool, {PaymentSucceeded: record}
    )
    await consumer.start(broker, prefetch=5)
    try:
        # Both were deferred by an older version of this code, the one that fails first.
        first_seen = datetime.now(UTC) - timedelta(days=1)
        for seen_at, payload in ((first_seen, stuck), (first_seen + timedelta(seconds=1), fine)):
            envelope = envelope_for(payload, producer="test", correlation_id="c-isolated")
            await scratch_pool.execute(
                "INSERT INTO deferred_messages (queue, message_id, message_type, version, routing_key, body, reason,"
                " first_seen_at) VALUES ($1, $2, $3, 1, $4, $5, 'was too new', $6)",
                queue.name,
                envelope.id,
                envelope.type,
                routing_key,
                envelope.model_dump_json().encode(),
                seen_at,
            )
        assert await consumer.retry_deferred() == 1
        assert applied == [fine.payment_id]
        left = await scratch_pool.fetch("SELECT body FROM deferred_messages WHERE queue = $1", queue.name)
        assert [Envelope.model_validate_json(bytes(r["body"])).data["payment_id"] for r in left] == [
            str(stuck.payment_id)
        ]
    finally:
        await consumer.stop(5)
