"""The issue's proof for the outbox: a row that can never be published (a correlation id over
AMQP's 255-byte limit, as an old version could write) is parked with its reason, and the 300
top-ups after it are all credited, never held back by it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.harness import Driver, Stack, eventually, fetch, superuser_dsn
from tests.simulators.sandbox import send_webhook, webhook_body

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]

TOPUPS = 300
IN_FLIGHT = 20


async def test_a_poisoned_row_is_parked_and_300_topups_after_it_are_credited(driver: Driver, stack: Stack) -> None:
    poisoned = uuid.uuid4()
    # Written straight into payments' outbox: the HTTP edge no longer lets such an id in.
    await fetch(
        superuser_dsn(stack, "payments"),
        "INSERT INTO outbox (message_id, routing_key, correlation_id, body) VALUES ($1, 'payment.failed', $2, $3)",
        poisoned,
        "🔥" * 64,
        b"{}",
    )
    user_id = f"after-poison-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def topup(_index: int) -> str:
        async with gate:
            status, order = await driver.create_topup(user_id, {"package_id": "p10"})
            assert status == 201, order
            rows = await fetch(
                stack.dsn("payments"),
                "SELECT processor_reference, charge_minor FROM payments WHERE order_id = $1",
                uuid.UUID(order["id"]),
            )
            body = webhook_body(rows[0]["processor_reference"], "succeeded", rows[0]["charge_minor"], "EUR")
            url = stack.url("payments", "/webhooks/sandbox_main")
            assert await send_webhook(driver.http, url, stack.webhook_secret, body) == 200
            return str(order["id"])

    order_ids = await asyncio.gather(*(topup(i) for i in range(TOPUPS)))

    async def all_credited() -> bool:
        rows = await fetch(
            stack.dsn("page"),
            "SELECT count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) AND status = 'credited'",
            [uuid.UUID(i) for i in order_ids],
        )
        return bool(rows[0]["n"] == TOPUPS)

    await eventually(all_credited, 120, "not every top-up after the poisoned row was credited")
    assert await driver.balance(user_id) == TOPUPS * 1000
    parked = await fetch(
        superuser_dsn(stack, "payments"), "SELECT parked_at, parked_reason FROM outbox WHERE message_id = $1", poisoned
    )
    assert parked[0]["parked_at"] is not None and "cannot be encoded" in parked[0]["parked_reason"]
    # The shared stack's outboxes must end empty for the tests that check it.
    await fetch(superuser_dsn(stack, "payments"), "DELETE FROM outbox WHERE message_id = $1", poisoned)
