"""What heals by itself, through the real services: successes whose credit was lost are announced
again until the ledger confirms them, lost webhooks are polled while another processor is down, and a
success for the wrong amount waits for an operator, who settles it once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest
import pytest_asyncio

from services.cli import SERVICES
from shared import db
from shared.amqp import CREDITING_QUEUE, EVENTS_EXCHANGE
from tests.e2e.test_cli import evtopup
from tests.e2e.test_topup_flow import payment_status, processor_says, transfers_for, user
from tests.harness import Driver, ServiceProcess, Stack, eventually, fetch, own_stack, start_all, stop_all
from tests.simulators.sandbox import send_webhook, webhook_body

pytestmark = [pytest.mark.e2e]

OUTAGE_S = 10


async def orders_in_status(stack: Stack, order_ids: list[str], status: str) -> bool:
    rows = await fetch(
        stack.dsn("page"),
        "SELECT count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) AND status = $2",
        [uuid.UUID(i) for i in order_ids],
        status,
    )
    return bool(rows[0]["n"] == len(order_ids))


@pytest.mark.usefixtures("services")
async def test_crediting_queue_unbound_for_ten_seconds_everything_credited_once_in_the_end(
    driver: Driver, stack: Stack
) -> None:
    users = [user() for _ in range(3)]
    packages = {"p10": 1000, "p25": 2650}
    expected = dict.fromkeys(users, 0)
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}")
    async with connection:
        channel = await connection.channel()
        crediting_queue = await channel.get_queue(CREDITING_QUEUE.name, ensure=True)
        await crediting_queue.unbind(EVENTS_EXCHANGE, "payment.succeeded")
        outage_started = time.monotonic()
        try:
            order_ids = []
            for i in range(8):
                user_id, package = users[i % len(users)], "p25" if i % 2 else "p10"
                status, order = await driver.create_topup(user_id, {"package_id": package})
                assert status == 201, order
                await driver.pay(order["redirect_url"])
                order_ids.append(order["id"])
                expected[user_id] += packages[package]
            # Every success was announced (the page saw it) while crediting heard nothing.
            await eventually(lambda: orders_in_status(stack, order_ids, "paid"), 20, "payments never succeeded")
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            assert [await driver.balance(u) for u in users] == [0, 0, 0]
        finally:
            await crediting_queue.bind(EVENTS_EXCHANGE, "payment.succeeded")

    await eventually(lambda: orders_in_status(stack, order_ids, "credited"), 60, "not everything was credited")
    assert {u: await driver.balance(u) for u in users} == expected
    rows = await fetch(
        stack.dsn("crediting"),
        "SELECT count(*) AS n, count(DISTINCT payment_id) AS d FROM transfers WHERE order_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in order_ids],
    )
    assert rows[0]["n"] == rows[0]["d"] == len(order_ids)

    async def all_confirmed() -> bool:
        rows = await fetch(
            stack.dsn("payments"),
            "SELECT count(*) AS n FROM payments WHERE order_id = ANY($1::uuid[])"
            " AND credited_at IS NOT NULL AND announce_count >= 1",
            [uuid.UUID(i) for i in order_ids],
        )
        return bool(rows[0]["n"] == len(order_ids))

    # It was the sweeper: each payment announced again, and payments learned of every credit.
    await eventually(all_confirmed, 10, "payments never learned of the credits")


async def review_case(driver: Driver, stack: Stack) -> tuple[str, str, str]:
    """A top-up the processor confirmed for one cent less than charged: (user, order, payment)."""
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    assert await processor_says(driver, order["id"], "succeeded", amount_delta_minor=-1) == 200
    await driver.wait_status(user_id, order["id"], "under_review")
    assert await payment_status(stack, order["id"]) == "needs_review"
    rows = await fetch(stack.dsn("payments"), "SELECT id FROM payments WHERE order_id = $1", uuid.UUID(order["id"]))
    return user_id, order["id"], str(rows[0]["id"])


@pytest.mark.usefixtures("services")
async def test_wrong_amount_is_held_for_review_then_credited_once_by_the_operator(driver: Driver, stack: Stack) -> None:
    user_id, order_id, payment_id = await review_case(driver, stack)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(stack.url("page", f"/topup?token={driver.token(user_id)}")) as launch:
            assert launch.status == 200
        async with browser.get(stack.url("page", f"/topup/{order_id}/return")) as response:
            page = await response.text()
    assert 'data-status="under_review"' in page
    assert "Please do not pay again" in page
    assert await driver.balance(user_id) == 0

    listed = evtopup(stack, "review", "list")
    assert listed.returncode == 0, listed.stderr
    entry = next(json.loads(line) for line in listed.stdout.splitlines() if payment_id in line)
    assert (entry["order_id"], entry["charge_minor"], entry["currency"]) == (order_id, 1000, "EUR")
    assert "confirmed 999 EUR" in entry["reason"]

    settled = evtopup(stack, "review", "settle", payment_id, "--credit", "--by", "alice", "--note", "1 cent short")
    assert settled.returncode == 0, settled.stderr
    credited = await driver.wait_status(user_id, order_id, "credited")
    assert credited["balance_minor"] == 1000  # what the driver ordered

    again = evtopup(stack, "review", "settle", payment_id, "--reject", "--by", "bob", "--note", "changed my mind")
    assert again.returncode == 2
    assert "already settled: credit by alice" in again.stderr
    assert await driver.balance(user_id) == 1000
    assert await transfers_for(stack, order_id) == 1
    reviews = await fetch(
        stack.dsn("payments"),
        "SELECT decision, decided_by, note FROM payment_reviews WHERE payment_id = $1",
        uuid.UUID(payment_id),
    )
    assert [tuple(r) for r in reviews] == [("credit", "alice", "1 cent short")]
    assert await payment_status(stack, order_id) == "succeeded"


@pytest.mark.usefixtures("services")
async def test_rejected_review_refunds_the_order_and_leaves_the_balance(driver: Driver, stack: Stack) -> None:
    user_id, order_id, payment_id = await review_case(driver, stack)
    settled = evtopup(stack, "review", "settle", payment_id, "--reject", "--by", "alice", "--note", "refunded")
    assert settled.returncode == 0, settled.stderr
    await driver.wait_status(user_id, order_id, "refunded")
    assert await payment_status(stack, order_id) == "rejected"
    assert await driver.balance(user_id) == 0
    assert await transfers_for(stack, order_id) == 0
    unknown = evtopup(stack, "review", "settle", str(uuid.uuid4()), "--credit", "--by", "alice", "--note", "x")
    assert unknown.returncode == 2 and "no payment" in unknown.stderr


@pytest.mark.usefixtures("services")
async def test_webhook_that_raced_its_checkout_is_applied_once_the_payment_is_known(
    driver: Driver, stack: Stack
) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    reference = f"sbx_raced_{uuid.uuid4().hex[:12]}"
    body = webhook_body(reference, "succeeded", 1000, "EUR")
    url = stack.url("payments", "/webhooks/sandbox_main")
    # The processor's webhook comes before the checkout's reference is recorded: no payment yet.
    assert await send_webhook(driver.http, url, stack.webhook_secret, body) == 200
    # Its redelivery is looked at again, not swallowed as a duplicate.
    assert await send_webhook(driver.http, url, stack.webhook_secret, body) == 200
    rows = await fetch(
        stack.dsn("payments"),
        "SELECT outcome, reexamine_attempts FROM processor_events WHERE processor_reference = $1",
        reference,
    )
    assert [r["outcome"] for r in rows] == ["unknown_payment"]
    assert rows[0]["reexamine_attempts"] >= 2
    # Now the checkout's creation records it (as if its reference had been this one all along).
    await fetch(
        stack.dsn("payments"),
        "UPDATE payments SET processor_reference = $2 WHERE order_id = $1",
        uuid.UUID(order["id"]),
        reference,
    )
    await driver.wait_status(user_id, order["id"], "credited", timeout_s=30)
    assert await driver.balance(user_id) == 1000
    rows = await fetch(
        stack.dsn("payments"), "SELECT outcome FROM processor_events WHERE processor_reference = $1", reference
    )
    assert [r["outcome"] for r in rows] == ["moved_to_succeeded"]


# --- one processor down, lost webhooks at another ---------------------------------------------------

TRIAL_PAYMENTS = 150
LOST_WEBHOOKS = 50


@pytest_asyncio.fixture(scope="module")
async def processor_down(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A stack of its own whose sandbox_trial processor accepts connections and never answers."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    black_hole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    overrides = {
        "EVTOPUP__INTEGRATIONS__SANDBOX_TRIAL__API_BASE_URL": f"http://127.0.0.1:{port}",
        "EVTOPUP__PAYMENTS__POLL_CALL_TIMEOUT_S": "1",
    }
    try:
        async with own_stack(Path(tmp_path_factory.mktemp("processor_down")), overrides) as stack:
            processes = {name: ServiceProcess(name, stack) for name in SERVICES}
            try:
                await start_all(processes.values())
                yield stack
            finally:
                stop_all(processes.values())
    finally:
        black_hole.close()


async def test_lost_webhooks_heal_while_another_processor_is_down(processor_down: Stack) -> None:
    stack = processor_down
    # 150 payments at the trial processor, due for a poll before anything else, whose lookups hang.
    conn = await db.connect(stack.dsn("payments"))
    try:
        await conn.executemany(
            "INSERT INTO payments (id, order_id, user_id, integration_id, processor, method, amount_minor,"
            " bonus_minor, fee_minor, charge_minor, currency, status, processor_reference, correlation_id,"
            " created_at, updated_at) VALUES ($1, $2, 'tester-1', 'sandbox_trial', 'sandbox', 'card', 1000, 0, 0,"
            " 1000, 'EUR', 'pending', $3, 'corr-down', now() - interval '1 minute', now() - interval '1 minute')",
            [(uuid.uuid4(), uuid.uuid4(), f"sbx_trial_{i}") for i in range(TRIAL_PAYMENTS)],
        )
    finally:
        await conn.close()

    async with aiohttp.ClientSession() as http:
        driver = Driver(stack, http)
        users = [user() for _ in range(10)]
        order_ids: list[str] = []
        for i in range(LOST_WEBHOOKS):
            key = str(uuid.uuid4())
            # On a busy machine the checkout RPC may time out: the API says retry with the same key.
            for _ in range(3):
                status, order = await driver.create_topup(users[i % len(users)], {"package_id": "p10"}, key)
                if status != 503:
                    break
            assert status == 201, order
            order_ids.append(order["id"])
        # The processor takes the money; not one webhook arrives.
        await fetch(
            stack.dsn("payments"),
            "UPDATE sandbox_checkouts SET status = 'succeeded' WHERE reference IN"
            " (SELECT processor_reference FROM payments WHERE order_id = ANY($1::uuid[]))",
            [uuid.UUID(i) for i in order_ids],
        )
        settings = stack.settings.payments
        # poll_after_s until the first poll is due, then a few poll intervals.
        within_s = settings.poll_after_s + 8 * settings.poll_interval_s + 5
        await eventually(lambda: orders_in_status(stack, order_ids, "credited"), within_s, "lost webhooks not healed")
        assert {u: await driver.balance(u) for u in users} == dict.fromkeys(users, 1000 * LOST_WEBHOOKS // len(users))

        # Meanwhile the trial processor was asked, and each failure recorded against its payment.
        async def trial_failures_recorded() -> bool:
            rows = await fetch(
                stack.dsn("payments"),
                "SELECT count(*) AS n FROM payments WHERE integration_id = 'sandbox_trial'"
                " AND poll_failures >= 1 AND last_poll_error LIKE 'TimeoutError%'",
            )
            return bool(rows[0]["n"] >= 1)

        await eventually(trial_failures_recorded, 15, "no failed lookup recorded at the trial processor")
        async with http.get(stack.internal_url("payments", "/metrics")) as response:
            metrics = await response.text()
        assert 'evtopup_payments_pending{integration="sandbox_trial"} 150.0' in metrics
        assert 'evtopup_payments_oldest_pending_age_seconds{integration="sandbox_trial"}' in metrics
