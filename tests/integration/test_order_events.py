"""The page's consumer on the real broker and database: each payment or credit event moves its order
in one statement with its inbox row (shared.amqp.InboxStatement), once, in any order, also when the
events of one order race, and through the deferred path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from prometheus_client import REGISTRY

from services.page import consumers, store
from services.page.domain import OrderStatus
from shared import amqp
from shared.messages import Contract, CreditApplied, PaymentFailed, PaymentSucceeded, envelope_for
from shared.pricing import PricedTopup
from tests import factories
from tests.harness import eventually
from tests.integration.conftest import ScratchDb, temp_queue

pytestmark = [pytest.mark.broker]

HANDLERS: dict[type[Contract], amqp.Handler] = {
    PaymentSucceeded: consumers.on_payment_succeeded,
    PaymentFailed: consumers.on_payment_failed,
    CreditApplied: consumers.on_credit_applied,
}


async def new_order(pool: asyncpg.Pool) -> store.Order:
    return await store.insert_or_get_order(
        pool,
        user_id="driver-1",
        idempotency_key=uuid.uuid4().hex,
        request_hash="h",
        priced=PricedTopup("p10", 1000, 100, 0, "EUR", "card"),
        integration_id="sandbox_main",
        correlation_id="c1",
    )


def succeeded(order_id: uuid.UUID, reference: str = "ref-1") -> PaymentSucceeded:
    return factories.payment_succeeded(payment_id=uuid.uuid4(), order_id=order_id, processor_reference=reference)


def credited(order_id: uuid.UUID, balance_minor: int = 4100) -> CreditApplied:
    return CreditApplied(
        transfer_id=f"topup:{order_id}",
        payment_id=uuid.uuid4(),
        order_id=order_id,
        user_id="driver-1",
        amount_minor=1000,
        bonus_minor=100,
        currency="EUR",
        balance_minor=balance_minor,
    )


def failed(order_id: uuid.UUID) -> PaymentFailed:
    return PaymentFailed(
        payment_id=uuid.uuid4(),
        order_id=order_id,
        user_id="driver-1",
        integration_id="sandbox_main",
        status="failed",
        reason="declined",
    )


class PageConsumer:
    """The page's handlers on a temporary queue bound to every routing key they take."""

    def __init__(self, channel: AbstractChannel, pool: asyncpg.Pool) -> None:
        self.channel = channel
        self.pool = pool
        self.exchange: AbstractExchange
        self.consumer: amqp.IdempotentConsumer

    async def start(self, broker: AbstractRobustConnection) -> None:
        self.queue = await temp_queue(self.channel, "payment.*")
        await self.queue.bind(amqp.EVENTS_EXCHANGE, "credit.applied")
        spec = amqp.QueueSpec(self.queue.name, ("payment.*", "credit.applied"))
        self.consumer = amqp.IdempotentConsumer("test", spec, self.pool, HANDLERS)
        await self.consumer.start(broker, prefetch=32)
        self.exchange = await self.channel.get_exchange(amqp.EVENTS_EXCHANGE)

    async def publish(self, event: Contract, message_id: uuid.UUID | None = None) -> uuid.UUID:
        envelope = envelope_for(event, producer="test", correlation_id="c1")
        if message_id is not None:
            envelope = envelope.model_copy(update={"id": message_id})
        await self.exchange.publish(
            aio_pika.Message(body=envelope.model_dump_json().encode(), message_id=str(envelope.id)),
            routing_key=envelope.type,
        )
        return envelope.id

    async def stop(self) -> None:
        await self.consumer.stop(10)
        await self.queue.delete(if_unused=False, if_empty=False)


def processed(queue: str, outcome: str) -> float:
    labels = {"service": "test", "queue": queue, "outcome": outcome}
    return REGISTRY.get_sample_value("evtopup_messages_processed_total", labels) or 0.0


@pytest_asyncio.fixture
async def page(broker: AbstractRobustConnection, page_scratch: ScratchDb) -> AsyncIterator[PageConsumer]:
    consumer = PageConsumer(await broker.channel(publisher_confirms=True), page_scratch.pool)
    await consumer.start(broker)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def order_row(pool: asyncpg.Pool, order_id: uuid.UUID) -> Any:
    return await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)


