"""Operator tools for the dead-letter queue: look at what is there and why, and replay messages to
the queue they came from once their cause is fixed. Replays are safe: consumers are idempotent.
The same listing shows ``evtopup.unroutable``, where the events exchange keeps what no queue took."""

from __future__ import annotations

import json
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
    # (message id, why) of dead letters left in place.
    refused: list[tuple[str | None, str]] = field(default_factory=list)


def replay_refusal(message: AbstractIncomingMessage, origin: str | None, settings: AmqpSettings) -> str | None:
    """Why ``message`` must not be replayed to ``origin``, or None. A replay goes out as the
    operator, whom consumers believe: so an event that consumers would act on is replayed only if
    its original publisher is the one allowed to publish it. A forgery a consumer refused stays
    refused, and so does a letter that did not come from the consumer of ``origin`` (anyone who may
    write to the dead-letter exchange could otherwise dress one up)."""
    spec = next((q for q in amqp.EVENT_QUEUES if q.name == origin), None)
    if spec is None:
        return f"origin {origin!r} is not an event queue"
    try:
        message_type = json.loads(message.body).get("type")
    except (ValueError, AttributeError):
        message_type = None
    allowed = amqp.trusted_publishers(settings).get(message_type) if isinstance(message_type, str) else None
    if allowed is None:
        return None  # no event anyone acts on: its consumer refuses it again, harmlessly
    headers = message.headers or {}
    if amqp.REASON_HEADER in headers:
        # Dead-lettered by a consumer: the letter must come from that queue's consumer.
        if message.user_id != settings.credentials(spec.service)[0]:
            return f"not dead-lettered by the consumer of {origin}: cannot vouch for its publisher"
        publisher = _text(headers.get(amqp.PUBLISHER_HEADER))
    else:
        # Dead-lettered by the broker, which keeps the original properties, user_id included.
        publisher = message.user_id
    if publisher not in allowed:
        return f"{message_type} was published by {publisher!r}, who may not publish it"
    return None


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
                refusal = replay_refusal(message, origin, settings)
                if refusal is not None:
                    result.refused.append((message.message_id, refusal))
                    continue
                assert origin is not None
                headers = {
                    k: v
                    for k, v in (message.headers or {}).items()
                    if k not in (amqp.REASON_HEADER, amqp.ORIGIN_QUEUE_HEADER, amqp.PUBLISHER_HEADER, "x-death")
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
