"""Operator tools for the dead-letter queue: look at what is there and why, and replay messages to
the queue they came from once their cause is fixed. Replays are safe: consumers are idempotent.
The same listing shows ``evtopup.unroutable``, where the events exchange keeps what no queue took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared import amqp
from shared.settings import AmqpSettings

BODY_PREVIEW_BYTES = 300
# What `--queue` may name: the dead letters, or the messages no binding matched.
LISTABLE_QUEUES = {"dead_letters": amqp.DEAD_LETTER_QUEUE, "unroutable": amqp.UNROUTABLE_QUEUE}


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    routing_key: str | None
    queue: str | None
    reason: str
    body_preview: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    reason = headers.get(amqp.REASON_HEADER)
    queue = headers.get(amqp.ORIGIN_QUEUE_HEADER)
    deaths = headers.get("x-death")
    if reason is None and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        # Dead-lettered by the broker itself (e.g. the queue's delivery limit was reached).
        reason = f"broker: {_text(deaths[0].get('reason'))}"
        queue = deaths[0].get("queue")
    return DeadLetter(
        message_id=message.message_id,
        routing_key=message.routing_key,
        queue=_text(queue),
        reason=_text(reason) or "unknown",
        body_preview=message.body[:BODY_PREVIEW_BYTES].decode(errors="replace"),
    )


@dataclass
class ReplayResult:
    replayed: int = 0
    # (message id, origin) of dead letters left in place: their origin is no event queue.
    refused: list[tuple[str | None, str | None]] = field(default_factory=list)


async def list_dead_letters(
    settings: AmqpSettings, limit: int, queue_name: str = amqp.DEAD_LETTER_QUEUE
) -> list[DeadLetter]:
    """Up to ``limit`` messages of ``queue_name`` (the dead letters by default); all stay in it."""
    connection = await amqp.connect(settings)
    async with connection:
        channel = await connection.channel()
        queue = await amqp.existing_queue(channel, queue_name)
        held: list[AbstractIncomingMessage] = []
        try:
            while len(held) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            return [_describe(m) for m in held]
        finally:
            for message in held:
                await message.nack(requeue=True)


async def replay_dead_letters(settings: AmqpSettings, limit: int, message_id: str | None = None) -> ReplayResult:
    """Send up to ``limit`` dead letters (or just ``message_id``) back to the queue that gave up on
    them, and only that queue (other consumers of the same event already have it); each is removed
    from the dead-letter queue only after the broker confirmed its replay. Only the event queues
    are replayed to: a dead letter naming any other origin stays, and is reported as refused."""
    connection = await amqp.connect(settings)
    result = ReplayResult()
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await amqp.existing_queue(channel, amqp.DEAD_LETTER_QUEUE)
        # Take the batch first, then replay: a replayed message that fails again comes back to this
        # queue and must not be picked up again by the same run.
        held: list[AbstractIncomingMessage] = []
        while len(held) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
        try:
            for message in held:
                if message_id is not None and message.message_id != message_id:
                    continue
                origin = _describe(message).queue
                if origin not in amqp.EVENT_QUEUE_NAMES:
                    result.refused.append((message.message_id, origin))
                    continue
                headers = {
                    k: v
                    for k, v in (message.headers or {}).items()
                    if k not in (amqp.REASON_HEADER, amqp.ORIGIN_QUEUE_HEADER, "x-death")
                }
                await channel.default_exchange.publish(
                    amqp.persistent_copy(message, headers, user_id=settings.username),
                    routing_key=origin,
                    mandatory=True,
                    timeout=amqp.PUBLISH_TIMEOUT_S,
                )
                await message.ack()
                result.replayed += 1
        finally:
            for message in held:
                if not message.processed:
                    await message.nack(requeue=True)
    return result
