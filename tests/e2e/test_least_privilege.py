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
from shared.dead_letters import list_dead_letters, replay_dead_letters
from shared.messages import PaymentSucceeded, envelope_for
from tests import factories
from tests.harness import Driver, Stack, eventually

pytestmark = [pytest.mark.e2e]


def broker_url(stack: Stack, service: str) -> str:
    username, password = stack.settings.amqp.credentials(service)
    return str(URL(stack.settings.amqp.url).with_user(username).with_password(password.get_secret_value()))


async def take_dead_letters(stack: Stack, message_id: str, copies: int, timeout_s: float = 30) -> None:
    """Wait for ``copies`` dead letters of ``message_id`` and take them out of the queue (others
    stay): the session's stack must end with an empty dead-letter queue."""
    taken = 0
    deadline = asyncio.get_running_loop().time() + timeout_s
    operator = await amqp.connect(stack.settings.amqp)
    async with operator:
        channel = await operator.channel()
        queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
        while taken < copies:
            held: list[AbstractIncomingMessage] = []
            try:
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    if message.message_id == message_id:
                        await message.ack()
                        taken += 1
                    else:
                        held.append(message)
            finally:
                for other in held:
                    await other.nack(requeue=True)
            if taken < copies:
                assert asyncio.get_running_loop().time() < deadline, f"{message_id}: {taken} of {copies} dead letters"
                await asyncio.sleep(0.2)


async def publish_as(stack: Stack, service: str, payload: PaymentSucceeded) -> str:
    """Publish ``payload`` on the events exchange as ``service``'s broker user; its message id."""
    envelope = envelope_for(payload, producer=service, correlation_id=f"as-{service}")
    connection = await aio_pika.connect(broker_url(stack, service), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(amqp.EVENTS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.id),
                user_id=stack.settings.amqp.credentials(service)[0],
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=payload.TYPE,
        )
    return str(envelope.id)


async def wait_dead_lettered(stack: Stack, message_id: str) -> str:
    """The reason a consumer gave for dead-lettering ``message_id`` (the letter stays queued)."""

    async def reason() -> str | None:
        letters = await list_dead_letters(stack.settings.amqp, 1000)
        return next((d.reason for d in letters if d.message_id == message_id), None)

    return await eventually(reason, 30, f"{message_id} was never dead-lettered")


@pytest.mark.usefixtures("services")
async def test_a_payment_event_from_anyone_but_payments_is_refused_and_never_replayed(
    driver: Driver, stack: Stack
) -> None:
    user_id = f"forged-{uuid.uuid4().hex[:8]}"
    forged = factories.payment_succeeded(
        payment_id=uuid.uuid4(), order_id=uuid.uuid4(), user_id=user_id, integration_id="sandbox_main"
    )
    # The page's user may publish to the events exchange and stamps itself (the broker checks that)...
    message_id = await publish_as(stack, "page", forged)
    # ... but crediting believes payment.succeeded only from payments' user,
    assert "may not publish" in await wait_dead_lettered(stack, message_id)
    # and the operator's replay, which consumers believe, does not launder it.
    result = await replay_dead_letters(stack.settings.amqp, 1000, message_id)
    assert result.replayed == 0
    # Both of its consumers (crediting and the page) refused it, and neither copy is replayed.
    refusal = f"payment.succeeded was published by {page_user(stack)!r}, who may not publish it"
    assert result.refused == [(message_id, refusal), (message_id, refusal)]
    await take_dead_letters(stack, message_id, copies=2)
    assert await driver.balance(user_id) == 0


@pytest.mark.usefixtures("services")
async def test_a_genuine_event_a_consumer_refused_can_be_replayed(stack: Stack) -> None:
    # Published by payments itself, refused by crediting for what it says (test money for a user
    # outside the test list): the operator may send it back, and it is refused again.
    test_money = factories.payment_succeeded(
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id="not-a-tester",
        integration_id="sandbox_trial",
        environment="test",
    )
    message_id = await publish_as(stack, "payments", test_money)
    assert "outside the test_users" in await wait_dead_lettered(stack, message_id)
    result = await replay_dead_letters(stack.settings.amqp, 1000, message_id)
    assert (result.replayed, result.refused) == (1, [])
    await take_dead_letters(stack, message_id, copies=1)  # dead-lettered again, by crediting, after the replay


def page_user(stack: Stack) -> str:
    return stack.settings.amqp.credentials("page")[0]


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
        ("page", amqp.CSMS_USER_RPC_QUEUE),
        ("crediting", amqp.PAGE_QUEUE.name),
        ("crediting", amqp.CHECKOUT_RPC_QUEUE),
        ("payments", amqp.CREDITING_QUEUE.name),
        ("payments", amqp.CSMS_USER_RPC_QUEUE),
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


@pytest.mark.parametrize(
    ("service", "queue"), [("payments", amqp.CHECKOUT_RPC_QUEUE), ("crediting", amqp.CSMS_USER_RPC_QUEUE)]
)
async def test_a_service_serves_its_own_rpc_queue(stack: Stack, service: str, queue: str) -> None:
    connection = await aio_pika.connect(broker_url(stack, service), timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=True)

        async def ignore(_message: AbstractIncomingMessage) -> None:
            pass

        tag = await declared.consume(ignore)
        await declared.cancel(tag)


@pytest.mark.parametrize("queue", [amqp.CHECKOUT_RPC_QUEUE, amqp.CSMS_USER_RPC_QUEUE])
async def test_the_page_may_send_requests_to_the_rpc_queues(stack: Stack, queue: str) -> None:
    connection = await aio_pika.connect(broker_url(stack, "page"), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # Confirmed and routed (mandatory): the page may write to the default exchange. No reply is
        # asked for, and the request expires at once if the service does not take it.
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", content_type="application/json", expiration=0.001),
            routing_key=queue,
            mandatory=True,
        )


@pytest.mark.parametrize("service", ["payments", "crediting"])
async def test_an_rpc_server_may_reply_on_the_default_exchange(stack: Stack, service: str) -> None:
    connection = await aio_pika.connect(broker_url(stack, service), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        # Where a reply goes (direct reply-to of a caller long gone: unroutable, and no error).
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", content_type="application/json"), routing_key=f"nobody-{uuid.uuid4().hex}"
        )


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
