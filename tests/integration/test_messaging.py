"""The messaging plumbing on the real broker and database: outbox relay with confirms, inbox
deduplication, dead-lettering with a reason, the delivery limit, RPC, and the dead-letter tools."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from prometheus_client import REGISTRY

from shared import amqp, db
from shared.dead_letters import list_dead_letters, replay_dead_letters
from shared.messages import CreditApplied, Envelope, PaymentSucceeded, envelope_for
from shared.outbox import OutboxRelay, enqueue
from shared.runtime import SHARED_MIGRATIONS
from tests import factories
from tests.harness import Stack, eventually

pytestmark = [pytest.mark.broker]


def payment_succeeded(**overrides: Any) -> PaymentSucceeded:
    return factories.payment_succeeded(**{"payment_id": uuid.uuid4(), "order_id": uuid.uuid4(), **overrides})


@pytest_asyncio.fixture
async def broker(stack: Stack) -> AsyncIterator[AbstractRobustConnection]:
    connection = await amqp.connect_robust(stack.settings.amqp)
    async with connection:
        yield connection


@pytest_asyncio.fixture
async def scratch_pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own with only the plumbing tables, so no running service competes."""
    dsn = stack.dsn("page").replace("_page", f"_scratch_{uuid.uuid4().hex[:6]}")
    await db.ensure_database(dsn)
    await db.migrate(dsn, {"shared": SHARED_MIGRATIONS})
    pool = await db.create_pool(dsn, 5)
    try:
        yield pool
    finally:
        await pool.close()
        await db.drop_database(dsn)


async def temp_queue(channel: AbstractChannel, routing_key: str, delivery_limit: int = 3) -> AbstractQueue:
    queue = await channel.declare_queue(
        f"test.{uuid.uuid4().hex[:8]}", durable=True, arguments=amqp.quorum_arguments(delivery_limit)
    )
    await queue.bind(amqp.EVENTS_EXCHANGE, routing_key)
    return queue


def origin_queue(headers: dict[str, Any]) -> str:
    if amqp.ORIGIN_QUEUE_HEADER in headers:
        return str(headers[amqp.ORIGIN_QUEUE_HEADER])
    return str(headers["x-death"][0]["queue"])


async def take_dead_letters(
    channel: AbstractChannel, expected: set[tuple[str, str]], timeout_s: float = 30
) -> dict[tuple[str, str], Any]:
    """Remove and return the dead letters with these (message id, origin queue); others stay."""
    queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
    found: dict[tuple[str, str], Any] = {}

    async def scan() -> bool:
        others = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            key = (str(message.message_id), origin_queue(message.headers))
            if key in expected:
                found[key] = message.headers
                await message.ack()
            else:
                others.append(message)
        for message in others:
            await message.nack(requeue=True)
        return set(found) == expected

    await eventually(scan, timeout_s, f"dead letters {expected - set(found)} never arrived")
    return found


async def publish_raw(channel: AbstractChannel, body: bytes, routing_key: str) -> str:
    message_id = str(uuid.uuid4())
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(body=body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=routing_key,
    )
    return message_id


@pytest.mark.usefixtures("services")
async def test_bad_messages_reaching_a_service_are_dead_lettered_with_reason(
    broker: AbstractRobustConnection,
) -> None:
    channel = await broker.channel(publisher_confirms=True)
    good = envelope_for(payment_succeeded(), producer="test", correlation_id="c1").model_dump(mode="json")
    cases = {
        await publish_raw(channel, b"not json at all", "payment.succeeded"): "malformed envelope",
        await publish_raw(channel, json.dumps({**good, "version": 99}).encode(), "payment.succeeded"): "unknown",
        await publish_raw(
            channel, json.dumps({**good, "data": {**good["data"], "amount_minor": 10.5}}).encode(), "payment.succeeded"
        ): "amount_minor",
    }
    # payment.succeeded goes to crediting and to the page: each consumer dead-letters its copy.
    queues = (amqp.CREDITING_QUEUE.name, amqp.PAGE_QUEUE.name)
    found = await take_dead_letters(channel, {(m, q) for m in cases for q in queues})
    for (message_id, _queue), headers in found.items():
        assert cases[message_id] in headers[amqp.REASON_HEADER]


async def test_transient_failures_are_retried_then_dead_lettered_at_the_delivery_limit(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    channel = await broker.channel(publisher_confirms=True)
    routing_key = f"test.transient.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key, delivery_limit=2)
    attempts: list[uuid.UUID] = []

    async def always_fails(_conn: db.Connection, envelope: Envelope, _payload: PaymentSucceeded) -> None:
        attempts.append(envelope.id)
        raise RuntimeError("database is on fire")

    spec = amqp.QueueSpec(queue.name, (routing_key,))
    consumer = amqp.IdempotentConsumer("test", spec, scratch_pool, {PaymentSucceeded: always_fails})
    await consumer.start(broker, prefetch=1)
    envelope = envelope_for(payment_succeeded(), producer="test", correlation_id="c2")
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(body=envelope.model_dump_json().encode(), message_id=str(envelope.id)),
        routing_key=routing_key,
    )
    found = await take_dead_letters(channel, {(str(envelope.id), queue.name)})
    assert len(attempts) == 3  # the first delivery and two redeliveries, then no more
    assert found[(str(envelope.id), queue.name)]["x-death"][0]["reason"] == "delivery_limit"
    # The failed effect left nothing behind: no inbox row claims it was processed.
    assert await scratch_pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", envelope.id) == 0
    await queue.delete(if_unused=False, if_empty=False)


