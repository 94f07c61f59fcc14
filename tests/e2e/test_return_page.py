"""The return page following a top-up, through the real services: the server-sent events stream and
its JSON fallback (the driver's own top-ups only), the page without JavaScript (a bounded automatic
reload), and, in a real browser where one is installed, the page updating itself in place by the
stream, by polling when there is no EventSource, and by reloading when there is no JavaScript."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.page.messages import SOURCE
from tests.browser import conftest as browser_conftest
from tests.harness import Driver
from tests.sse import launched, read_event, statuses_until_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]


def user() -> str:
    return f"ret-{uuid.uuid4().hex[:10]}"


async def a_topup(driver: Driver, user_id: str) -> dict[str, Any]:
    status, order = await driver.create_topup(user_id, {"package_id": "p10"})
    assert status == 201, order
    return order


async def test_the_stream_follows_a_sandbox_topup_to_credited_and_ends(driver: Driver) -> None:
    user_id = user()
    order = await a_topup(driver, user_id)
    browser = await launched(driver, user_id)
    async with browser, browser.get(driver.stack.url("page", f"/topup/{order['id']}/events")) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["Cache-Control"] == "no-store" and stream.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in stream.headers  # every event at once, not a compressor's buffer
        assert await read_event(stream) == ("retry", 3000)
        kind, first = await read_event(stream)
        assert kind == "status" and first["status"] == "pending" and first["text"] == SOURCE["status_pending"]
        await driver.pay(order["redirect_url"])
        rest = await statuses_until_the_end(stream)
    # Paid may be overtaken by credited before the stream reads the order again; never anything else.
    assert [s["status"] for s in rest] in (["paid", "credited"], ["credited"])
    credited = rest[-1]
    assert credited["final"] and credited["back_to_app"] and credited["balance"] == "New balance: €10.00"


async def test_the_stream_and_the_poll_show_only_the_drivers_own_topup(driver: Driver) -> None:
    owner, other = user(), user()
    order = await a_topup(driver, owner)
    browser = await launched(driver, other)
    async with browser:
        for path in ("events", "status", "return"):
            async with browser.get(driver.stack.url("page", f"/topup/{order['id']}/{path}")) as response:
                assert response.status == 404, path
                assert str(order["id"]) not in await response.text()
    async with aiohttp.ClientSession() as stranger:  # no session at all
        for path in ("events", "status"):
            async with stranger.get(driver.stack.url("page", f"/topup/{order['id']}/{path}")) as response:
                assert response.status == 401, path
    browser = await launched(driver, owner)
    async with browser, browser.get(driver.stack.url("page", f"/topup/{order['id']}/status")) as response:
        assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
        assert (await response.json())["status"] == "pending"


async def test_without_javascript_the_page_reloads_itself_until_final(driver: Driver) -> None:
    user_id = user()
    order = await a_topup(driver, user_id)
    browser = await launched(driver, user_id)
    return_url = driver.stack.url("page", f"/topup/{order['id']}/return")
    async with browser:
        async with browser.get(return_url) as response:
            pending = await response.text()
            policy = response.headers["Content-Security-Policy"]
        reload = f'<noscript><meta http-equiv="refresh" content="5;url=/topup/{order["id"]}/return?refreshes=1">'
        assert reload in pending and 'href="/topup/' in pending  # and the Refresh link
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "<script>" not in pending and "style=" not in pending  # no inline code
        async with browser.get(driver.stack.url("page", "/static/return.js")) as script:
            assert script.status == 200 and script.content_type == "text/javascript"
        await driver.pay(order["redirect_url"])
        await driver.wait_status(user_id, order["id"], "credited")
        async with browser.get(f"{return_url}?refreshes=7") as response:
            credited = await response.text()
    assert 'data-status="credited"' in credited and 'http-equiv="refresh"' not in credited
    assert "return.js" not in credited and "testcpo://balance" in credited


# --- in a real browser ----------------------------------------------------------------------------------------


def chromium() -> str:
    # As tests/browser: skipped in a developer's plain run without Chromium, a failure in CI.
    path = browser_conftest._chromium()
    if path is None:
        browser_conftest.missing("no Chromium (apt-get install chromium)")
    assert path is not None
    return path


@pytest.fixture
async def real_browser() -> AsyncIterator[Any]:
    executable = chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def open_return_page(
    driver: Driver, real_browser: Any, user_id: str, order_id: str, **context: Any
) -> tuple[Any, list[str]]:
    """The driver's return page in a new browser context, and the errors its console shows."""
    page = await (await real_browser.new_context(**context)).new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []

    def console(message: Any) -> None:
        # The browser asks for /favicon.ico on its own; the page has none.
        if message.type == "error" and not str(message.location.get("url", "")).endswith("/favicon.ico"):
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", console)
    await page.goto(driver.stack.url("page", f"/topup?token={driver.token(user_id)}"))
    await page.goto(driver.stack.url("page", f"/topup/{order_id}/return"))
    return page, errors


async def test_in_a_browser_the_page_follows_the_stream_in_place(driver: Driver, real_browser: Any) -> None:
    user_id = user()
    order = await a_topup(driver, user_id)
    page, errors = await open_return_page(driver, real_browser, user_id, order["id"])
    await page.evaluate("window.notReloaded = true")
    assert await page.get_attribute("#status", "data-status") == "pending"
    assert not await page.is_visible("#back-to-app")
    await driver.pay(order["redirect_url"])
    await page.wait_for_selector('#status[data-status="credited"]')
    assert await page.evaluate("window.notReloaded === true")  # updated in place, not reloaded
    assert await page.text_content("#status") == SOURCE["status_credited"]
    assert await page.is_visible("#back-to-app") and await page.get_attribute("#back-to-app", "href") == (
        "testcpo://balance"
    )
    assert await page.text_content("#balance") == "New balance: €10.00"
    assert not await page.is_visible("#refresh")
    # Nothing took the focus; nothing was refused by the Content-Security-Policy.
    assert await page.evaluate("document.activeElement === document.body")
    assert errors == []


async def test_in_a_browser_without_eventsource_the_page_polls(driver: Driver, real_browser: Any) -> None:
    user_id = user()
    order = await a_topup(driver, user_id)
    page, _ = await open_return_page(driver, real_browser, user_id, order["id"])
    # The same page again, in a browser without EventSource.
    await page.add_init_script("delete window.EventSource")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith("/status") else None)
    await page.reload()
    await page.evaluate("window.notReloaded = true")
    await driver.pay(order["redirect_url"])
    await page.wait_for_selector('#status[data-status="credited"]')
    assert await page.evaluate("window.notReloaded === true")
    assert polls and await page.is_visible("#back-to-app")
    count = len(polls)
    await asyncio.sleep(5)
    assert len(polls) == count  # no more polling once final


async def test_in_a_browser_without_javascript_the_page_reloads_to_credited(driver: Driver, real_browser: Any) -> None:
    user_id = user()
    order = await a_topup(driver, user_id)
    page, _ = await open_return_page(driver, real_browser, user_id, order["id"], java_script_enabled=False)
    await driver.pay(order["redirect_url"])
    await page.wait_for_selector('#status[data-status="credited"]', timeout=30_000)
    assert "refreshes=" in page.url and await page.is_visible("#back-to-app")
