"""The whole top-up through the three services as real processes, over HTTP, on the real broker and
databases: what a driver does, what a processor does, and what must hold for the money."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Driver, ServiceProcess, Stack, eventually, fetch
from tests.simulators.sandbox import send_webhook, signature_header, webhook_body

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]


def user() -> str:
    return f"driver-{uuid.uuid4().hex[:10]}"


async def sandbox_reference(stack: Stack, order_id: str) -> tuple[str, int]:
    rows = await fetch(
        stack.dsn("payments"),
        "SELECT processor_reference, charge_minor FROM payments WHERE order_id = $1",
        uuid.UUID(order_id),
    )
    return rows[0]["processor_reference"], rows[0]["charge_minor"]


def webhook_url(stack: Stack) -> str:
    return stack.url("payments", "/webhooks/sandbox_main")


async def processor_says(driver: Driver, order_id: str, status: str, amount_delta_minor: int = 0) -> int:
    """The processor's signed webhook about this order's payment; returns our HTTP status."""
    reference, charge_minor = await sandbox_reference(driver.stack, order_id)
    body = webhook_body(reference, status, charge_minor + amount_delta_minor, "EUR")
    return await send_webhook(driver.http, webhook_url(driver.stack), driver.stack.webhook_secret, body)


async def payment_status(stack: Stack, order_id: str) -> str:
    rows = await fetch(stack.dsn("payments"), "SELECT status FROM payments WHERE order_id = $1", uuid.UUID(order_id))
    return str(rows[0]["status"])


async def transfers_for(stack: Stack, order_id: str) -> int:
    rows = await fetch(
        stack.dsn("crediting"), "SELECT count(*) AS n FROM transfers WHERE order_id = $1", uuid.UUID(order_id)
    )
    return int(rows[0]["n"])


async def a_later_topup_is_credited(driver: Driver, user_id: str) -> int:
    """The positive barrier for "nothing else happened": a later top-up of the same driver goes through
    the same webhook endpoint, outbox, queues and consumers, so once it is credited, whatever an earlier
    action set off has been through them too. Returns what it credited, to add to the expected balance."""
    status, order = await driver.create_topup(user_id, {"package_id": "p10"})
    assert status == 201, order
    await driver.pay(order["redirect_url"])
    await driver.wait_status(user_id, order["id"], "credited")
    return 1000


async def test_paid_package_credits_amount_plus_bonus_once(driver: Driver) -> None:
    user_id = user()
    status, order = await driver.create_topup(user_id, {"package_id": "p25"})
    assert status == 201, order
    assert order["status"] == "pending"
    assert (order["amount_minor"], order["bonus_minor"], order["fee_minor"], order["currency"]) == (2500, 150, 0, "EUR")
    assert order["redirect_url"].startswith(driver.stack.url("payments", "/sandbox/checkout/"))

    return_url = await driver.pay(order["redirect_url"])
    assert return_url == driver.stack.url("page", f"/topup/{order['id']}/return")
    credited = await driver.wait_status(user_id, order["id"], "credited")
    assert credited["balance_minor"] == 2650
    assert await driver.balance(user_id) == 2650

    # Pressing Pay again changes nothing: no second webhook, no second credit.
    await driver.pay(order["redirect_url"])
    later = await a_later_topup_is_credited(driver, user_id)
    assert await driver.balance(user_id) == 2650 + later
    assert await transfers_for(driver.stack, order["id"]) == 1


async def test_custom_amount_with_method_fee_charges_fee_and_credits_amount(driver: Driver) -> None:
    user_id = user()
    status, order = await driver.create_topup(user_id, {"amount_minor": 1000, "method": "wallet"})
    assert status == 201, order
    assert order["fee_minor"] == 25 + 20  # fixed 25 + 2 % of 1000
    _, charge_minor = await sandbox_reference(driver.stack, order["id"])
    assert charge_minor == 1045
    await driver.pay(order["redirect_url"])
    await driver.wait_status(user_id, order["id"], "credited")
    assert await driver.balance(user_id) == 1000
    fees = await fetch(
        driver.stack.dsn("crediting"),
        "SELECT sum(p.amount_minor) AS s FROM postings p JOIN transfers t ON t.id = p.transfer_id"
        " WHERE p.account = 'revenue:fees' AND t.order_id = $1",
        uuid.UUID(order["id"]),
    )
    assert fees[0]["s"] == 45


async def test_declined_payment_fails_the_order_and_credits_nothing(driver: Driver) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    await driver.pay(order["redirect_url"], outcome="failed")
    failed = await driver.wait_status(user_id, order["id"], "failed")
    assert "balance_minor" not in failed
    later = await a_later_topup_is_credited(driver, user_id)
    assert await driver.balance(user_id) == later
    assert await transfers_for(driver.stack, order["id"]) == 0


async def test_return_page_shows_live_status_then_balance(driver: Driver) -> None:
    user_id = user()
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as browser:  # its own cookie jar, like the driver's phone
        async with browser.get(driver.stack.url("page", f"/topup?token={driver.token(user_id, 'bg-BG')}")) as launch:
            assert launch.status == 200
            assert str(launch.url) == driver.stack.url("page", "/topup")  # token gone from the address
            assert launch.headers["Referrer-Policy"] == "no-referrer"
            assert launch.headers["Cache-Control"] == "no-store"
            page = await launch.text()
        assert "Заредете баланса си" in page
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        key = page.split('name="idempotency_key" value="')[1].split('"')[0]
        form = {"csrf_token": csrf, "idempotency_key": key, "package_id": "p10", "method": "card"}
        async with browser.post(driver.stack.url("page", "/topup"), data=form, allow_redirects=False) as submitted:
            assert submitted.status == 303
            checkout = submitted.headers["Location"]
        # A double click posts the same form again: the same order, the same checkout.
        async with browser.post(driver.stack.url("page", "/topup"), data=form, allow_redirects=False) as again:
            assert again.headers["Location"] == checkout
        async with browser.get(checkout) as hosted:
            assert "Pay" in await hosted.text()
        return_url = await Driver(driver.stack, browser).pay(checkout)
        order_id = return_url.rsplit("/", 2)[1]

        async def credited_page() -> str | None:
            async with browser.get(return_url) as response:
                text = await response.text()
                return text if 'data-status="credited"' in text else None

        text = await eventually(credited_page, 30, "return page never showed credited")
        assert "10,00" in text and "testcpo://balance" in text
        assert 'http-equiv="refresh"' not in text
    rows = await fetch(driver.stack.dsn("page"), "SELECT count(*) AS n FROM orders WHERE user_id = $1", user_id)
    assert rows[0]["n"] == 1  # the double click made one order
    assert str(uuid.UUID(order_id)) == order_id


async def test_same_webhook_five_times_and_concurrently_credits_once(driver: Driver) -> None:
    stack = driver.stack
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    reference, charge_minor = await sandbox_reference(stack, order["id"])
    body = webhook_body(reference, "succeeded", charge_minor, "EUR")
    for _ in range(5):
        assert await send_webhook(driver.http, webhook_url(stack), stack.webhook_secret, body) == 200
    statuses = await asyncio.gather(
        *(send_webhook(driver.http, webhook_url(stack), stack.webhook_secret, body) for _ in range(10))
    )
    assert set(statuses) == {200}
    # The same success under new event ids (a processor resending differently) is still one credit.
    other_events = [webhook_body(reference, "succeeded", charge_minor, "EUR") for _ in range(5)]
    await asyncio.gather(
        *(send_webhook(driver.http, webhook_url(stack), stack.webhook_secret, b) for b in other_events)
    )
    await driver.wait_status(user_id, order["id"], "credited")
    later = await a_later_topup_is_credited(driver, user_id)
    assert await driver.balance(user_id) == 1000 + later
    assert await transfers_for(stack, order["id"]) == 1


async def test_reordered_failure_after_success_never_moves_back(driver: Driver) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    assert await processor_says(driver, order["id"], "succeeded") == 200
    assert await processor_says(driver, order["id"], "failed") == 200
    await driver.wait_status(user_id, order["id"], "credited")
    assert await payment_status(driver.stack, order["id"]) == "succeeded"
    assert await driver.balance(user_id) == 1000


async def test_late_success_after_failure_is_credited(driver: Driver) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    assert await processor_says(driver, order["id"], "failed") == 200
    await driver.wait_status(user_id, order["id"], "failed")
    assert await processor_says(driver, order["id"], "succeeded") == 200
    await driver.wait_status(user_id, order["id"], "credited")
    assert await driver.balance(user_id) == 1000


async def test_success_for_a_different_amount_is_held_for_review_not_credited(driver: Driver) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    assert await processor_says(driver, order["id"], "succeeded", amount_delta_minor=-1) == 200
    await driver.wait_status(user_id, order["id"], "under_review")
    assert await payment_status(driver.stack, order["id"]) == "needs_review"
    assert await driver.balance(user_id) == 0


@pytest.mark.parametrize(
    "case",
    ["forged", "stale", "future", "missing", "other_integration_secret", "tampered_body"],
)
async def test_bad_signature_is_refused_and_changes_nothing(driver: Driver, case: str) -> None:
    stack = driver.stack
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    reference, charge_minor = await sandbox_reference(stack, order["id"])
    body = webhook_body(reference, "succeeded", charge_minor, "EUR")
    now = int(time.time())
    kwargs: dict[str, Any] = {}
    secret = stack.webhook_secret
    if case == "forged":
        secret = "not-the-secret"
    elif case == "stale":
        kwargs["timestamp"] = now - 301
    elif case == "future":
        kwargs["timestamp"] = now + 301
    elif case == "missing":
        kwargs["signature"] = ""
    elif case == "other_integration_secret":
        secret = stack.settings.integrations["sandbox_trial"].webhook_secret.get_secret_value()
    elif case == "tampered_body":
        kwargs["signature"] = signature_header(secret, body, now)
        body = body.replace(str(charge_minor).encode(), str(charge_minor * 100).encode())
    status = await send_webhook(driver.http, webhook_url(stack), secret, body, **kwargs)
    assert status == 401
    _, current = await driver.get_topup(user_id, order["id"])
    assert current["status"] == "pending"
    events = await fetch(
        stack.dsn("payments"), "SELECT 1 FROM processor_events WHERE processor_reference = $1", reference
    )
    assert events == []
    # The barrier: the processor's genuine webhook for the same payment, sent after the refused one,
    # is credited; by then the refused one would have shown up had it got anywhere. It did not: the
    # payment was credited once, for what was charged, from the genuine event alone.
    genuine = webhook_body(reference, "succeeded", charge_minor, "EUR")
    assert await send_webhook(driver.http, webhook_url(stack), stack.webhook_secret, genuine) == 200
    await driver.wait_status(user_id, order["id"], "credited")
    assert await payment_status(stack, order["id"]) == "succeeded"
    assert await driver.balance(user_id) == 1000
    assert await transfers_for(stack, order["id"]) == 1
    events = await fetch(
        stack.dsn("payments"), "SELECT event_id FROM processor_events WHERE processor_reference = $1", reference
    )
    recorded = {e["event_id"] for e in events}
    assert json.loads(genuine)["id"] in recorded
    assert json.loads(body)["id"] not in recorded  # the refused event was never recorded, even late


async def test_webhook_for_unknown_integration_or_malformed_body(driver: Driver) -> None:
    stack = driver.stack
    body = webhook_body("sbx_nope", "succeeded", 100, "EUR")
    status = await send_webhook(driver.http, stack.url("payments", "/webhooks/nope"), stack.webhook_secret, body)
    assert status == 404
    status = await send_webhook(driver.http, webhook_url(stack), stack.webhook_secret, b'{"id": "evt_x", "type": "x"}')
    assert status == 400
    # Signed and well formed but for a payment we never made: accepted and recorded, nothing credited.
    assert await send_webhook(driver.http, webhook_url(stack), stack.webhook_secret, body) == 200
    rows = await fetch(
        stack.dsn("payments"), "SELECT outcome FROM processor_events WHERE processor_reference = 'sbx_nope'"
    )
    assert [r["outcome"] for r in rows] == ["unknown_payment"]


async def test_lost_webhook_is_healed_by_polling(driver: Driver, stack: Stack) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    reference, _ = await sandbox_reference(stack, order["id"])
    # The processor takes the money but its webhook never arrives.
    await fetch(
        stack.dsn("payments"), "UPDATE sandbox_checkouts SET status = 'succeeded' WHERE reference = $1", reference
    )
    await driver.wait_status(user_id, order["id"], "credited", timeout_s=30)
    assert await driver.balance(user_id) == 1000


async def test_two_hundred_topups_from_twenty_users_in_parallel_all_credit_exactly(driver: Driver) -> None:
    users = [user() for _ in range(20)]
    packages = {"p10": 1000, "p25": 2650}
    expected: dict[str, int] = dict.fromkeys(users, 0)
    semaphore = asyncio.Semaphore(40)

    async def one(i: int) -> str:
        user_id = users[i % len(users)]
        package = "p10" if i % 3 else "p25"
        async with semaphore:
            status, order = await driver.create_topup(user_id, {"package_id": package})
            assert status == 201, order
            await driver.pay(order["redirect_url"])
        expected[user_id] += packages[package]
        return str(order["id"])

    order_ids = await asyncio.gather(*(one(i) for i in range(200)))
    assert len(set(order_ids)) == 200

    async def all_credited() -> bool:
        rows = await fetch(
            driver.stack.dsn("page"),
            "SELECT count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) AND status = 'credited'",
            [uuid.UUID(i) for i in order_ids],
        )
        return rows[0]["n"] == 200

    await eventually(all_credited, 120, "not all 200 top-ups were credited")
    balances = {u: await driver.balance(u) for u in users}
    assert balances == expected
    rows = await fetch(
        driver.stack.dsn("crediting"),
        "SELECT count(*) AS n, count(DISTINCT payment_id) AS d FROM transfers WHERE order_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in order_ids],
    )
    assert rows[0]["n"] == rows[0]["d"] == 200


async def test_test_integration_serves_only_allow_listed_users(driver: Driver) -> None:
    _, order = await driver.create_topup("tester-1", {"package_id": "p10", "method": "card"})
    rows = await fetch(
        driver.stack.dsn("page"), "SELECT integration_id FROM orders WHERE id = $1", uuid.UUID(order["id"])
    )
    assert rows[0]["integration_id"] == "sandbox_trial"
    status, body = await driver.create_topup("tester-1", {"package_id": "p10", "method": "wallet"})
    assert status == 422 and body["field"] == "method"  # the trial integration offers card only
    _, order = await driver.create_topup(user(), {"package_id": "p10"})
    rows = await fetch(
        driver.stack.dsn("page"), "SELECT integration_id FROM orders WHERE id = $1", uuid.UUID(order["id"])
    )
    assert rows[0]["integration_id"] == "sandbox_main"


def metric_samples(text: str, sample_name: str, **labels: str) -> list[float]:
    """The values of ``sample_name`` samples whose labels include ``labels``, parsed as Prometheus text."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and labels.items() <= sample.labels.items()
    ]


