"""The messaging plumbing on the real broker and database: outbox relay with confirms, inbox
deduplication, dead-lettering with a reason, in-process retries that never reach the delivery limit,
deferral of newer versions, RPC, and the dead-letter tools."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from prometheus_client import REGISTRY

from shared import amqp, db
from shared.dead_letters import list_dead_letters, replay_dead_letters
from shared.messages import BadMessage, CreditApplied, Envelope, PaymentSucceeded, envelope_for
from shared.outbox import OutboxRelay, enqueue
from tests import factories
from tests.harness import Stack, eventually, fetch
from tests.integration.conftest import TEST_QUEUE_DELIVERY_LIMIT, dead_letter_ids, take_dead_letters, temp_queue

pytestmark = [pytest.mark.broker]


def payment_succeeded(**overrides: Any) -> PaymentSucceeded:
    return factories.payment_succeeded(**{"payment_id": uuid.uuid4(), "order_id": uuid.uuid4(), **overrides})


OPERATOR = "guest"  # amqp.username in the harness's configuration


async def publish_raw(channel: AbstractChannel, body: bytes, routing_key: str) -> str:
    """Publish ``body`` as the operator's account (the ``broker`` fixture's), which consumers believe
    like a dead-letter replay: what is judged here is the message, not who sent it."""
    message_id = str(uuid.uuid4())
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(
            body=body,
            message_id=message_id,
            user_id=OPERATOR,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
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
        await publish_raw(
            channel, json.dumps({**good, "type": "payment.teleported"}).encode(), "payment.succeeded"
        ): "unknown message type/version payment.teleported/v1",
        await publish_raw(channel, json.dumps({**good, "version": 0}).encode(), "payment.succeeded"): "unknown",
        await publish_raw(
            channel, json.dumps({**good, "data": {**good["data"], "amount_minor": 10.5}}).encode(), "payment.succeeded"
        ): "amount_minor",
    }
    # payment.succeeded goes to crediting and to the page: each consumer dead-letters its copy.
    queues = (amqp.CREDITING_QUEUE.name, amqp.PAGE_QUEUE.name)
    found = await take_dead_letters(channel, {(m, q) for m in cases for q in queues})
    for (message_id, _queue), headers in found.items():
        assert cases[message_id] in headers[amqp.REASON_HEADER]


@pytest.mark.usefixtures("services")
async def test_a_newer_version_reaching_a_service_is_deferred_not_dead_lettered(
    stack: Stack, broker: AbstractRobustConnection
) -> None:
    channel = await broker.channel(publisher_confirms=True)
    good = envelope_for(payment_succeeded(), producer="test", correlation_id="c1").model_dump(mode="json")
    message_id = await publish_raw(channel, json.dumps({**good, "version": 99}).encode(), "payment.succeeded")

    async def deferred_by_both() -> bool:
        for service, queue in (("crediting", amqp.CREDITING_QUEUE.name), ("page", amqp.PAGE_QUEUE.name)):
            rows = await fetch(
                stack.dsn(service),
                "SELECT queue, reason FROM deferred_messages WHERE message_id = $1",
                uuid.UUID(good["id"]),
            )
            if [r["queue"] for r in rows] != [queue]:
                return False
            assert "payment.succeeded/v99" in rows[0]["reason"]
        return True

    await eventually(deferred_by_both, 30, "the v99 message was not deferred by crediting and page")
    assert message_id not in await dead_letter_ids(channel)


async def test_transient_failures_are_retried_in_process_and_never_dead_lettered(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    """A database outage outlasting the delivery limit (here 2) costs time, never the message."""
    channel = await broker.channel(publisher_confirms=True)
    routing_key = f"test.transient.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    failures_wanted = TEST_QUEUE_DELIVERY_LIMIT + 4
    attempts: list[uuid.UUID] = []

    async def fails_then_succeeds(conn: db.Connection, envelope: Envelope, _payload: PaymentSucceeded) -> None:
        attempts.append(envelope.id)
        if len(attempts) <= failures_wanted:
            raise asyncpg.PostgresConnectionError("the database is restarting")

    spec = amqp.QueueSpec(queue.name, (routing_key,))
    consumer = amqp.IdempotentConsumer("test", spec, scratch_pool, {PaymentSucceeded: fails_then_succeeds})
    await consumer.start(broker, prefetch=1)
    envelope = envelope_for(payment_succeeded(), producer="test", correlation_id="c2")
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(body=envelope.model_dump_json().encode(), message_id=str(envelope.id)),
        routing_key=routing_key,
    )

    async def applied() -> bool:
        return bool(await scratch_pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", envelope.id))

    await eventually(applied, 30, "the message was never applied")
    assert len(attempts) == failures_wanted + 1
    labels = {"service": "test", "queue": queue.name, "outcome": "retried"}
    assert REGISTRY.get_sample_value("evtopup_messages_processed_total", labels) == failures_wanted
    await consumer.stop(10)
    # Acked, never handed back: the queue is empty and nothing was dead-lettered.
    assert (await channel.declare_queue(queue.name, passive=True)).declaration_result.message_count == 0
    assert str(envelope.id) not in await dead_letter_ids(channel)
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_bad_message_found_by_the_handler_is_dead_lettered_at_once_with_its_reason(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    channel = await broker.channel(publisher_confirms=True)
    routing_key = f"test.bad.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    attempts: list[uuid.UUID] = []

    async def refuses(_conn: db.Connection, envelope: Envelope, _payload: PaymentSucceeded) -> None:
        attempts.append(envelope.id)
        raise BadMessage("conflicting transfer topup:x")

    spec = amqp.QueueSpec(queue.name, (routing_key,))
    consumer = amqp.IdempotentConsumer("test", spec, scratch_pool, {PaymentSucceeded: refuses})
    await consumer.start(broker, prefetch=1)
    envelope = envelope_for(payment_succeeded(), producer="test", correlation_id="c2")
    exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(body=envelope.model_dump_json().encode(), message_id=str(envelope.id)),
        routing_key=routing_key,
    )
    found = await take_dead_letters(channel, {(str(envelope.id), queue.name)})
    assert found[(str(envelope.id), queue.name)][amqp.REASON_HEADER] == "conflicting transfer topup:x"
    assert attempts == [envelope.id]  # once: no redelivery, no retry
    # The refused effect left nothing behind: no inbox row claims it was processed.
    assert await scratch_pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", envelope.id) == 0
    await consumer.stop(10)
    await queue.delete(if_unused=False, if_empty=False)


async def test_outbox_publishes_committed_events_only_and_inbox_applies_each_once(
    broker: AbstractRobustConnection, scratch_pool: asyncpg.Pool
) -> None:
    channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
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
    assert (await relay.publish_batch()).published == 1
    assert (await relay.publish_batch()).claimed == 0
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
    await consumer.stop(10)
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
    client = amqp.RpcClient(stack.settings.amqp.model_copy(update={"rpc_timeout_s": 1}), "page")
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
    # A message the services cannot read (a type they do not know) is dead-lettered...
    event = payment_succeeded(user_id=f"replay-{uuid.uuid4().hex[:6]}")
    envelope = envelope_for(event, producer="test", correlation_id="c4").model_dump(mode="json")
    body = json.dumps({**envelope, "type": "payment.teleported"}).encode()
    message_id = await publish_raw(channel, body, "payment.succeeded")

    expected = {(message_id, amqp.CREDITING_QUEUE.name), (message_id, amqp.PAGE_QUEUE.name)}

    async def listed() -> bool:
        letters = await list_dead_letters(stack.settings.amqp, 1000)
        mine = [d for d in letters if d.message_id == message_id]
        assert all("unknown message type/version payment.teleported/v1" in d.reason for d in mine)
        return {(d.message_id, d.queue) for d in mine} == expected

    await eventually(listed, 30, "the dead letters were not listed")
    # Listing left them in place; replaying sends each back to its own queue only, where (still
    # unreadable) it is dead-lettered again: one copy per queue, not one per queue per replay.
    assert (await replay_dead_letters(stack.settings.amqp, 1000, message_id)).replayed == 2
    await take_dead_letters(channel, expected)
    assert not [d for d in await list_dead_letters(stack.settings.amqp, 1000) if d.message_id == message_id]


async def test_replay_goes_only_to_event_queues(stack: Stack, broker: AbstractRobustConnection) -> None:
    """A dead letter naming any other origin (forged, or a queue since removed) stays where it is."""
    channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
    message = aio_pika.Message(
        body=b"{}",
        message_id=str(uuid.uuid4()),
        headers=amqp.dead_letter_headers(None, amqp.CHECKOUT_RPC_QUEUE, "forged"),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await amqp.publish_dead_letter(channel, message, "payment.succeeded")
    result = await replay_dead_letters(stack.settings.amqp, 1000, message.message_id)
    assert result.replayed == 0
    assert result.refused == [(message.message_id, f"origin {amqp.CHECKOUT_RPC_QUEUE!r} is not an event queue")]
    await take_dead_letters(channel, {(str(message.message_id), amqp.CHECKOUT_RPC_QUEUE)})
