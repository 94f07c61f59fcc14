"""Fixtures of the plumbing tests: a broker connection, a database with only the plumbing tables,
and temporary quorum queues that get the event queues' policy (with a small delivery limit)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest_asyncio
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from shared import amqp, db
from shared.runtime import SHARED_MIGRATIONS, migration_components
from tests.harness import Stack, eventually, scratch_dsn

TEST_QUEUE_PREFIX = "test."
TEST_QUEUE_DELIVERY_LIMIT = 2


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for the test's own HTTP calls (to simulators, receivers, services)."""
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class ScratchDb:
    dsn: str
    pool: asyncpg.Pool


@pytest_asyncio.fixture(scope="session")
async def test_queue_policy(stack: Stack) -> None:
    """The event queues' policy, for the temporary ``test.*`` queues, with a delivery limit of 2."""
    amqp.apply_policies(
        stack.vhost,
        [
            amqp.BrokerPolicy(
                "evtopup-test-queues",
                f"^{TEST_QUEUE_PREFIX}",
                "queues",
                amqp.event_queue_policy(TEST_QUEUE_DELIVERY_LIMIT),
            )
        ],
    )


@pytest_asyncio.fixture
async def broker(stack: Stack, test_queue_policy: None) -> AsyncIterator[AbstractRobustConnection]:
    connection = await amqp.connect_robust(stack.settings.amqp, None)
    async with connection:
        yield connection


@pytest_asyncio.fixture
async def scratch(stack: Stack) -> AsyncIterator[ScratchDb]:
    """A database of its own with only the plumbing tables, so no running service competes."""
    dsn = scratch_dsn(stack, "scratch")
    await db.ensure_database(dsn)
    await db.migrate(dsn, {"shared": SHARED_MIGRATIONS})
    pool = await db.create_pool(dsn, 5)
    try:
        yield ScratchDb(dsn, pool)
    finally:
        await pool.close()
        await db.drop_database(dsn)


async def _service_scratch(stack: Stack, service: str) -> AsyncIterator[ScratchDb]:
    dsn = scratch_dsn(stack, service)
    await db.ensure_database(dsn)
    await db.migrate(dsn, migration_components(service))
    pool = await db.create_pool(dsn, 10)
    try:
        yield ScratchDb(dsn, pool)
    finally:
        await pool.close()
        await db.drop_database(dsn)


@pytest_asyncio.fixture
async def crediting_scratch(stack: Stack) -> AsyncIterator[ScratchDb]:
    """A crediting database of its own (shared + crediting migrations), so no running service competes."""
    async for scratch in _service_scratch(stack, "crediting"):
        yield scratch


@pytest_asyncio.fixture
async def page_scratch(stack: Stack) -> AsyncIterator[ScratchDb]:
    """A page database of its own (shared + page migrations), so no running service competes."""
    async for scratch in _service_scratch(stack, "page"):
        yield scratch


@pytest_asyncio.fixture
async def payments_scratch(stack: Stack) -> AsyncIterator[ScratchDb]:
    """A payments database of its own (shared + payments migrations), so no running service competes."""
    async for scratch in _service_scratch(stack, "payments"):
        yield scratch


@pytest_asyncio.fixture
async def scratch_pool(scratch: ScratchDb) -> asyncpg.Pool:
    return scratch.pool


async def temp_queue(channel: AbstractChannel, routing_key: str) -> AbstractQueue:
    """A quorum queue bound to ``routing_key`` on the events exchange; the test policy gives it a
    delivery limit of 2 and the dead-letter exchange."""
    queue = await channel.declare_queue(
        f"{TEST_QUEUE_PREFIX}{uuid.uuid4().hex[:8]}", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(amqp.EVENTS_EXCHANGE, routing_key)
    return queue


def origin_queue(headers: dict[str, Any]) -> str:
    if amqp.ORIGIN_QUEUE_HEADER in headers:
        return str(headers[amqp.ORIGIN_QUEUE_HEADER])
    return str(headers["x-death"][0]["queue"])


async def take_dead_letters(
    channel: AbstractChannel, expected: set[tuple[str, str]], timeout_s: float = 30
) -> dict[tuple[str, str], Any]:
    """Remove and return the dead letters with these (message id, origin queue); others stay."""
    queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
    found: dict[tuple[str, str], Any] = {}

    async def scan() -> bool:
        others = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            key = (str(message.message_id), origin_queue(message.headers))
            if key in expected:
                found[key] = message.headers
                await message.ack()
            else:
                others.append(message)
        for message in others:
            await message.nack(requeue=True)
        return set(found) == expected

    await eventually(scan, timeout_s, f"dead letters {expected - set(found)} never arrived")
    return found


async def dead_letter_ids(channel: AbstractChannel) -> set[str]:
    """The message ids now in the dead-letter queue (all stay there)."""
    queue = await channel.get_queue(amqp.DEAD_LETTER_QUEUE)
    held = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        held.append(message)
    for message in held:
        await message.nack(requeue=True)
    return {str(m.message_id) for m in held}
