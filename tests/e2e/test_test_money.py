"""Test money and prices, on the real services: a Test integration's payment is credited only to
the tester's test balance, never a real one; payments prices a checkout from its own configuration
and refuses a test integration for anyone outside its list, whatever the page (or anyone who can
reach the RPC queue) asks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from shared import amqp
from tests.harness import Driver, Stack, fetch

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]


async def balance(driver: Driver, user_id: str, environment: str) -> int:
    async with driver.http.get(
        driver.stack.url("crediting", f"/api/v1/users/{user_id}/balance"),
        params={"environment": environment},
        headers={"Authorization": f"Bearer {driver.stack.api_token}"},
    ) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["environment"] == environment
        return int(body["balance_minor"])


async def test_a_testers_payment_is_test_money_only(driver: Driver, stack: Stack) -> None:
    status, order = await driver.create_topup("tester-1", {"package_id": "p25", "method": "card"})
    assert status == 201, order
    before = await balance(driver, "tester-1", "test")
    real_before = await balance(driver, "tester-1", "production")
    await driver.pay(order["redirect_url"])
    await driver.wait_status("tester-1", order["id"], "credited")

    assert await balance(driver, "tester-1", "test") == before + 2650
    assert await balance(driver, "tester-1", "production") == real_before
    transfer = await fetch(
        stack.dsn("crediting"), "SELECT id, environment FROM transfers WHERE order_id = $1", uuid.UUID(order["id"])
    )
    assert [r["environment"] for r in transfer] == ["test"]
    accounts = await fetch(
        stack.dsn("crediting"), "SELECT DISTINCT account FROM postings WHERE transfer_id = $1", transfer[0]["id"]
    )
    assert {r["account"] for r in accounts} == {
        "test:processor:sandbox_trial",
        "test:user:tester-1",
        "test:expense:bonus",
    }
    environment = await fetch(
        stack.dsn("payments"), "SELECT environment FROM payments WHERE order_id = $1", uuid.UUID(order["id"])
    )
    assert environment[0]["environment"] == "test"


async def test_balance_api_refuses_an_unknown_environment(driver: Driver) -> None:
    async with driver.http.get(
        driver.stack.url("crediting", "/api/v1/users/someone/balance"),
        params={"environment": "staging"},
        headers={"Authorization": f"Bearer {driver.stack.api_token}"},
    ) as response:
        assert response.status == 400


@pytest.fixture
async def rpc(stack: Stack) -> AsyncIterator[amqp.RpcClient]:
    client = amqp.RpcClient(stack.settings.amqp, "page")
    yield client
    await client.close()


def checkout(user_id: str, integration_id: str, **request: object) -> dict[str, object]:
    return {
        "order_id": str(uuid.uuid4()),
        "user_id": user_id,
        "integration_id": integration_id,
        "method": "card",
        "return_url": "http://127.0.0.1/return",
        **request,
    }


async def test_payments_refuses_a_test_integration_for_anyone_outside_its_list(rpc: amqp.RpcClient) -> None:
    with pytest.raises(amqp.RpcError) as refused:
        await rpc.call(amqp.CHECKOUT_RPC_QUEUE, checkout("driver-x", "sandbox_trial", package_id="p10"))
    assert refused.value.code == "wrong_integration"
    # ... nor the production integration for a tester, whom the test integration serves.
    with pytest.raises(amqp.RpcError) as refused:
        await rpc.call(amqp.CHECKOUT_RPC_QUEUE, checkout("tester-1", "sandbox_main", package_id="p10"))
    assert refused.value.code == "wrong_integration"


async def test_payments_prices_from_its_own_configuration(rpc: amqp.RpcClient, stack: Stack) -> None:
    # Whatever numbers a caller adds, the charge is the price list's: p25 is 2500 + 150 bonus, and
    # the wallet fee is 25 + 2 % of 2500.
    request = checkout("driver-y", "sandbox_main", package_id="p25", method="wallet")
    reply = await rpc.call(
        amqp.CHECKOUT_RPC_QUEUE, {**request, "amount_minor": None, "bonus_minor": 99_999, "fee_minor": 0}
    )
    assert (reply["amount_minor"], reply["bonus_minor"], reply["fee_minor"], reply["currency"]) == (
        2500,
        150,
        75,
        "EUR",
    )
    rows = await fetch(
        stack.dsn("payments"),
        "SELECT amount_minor, bonus_minor, fee_minor, charge_minor FROM payments WHERE order_id = $1",
        uuid.UUID(str(request["order_id"])),
    )
    assert tuple(rows[0]) == (2500, 150, 75, 2575)
    with pytest.raises(amqp.RpcError) as refused:
        await rpc.call(amqp.CHECKOUT_RPC_QUEUE, checkout("driver-y", "sandbox_main", amount_minor=1))
    assert refused.value.code == "invalid_topup"
    async with aiohttp.ClientSession() as http, http.get(str(reply["redirect_url"])) as page:
        assert "25.75" in await page.text()


async def test_every_page_tells_a_tester_that_no_real_money_moves(driver: Driver) -> None:
    banner = 'id="test-banner"'
    pages = {}
    for user_id in ("tester-1", f"driver-{uuid.uuid4().hex[:8]}"):
        # Cookies for 127.0.0.1 are refused by aiohttp's default jar.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(driver.stack.url("page", f"/topup?token={driver.token(user_id)}")) as response:
                assert response.status == 200
                form = await response.text()
            status, order = await driver.create_topup(user_id, {"package_id": "p10", "method": "card"})
            assert status == 201, order
            async with browser.get(driver.stack.url("page", f"/topup/{order['id']}/return")) as response:
                returned = await response.text()
        pages[user_id] = (banner in form, banner in returned)
    assert pages == {"tester-1": (True, True), next(u for u in pages if u != "tester-1"): (False, False)}
