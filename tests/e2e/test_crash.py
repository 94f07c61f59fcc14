"""Faults in the middle of a stream of top-ups (with duplicated webhooks): SIGKILL of the page, the
crediting and the payments service, a RabbitMQ restart and a PostgreSQL restart. Afterwards the
invariants must hold: every paid top-up credited exactly once, every ledger transfer balanced, every
stored balance equal to the sum of its postings, nothing left in an outbox or dead-lettered."""

from __future__ import annotations

import asyncio
import random
import subprocess
import uuid
from collections.abc import Awaitable, Callable

import pytest

from services.crediting.domain import user_account
from tests.harness import (
    Driver,
    ServiceProcess,
    Stack,
    assert_exactly_once,
    fetch,
    rabbitmqctl,
    retrying,
    superuser_dsn,
)
from tests.simulators.sandbox import send_webhook, webhook_body

# Each fault test drives a stream of top-ups through a fault and waits for it to heal.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TOPUPS = 80
USERS = 10
SEED = 20261125
STREAM_S = 12  # top-ups start over this many seconds, so the faults hit a stream in flight


async def run_stream_under_chaos(driver: Driver, stack: Stack, chaos: Callable[[], Awaitable[None]]) -> None:
    """Drive a stream of top-ups (half with a duplicated webhook) while ``chaos`` runs, then check
    that every paid top-up was credited exactly once and nothing was left behind."""
    rng = random.Random(SEED)
    users = [f"crash-{uuid.uuid4().hex[:8]}" for _ in range(USERS)]
    plan = [(users[i % USERS], rng.choice(["p10", "p25"]), rng.uniform(0, STREAM_S)) for i in range(TOPUPS)]
    credit = {"p10": 1000, "p25": 2650}
    paid: dict[str, tuple[str, int]] = {}

    async def one_topup(user_id: str, package: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        key = str(uuid.uuid4())

        async def create() -> dict[str, object] | None:
            status, body = await driver.create_topup(user_id, {"package_id": package}, key=key)
            return body if status == 201 else None

        order = await retrying(create, f"creating a top-up for {user_id}")
        paid[str(order["id"])] = (user_id, credit[package])
        await retrying(lambda: driver.pay(str(order["redirect_url"])), "paying")
        # Half the processors also send the success again, as processors do.
        if rng.random() < 0.5:
            rows = await fetch(
                superuser_dsn(stack, "payments"),
                "SELECT processor_reference, charge_minor FROM payments WHERE order_id = $1",
                uuid.UUID(str(order["id"])),
            )
            body = webhook_body(rows[0]["processor_reference"], "succeeded", rows[0]["charge_minor"], "EUR")

            async def resend() -> int | None:
                status = await send_webhook(
                    driver.http, stack.url("payments", "/webhooks/sandbox_main"), stack.webhook_secret, body
                )
                return status if status == 200 else None

            await retrying(resend, "resending a webhook")

    await asyncio.gather(chaos(), *(one_topup(*p) for p in plan))
    assert len(paid) == TOPUPS
    # Every paid top-up credited exactly once, each user's balance the sum of their credits and of
    # their postings, every transfer balanced, outboxes drained, nothing dead-lettered.
    await assert_exactly_once(stack, paid, timeout_s=120)
    await assert_ledger_consistent(stack)


async def assert_ledger_consistent(stack: Stack) -> None:
    """The whole ledger, not only this stream's users: every stored balance is the sum of the postings
    to its account, every currency sums to zero, and the system accounts hold the other side."""
    dsn = superuser_dsn(stack, "crediting")
    stored = {
        (user_account(r["user_id"], r["environment"]), r["currency"]): r["balance_minor"]
        for r in await fetch(dsn, "SELECT user_id, currency, environment, balance_minor FROM user_balances")
    }
    postings = {
        (r["account"], r["currency"]): r["total"]
        for r in await fetch(
            dsn, "SELECT account, currency, sum(amount_minor) AS total FROM postings GROUP BY account, currency"
        )
    }
    users = {k: v for k, v in postings.items() if k[0].startswith(("user:", "test:user:"))}
    assert stored == users, "a stored balance is not the sum of the postings to its account"
    for currency in {c for _, c in postings}:
        system = {a: v for (a, c), v in postings.items() if c == currency and (a, c) not in users}
        assert sum(system.values()) == -sum(v for (_, c), v in users.items() if c == currency), currency
        for account, total in system.items():
            # Clearing accounts pay out what drivers paid, bonus expense what was given; fees are earned.
            if ":processor:" in f":{account}" or account.endswith("expense:bonus"):
                assert total <= 0, (account, total)
            elif account.endswith("revenue:fees"):
                assert total >= 0, (account, total)
            else:
                raise AssertionError(f"posting to an unknown system account {account}")


async def test_killing_page_crediting_then_payments_mid_stream_loses_and_duplicates_nothing(
    driver: Driver, stack: Stack, services: dict[str, ServiceProcess]
) -> None:
    async def chaos() -> None:
        # Drivers keep creating top-ups (the same Idempotency-Key on every retry) while the page is away.
        await asyncio.sleep(1.5)
        services["page"].kill()
        await asyncio.sleep(1.5)
        services["page"].start()
        await services["page"].wait_ready()
        await asyncio.sleep(1)
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
    assert services["page"].starts == starts["page"] + 1  # each really was killed and restarted
    assert services["crediting"].starts == starts["crediting"] + 1
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
