"""RabbitMQ plumbing with aio-pika: the topology, idempotent consumers (inbox in the same transaction
as the effect, ack after commit, bad messages dead-lettered with their reason) and RPC over direct
reply-to.

RabbitMQ 3.10 sets no delivery limit and no dead-letter target by default, so every quorum queue
declares both; every message is published persistent, with confirms and ``mandatory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from yarl import URL

from shared.db import Connection
from shared.logging import accept_correlation_id, correlation_id_var, get_logger
from shared.messages import BadMessage, Contract, Envelope, decode
from shared.metrics import MESSAGES_PROCESSED
from shared.settings import AmqpSettings

log = get_logger(__name__)

EVENTS_EXCHANGE = "evtopup.events"
DEAD_LETTER_EXCHANGE = "evtopup.dead_letter"
DEAD_LETTER_QUEUE = "evtopup.dead_letters"
CHECKOUT_RPC_QUEUE = "payments.checkout_rpc"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
REASON_HEADER = "x-evtopup-reason"
ORIGIN_QUEUE_HEADER = "x-evtopup-queue"
# Pause before handing a message back after a transient failure, so a dead database is not spun on.
TRANSIENT_RETRY_DELAY_S = 1.0


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]


CREDITING_QUEUE = QueueSpec("crediting.payment_events", ("payment.succeeded",))
PAGE_QUEUE = QueueSpec("page.order_events", ("payment.*", "credit.applied"))
EVENT_QUEUES = (CREDITING_QUEUE, PAGE_QUEUE)


class BrokerUnavailable(Exception):
    pass


def _url(settings: AmqpSettings) -> str:
    return str(URL(settings.url).with_user(settings.username).with_password(settings.password.get_secret_value()))


def _where(settings: AmqpSettings) -> str:
    url = URL(settings.url)
    return f"{url.host}:{url.port}{url.path}"


@contextlib.contextmanager
def _broker_unavailable_as_error(settings: AmqpSettings) -> Iterator[None]:
    try:
        yield
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(f"RabbitMQ at {_where(settings)} is not answering: {exc!r}") from None


async def connect(settings: AmqpSettings) -> AbstractConnection:
    """A plain connection, for short jobs (setup, dead-letter tools) and for the RPC client."""
    with _broker_unavailable_as_error(settings):
        return await aio_pika.connect(_url(settings), timeout=10)


async def connect_robust(settings: AmqpSettings) -> AbstractRobustConnection:
    """A connection that reconnects and restores its channels, consumers and topology: for services."""
    with _broker_unavailable_as_error(settings):
        return await aio_pika.connect_robust(_url(settings), timeout=10)


def quorum_arguments(delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        # at-least-once dead-lettering needs reject-publish; a message is never dropped on the way.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, delivery_limit: int) -> AbstractExchange:
    """Declare every exchange and queue (idempotent); returns the events exchange."""
    events = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await dead_queue.bind(dead)
    for spec in EVENT_QUEUES:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=quorum_arguments(delivery_limit))
        for routing_key in spec.bindings:
            await queue.bind(events, routing_key)
    # Checkout requests are short-lived and carry an expiration; a classic queue honours per-message TTL.
    await channel.declare_queue(CHECKOUT_RPC_QUEUE, durable=True)
    return events


def persistent_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """``message`` again, with ``headers``, to be republished (dead-lettered or replayed)."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def dead_letter(channel: AbstractChannel, message: AbstractIncomingMessage, queue: str, reason: str) -> None:
    """Publish a copy of ``message`` to the dead-letter exchange with the reason, confirmed."""
    exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE, ensure=True)
    headers = dict(message.headers or {})
    headers[REASON_HEADER] = reason[:500]
    headers[ORIGIN_QUEUE_HEADER] = queue
    await exchange.publish(
        persistent_copy(message, headers),
        routing_key=message.routing_key or "",
        mandatory=True,
    )


MessageHandler = Callable[[Connection, Envelope, Any], Awaitable[None]]


