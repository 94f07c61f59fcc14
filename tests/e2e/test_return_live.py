"""The return page's stream on a stack of its own, whose crediting is started only when a test says:
a paid top-up then waits at ``paid``, so the stream is seen to go pending → paid → credited; and two
page replicas, where a stream on one replica follows changes made by the other replica's consumer
(PostgreSQL's NOTIFY reaches every replica, whichever consumer took the event)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from services.page.events import LISTEN_APPLICATION_NAME
from tests.harness import (
    Driver,
    ServiceProcess,
    Stack,
    eventually,
    fetch,
    own_stack,
    start_all,
    stop_all,
    superuser_dsn,
)
from tests.sse import launched, read_event, statuses_until_the_end

pytestmark = [pytest.mark.e2e]

STREAMS = 6


@pytest_asyncio.fixture(scope="module")
async def live_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, list[ServiceProcess]]]:
    """Two page replicas and payments; no crediting (each test starts its own)."""
    overrides = {"EVTOPUP__DATABASES__POOL_MAX_SIZE": "4"}
    async with own_stack(tmp_path_factory.mktemp("return_live"), overrides) as stack:
        pages = [ServiceProcess("page", stack), ServiceProcess.replica("page", stack, 2)]
        processes = [*pages, ServiceProcess("payments", stack)]
        try:
            await start_all(processes)
            yield stack, pages
        finally:
            codes = stop_all(processes)
        assert codes == dict.fromkeys(codes, 0), codes  # the open streams did not hold up a stop


async def next_status(stream: aiohttp.ClientResponse) -> dict[str, object]:
    while True:
        kind, data = await read_event(stream)
        if kind == "status":
            assert isinstance(data, dict)
            return data


@pytest.mark.timeout(180)
async def test_the_stream_goes_pending_paid_credited_then_ends(live_stack: tuple[Stack, list[ServiceProcess]]) -> None:
    stack, (page, _) = live_stack
    crediting = ServiceProcess("crediting", stack)
    user_id = f"live-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        driver = Driver(stack, http, page_url=page.url())
        status, order = await driver.create_topup(user_id, {"package_id": "p25"})
        assert status == 201, order
        browser = await launched(driver, user_id, page.url())
        try:
            async with browser, browser.get(page.url(f"/topup/{order['id']}/events")) as stream:
                assert stream.status == 200
                assert (await next_status(stream))["status"] == "pending"
                await driver.pay(str(order["redirect_url"]))
                paid = await next_status(stream)
                assert (paid["status"], paid["final"], paid["balance"]) == ("paid", False, None)
                # Nothing credits it until crediting runs: the stream waits, beating meanwhile.
                await start_all([crediting])
                rest = await statuses_until_the_end(stream)
        finally:
            stop_all([crediting])
    assert [s["status"] for s in rest] == ["credited"]
    assert rest[0]["final"] and rest[0]["balance"] == "New balance: €26.50"


@pytest.mark.timeout(180)
async def test_a_stream_on_one_replica_follows_changes_the_other_replicas_consumer_made(
    live_stack: tuple[Stack, list[ServiceProcess]],
) -> None:
    stack, (first, second) = live_stack
    crediting = ServiceProcess("crediting", stack)
    user_id = f"live-{uuid.uuid4().hex[:8]}"
    told_before = await second.metric("evtopup_page_order_changes_total")
    async with aiohttp.ClientSession() as http:
        driver = Driver(stack, http, page_url=first.url())
        orders = []
        for _ in range(STREAMS):
            status, order = await driver.create_topup(user_id, {"package_id": "p10"})
            assert status == 201, order
            orders.append(order)
        # Every stream on the second replica.
        browser = await launched(driver, user_id, second.url())
        streams = [await browser.get(second.url(f"/topup/{o['id']}/events")) for o in orders]
        try:
            for stream in streams:
                assert stream.status == 200 and (await next_status(stream))["status"] == "pending"
            # One listening connection per page process, however many streams it serves.
            listening = await fetch(
                superuser_dsn(stack, "page"),
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = $1",
                LISTEN_APPLICATION_NAME,
            )
            assert listening[0]["n"] == 2
            # Paid: each payment.succeeded taken by whichever replica's consumer the broker gave it to.
            await asyncio.gather(*(driver.pay(str(o["redirect_url"])) for o in orders))
            for stream in streams:
                assert (await next_status(stream))["status"] == "paid"
            await start_all([crediting])
            ends = await asyncio.gather(*(statuses_until_the_end(s) for s in streams))
        finally:
            for stream in streams:
                stream.close()
            await browser.close()
            stop_all([crediting])
    assert [[s["status"] for s in end] for end in ends] == [["credited"]] * STREAMS
    # The first replica's consumer made some of these changes (the broker shares a queue's messages
    # among its consumers): the second replica's streams learnt of them from PostgreSQL alone.
    ids = {str(o["id"]) for o in orders}
    by_first = [e for e in first.log_events("order_status_changed") if e.get("order_id") in ids]
    assert by_first, "the first replica's consumer moved none of these orders: nothing was shown"
    # The second replica was told of every change, whoever made it: each order's checkout (recorded
    # by the first replica), paid and credited.
    told = await second.metric("evtopup_page_order_changes_total") - told_before
    assert told >= 3 * STREAMS
    assert await second.metric("evtopup_page_order_changes_listening") == 1


@pytest.mark.timeout(180)
async def test_a_lost_listening_connection_is_opened_again_and_the_stream_still_follows(
    live_stack: tuple[Stack, list[ServiceProcess]],
) -> None:
    stack, (page, _) = live_stack
    crediting = ServiceProcess("crediting", stack)
    user_id = f"live-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        driver = Driver(stack, http, page_url=page.url())
        status, order = await driver.create_topup(user_id, {"package_id": "p10"})
        assert status == 201, order
        browser = await launched(driver, user_id, page.url())
        try:
            async with browser, browser.get(page.url(f"/topup/{order['id']}/events")) as stream:
                assert (await next_status(stream))["status"] == "pending"
                # The database drops every page process's LISTEN connection.
                dropped = await fetch(
                    superuser_dsn(stack, "page"),
                    "SELECT pg_terminate_backend(pid) AS gone FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = $1",
                    LISTEN_APPLICATION_NAME,
                )
                assert len(dropped) == 2  # one per page replica, whatever its number of streams
                await driver.pay(str(order["redirect_url"]))
                await start_all([crediting])
                rest = await statuses_until_the_end(stream)
        finally:
            stop_all([crediting])
    assert rest[-1]["status"] == "credited"
    assert page.log_events("order_changes_listen_lost")

    async def listening_again() -> bool:
        return await page.metric("evtopup_page_order_changes_listening") == 1

    await eventually(listening_again, 30, "the page never listened again")


@pytest.mark.timeout(120)
async def test_a_page_stops_promptly_with_streams_open(live_stack: tuple[Stack, list[ServiceProcess]]) -> None:
    stack, _ = live_stack
    third = ServiceProcess.replica("page", stack, 3)
    user_id = f"live-{uuid.uuid4().hex[:8]}"
    await start_all([third])
    try:
        async with aiohttp.ClientSession() as http:
            driver = Driver(stack, http, page_url=third.url())
            status, order = await driver.create_topup(user_id, {"package_id": "p10"})
            assert status == 201, order
            browser = await launched(driver, user_id, third.url())
            async with browser, browser.get(third.url(f"/topup/{order['id']}/events")) as stream:
                assert (await next_status(stream))["status"] == "pending"
                started = time.monotonic()
                assert stop_all([third]) == {"page-3": 0}
                assert time.monotonic() - started < 10  # not the server's 60 s wait for open requests
                assert await statuses_until_the_end(stream) == []  # the stream ended (the browser reconnects)
    finally:
        stop_all([third])