async def test_services_answer_health_readiness_and_metrics(
    driver: Driver, stack: Stack, services: dict[str, ServiceProcess]
) -> None:
    async def credits_applied() -> float:
        async with driver.http.get(stack.internal_url("crediting", "/metrics")) as response:
            assert response.status == 200
            return sum(metric_samples(await response.text(), "evtopup_credits_applied_total", currency="EUR"))

    before = await credits_applied()
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    await driver.pay(order["redirect_url"])
    await driver.wait_status(user_id, order["id"], "credited")
    assert await credits_applied() >= before + 1  # this test's own credit was counted
    assert await driver.balance(user_id) == 1000  # and crediting served a request

    async with aiohttp.ClientSession() as http:
        for name in services:
            for path in ("/healthz", "/readyz"):
                async with http.get(stack.internal_url(name, path)) as response:
                    assert response.status == 200
            async with http.get(stack.internal_url(name, "/metrics")) as response:
                text = await response.text()
            # Every service served this test's top-up over HTTP (payments its webhook, crediting the balance).
            assert sum(metric_samples(text, "evtopup_http_requests_total")) > 0, name
            # Volumes are not for drivers or processors: nothing of this on the public port.
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(stack.url(name, path)) as response:
                    assert response.status == 404


async def test_unpaid_checkout_expires_and_cannot_be_paid_late(driver: Driver, stack: Stack) -> None:
    user_id = user()
    _, order = await driver.create_topup(user_id, {"package_id": "p10"})
    reference, _ = await sandbox_reference(stack, order["id"])
    await fetch(
        stack.dsn("payments"),
        "UPDATE sandbox_checkouts SET created_at = now() - interval '2 hours' WHERE reference = $1",
        reference,
    )
    # Nobody paid: the poller asks the processor, which says expired; the order follows.
    await driver.wait_status(user_id, order["id"], "expired", timeout_s=30)
    await driver.pay(order["redirect_url"])  # too late: the hosted page no longer takes it
    later = await a_later_topup_is_credited(driver, user_id)
    _, current = await driver.get_topup(user_id, order["id"])
    assert current["status"] == "expired"
    assert await driver.balance(user_id) == later


async def test_correlation_id_follows_a_topup_through_all_three_services(
    driver: Driver, services: dict[str, ServiceProcess]
) -> None:
    user_id, correlation_id = user(), f"corr-{uuid.uuid4().hex}"
    async with driver.http.post(
        driver.stack.url("page", "/api/v1/topups"),
        json={"package_id": "p10"},
        headers={
            "Authorization": f"Bearer {driver.token(user_id)}",
            "Idempotency-Key": str(uuid.uuid4()),
            "X-Correlation-Id": correlation_id,
        },
    ) as response:
        order = await response.json()
    await driver.pay(order["redirect_url"])
    await driver.wait_status(user_id, order["id"], "credited")

    def logged_everywhere() -> bool:
        return all(
            any(
                correlation_id in path.read_text(errors="replace")
                for path in driver.stack.log_dir.glob(f"{name}.*.log")
            )
            for name in services
        )

    await eventually(lambda: asyncio.sleep(0, logged_everywhere()), 10, "correlation id missing from a service's logs")