class IdempotentConsumer:
    """Consumes one queue. Each message's effect and its inbox row commit in one transaction, then
    the message is acked; a redelivery finds the inbox row and is acked without a second effect."""

    def __init__(
        self,
        service: str,
        spec: QueueSpec,
        pool: asyncpg.Pool,
        handlers: Mapping[type[Contract], MessageHandler],
    ) -> None:
        self.service = service
        self.spec = spec
        self.pool = pool
        self.handlers = handlers
        self._channel: AbstractChannel | None = None

    async def start(self, connection: AbstractRobustConnection, prefetch: int) -> None:
        self._channel = await connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=prefetch)
        # Passive: a robust channel re-declares the queue as it got it after a reconnect, and a
        # passive declare cannot clash with the arguments the topology gave it.
        queue = await self._channel.get_queue(self.spec.name, ensure=True)
        await queue.consume(self.on_message)

    def _count(self, outcome: str) -> None:
        MESSAGES_PROCESSED.labels(self.service, self.spec.name, outcome).inc()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        token = correlation_id_var.set(accept_correlation_id(message.correlation_id))
        try:
            await self._process(message)
        finally:
            correlation_id_var.reset(token)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        assert self._channel is not None
        try:
            envelope, payload = decode(message.body)
            handler = self.handlers.get(type(payload))
            if handler is None:
                # A known event this consumer has no use for (e.g. a type a wildcard binding let in).
                await message.ack()
                self._count("ignored")
                return
            async with self.pool.acquire() as conn, conn.transaction():
                first_time = await conn.fetchval(
                    "INSERT INTO inbox (message_id, message_type) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING RETURNING true",
                    envelope.id,
                    envelope.type,
                )
                if first_time:
                    await handler(conn, envelope, payload)
            await message.ack()
            self._count("applied" if first_time else "duplicate")
        except BadMessage as exc:
            log.error("message_dead_lettered", queue=self.spec.name, reason=str(exc), message_id=message.message_id)
            await dead_letter(self._channel, message, self.spec.name, str(exc))
            await message.ack()
            self._count("dead_lettered")
        except Exception:
            # Transient (database down, deadlock...): hand it back; the queue's delivery limit
            # dead-letters it if it never succeeds.
            log.exception("message_failed", queue=self.spec.name, message_id=message.message_id)
            self._count("retried")
            await asyncio.sleep(TRANSIENT_RETRY_DELAY_S)
            await message.nack(requeue=True)


class RpcTimeout(Exception):
    pass


class RpcError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class RpcClient:
    """Request/response over RabbitMQ direct reply-to: no reply queue to declare or clean up.

    It keeps a plain connection of its own and reopens it on the next call after a loss, because a
    robust channel cannot restore a consumer on the pseudo-queue ``amq.rabbitmq.reply-to``; calls in
    flight when the connection drops time out, and callers retry (the server side is idempotent)."""

    def __init__(self, settings: AmqpSettings) -> None:
        self._settings = settings
        self._timeout_s = settings.rpc_timeout_s
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def _ensure_channel(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                if self._connection is None or self._connection.is_closed:
                    self._connection = await connect(self._settings)
                self._channel = await self._connection.channel(publisher_confirms=True)
                reply_queue = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
                await reply_queue.consume(self._on_reply, no_ack=True)
            return self._channel

    async def _forget_connection(self) -> None:
        """After a failure the connection object may still look open; the next call starts afresh."""
        async with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # the caller gave up (timeout); its retry asks again, idempotently
        try:
            future.set_result(json.loads(message.body))
        except ValueError:
            future.set_exception(RpcError("bad_reply", "reply is not JSON"))

    async def call(self, queue: str, request: dict[str, Any]) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            channel = await self._ensure_channel()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=json.dumps(request).encode(),
                    content_type="application/json",
                    correlation_id=request_id,
                    reply_to=DIRECT_REPLY_TO,
                    # A request nobody took in time is dropped rather than served late.
                    expiration=self._timeout_s,
                    headers={"x-correlation-id": correlation_id_var.get() or ""},
                ),
                routing_key=queue,
                mandatory=True,
            )
            reply = await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:
            raise RpcTimeout(f"no reply from {queue} within {self._timeout_s}s") from None
        except (aio_pika.exceptions.AMQPError, BrokerUnavailable, OSError, RuntimeError) as exc:
            await self._forget_connection()
            raise RpcError("broker_unavailable", repr(exc)) from None
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            error = reply["error"]
            raise RpcError(str(error.get("code")), str(error.get("detail")))
        return reply


RpcHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class RpcServer:
    """Serves one RPC queue; replies ``{"error": {"code", "detail"}}`` rather than leaving a caller
    waiting. Handlers must be idempotent: a request can arrive twice."""

    def __init__(self, queue: str, handler: RpcHandler, concurrency: int = 20) -> None:
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self._channel: AbstractChannel | None = None

    async def start(self, connection: AbstractRobustConnection) -> AbstractQueue:
        self._channel = await connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self.concurrency)
        queue = await self._channel.get_queue(self.queue, ensure=True)  # passive, as for consumers
        await queue.consume(self._on_request)
        return queue

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        assert self._channel is not None
        headers = message.headers or {}
        token = correlation_id_var.set(accept_correlation_id(headers.get("x-correlation-id")))
        try:
            try:
                request = json.loads(message.body)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                reply = await self.handler(request)
            except RpcError as exc:
                reply = {"error": {"code": exc.code, "detail": exc.detail}}
            except ValueError as exc:
                reply = {"error": {"code": "bad_request", "detail": str(exc)}}
            except Exception:
                log.exception("rpc_failed", queue=self.queue)
                reply = {"error": {"code": "internal", "detail": "the request could not be served"}}
            if message.reply_to:
                await self._channel.default_exchange.publish(
                    aio_pika.Message(
                        body=json.dumps(reply).encode(),
                        content_type="application/json",
                        correlation_id=message.correlation_id,
                    ),
                    routing_key=message.reply_to,
                    # The caller may be gone (timed out, reconnected): that is no error.
                    mandatory=False,
                )
            await message.ack()
        finally:
            correlation_id_var.reset(token)
