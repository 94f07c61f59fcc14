"""Least privilege on the real broker and database: each service connects as a user of its own that
may touch only its own queues and exchanges, consumers believe an event only from the service that
produces it, and each service's database role can reach no other service's database."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused
from yarl import URL

from shared import amqp
from shared.messages import envelope_for
from tests import factories
from tests.harness import Driver, Stack

pytestmark = [pytest.mark.e2e]


def broker_url(stack: Stack, service: str) -> str:
    username, password = stack.settings.amqp.credentials(service)
    return str(URL(stack.settings.amqp.url).with_user(username).with_password(password.get_secret_value()))


async def take_dead_letter(stack: Stack, message_id: str, timeout_s: float = 30) -> AbstractIncomingMessage:
    """Wait for the dead letter ``message_id`` and take it out of the queue (others stay)."""
    operator = await amqp.connect(stack.settings.amqp)
    async with operator:
        channel = await operator.channel()
        queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            held: list[AbstractIncomingMessage] = []
            try:
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    if message.message_id == message_id:
                        await message.ack()
                        return message
                    held.append(message)
            finally:
                for other in held:
                    await other.nack(requeue=True)
            assert asyncio.get_running_loop().time() < deadline, f"{message_id} was never dead-lettered"
            await asyncio.sleep(0.2)


@pytest.mark.usefixtures("services")
async def test_a_payment_event_from_anyone_but_payments_is_dead_lettered_not_credited(
    driver: Driver, stack: Stack
) -> None:
    user_id = f"forged-{uuid.uuid4().hex[:8]}"
    forged = factories.payment_succeeded(
        payment_id=uuid.uuid4(), order_id=uuid.uuid4(), user_id=user_id, integration_id="sandbox_main"
    )
    envelope = envelope_for(forged, producer="payments", correlation_id="forged-1")
    page_user = stack.settings.amqp.credentials("page")[0]
    connection = await aio_pika.connect(broker_url(stack, "page"), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE, ensure=False)
        # The page's user may publish events (the broker allows the exchange) and stamps itself...
        await exchange.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.id),
                user_id=page_user,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="payment.succeeded",
        )
    # ... but crediting believes payment.succeeded only from payments' user.
    letter = await take_dead_letter(stack, str(envelope.id))
    assert "may not publish" in str((letter.headers or {})[amqp.REASON_HEADER])
    assert await driver.balance(user_id) == 0


async def test_a_service_cannot_pose_as_another_publisher(stack: Stack) -> None:
    connection = await aio_pika.connect(broker_url(stack, "page"), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE, ensure=False)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await exchange.publish(
                aio_pika.Message(b"{}", user_id=stack.settings.amqp.credentials("payments")[0]),
                routing_key="payment.succeeded",
            )


@pytest.mark.parametrize(
    ("service", "queue"),
    [
        ("page", amqp.CREDITING_QUEUE.name),
        ("page", amqp.CHECKOUT_RPC_QUEUE),
        ("crediting", amqp.PAGE_QUEUE.name),
        ("payments", amqp.CREDITING_QUEUE.name),
    ],
)
async def test_a_service_reads_only_its_own_queues(stack: Stack, service: str, queue: str) -> None:
    connection = await aio_pika.connect(broker_url(stack, service), timeout=10)
    async with connection:
        channel = await connection.channel()
        async def ignore(_message: AbstractIncomingMessage) -> None:
            pass

        with pytest.raises(ChannelAccessRefused):
            declared = await channel.get_queue(queue, ensure=True)
            await declared.consume(ignore)


@pytest.mark.parametrize("service", ["page", "payments", "crediting"])
async def test_a_service_declares_nothing(stack: Stack, service: str) -> None:
    connection = await aio_pika.connect(broker_url(stack, service), timeout=10)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue(f"squatter-{uuid.uuid4().hex[:6]}", durable=True)


@pytest.mark.parametrize(("service", "other"), [("page", "payments"), ("payments", "crediting"), ("crediting", "page")])
async def test_a_services_role_reaches_no_other_database(stack: Stack, service: str, other: str) -> None:
    own = stack.dsn(service)
    foreign = own.rsplit("/", 1)[0] + "/" + stack.dsn(other).rsplit("/", 1)[1]
    connection = await asyncpg.connect(own)
    await connection.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(foreign)