async def test_each_event_moves_its_order_once_in_any_order(page: PageConsumer) -> None:
    pool = page.pool
    # credit.applied overtakes payment.succeeded: credited, with the balance; the success that
    # comes after moves nothing back but still records the receipt's reference and time.
    order = await new_order(pool)
    await page.publish(credited(order.id))
    await eventually(
        lambda: _status_is(pool, order.id, OrderStatus.CREDITED), 10, "credit.applied did not credit the order"
    )
    await page.publish(succeeded(order.id, "ref-late"))
    await eventually(lambda: _has_reference(pool, order.id), 10, "the success's reference was never recorded")
    row = await order_row(pool, order.id)
    assert (row["status"], row["balance_minor"], row["processor_reference"]) == ("credited", 4100, "ref-late")
    assert row["paid_at"] is not None

    # A failure after the success never moves the order back; a message delivered twice is
    # applied once (the second finds its inbox row and changes nothing).
    order = await new_order(pool)
    once = uuid.uuid4()
    await page.publish(succeeded(order.id), once)
    await eventually(lambda: _status_is(pool, order.id, OrderStatus.PAID), 10, "the success did not move it")
    first = await order_row(pool, order.id)
    duplicates = processed(page.queue.name, "duplicate")
    await page.publish(succeeded(order.id, "ref-changed"), once)
    await page.publish(failed(order.id))
    await eventually(
        lambda: asyncio.sleep(0, processed(page.queue.name, "duplicate") == duplicates + 1),
        10,
        "the duplicate was never consumed",
    )
    await eventually(
        lambda: _inbox_has(pool, 4), 10, "the failure was never consumed"
    )  # two orders' events so far: credit, success, success, failure
    again = await order_row(pool, order.id)
    assert (again["status"], again["processor_reference"], again["updated_at"]) == (
        "paid",
        first["processor_reference"],
        first["updated_at"],
    )

    # An event for an order this page does not know is consumed (recorded once), moving nothing.
    stranger = uuid.uuid4()
    await page.publish(credited(stranger))
    await eventually(lambda: _inbox_has(pool, 5), 10, "the unknown order's event was never consumed")
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE id = $1", stranger) == 0


async def test_racing_events_of_many_orders_all_end_credited(page: PageConsumer) -> None:
    """Success and credit of each order published together and applied concurrently (prefetch 32):
    the order's row is locked before its status is read, so no success lands on a credited order."""
    pool = page.pool
    orders = [await new_order(pool) for _ in range(40)]
    await asyncio.gather(
        *(page.publish(event) for order in orders for event in (succeeded(order.id), credited(order.id)))
    )
    await eventually(lambda: _inbox_has(pool, 80), 30, "not every event was consumed")
    rows = await pool.fetch("SELECT status, balance_minor, processor_reference FROM orders")
    assert {(r["status"], r["balance_minor"], r["processor_reference"]) for r in rows} == {("credited", 4100, "ref-1")}


async def test_a_deferred_event_is_applied_once_and_forgotten(page: PageConsumer) -> None:
    pool = page.pool
    order = await new_order(pool)
    envelope = envelope_for(credited(order.id), producer="test", correlation_id="c1")
    insert = (
        "INSERT INTO deferred_messages (queue, message_id, message_type, version, routing_key, body, reason)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'too new then')"
    )
    args = (page.queue.name, envelope.id, envelope.type, envelope.version, envelope.type)
    await pool.execute(insert, *args, envelope.model_dump_json().encode())
    assert await page.consumer.retry_deferred() == 1
    row = await order_row(pool, order.id)
    assert (row["status"], row["balance_minor"]) == ("credited", 4100)
    assert await pool.fetchval("SELECT count(*) FROM deferred_messages") == 0
    # Kept again (an operator's replay, say): its inbox row stops a second effect.
    await pool.execute("UPDATE orders SET balance_minor = 1 WHERE id = $1", order.id)
    await pool.execute(insert, *args, envelope.model_dump_json().encode())
    assert await page.consumer.retry_deferred() == 1
    assert (await order_row(pool, order.id))["balance_minor"] == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", envelope.id) == 1


async def _status_is(pool: asyncpg.Pool, order_id: uuid.UUID, status: OrderStatus) -> bool:
    return bool(await pool.fetchval("SELECT status = $2 FROM orders WHERE id = $1", order_id, status))


async def _has_reference(pool: asyncpg.Pool, order_id: uuid.UUID) -> bool:
    return bool(await pool.fetchval("SELECT processor_reference = 'ref-late' FROM orders WHERE id = $1", order_id))


async def _inbox_has(pool: asyncpg.Pool, count: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) >= $1 FROM inbox", count))
