"""The crediting service's database taken away for a minute under a steady stream of top-ups, with two
crediting replicas holding a full prefetch of messages each, and then crediting SIGKILLed ten times in
a minute while the backlog drains and top-ups keep coming. Nobody steps in, nothing is replayed: every
paid top-up must end up credited exactly once, and nothing dead-lettered.

On a stack of its own (databases, vhost, ports), so the shared session stack is not disturbed and the
dead-letter queue holds only what this test caused."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from shared.amqp import CREDITING_QUEUE
from shared.settings import AmqpSettings
from tests.harness import (
    Driver,
    ServiceProcess,
    Stack,
    allow_connections,
    assert_exactly_once,
    fetch,
    own_stack,
    refuse_connections,
    retrying,
    start_all,
    stop_all,
    superuser_dsn,
)
from tests.simulators.sandbox import send_webhook, webhook_body

pytestmark = [pytest.mark.e2e]

RATE_PER_S = 2.5  # top-ups started per second, for the whole test
STEADY_S = 5  # both replicas crediting before the outage
OUTAGE_S = 60
KILLS = 10
KILL_EVERY_S = 5.5  # ten kills, alternating replicas, within a minute
RESTART_AFTER_S = 1.0
CREDIT = {"p10": 1000, "p25": 2650}  # amount + bonus
SEED = 20261127


def queue_depth(stack: Stack) -> dict[str, int]:
    """Ready and unacknowledged messages in crediting's queue (held by the replicas' prefetch)."""
    out = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            stack.vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--formatter",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for queue in json.loads(out):
        if queue["name"] == CREDITING_QUEUE.name:
            return {"ready": queue["messages_ready"], "unacked": queue["messages_unacknowledged"]}
    return {}


@pytest_asyncio.fixture(scope="module")
async def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # The product's delivery limit, not the test config's 3 (which the delivery-limit tests want):
    # a crash loop is what it guards against, and this test crashes crediting on purpose.
    delivery_limit = AmqpSettings.model_fields["delivery_limit"].default
    overrides = {
        "EVTOPUP__AMQP__DELIVERY_LIMIT": str(delivery_limit),
        # A PostgreSQL (max_connections 100) that other test runs share: small pools.
        "EVTOPUP__DATABASES__POOL_MAX_SIZE": "5",
    }
    async with own_stack(tmp_path_factory.mktemp("faults"), overrides) as stack:
        yield stack


@pytest.mark.timeout(420)
async def test_crediting_database_gone_a_minute_then_ten_kills_every_paid_topup_credited_once(
    fault_stack: Stack,
) -> None:
    stack = fault_stack
    # Full prefetch on both replicas: each holds as many messages as it is allowed through the outage.
    prefetch = {"EVTOPUP__AMQP__PREFETCH": str(stack.settings.amqp.prefetch)}
    crediting = [
        ServiceProcess("crediting", stack, extra_env=prefetch),
        ServiceProcess.replica("crediting", stack, 2, env=prefetch),
    ]
    processes = [ServiceProcess("page", stack), ServiceProcess("payments", stack), *crediting]
    rng = random.Random(SEED)
    users = [f"fault-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    paid: dict[str, tuple[str, int]] = {}
    declined: list[str] = []
    paid_at: dict[str, float] = {}
    timeline: dict[str, Any] = {}
    codes: dict[str, int] = {}
    try:
        await start_all(processes)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            driver = Driver(stack, http)

            async def one_topup(user_id: str, package: str, outcome: str, resend: bool) -> None:
                key = str(uuid.uuid4())

                async def create() -> dict[str, Any] | None:
                    status, body = await driver.create_topup(user_id, {"package_id": package}, key=key)
                    return body if status == 201 else None

                order = await retrying(create, f"creating a top-up for {user_id}")
                order_id = str(order["id"])
                await retrying(lambda: driver.pay(str(order["redirect_url"]), outcome), "paying")
                if outcome == "failed":
                    declined.append(order_id)
                    return
                paid[order_id] = (user_id, CREDIT[package])
                paid_at[order_id] = time.monotonic()
                if resend:  # the processor says it again, as processors do (another event id)
                    rows = await fetch(
                        superuser_dsn(stack, "payments"),
                        "SELECT processor_reference, charge_minor FROM payments WHERE order_id = $1",
                        uuid.UUID(order_id),
                    )
                    body = webhook_body(rows[0]["processor_reference"], "succeeded", rows[0]["charge_minor"], "EUR")

                    async def again() -> int | None:
                        url = stack.url("payments", "/webhooks/sandbox_main")
                        status = await send_webhook(http, url, stack.webhook_secret, body)
                        return status if status == 200 else None

                    await retrying(again, "resending a webhook")

            async def stream(stop: asyncio.Event) -> int:
                tasks: list[asyncio.Task[None]] = []
                began = time.monotonic()
                while not stop.is_set():
                    user_id = users[len(tasks) % len(users)]
                    package = rng.choice(["p10", "p25"])
                    outcome = "failed" if rng.random() < 0.1 else "succeeded"
                    tasks.append(asyncio.create_task(one_topup(user_id, package, outcome, rng.random() < 0.5)))
                    await asyncio.sleep(max(0.0, began + len(tasks) / RATE_PER_S - time.monotonic()))
                await asyncio.gather(*tasks)
                return len(tasks)

            async def chaos(stop: asyncio.Event) -> None:
                try:
                    await asyncio.sleep(STEADY_S)
                    timeline["outage_began"] = time.monotonic()
                    await refuse_connections(stack, "crediting")
                    await asyncio.sleep(0.5)
                    await refuse_connections(stack, "crediting")  # whatever connected in between
                    await asyncio.sleep(OUTAGE_S - 0.5)
                    # The outage was real: nothing paid during it got credited.
                    during = [o for o, at in paid_at.items() if at > timeline["outage_began"] + 2]
                    credited_during = await fetch(
                        superuser_dsn(stack, "page"),
                        "SELECT count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) AND status = 'credited'",
                        [uuid.UUID(o) for o in during],
                    )
                    timeline["paid_during_outage"] = len(during)
                    timeline["crediting_queue_at_outage_end"] = await asyncio.to_thread(queue_depth, stack)
                    timeline["credited_during_outage"] = credited_during[0]["n"]
                    await allow_connections(stack, "crediting")
                    timeline["outage_ended"] = time.monotonic()
                    # Ten SIGKILLs within a minute, alternating replicas, while the backlog drains.
                    for k in range(KILLS):
                        slot = timeline["outage_ended"] + k * KILL_EVERY_S
                        await asyncio.sleep(max(0.0, slot - time.monotonic()))
                        victim = crediting[k % 2]
                        await victim.wait_ready(30)  # restarted two slots ago: consuming again
                        victim.kill()
                        timeline.setdefault("first_kill", time.monotonic())
                        timeline["last_kill"] = time.monotonic()
                        await asyncio.sleep(RESTART_AFTER_S)
                        victim.start()
                    for process in crediting:
                        await process.wait_ready(30)
                finally:
                    await allow_connections(stack, "crediting")
                    stop.set()

            stop = asyncio.Event()
            started = time.monotonic()
            topups, _ = await asyncio.gather(stream(stop), chaos(stop))
            stream_s = time.monotonic() - started

        assert timeline["paid_during_outage"] > 0.5 * RATE_PER_S * OUTAGE_S, timeline  # a steady stream
        assert timeline["credited_during_outage"] == 0, timeline  # the database really was gone
        assert timeline["last_kill"] - timeline["first_kill"] < 60, timeline
        assert [p.starts for p in crediting] == [1 + KILLS // 2, 1 + KILLS - KILLS // 2]
        assert len(paid) + len(declined) == topups

        await assert_exactly_once(stack, paid, declined, timeout_s=120)
        # Both replicas credited; nobody's log shows a message given up on.
        for process in crediting:
            assert process.log_events("credit_applied"), f"{process.label} credited nothing"
        for process in processes:
            assert process.log_events("message_dead_lettered") == [], process.label
        print(f"{topups} top-ups ({len(paid)} paid) in {stream_s:.0f}s; {timeline}")
        print({process.label: process.log_summary() for process in processes})
    finally:
        codes = stop_all(processes)
    assert codes == dict.fromkeys(codes, 0), codes
