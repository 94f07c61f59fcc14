"""Operator tools for the dead-letter queue: look at what is there and why, and replay messages to
the queue they came from once their cause is fixed. Replays are safe: consumers are idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared import amqp
from shared.settings import AmqpSettings

BODY_PREVIEW_BYTES = 300


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


async def list_dead_letters(settings: AmqpSettings, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters; all stay in the queue."""
    connection = await amqp.connect(settings)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
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


async def replay_dead_letters(settings: AmqpSettings, limit: int, message_id: str | None = None) -> int:
    """Send up to ``limit`` dead letters (or just ``message_id``) back to the queue that gave up on
    them, and only that queue (other consumers of the same event already have it); each is removed
    from the dead-letter queue only after the broker confirmed its replay."""
    connection = await amqp.connect(settings)
    replayed = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
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
                origin = _describe(message).queue
                if origin is None or (message_id is not None and message.message_id != message_id):
                    continue
                headers = {
                    k: v
                    for k, v in (message.headers or {}).items()
                    if k not in (amqp.REASON_HEADER, amqp.ORIGIN_QUEUE_HEADER, "x-death")
                }
                await channel.default_exchange.publish(
                    amqp.persistent_copy(message, headers),
                    routing_key=origin,
                    mandatory=True,
                )
                await message.ack()
                replayed += 1
        finally:
            for message in held:
                if not message.processed:
                    await message.nack(requeue=True)
    return replayed
