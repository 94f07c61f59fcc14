"""Two replicas of every service, against the same databases and vhost: outbox relays, pollers, RPC
servers and consumers share the work, and nothing takes effect twice. 200 top-ups from 20 users,
created through both pages; each success is told to both payments replicas at once (the same event,
while the driver's own Pay click sends another), some webhooks are lost and left to the pollers, some
payments are declined.

On a stack of its own, so that the session's processes (and its dead letters) play no part."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from tests.harness import (
    Driver,
    ServiceProcess,
    Stack,
    assert_exactly_once,
    fetch,
    own_stack,
    start_all,
    stop_all,
    superuser_dsn,
)
from tests.simulators.sandbox import send_webhook, webhook_body

pytestmark = [pytest.mark.e2e]

SERVICE_NAMES = ("page", "payments", "crediting")
TOPUPS = 200
USERS = 20
CONCURRENCY = 40
CREDIT = {"p10": 1000, "p25": 2650}  # amount + bonus


@pytest_asyncio.fixture(scope="module")
async def replica_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # Six processes on a PostgreSQL (max_connections 100) that other test runs share: small pools.
    overrides = {"EVTOPUP__DATABASES__POOL_MAX_SIZE": "4"}
    async with own_stack(tmp_path_factory.mktemp("replicas"), overrides) as stack:
        yield stack


@pytest.mark.timeout(300)
async def test_two_replicas_of_every_service_share_the_work_with_no_double_effect(replica_stack: Stack) -> None:
    stack = replica_stack
    first = {name: ServiceProcess(name, stack) for name in SERVICE_NAMES}
    second = {name: ServiceProcess.replica(name, stack, 2) for name in SERVICE_NAMES}
    processes = [*first.values(), *second.values()]
    users = [f"replica-{uuid.uuid4().hex[:8]}" for _ in range(USERS)]
    paid: dict[str, tuple[str, int]] = {}
    declined: list[str] = []
    lost: list[str] = []
    semaphore = asyncio.Semaphore(CONCURRENCY)
    codes: dict[str, int] = {}
    try:
        await start_all(processes)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            drivers = [
                Driver(stack, http, page_url=first["page"].url()),
                Driver(stack, http, page_url=second["page"].url()),
            ]
            webhook_urls = [p.url("/webhooks/sandbox_main") for p in (first["payments"], second["payments"])]

            async def tell(url: str, body: bytes) -> int:
                """A processor's delivery: retried while the endpoint says 503 (busy), like processors do."""
                for _ in range(10):
                    status = await send_webhook(http, url, stack.webhook_secret, body)
                    if status != 503:
                        return status
                    await asyncio.sleep(0.5)
                return status

            async def one(i: int) -> None:
                user_id = users[i % USERS]
                package = "p25" if i % 3 == 0 else "p10"
                driver = drivers[i % 2]
                key = str(uuid.uuid4())
                async with semaphore:
                    for _ in range(5):  # 503 when a checkout RPC timed out: the same request again
                        status, order = await driver.create_topup(user_id, {"package_id": package}, key=key)
                        if status != 503:
                            break
                        await asyncio.sleep(1)
                    assert status == 201, order
                    order_id = str(order["id"])
                    rows = await fetch(
                        superuser_dsn(stack, "payments"),
                        "SELECT processor_reference, charge_minor FROM payments WHERE order_id = $1",
                        uuid.UUID(order_id),
                    )
                    reference, charge_minor = rows[0]["processor_reference"], rows[0]["charge_minor"]
                    if i % 10 == 1:
                        # Declined on the hosted page; the decline is also told to both replicas.
                        body = webhook_body(reference, "failed", charge_minor, "EUR")
                        statuses = await asyncio.gather(
                            driver.pay(str(order["redirect_url"]), "failed"),
                            *(tell(url, body) for url in webhook_urls),
                        )
                        assert statuses[1:] == [200, 200], statuses
                        declined.append(order_id)
                        return
                    if i % 10 == 2:
                        # The processor took the money and its webhook never came: the pollers of both
                        # payments replicas find it.
                        await fetch(
                            superuser_dsn(stack, "payments"),
                            "UPDATE sandbox_checkouts SET status = 'succeeded' WHERE reference = $1",
                            reference,
                        )
                        lost.append(order_id)
                    else:
                        # The same event to both replicas at once, while the Pay click sends its own.
                        body = webhook_body(reference, "succeeded", charge_minor, "EUR")
                        statuses = await asyncio.gather(
                            driver.pay(str(order["redirect_url"])),
                            *(tell(url, body) for url in webhook_urls),
                        )
                        assert statuses[1:] == [200, 200], statuses
                paid[order_id] = (user_id, CREDIT[package])

            await asyncio.gather(*(one(i) for i in range(TOPUPS)))
        assert len(paid) + len(declined) == TOPUPS and len(lost) == TOPUPS // 10

        await assert_exactly_once(stack, paid, declined, timeout_s=120)

        # The work was shared: each replica's consumers and RPC server took part (the broker hands a
        # queue's messages round-robin to the consumers that have room).
        for name, event in (("page", "order_status_changed"), ("payments", "checkout_created")):
            for process in (first[name], second[name]):
                assert process.log_events(event), f"{process.label} logged no {event}"
        for process in (first["crediting"], second["crediting"]):
            assert process.log_events("credit_applied"), f"{process.label} credited nothing"
        applied = [e for p in (first["crediting"], second["crediting"]) for e in p.log_events("credit_applied")]
        assert len(applied) == len(paid)  # one credit_applied line per paid top-up, across both replicas
        for process in processes:
            assert process.log_events("message_dead_lettered") == [], process.label
        print({process.label: process.log_summary() for process in processes})
        # Not asserted (which relay claims a row, which poller gets a payment, is a race), but shown.
        shares = {
            process.label: {
                metric: await process.metric(metric)
                for metric in ("evtopup_outbox_published_total", "evtopup_payments_polled_total")
            }
            for process in processes
        }
        print(shares)
    finally:
        codes = stop_all(processes)
    assert codes == dict.fromkeys(codes, 0), codes
