"""RabbitMQ plumbing with aio-pika: the topology (declared by ``evtopup setup`` only), the broker
policies, idempotent consumers (inbox in the same transaction as the effect, ack after commit,
transient failures retried in process, bad messages dead-lettered with their reason, newer versions
set aside until understood) and RPC over direct reply-to.

Delivery limits, dead-letter targets and the events exchange's alternate exchange are set by broker
policies (:func:`broker_policies`), not queue arguments, so they change without re-declaring queues.
Every message is published persistent, with confirms and ``mandatory`` on channels that raise on a
return: a message no queue took is a failure, never a silent success.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aio_pika
import asyncpg
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)
from pydantic import ValidationError
from yarl import URL

from shared.db import Connection
from shared.logging import accept_correlation_id, correlation_id_var, get_logger
from shared.messages import CONTRACTS, PRODUCERS, BadMessage, Contract, Envelope, decode
from shared.metrics import DEFERRED_MESSAGES, MESSAGES_PROCESSED
from shared.settings import AmqpSettings

log = get_logger(__name__)

EVENTS_EXCHANGE = "evtopup.events"
DEAD_LETTER_EXCHANGE = "evtopup.dead_letter"
DEAD_LETTER_QUEUE = "evtopup.dead_letters"
# The events exchange's alternate exchange: what no binding matches is kept here, not dropped.
UNROUTABLE_EXCHANGE = "evtopup.unroutable"
UNROUTABLE_QUEUE = "evtopup.unroutable"
CHECKOUT_RPC_QUEUE = "payments.checkout_rpc"
# The page asks crediting whether the CSMS knows a user (``launch.mode = "open"``).
CSMS_USER_RPC_QUEUE = "crediting.user_rpc"
RPC_QUEUES = (CHECKOUT_RPC_QUEUE, CSMS_USER_RPC_QUEUE)
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
REASON_HEADER = "x-evtopup-reason"
# Who published a message that a consumer dead-lettered (its broker-verified ``user_id``).
PUBLISHER_HEADER = "x-evtopup-publisher"
ORIGIN_QUEUE_HEADER = "x-evtopup-queue"
# A broker that has not confirmed a publish by then is treated as unavailable.
PUBLISH_TIMEOUT_S = 10.0
# A message whose handler failed transiently is retried in process, backing off between these.
RETRY_INITIAL_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 5.0
# Messages of a newer contract version are kept in ``deferred_messages`` and tried again this often;
# past the cap, more of them are dead-lettered instead (a producer far ahead must not fill the disk).
DEFERRED_RETRY_INTERVAL_S = 60.0
DEFERRED_BATCH = 100
MAX_DEFERRED_MESSAGES = 10_000
RABBITMQCTL_TIMEOUT_S = 60


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]

    @property
    def service(self) -> str:
        """The service that consumes it: every event queue is named ``<service>.<what>``."""
        return self.name.split(".", 1)[0]


CREDITING_QUEUE = QueueSpec(
    "crediting.payment_events", ("payment.succeeded", "payment.reversed", "payment.reversal_undone")
)
PAGE_QUEUE = QueueSpec("page.order_events", ("payment.*", "credit.applied"))
# Payments learns which successes were credited: its sweeper announces the others again.
PAYMENTS_QUEUE = QueueSpec("payments.credit_events", ("credit.applied",))
EVENT_QUEUES = (CREDITING_QUEUE, PAGE_QUEUE, PAYMENTS_QUEUE)
EVENT_QUEUE_NAMES = frozenset(spec.name for spec in EVENT_QUEUES)


class BrokerUnavailable(Exception):
    pass


class TopologyMissing(BrokerUnavailable):
    """An exchange or queue a service uses does not exist: ``evtopup setup`` declares them."""


def _url(settings: AmqpSettings, service: str | None) -> str:
    username, password = settings.credentials(service)
    return str(URL(settings.url).with_user(username).with_password(password.get_secret_value()))


def _where(settings: AmqpSettings) -> str:
    url = URL(settings.url)
    return f"{url.host}:{url.port}{url.path}"


@contextlib.contextmanager
def _broker_unavailable_as_error(settings: AmqpSettings) -> Iterator[None]:
    try:
        yield
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(f"RabbitMQ at {_where(settings)} is not answering: {exc!r}") from None


async def connect(settings: AmqpSettings, service: str | None = None) -> AbstractConnection:
    """A plain connection, as ``service``'s own broker user (or the operator's, for ``None``): for
    short jobs (setup, dead-letter tools) and for the RPC client."""
    with _broker_unavailable_as_error(settings):
        return await aio_pika.connect(_url(settings, service), timeout=10)


async def connect_robust(settings: AmqpSettings, service: str | None) -> AbstractRobustConnection:
    """A connection as ``service``'s own broker user (or the operator's) that reconnects and restores
    its channels and consumers."""
    with _broker_unavailable_as_error(settings):
        return await aio_pika.connect_robust(_url(settings, service), timeout=10)


# --- policies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerPolicy:
    name: str
    pattern: str
    apply_to: Literal["queues", "exchanges"]
    definition: dict[str, Any]
    priority: int = 10

    def rabbitmqctl_args(self, vhost: str) -> list[str]:
        return [
            "set_policy",
            "-p",
            vhost,
            "--priority",
            str(self.priority),
            "--apply-to",
            self.apply_to,
            self.name,
            self.pattern,
            json.dumps(self.definition),
        ]

    def as_definition(self, vhost: str) -> dict[str, Any]:
        """The policy as an entry of a RabbitMQ definitions file."""
        return {
            "vhost": vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "definition": self.definition,
            "priority": self.priority,
        }


def event_queue_policy(delivery_limit: int) -> dict[str, Any]:
    """What every event queue gets (RabbitMQ 3.10 has neither a delivery limit nor a dead-letter
    target by default). The limit only catches messages that keep crashing the consumer process:
    failures the consumer survives are retried in process and never hand the message back."""
    return {
        "delivery-limit": delivery_limit,
        "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        # at-least-once dead-lettering needs reject-publish; a message is never dropped on the way.
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }


def names_pattern(names: Sequence[str]) -> str:
    return "^(" + "|".join(re.escape(name) for name in sorted(names)) + ")$"


def broker_policies(delivery_limit: int) -> list[BrokerPolicy]:
    return [
        BrokerPolicy(
            "evtopup-event-queues",
            names_pattern(sorted(EVENT_QUEUE_NAMES)),
            "queues",
            event_queue_policy(delivery_limit),
        ),
        BrokerPolicy(
            "evtopup-events-exchange",
            names_pattern([EVENTS_EXCHANGE]),
            "exchanges",
            {"alternate-exchange": UNROUTABLE_EXCHANGE},
        ),
    ]


def apply_policies(vhost: str, policies: Sequence[BrokerPolicy]) -> None:
    """Set ``policies`` on ``vhost`` with rabbitmqctl (policies cannot be set over AMQP)."""
    for policy in policies:
        subprocess.run(
            ["rabbitmqctl", "-q", *policy.rabbitmqctl_args(vhost)],
            check=True,
            capture_output=True,
            timeout=RABBITMQCTL_TIMEOUT_S,
        )


def policies_main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.amqp VHOST [--delivery-limit N] [--print]``: set (or print) the policies."""
    parser = argparse.ArgumentParser(prog="python -m shared.amqp", description="set evtopup's broker policies")
    parser.add_argument("vhost")
    parser.add_argument("--delivery-limit", type=int, default=AmqpSettings.model_fields["delivery_limit"].default)
    parser.add_argument("--print", action="store_true", help="print the definitions-file entries instead")
    args = parser.parse_args(argv)
    policies = broker_policies(args.delivery_limit)
    if args.print:
        print(json.dumps([p.as_definition(args.vhost) for p in policies], indent=2))
        return 0
    try:
        apply_policies(args.vhost, policies)
    except subprocess.CalledProcessError as exc:
        print(f"error: rabbitmqctl could not set the policies: {exc.stderr.decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"error: rabbitmqctl could not set the policies: {exc}", file=sys.stderr)
        return 1
    return 0


# --- topology -------------------------------------------------------------------------------------


async def declare_topology(connection: AbstractConnection) -> list[str]:
    """Declare every exchange, queue and binding (idempotent); returns warnings to show the operator.

    Only ``evtopup setup`` declares: services look up what they use (:func:`existing_queue`). A queue
    left by an older version with other arguments cannot be re-declared (PRECONDITION_FAILED): it is
    kept as it is, with a warning, rather than failing the whole setup."""
    warnings: list[str] = []
    channel = await connection.channel()

    async def queue(name: str, arguments: dict[str, Any]) -> AbstractQueue:
        nonlocal channel
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            # The failed declare closed the channel.
            channel = await connection.channel()
            warnings.append(
                f"queue {name} exists with other arguments and was kept as it is ({exc.args[0] if exc.args else exc});"
                " its own x-arguments win over the broker policy: to move it to the policy, drain it, delete it"
                " and run setup again"
            )
            return await channel.declare_queue(name, passive=True)

    events = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    unroutable = await channel.declare_exchange(UNROUTABLE_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    quorum = {"x-queue-type": "quorum"}
    await (await queue(DEAD_LETTER_QUEUE, quorum)).bind(dead)
    await (await queue(UNROUTABLE_QUEUE, quorum)).bind(unroutable)
    for spec in EVENT_QUEUES:
        declared = await queue(spec.name, quorum)
        for routing_key in spec.bindings:
            await declared.bind(events, routing_key)
    # RPC requests (checkouts, user lookups) are short-lived and carry an expiration; a classic queue
    # honours per-message TTL.
    for name in RPC_QUEUES:
        await queue(name, {})
    await channel.close()
    return warnings


@contextlib.contextmanager
def _missing_as_error(kind: str, name: str) -> Iterator[None]:
    try:
        yield
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise TopologyMissing(f"RabbitMQ has no {kind} {name} in this vhost: run `evtopup setup`") from None


async def existing_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """The exchange ``name``, looked up passively (services never declare)."""
    with _missing_as_error("exchange", name):
        return await channel.get_exchange(name, ensure=True)


async def existing_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """The queue ``name``, looked up passively: a robust channel restores it as it got it, and a
    passive declare cannot clash with the arguments setup gave it."""
    with _missing_as_error("queue", name):
        return await channel.get_queue(name, ensure=True)


def persistent_copy(
    message: AbstractIncomingMessage, headers: dict[str, Any], user_id: str | None = None
) -> aio_pika.Message:
    """``message`` again, with ``headers``, to be republished (dead-lettered or replayed); a replay
    is vouched for by the operator's ``user_id``."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        user_id=user_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def dead_letter_headers(headers: Mapping[str, Any] | None, queue: str, reason: str) -> dict[str, Any]:
    """``headers`` plus which queue gave up on the message and why."""
    return {**(headers or {}), REASON_HEADER: reason[:500], ORIGIN_QUEUE_HEADER: queue}


async def publish_dead_letter(channel: AbstractChannel, message: aio_pika.Message, routing_key: str) -> None:
    """Publish ``message`` to the dead-letter exchange, confirmed within :data:`PUBLISH_TIMEOUT_S`;
    ``channel`` must raise on returns, so a message no queue took is an error."""
    # Bounded as a whole: a robust channel that is reconnecting would otherwise be waited for.
    async with asyncio.timeout(PUBLISH_TIMEOUT_S):
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE, ensure=True)
        await exchange.publish(message, routing_key=routing_key, mandatory=True)


async def dead_letter(
    channel: AbstractChannel, message: AbstractIncomingMessage, queue: str, reason: str, consumer: str | None
) -> None:
    """Dead-letter a copy of ``message`` with the reason and the queue that gave up on it. The copy
    is stamped with the ``consumer``'s broker user (which the broker verifies) and keeps who
    published the original, so that a replay can tell a refused forgery from a genuine event."""
    headers = {**dead_letter_headers(message.headers, queue, reason), PUBLISHER_HEADER: message.user_id or ""}
    await publish_dead_letter(channel, persistent_copy(message, headers, user_id=consumer), message.routing_key or "")


def newer_version_of_known_type(body: bytes) -> Envelope | None:
    """The envelope, if ``body`` is a known type at a version newer than any this code knows: its
    producer was deployed before its consumers, who will understand it after their own deploy."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError:
        return None
    known = [version for (kind, version) in CONTRACTS if kind == envelope.type]
    return envelope if known and envelope.version > max(known) else None


class InFlight:
    """Counts the handlers running, so a stop can wait for them to finish."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True if every handler finished within ``timeout_s``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class Consumer(Protocol):
    """What the runtime stops first on SIGTERM."""

    async def stop(self, timeout_s: float) -> None: ...


async def _cancel_consumer(queue: AbstractQueue | None, tag: ConsumerTag | None, timeout_s: float) -> None:
    if queue is None or tag is None:
        return
    try:
        await queue.cancel(tag, timeout=timeout_s)
    except Exception as exc:
        # The channel may already be gone (broker restart): nothing is delivered to it then either.
        log.warning("consumer_cancel_failed", queue=queue.name, error=repr(exc))


def _delivery_channel_open(message: AbstractIncomingMessage) -> bool:
    """Whether the channel ``message`` came on is still open (else the broker redelivers it)."""
    try:
        message.channel  # noqa: B018 - raises once the channel is closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return False
    return True


MessageHandler = Callable[[Connection, Envelope, Any], Awaitable[None]]
# The message's inbox row, the first part of every InboxStatement.
INBOX_CTE = (
    "WITH first_time AS (INSERT INTO inbox (message_id, message_type) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING RETURNING true) "
)
FORGET_DEFERRED_SQL = "DELETE FROM deferred_messages WHERE queue = $1 AND message_id = $2"


@dataclass(frozen=True)
class InboxStatement:
    """A message's whole effect as one SQL statement that also records its inbox row: one round trip
    (a statement is a transaction of its own) where a handler in a transaction takes four or more.
    ``sql`` follows :data:`INBOX_CTE`: it acts only when ``first_time`` has a row, numbers its own
    parameters (``args``) from $3, and ends in a SELECT of one row with a boolean ``first_time``
    column; ``settle`` gets that row (for the log)."""

    sql: str
    args: tuple[Any, ...]
    settle: Callable[[asyncpg.Record], None]


@dataclass(frozen=True)
class OneStatement:
    """A handler that gives its effect as an :class:`InboxStatement` instead of running it."""

    build: Callable[[Envelope, Any], InboxStatement]


Handler = MessageHandler | OneStatement


def trusted_publishers(settings: AmqpSettings) -> dict[str, frozenset[str]]:
    """Per message type, who may publish it: the producing service's broker user, and the
    operator's (dead-letter replays)."""
    return {
        contract.TYPE: frozenset({settings.credentials(producer)[0], settings.username})
        for contract, producer in PRODUCERS.items()
    }


class IdempotentConsumer:
    """Consumes one queue. Each message's effect and its inbox row commit in one transaction, then
    the message is acked; a redelivery finds the inbox row and is acked without a second effect.

    Only what is wrong with the message itself (:class:`BadMessage`) is dead-lettered. Any other
    failure (database, pool or broker unavailable, deadlock, timeout) is retried here, holding the
    message, with capped exponential backoff until it succeeds or the consumer stops: handing it
    back would count against the queue's delivery limit and dead-letter a paid credit after an
    outage. A known type in a newer version is set aside in ``deferred_messages`` and acked, and
    processed once this code understands it (tried at start and every ``deferred_retry_interval_s``).
    """

    def __init__(
        self,
        service: str,
        spec: QueueSpec,
        pool: asyncpg.Pool,
        handlers: Mapping[type[Contract], Handler],
        deferred_retry_interval_s: float = DEFERRED_RETRY_INTERVAL_S,
        *,
        publishers: Mapping[str, frozenset[str]] | None = None,
        user: str | None = None,
        inbox: bool = True,
    ) -> None:
        self.service = service
        self.spec = spec
        self.pool = pool
        self.handlers = handlers
        # Per message type, the broker users whose messages of that type are believed (the broker
        # checks ``user_id`` against the publishing connection); None: not checked (tests only).
        self.publishers = publishers
        # This consumer's broker user: stamped on what it dead-letters, vouching for the letter.
        self.user = user
        # Without the inbox, a handler must be idempotent by itself (one conditional statement):
        # it then runs alone, in autocommit, one round trip instead of a transaction of four.
        self.inbox = inbox
        self.deferred_retry_interval_s = deferred_retry_interval_s
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._in_flight = InFlight()
        self._stopping = asyncio.Event()
        self._deferred_task: asyncio.Task[None] | None = None

    async def start(self, connection: AbstractRobustConnection, prefetch: int) -> None:
        self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await self._channel.set_qos(prefetch_count=prefetch)
        self._queue = await existing_queue(self._channel, self.spec.name)
        self._consumer_tag = await self._queue.consume(self.on_message)
        self._deferred_task = asyncio.get_running_loop().create_task(self._retry_deferred_periodically())

    async def stop(self, timeout_s: float) -> None:
        """Stop taking messages (basic.cancel), give the handlers running up to ``timeout_s`` to
        commit and ack; a message still being retried is left unacked, and the broker redelivers it."""
        self._stopping.set()
        await _cancel_consumer(self._queue, self._consumer_tag, timeout_s)
        self._consumer_tag = None
        if not await self._in_flight.wait_idle(timeout_s):
            log.warning("consumer_stopped_with_handlers_running", queue=self.spec.name)
        if self._deferred_task is not None:
            self._deferred_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deferred_task

    @property
    def consuming(self) -> bool:
        """Started and not (yet) stopped: the broker may deliver to it."""
        return self._consumer_tag is not None

    def _count(self, outcome: str) -> None:
        MESSAGES_PROCESSED.labels(self.service, self.spec.name, outcome).inc()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        token = correlation_id_var.set(accept_correlation_id(message.correlation_id))
        try:
            with self._in_flight.track():
                await self._process_until_done(message)
        finally:
            correlation_id_var.reset(token)

    async def _process_until_done(self, message: AbstractIncomingMessage) -> None:
        delay = RETRY_INITIAL_DELAY_S
        failures = 0
        while True:
            try:
                await self._process(message)
                return
            except Exception as exc:
                failures += 1
                self._count("retried")
                log.warning(
                    "message_failed_retrying",
                    queue=self.spec.name,
                    message_id=message.message_id,
                    failures=failures,
                    retry_in_s=delay,
                    error=repr(exc),
                    exc_info=failures == 1,
                )
            if not _delivery_channel_open(message):
                # Its channel is gone (broker restart): the broker redelivers it on another.
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, RETRY_MAX_DELAY_S)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        assert self._channel is not None
        try:
            envelope, payload = decode(message.body)
            self._check_publisher(message, envelope.type)
        except BadMessage as exc:
            newer = newer_version_of_known_type(message.body)
            if newer is not None and self._trusted(message, newer.type) and await self._defer(message, newer, str(exc)):
                await message.ack()
                self._count("deferred")
                return
            await self._dead_letter(message, str(exc))
            return
        handler = self.handlers.get(type(payload))
        if handler is None:
            # A known event this consumer has no use for (e.g. a type a wildcard binding let in).
            await message.ack()
            self._count("ignored")
            return
        try:
            first_time = await self._apply(envelope, payload, handler)
        except BadMessage as exc:
            await self._dead_letter(message, str(exc))
            return
        await message.ack()
        self._count("applied" if first_time else "duplicate")

    def _trusted(self, message: AbstractIncomingMessage, message_type: str) -> bool:
        return self.publishers is None or message.user_id in self.publishers.get(message_type, frozenset())

    def _check_publisher(self, message: AbstractIncomingMessage, message_type: str) -> None:
        if not self._trusted(message, message_type):
            raise BadMessage(f"{message_type} published by {message.user_id!r}, who may not publish it")

    async def _apply(
        self, envelope: Envelope, payload: Contract, handler: Handler, *, deferred: bool = False
    ) -> bool:
        """Run the handler and record the inbox row in one transaction; False if already done
        (without the inbox, the handler alone, and always True)."""
        if isinstance(handler, OneStatement):
            return await self._apply_statement(envelope, handler.build(envelope, payload), deferred)
        if not self.inbox and not deferred:
            async with self.pool.acquire() as conn:
                await handler(conn, envelope, payload)
            return True
        async with self.pool.acquire() as conn, conn.transaction():
            first_time = await conn.fetchval(
                "INSERT INTO inbox (message_id, message_type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
                envelope.id,
                envelope.type,
            )
            if first_time:
                await handler(conn, envelope, payload)
            if deferred:
                await conn.execute(FORGET_DEFERRED_SQL, self.spec.name, envelope.id)
        return bool(first_time)

    async def _apply_statement(self, envelope: Envelope, statement: InboxStatement, deferred: bool) -> bool:
        sql = INBOX_CTE + statement.sql
        async with self.pool.acquire() as conn:
            if deferred:
                async with conn.transaction():
                    row = await conn.fetchrow(sql, envelope.id, envelope.type, *statement.args)
                    await conn.execute(FORGET_DEFERRED_SQL, self.spec.name, envelope.id)
            else:
                row = await conn.fetchrow(sql, envelope.id, envelope.type, *statement.args)
        assert row is not None, "an InboxStatement ends in a SELECT of one row"
        statement.settle(row)
        return bool(row["first_time"])

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        assert self._channel is not None
        log.error("message_dead_lettered", queue=self.spec.name, reason=reason, message_id=message.message_id)
        await dead_letter(self._channel, message, self.spec.name, reason, self.user)
        await message.ack()
        self._count("dead_lettered")

    async def _defer(self, message: AbstractIncomingMessage, envelope: Envelope, reason: str) -> bool:
        """Keep ``message`` until its version is understood; False if too many are kept already."""
        inserted = await self.pool.fetchval(
            "INSERT INTO deferred_messages (queue, message_id, message_type, version, routing_key, body, reason)"
            " SELECT $1, $2, $3, $4, $5, $6, $7"
            " WHERE (SELECT count(*) FROM deferred_messages) < $8"
            " ON CONFLICT DO NOTHING RETURNING true",
            self.spec.name,
            envelope.id,
            envelope.type,
            envelope.version,
            message.routing_key or envelope.type,
            message.body,
            reason,
            MAX_DEFERRED_MESSAGES,
        )
        if inserted is None:
            # Either already deferred (a redelivery) or the table is full.
            already = await self.pool.fetchval(
                "SELECT true FROM deferred_messages WHERE queue = $1 AND message_id = $2", self.spec.name, envelope.id
            )
            if not already:
                return False
        log.warning("message_deferred", queue=self.spec.name, message_id=str(envelope.id), reason=reason)
        return True

    async def _retry_deferred_periodically(self) -> None:
        while True:
            try:
                await self.retry_deferred()
            except Exception as exc:
                log.warning("deferred_retry_failed", queue=self.spec.name, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.deferred_retry_interval_s)
            if self._stopping.is_set():
                return

    async def retry_deferred(self) -> int:
        """Process the oldest deferred messages this code now understands (through the same path as
        a delivery); the rest stay. Returns how many left ``deferred_messages``."""
        assert self._channel is not None
        rows = await self.pool.fetch(
            "SELECT message_id, routing_key, body FROM deferred_messages WHERE queue = $1"
            " ORDER BY first_seen_at LIMIT $2",
            self.spec.name,
            DEFERRED_BATCH,
        )
        done = 0
        for row in rows:
            body = bytes(row["body"])
            try:
                envelope, payload = decode(body)
                handler = self.handlers.get(type(payload))
                if handler is not None:
                    await self._apply(envelope, payload, handler, deferred=True)
                    self._count("applied")
                else:
                    await self._forget_deferred(row["message_id"])
                    self._count("ignored")
            except BadMessage as exc:
                if newer_version_of_known_type(body) is not None:
                    continue  # still too new for this code
                message = aio_pika.Message(
                    body=body,
                    headers=dead_letter_headers(None, self.spec.name, str(exc)),
                    content_type="application/json",
                    message_id=str(row["message_id"]),
                    type=row["routing_key"],
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await publish_dead_letter(self._channel, message, row["routing_key"])
                await self._forget_deferred(row["message_id"])
                self._count("dead_lettered")
            except Exception as exc:
                # Transient (the database, the broker): this row is tried again next round, and
                # never holds back the ones after it.
                log.warning(
                    "deferred_retry_failed", queue=self.spec.name, message_id=str(row["message_id"]), error=repr(exc)
                )
                continue
            done += 1
        remaining = await self.pool.fetchval("SELECT count(*) FROM deferred_messages WHERE queue = $1", self.spec.name)
        DEFERRED_MESSAGES.labels(self.service, self.spec.name).set(remaining)
        return done

    async def _forget_deferred(self, message_id: uuid.UUID) -> None:
        await self.pool.execute(FORGET_DEFERRED_SQL, self.spec.name, message_id)


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

    def __init__(self, settings: AmqpSettings, service: str) -> None:
        self._settings = settings
        self._service = service
        self._timeout_s = settings.rpc_timeout_s
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def _ensure_channel(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                if self._connection is None or self._connection.is_closed:
                    self._connection = await connect(self._settings, self._service)
                self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
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
            async with asyncio.timeout(self._timeout_s):
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
                reply = await future
        except TimeoutError:
            raise RpcTimeout(f"no reply from {queue} within {self._timeout_s}s") from None
        except aio_pika.exceptions.PublishError:
            raise RpcError("no_server", f"the broker has no queue {queue}: run `evtopup setup`") from None
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
        self._queue: AbstractQueue | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._in_flight = InFlight()

    async def start(self, connection: AbstractRobustConnection) -> AbstractQueue:
        self._channel = await connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self.concurrency)
        self._queue = await existing_queue(self._channel, self.queue)
        self._consumer_tag = await self._queue.consume(self._on_request)
        return self._queue

    async def stop(self, timeout_s: float) -> None:
        """Take no more requests; give those being served up to ``timeout_s`` to reply."""
        await _cancel_consumer(self._queue, self._consumer_tag, timeout_s)
        if not await self._in_flight.wait_idle(timeout_s):
            log.warning("rpc_server_stopped_with_requests_running", queue=self.queue)

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        with self._in_flight.track():
            await self._serve(message)

    async def _serve(self, message: AbstractIncomingMessage) -> None:
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
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
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


if __name__ == "__main__":
    sys.exit(policies_main())