async def test_outbox_publishes_committed_events_only_and_inbox_applies_each_once(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    channel = await broker.channel(publisher_confirms=True)
    queue = await temp_queue(channel, "credit.applied")
    committed = CreditApplied(
        transfer_id="topup:x",
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id="u1",
        amount_minor=500,
        bonus_minor=0,
        currency="EUR",
        balance_minor=500,
    )
    async with scratch_pool.acquire() as conn, conn.transaction():
        kept = await enqueue(conn, committed, producer="test", correlation_id="c3")
    with pytest.raises(RuntimeError):
        async with scratch_pool.acquire() as conn, conn.transaction():
            await enqueue(conn, committed, producer="test", correlation_id="rolled-back")
            raise RuntimeError("the state change failed, so its event must not leave")

    effects: list[uuid.UUID] = []

    async def record(_conn: db.Connection, envelope: Envelope, _payload: CreditApplied) -> None:
        effects.append(envelope.id)

    consumer = amqp.IdempotentConsumer(
        "test", amqp.QueueSpec(queue.name, ("credit.applied",)), scratch_pool, {CreditApplied: record}
    )
    await consumer.start(broker, prefetch=10)
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    relay = OutboxRelay("test", "postgresql://unused", scratch_pool, exchange)  # publish_batch only
    assert await relay.publish_batch() == 1
    assert await relay.publish_batch() == 0
    assert await scratch_pool.fetchval("SELECT count(*) FROM outbox") == 0
    await eventually(lambda: asyncio.sleep(0, effects == [kept.id]), 10, "relayed event never consumed")

    # The same message again (as after a relay crash before its delete): acked, no second effect.
    await exchange.publish(
        aio_pika.Message(body=kept.model_dump_json().encode(), message_id=str(kept.id)), routing_key="credit.applied"
    )
    labels = {"service": "test", "queue": queue.name, "outcome": "duplicate"}
    await eventually(
        lambda: asyncio.sleep(0, REGISTRY.get_sample_value("evtopup_messages_processed_total", labels) == 1),
        10,
        "duplicate never consumed",
    )
    assert effects == [kept.id]
    assert await scratch_pool.fetchval("SELECT count(*) FROM inbox") == 1
    await queue.delete(if_unused=False, if_empty=False)


async def test_rpc_round_trip_errors_and_timeout(stack: Stack, broker: AbstractRobustConnection) -> None:
    channel = await broker.channel()
    queue_name = f"test.rpc.{uuid.uuid4().hex[:6]}"
    await channel.declare_queue(queue_name, durable=True)

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "fail":
            raise amqp.RpcError("nope", "refused on purpose")
        if request.get("op") == "slow":
            await asyncio.sleep(2)
        return {"echo": request["value"]}

    await amqp.RpcServer(queue_name, handler).start(broker)
    client = amqp.RpcClient(stack.settings.amqp.model_copy(update={"rpc_timeout_s": 1}))
    replies = await asyncio.gather(*(client.call(queue_name, {"value": i}) for i in range(20)))
    assert [r["echo"] for r in replies] == list(range(20))
    with pytest.raises(amqp.RpcError) as error:
        await client.call(queue_name, {"op": "fail", "value": 0})
    assert error.value.code == "nope"
    with pytest.raises(amqp.RpcTimeout):
        await client.call(queue_name, {"op": "slow", "value": 0})
    # A lost connection is reopened by the next call.
    assert client._connection is not None
    await client._connection.close()
    assert (await client.call(queue_name, {"value": 7}))["echo"] == 7
    await client.close()
    await channel.queue_delete(queue_name)


@pytest.mark.usefixtures("services")
async def test_dead_letters_can_be_listed_and_replayed(stack: Stack, broker: AbstractRobustConnection) -> None:
    channel = await broker.channel(publisher_confirms=True)
    # A message the service cannot read yet (a v2 it does not know) is dead-lettered...
    event = payment_succeeded(user_id=f"replay-{uuid.uuid4().hex[:6]}")
    envelope = envelope_for(event, producer="test", correlation_id="c4").model_dump(mode="json")
    message_id = await publish_raw(channel, json.dumps({**envelope, "version": 2}).encode(), "payment.succeeded")

    expected = {(message_id, amqp.CREDITING_QUEUE.name), (message_id, amqp.PAGE_QUEUE.name)}

    async def listed() -> bool:
        letters = await list_dead_letters(stack.settings.amqp, 1000)
        mine = [d for d in letters if d.message_id == message_id]
        assert all("unknown message type/version payment.succeeded/v2" in d.reason for d in mine)
        return {(d.message_id, d.queue) for d in mine} == expected

    await eventually(listed, 30, "the dead letters were not listed")
    # Listing left them in place; replaying sends each back to its own queue only, where (still
    # unreadable) it is dead-lettered again: one copy per queue, not one per queue per replay.
    assert await replay_dead_letters(stack.settings.amqp, 1000, message_id) == 2
    await take_dead_letters(channel, expected)
    assert not [d for d in await list_dead_letters(stack.settings.amqp, 1000) if d.message_id == message_id]
