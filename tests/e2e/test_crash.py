"""Faults in the middle of a stream of top-ups (with duplicated webhooks): SIGKILL of the crediting
service, then of the payments service, and a RabbitMQ restart. Afterwards the invariants must hold:
every paid top-up credited exactly once, every ledger transfer balanced, nothing left in an outbox
or dead-lettered."""

from __future__ import annotations

import asyncio
import random
import subprocess
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aiohttp
import pytest

from shared.amqp import DEAD_LETTER_QUEUE
from tests.harness import Driver, ServiceProcess, Stack, eventually, fetch, rabbitmqctl
from tests.simulators.sandbox import send_webhook, webhook_body

pytestmark = [pytest.mark.e2e]

TOPUPS = 80
USERS = 10
SEED = 20261125


async def _retrying(action, what: str, timeout_s: float = 60):  # type: ignore[no-untyped-def]
    """What a driver (or a processor) does when a service is down: try again, the same request."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            result = await action()
            if result is not None:
                return result
        except (TimeoutError, aiohttp.ClientError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} never succeeded")
        await asyncio.sleep(0.2)


async def run_stream_under_chaos(driver: Driver, stack: Stack, chaos: Callable[[], Awaitable[None]]) -> None:
    """Drive a stream of top-ups (half with a duplicated webhook) while ``chaos`` runs, then check
    that every paid top-up was credited exactly once and nothing was left behind."""
    rng = random.Random(SEED)
    users = [f"crash-{uuid.uuid4().hex[:8]}" for _ in range(USERS)]
    plan = [(users[i % USERS], rng.choice(["p10", "p25"]), rng.uniform(0, 8)) for i in range(TOPUPS)]
    credit = {"p10": 1000, "p25": 2650}
    order_ids: list[str] = []

    async def one_topup(user_id: str, package: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        key = str(uuid.uuid4())

        async def create() -> dict[str, object] | None:
            status, body = await driver.create_topup(user_id, {"package_id": package}, key=key)
            return body if status == 201 else None

        order = await _retrying(create, f"creating a top-up for {user_id}")
        order_ids.append(str(order["id"]))
        await _retrying(lambda: driver.pay(str(order["redirect_url"])), "paying")
        # Half the processors also send the success again, as processors do.
        if rng.random() < 0.5:
            rows = await fetch(
                stack.dsn("payments"),
                "SELECT processor_reference, charge_minor FROM payments WHERE order_id = $1",
                uuid.UUID(str(order["id"])),
            )
            body = webhook_body(rows[0]["processor_reference"], "succeeded", rows[0]["charge_minor"], "EUR")

            async def resend() -> int | None:
                status = await send_webhook(
                    driver.http, stack.url("payments", "/webhooks/sandbox_main"), stack.webhook_secret, body
                )
                return status if status == 200 else None

            await _retrying(resend, "resending a webhook")

    await asyncio.gather(chaos(), *(one_topup(*p) for p in plan))
    assert len(order_ids) == TOPUPS

    async def all_credited() -> bool:
        rows = await fetch(
            stack.dsn("page"),
            "SELECT count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) AND status = 'credited'",
            [uuid.UUID(i) for i in order_ids],
        )
        return rows[0]["n"] == TOPUPS

    await eventually(all_credited, 120, "not every paid top-up was credited after the faults")

    expected = dict.fromkeys(users, 0)
    for user_id, package, _ in plan:
        expected[user_id] += credit[package]
    assert {u: await driver.balance(u) for u in users} == expected

    ids = [uuid.UUID(i) for i in order_ids]
    transfers = await fetch(
        stack.dsn("crediting"),
        "SELECT count(*) AS n, count(DISTINCT payment_id) AS d FROM transfers WHERE order_id = ANY($1::uuid[])",
        ids,
    )
    assert transfers[0]["n"] == transfers[0]["d"] == TOPUPS
    succeeded = await fetch(
        stack.dsn("payments"),
        "SELECT count(*) AS n FROM payments WHERE order_id = ANY($1::uuid[]) AND status = 'succeeded'",
        ids,
    )
    assert succeeded[0]["n"] == TOPUPS
    unbalanced = await fetch(
        stack.dsn("crediting"), "SELECT transfer_id FROM postings GROUP BY transfer_id HAVING sum(amount_minor) <> 0"
    )
    assert unbalanced == []

    async def outboxes_drained() -> bool:
        for service in ("page", "payments", "crediting"):
            if (await fetch(stack.dsn(service), "SELECT count(*) AS n FROM outbox"))[0]["n"]:
                return False
        return True

    await eventually(outboxes_drained, 30, "an outbox did not drain")
    connection = await aio_pika.connect(
        f"amqp://guest:{stack.env['EVTOPUP__AMQP__PASSWORD']}@127.0.0.1:5672/{stack.vhost}"
    )
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        assert dead.declaration_result.message_count == 0


async def test_killing_crediting_then_payments_mid_stream_loses_and_duplicates_nothing(
    driver: Driver, stack: Stack, services: dict[str, ServiceProcess]
) -> None:
    async def chaos() -> None:
        await asyncio.sleep(2)
        services["crediting"].kill()
        await asyncio.sleep(1.5)
        services["crediting"].start()
        await services["crediting"].wait_ready()
        await asyncio.sleep(1.5)
        services["payments"].kill()
        await asyncio.sleep(1.5)
        services["payments"].start()
        await services["payments"].wait_ready()

    starts = {name: process.starts for name, process in services.items()}
    await run_stream_under_chaos(driver, stack, chaos)
    assert services["crediting"].starts == starts["crediting"] + 1  # each really was killed and restarted
    assert services["payments"].starts == starts["payments"] + 1


async def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    driver: Driver, stack: Stack, services: dict[str, ServiceProcess]
) -> None:
    async def chaos() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        await asyncio.sleep(2)
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")

    await run_stream_under_chaos(driver, stack, chaos)
    # The services reconnected by themselves: none was restarted, all are ready again.
    for process in services.values():
        assert process.proc is not None and process.proc.poll() is None
        await process.wait_ready()


async def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(
    driver: Driver, stack: Stack, services: dict[str, ServiceProcess]
) -> None:
    version = (await asyncio.to_thread(subprocess.check_output, ["ls", "/etc/postgresql"], text=True)).split()[0]

    async def chaos() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(
            subprocess.run,
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
            check=True,
            timeout=60,
        )

    await run_stream_under_chaos(driver, stack, chaos)
    for process in services.values():
        assert process.proc is not None and process.proc.poll() is None
        await process.wait_ready()
