"""The outbox relay on the real broker and database: each row is published and settled on its own,
a row the broker can never take is parked (and can be handed back), a broker outage keeps every
row and still updates the backlog gauges, and a return is a failure, never a success."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from prometheus_client import REGISTRY

from shared import amqp, outbox
from shared.dead_letters import list_dead_letters
from shared.outbox import OutboxRelay, list_parked, unpark
from tests.harness import REPO, Stack, eventually, fetch, superuser_dsn
from tests.integration.conftest import ScratchDb, temp_queue

pytestmark = [pytest.mark.broker]


async def insert_row(pool: asyncpg.Pool, routing_key: str, correlation_id: str = "c-relay") -> uuid.UUID:
    message_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO outbox (message_id, routing_key, correlation_id, body) VALUES ($1, $2, $3, $4)",
        message_id,
        routing_key,
        correlation_id,
        json.dumps({"id": str(message_id)}).encode(),
    )
    return message_id


async def insert_rows(pool: asyncpg.Pool, routing_key: str, count: int) -> set[str]:
    ids = [uuid.uuid4() for _ in range(count)]
    await pool.executemany(
        "INSERT INTO outbox (message_id, routing_key, correlation_id, body) VALUES ($1, $2, 'c-relay', $3)",
        [(i, routing_key, json.dumps({"id": str(i)}).encode()) for i in ids],
    )
    return {str(i) for i in ids}


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(relay.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def events_exchange(broker: AbstractRobustConnection) -> AbstractExchange:
    """The events exchange as services publish to it: confirms, and a return raises."""
    channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
    return await amqp.existing_exchange(channel, amqp.EVENTS_EXCHANGE)


async def drain(channel: AbstractChannel, queue_name: str, expected: set[str], timeout_s: float = 60) -> set[str]:
    """Take messages off ``queue_name`` until every id in ``expected`` arrived; returns all ids seen."""
    queue = await channel.get_queue(queue_name)
    seen: set[str] = set()

    async def all_arrived() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            seen.add(str(message.message_id))
        return expected <= seen

    await eventually(all_arrived, timeout_s, f"{len(expected - seen)} of {len(expected)} messages never arrived")
    return seen


def gauge(name: str, service: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service})


async def test_a_poisoned_row_is_parked_while_300_others_are_published(
    stack: Stack, broker: AbstractRobustConnection, scratch: ScratchDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "GAUGE_INTERVAL_S", 0.2)
    service = f"relay-{uuid.uuid4().hex[:6]}"
    channel = await broker.channel()
    routing_key = f"test.relay.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    # First in line, and more than 255 bytes where AMQP allows no more: it can never be published.
    poisoned = await insert_row(scratch.pool, routing_key, correlation_id="x" * 256)
    expected = await insert_rows(scratch.pool, routing_key, 300)

    relay = OutboxRelay(service, scratch.dsn, scratch.pool, await events_exchange(broker))
    async with running(relay):
        seen = await drain(channel, queue.name, expected)
        assert str(poisoned) not in seen

        async def only_the_poisoned_row_left() -> bool:
            rows = await scratch.pool.fetch("SELECT message_id, parked_at FROM outbox")
            return [(r["message_id"], r["parked_at"] is not None) for r in rows] == [(poisoned, True)]

        await eventually(only_the_poisoned_row_left, 10, "the published rows were not deleted")
        [parked] = await list_parked(scratch.pool, 10)
        assert parked.message_id == str(poisoned)
        assert parked.routing_key == routing_key
        assert "cannot be encoded as an AMQP message" in parked.reason and "255" in parked.reason
        await eventually(
            lambda: asyncio.sleep(0, gauge("evtopup_outbox_parked_messages", service) == 1), 10, "parked gauge"
        )
        # A parked row is not a backlog: the backlog alert stays quiet, the parked alert speaks.
        await eventually(
            lambda: asyncio.sleep(0, gauge("evtopup_outbox_pending_messages", service) == 0), 10, "pending gauge"
        )

        # Handed back, the relay tries it again (and, still poisoned, parks it again).
        assert await unpark(scratch.pool, parked.id)
        assert not await unpark(scratch.pool, parked.id)  # no longer parked

        async def parked_again() -> bool:
            return await scratch.pool.fetchval("SELECT attempts FROM outbox WHERE parked_at IS NOT NULL") == 1

        await eventually(parked_again, 10, "the un-parked row was not tried again")
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_broker_outage_keeps_every_row_and_the_backlog_gauges_still_move(
    stack: Stack, broker: AbstractRobustConnection, scratch: ScratchDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "GAUGE_INTERVAL_S", 0.2)
    monkeypatch.setattr(outbox, "RETRY_MAX_BACKOFF_S", 0.2)
    service = f"relay-{uuid.uuid4().hex[:6]}"
    channel = await broker.channel()
    routing_key = f"test.outage.{uuid.uuid4().hex[:6]}"
    queue = await temp_queue(channel, routing_key)
    expected = await insert_rows(scratch.pool, routing_key, 5)

    # The relay's broker is gone: its connection is closed under it.
    lost = await amqp.connect(stack.settings.amqp)
    lost_exchange = await amqp.existing_exchange(
        await lost.channel(publisher_confirms=True, on_return_raises=True), amqp.EVENTS_EXCHANGE
    )
    await lost.close()
    async with running(OutboxRelay(service, scratch.dsn, scratch.pool, lost_exchange)):

        async def tried_several_times() -> bool:
            return await scratch.pool.fetchval("SELECT min(attempts) FROM outbox") >= 3

        await eventually(tried_several_times, 20, "the relay did not keep trying")
        assert await scratch.pool.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NULL") == 5
        assert await scratch.pool.fetchval("SELECT count(*) FROM outbox WHERE last_error IS NOT NULL") == 5
        await eventually(
            lambda: asyncio.sleep(0, gauge("evtopup_outbox_pending_messages", service) == 5), 10, "pending gauge"
        )
        first_age = gauge("evtopup_outbox_oldest_pending_age_seconds", service)
        assert first_age is not None

        async def age_grew() -> bool:
            age = gauge("evtopup_outbox_oldest_pending_age_seconds", service)
            return age is not None and age > first_age

        await eventually(age_grew, 10, "the oldest-age gauge stood still during the outage")
        assert gauge("evtopup_outbox_parked_messages", service) == 0

    # The broker is back: everything kept is published.
    async with running(OutboxRelay(service, scratch.dsn, scratch.pool, await events_exchange(broker))):
        await drain(channel, queue.name, expected)
        await eventually(
            lambda: scratch.pool.fetchval("SELECT count(*) = 0 FROM outbox"), 10, "the outbox did not drain"
        )
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_returned_publish_is_a_failure_and_parks_the_row_in_the_end(
    broker: AbstractRobustConnection, scratch: ScratchDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "RETRY_INITIAL_BACKOFF_S", 0.05)
    monkeypatch.setattr(outbox, "RETRY_MAX_BACKOFF_S", 0.1)
    # An exchange without an alternate exchange: what nothing is bound for comes back.
    channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
    bare = await channel.declare_exchange(
        f"test.bare.{uuid.uuid4().hex[:6]}", aio_pika.ExchangeType.TOPIC, auto_delete=True
    )
    with pytest.raises(aio_pika.exceptions.PublishError):
        await bare.publish(aio_pika.Message(b"{}"), routing_key="nobody.listens", mandatory=True)

    message_id = await insert_row(scratch.pool, "nobody.listens")
    # Failed attempts of another kind (a broker outage) do not count towards parking.
    await scratch.pool.execute("UPDATE outbox SET attempts = $2 WHERE message_id = $1", message_id, 10)
    async with running(OutboxRelay("relay-returned", scratch.dsn, scratch.pool, bare)):

        async def parked() -> str | None:
            reason: str | None = await scratch.pool.fetchval(
                "SELECT parked_reason FROM outbox WHERE message_id = $1 AND parked_at IS NOT NULL", message_id
            )
            return reason

        reason = await eventually(parked, 20, "the returned row was never parked")
    assert reason.startswith(f"unroutable after {outbox.PARK_AFTER_RETURNS} returns")
    # Parked by its own returns, not on its first one for the ten failures before them.
    attempts = await scratch.pool.fetchval("SELECT attempts FROM outbox WHERE message_id = $1", message_id)
    assert attempts == 10 + outbox.PARK_AFTER_RETURNS
    await bare.delete()


async def test_what_no_queue_is_bound_for_lands_in_the_unroutable_queue(
    stack: Stack, broker: AbstractRobustConnection
) -> None:
    exchange = await events_exchange(broker)
    message_id = str(uuid.uuid4())
    # Taken by the alternate exchange: confirmed, not returned.
    await exchange.publish(
        aio_pika.Message(b"{}", message_id=message_id), routing_key=f"nobody.{message_id}", mandatory=True
    )

    async def listed() -> bool:
        letters = await list_dead_letters(stack.settings.amqp, 1000, amqp.UNROUTABLE_QUEUE)
        return any(letter.message_id == message_id for letter in letters)

    await eventually(listed, 10, "the unroutable message was not kept")
    channel = await broker.channel()
    queue = await channel.get_queue(amqp.UNROUTABLE_QUEUE)
    others = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        if message.message_id == message_id:
            await message.ack()
        else:
            others.append(message)
    for message in others:
        await message.nack(requeue=True)


def evtopup(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(stack.config_path), *args],
        env={**os.environ, **stack.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_command_line_lists_parked_rows_and_hands_one_back(stack: Stack) -> None:
    dsn = superuser_dsn(stack, "payments")
    message_id = uuid.uuid4()
    [row] = await fetch(
        dsn,
        "INSERT INTO outbox (message_id, routing_key, correlation_id, body, parked_at, parked_reason)"
        " VALUES ($1, 'payment.succeeded', $2, '{}', now(), 'set aside by the test') RETURNING id",
        message_id,
        "x" * 256,
    )
    try:
        listed = await asyncio.to_thread(evtopup, stack, "outbox", "parked", "--service", "payments")
        assert listed.returncode == 0, listed.stderr
        lines = [json.loads(line) for line in listed.stdout.splitlines()]
        mine = [line for line in lines if line["message_id"] == str(message_id)]
        assert mine == [
            {
                "service": "payments",
                "id": row["id"],
                "message_id": str(message_id),
                "routing_key": "payment.succeeded",
                "reason": "set aside by the test",
                "parked_at": mine[0]["parked_at"],
            }
        ]

        retried = await asyncio.to_thread(evtopup, stack, "outbox", "retry", str(row["id"]), "--service", "payments")
        assert retried.returncode == 0, retried.stderr
        [after] = await fetch(dsn, "SELECT parked_reason, attempts FROM outbox WHERE id = $1", row["id"])
        # Handed back (a running relay may already have parked it again, for its own reason).
        assert after["parked_reason"] != "set aside by the test"

        missing = await asyncio.to_thread(evtopup, stack, "outbox", "retry", "999999999", "--service", "payments")
        assert missing.returncode == 2
        assert "no parked outbox row 999999999 in payments" in missing.stderr
    finally:
        await fetch(dsn, "DELETE FROM outbox WHERE id = $1", row["id"])
