"""The return page's live status without a database or a broker: what the page says for each order
(the same for its first render, the stream and the poll), the server-sent events' wire format, the
automatic reload without JavaScript, the per-process fan-out of changes to the streams, and the
stream endpoint itself over a stand-in store (what it sends, when it ends, who it refuses)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.page import api, events, pages, store
from services.page.domain import OrderStatus
from services.page.events import (
    OrderChanges,
    StatusView,
    TooManyStreams,
    noscript_refresh,
    sse_comment,
    sse_event,
    sse_retry,
    status_message,
    status_view,
)
from services.page.i18n import Translator
from services.page.launch import SESSION_COOKIE, Session, encode_session
from services.page.messages import SOURCE
from services.page.open_launch import LaunchLimits
from shared.amqp import RpcClient
from shared.http import service_middleware
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings, load_settings
from tests.sse import read_event

REPO = Path(__file__).resolve().parents[2]
LAUNCH_SECRET = "launch-secret-0123456789abcdefghijklmnop"
SECRETS = {
    "EVTOPUP__LAUNCH__SECRET": LAUNCH_SECRET,
    "EVTOPUP__CREDITING__API_TOKEN": "crediting-token-value",
    "EVTOPUP__AMQP__PASSWORD": "amqp-password-value",
    "EVTOPUP__AMQP__PAGE_PASSWORD": "amqp-page-password",
    "EVTOPUP__AMQP__PAYMENTS_PASSWORD": "amqp-payments-password",
    "EVTOPUP__AMQP__CREDITING_PASSWORD": "amqp-crediting-password",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY": "sandbox-api-key-value",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET": "sandbox-webhook-secret-value",
}
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DRIVER = "driver-1"


def order(**overrides: Any) -> store.Order:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": DRIVER,
        "request_hash": "h",
        "package_id": "p10",
        "amount_minor": 1000,
        "bonus_minor": 0,
        "fee_minor": 0,
        "currency": "EUR",
        "method": "card",
        "integration_id": "sandbox_demo",
        "status": OrderStatus.PENDING,
        "redirect_url": "https://pay.example/1",
        "balance_minor": None,
        "correlation_id": "c",
        "payment_id": uuid.uuid4(),
        "created_at": NOW - timedelta(minutes=1),
    }
    fields.update(overrides)
    return store.Order(**fields)


def view(o: store.Order, show_balance: bool = True, now: datetime = NOW) -> StatusView:
    return status_view(o, show_balance=show_balance, now=now, checkout_deadline_s=15)


# --- what the page says for an order --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "next_key", "final", "follow", "back_to_app", "try_again"),
    [
        (OrderStatus.PENDING, "next_pending", False, True, False, False),
        (OrderStatus.PAID, "next_paid", False, True, False, False),
        (OrderStatus.CREDITED, None, True, False, True, False),
        (OrderStatus.FAILED, "next_failed", True, False, True, True),
        (OrderStatus.EXPIRED, "next_expired", True, False, True, True),
        # An operator decides: nothing to reload for, but the stream follows (it may be credited).
        (OrderStatus.UNDER_REVIEW, "next_under_review", False, False, True, False),
        (OrderStatus.REFUNDED, "next_refunded", True, False, True, True),
    ],
)
def test_each_status_says_what_happened_and_what_to_do(
    status: OrderStatus, next_key: str | None, final: bool, follow: bool, back_to_app: bool, try_again: bool
) -> None:
    shown = view(order(status=status))
    assert shown.status == status.value and shown.text_key == f"status_{status.value}"
    assert shown.text_key in SOURCE and (next_key is None or next_key in SOURCE)
    assert (shown.next_key, shown.final, shown.follow) == (next_key, final, follow)
    assert (shown.back_to_app, shown.try_again) == (back_to_app, try_again)


def test_a_prompt_on_the_phone_asks_to_approve_the_amount_and_fee_there() -> None:
    shown = view(order(redirect_url=None, fee_minor=20))
    assert (shown.status, shown.text_key, shown.text_amount_minor, shown.next_key) == (
        "pending",
        "status_pending_phone",
        1020,
        None,
    )
    assert shown.follow and not shown.final
    # Once paid, as any payment.
    assert view(order(redirect_url=None, status=OrderStatus.PAID)).text_key == "status_paid"
    failed = view(order(redirect_url=None, status=OrderStatus.FAILED))
    assert failed.text_key == "status_failed" and failed.next_key == "next_failed"


def test_an_order_whose_checkout_never_came_says_so_once_the_checkout_had_its_time() -> None:
    made = NOW - timedelta(seconds=10)
    waiting = order(payment_id=None, redirect_url=None, created_at=made)
    assert view(waiting).status == "pending"  # the checkout may still be on its way
    late = view(waiting, now=made + timedelta(seconds=16))
    assert (late.status, late.text_key, late.next_key) == ("not_started", "status_not_started", "next_not_started")
    assert late.try_again and late.back_to_app and not late.follow and not late.final
    # A late success for it still counts: the order follows its status as any other.
    assert view(replace(waiting, status=OrderStatus.PAID), now=made + timedelta(hours=1)).status == "paid"
    # No time known (an order from before created_at was read): never judged late.
    assert view(replace(waiting, created_at=None), now=made + timedelta(hours=1)).status == "pending"


def test_the_balance_only_where_shown_and_once_known() -> None:
    credited = order(status=OrderStatus.CREDITED, balance_minor=123_456)
    assert view(credited).balance_minor == 123_456
    assert view(credited, show_balance=False).balance_minor is None
    assert view(replace(credited, balance_minor=None)).balance_minor is None


def test_the_message_carries_every_text_in_the_drivers_language() -> None:
    credited = order(status=OrderStatus.CREDITED, balance_minor=123_456)
    message = status_message(view(credited), Translator("en"), "EUR")
    assert message == {
        "status": "credited",
        "final": True,
        "text": SOURCE["status_credited"],
        "next": None,
        "balance": "New balance: €1,234.56",
        "follow": False,
        "back_to_app": True,
        "try_again": False,
    }
    bulgarian = status_message(view(credited), Translator("bg"), "EUR")
    assert bulgarian["text"] == Translator("bg")("status_credited") and "1\xa0234,56\xa0€" in str(bulgarian["balance"])
    prompt = status_message(view(order(redirect_url=None, fee_minor=20)), Translator("en"), "EUR")
    assert prompt["text"] == SOURCE["status_pending_phone"].format(amount="€10.20") and prompt["next"] is None
    hidden = status_message(view(credited, show_balance=False), Translator("en"), "EUR")
    assert hidden["balance"] is None and "1,234.56" not in json.dumps(hidden)


# --- server-sent events on the wire ---------------------------------------------------------------------


def test_an_event_is_its_type_and_its_data_on_one_line() -> None:
    data = {"status": "paid", "text": "two\nlines\r\nand: a colon", "balance": "1 234,56 €"}
    wire = sse_event("status", data)
    assert wire.endswith(b"\n\n") and wire.count(b"\n") == 3
    lines = wire.decode().split("\n")
    assert lines[0] == "event: status" and lines[1].startswith("data: ")
    assert json.loads(lines[1].removeprefix("data: ")) == data
    assert "1 234,56 €" in wire.decode()  # UTF-8, not escaped


def test_comments_and_retry() -> None:
    assert sse_comment("heartbeat") == b": heartbeat\n\n"
    assert sse_comment("a\nb") == b": a b\n\n"  # a newline would end the comment
    assert sse_retry(3000) == b"retry: 3000\n\n"


# --- without JavaScript: a bounded automatic reload -----------------------------------------------------------


def test_a_page_without_javascript_reloads_itself_while_a_change_is_expected() -> None:
    pending = view(order())
    assert noscript_refresh(pending, None) == 1
    assert noscript_refresh(pending, "7") == 8
    assert noscript_refresh(pending, str(events.NOSCRIPT_MAX_REFRESHES - 1)) == events.NOSCRIPT_MAX_REFRESHES
    # After its ten minutes, or when the driver asked it to stop, or for anything else: no reload.
    for refreshes in (str(events.NOSCRIPT_MAX_REFRESHES), "stop", "-1", "1e3", ""):
        assert noscript_refresh(pending, refreshes) is None, refreshes
    for status in (OrderStatus.CREDITED, OrderStatus.FAILED, OrderStatus.UNDER_REVIEW, OrderStatus.REFUNDED):
        assert noscript_refresh(view(order(status=status)), None) is None
    assert noscript_refresh(view(order(status=OrderStatus.PAID)), "3") == 4


# --- one LISTEN per process, fanned out to the streams ------------------------------------------------------


async def test_a_notification_wakes_the_streams_following_that_order_only() -> None:
    changes = OrderChanges("postgresql://unused@127.0.0.1/none", max_streams=3)
    first, second = uuid.uuid4(), uuid.uuid4()
    with changes.follow(first) as a, changes.follow(first) as b, changes.follow(second) as c:
        assert changes.streams == 3
        changes.notified(str(first))
        assert a.is_set() and b.is_set() and not c.is_set()
        changes.notified("not an order id")  # ignored
        changes.notified(str(uuid.uuid4()))  # nobody follows it
        with pytest.raises(TooManyStreams), changes.follow(uuid.uuid4()):
            pass
    assert changes.streams == 0
    with changes.follow(second) as again:
        changes.wake_all()
        assert again.is_set()
        await changes.close()
        with pytest.raises(TooManyStreams), changes.follow(second):
            pass  # a stopping process takes no new stream


# --- the endpoints over a stand-in store ----------------------------------------------------------------------


class FakeOrders:
    def __init__(self) -> None:
        self.orders: dict[uuid.UUID, store.Order] = {}
        self.reads = 0

    async def get_order(self, _pool: object, order_id: uuid.UUID, user_id: str) -> store.Order | None:
        self.reads += 1
        found = self.orders.get(order_id)
        return found if found is not None and found.user_id == user_id else None

    def put(self, o: store.Order) -> store.Order:
        self.orders[o.id] = o
        return o


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(REPO / "config" / "demo.toml", SECRETS)


@pytest.fixture
def orders(monkeypatch: pytest.MonkeyPatch) -> FakeOrders:
    fake = FakeOrders()
    monkeypatch.setattr(store, "get_order", fake.get_order)
    return fake


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(settings: Settings, orders: FakeOrders) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[service_middleware("page")])
    app[SETTINGS_KEY] = settings
    app[POOL_KEY] = cast(Any, None)
    app[api.RPC_KEY] = cast(RpcClient, None)
    app[pages.LIMITS_KEY] = LaunchLimits.default()
    changes = OrderChanges("postgresql://unused@127.0.0.1/none", max_streams=2)
    changes.listening = True  # as if its connection were listening (none is opened here)
    app[events.CHANGES_KEY] = changes
    app.on_shutdown.append(changes.close)
    pages.add_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        test_client.session.cookie_jar.update_cookies(session_cookie(DRIVER))
        yield test_client


def session_cookie(user_id: str) -> dict[str, str]:
    session = Session(user_id, "en", "csrf", int(time.time()) - 10)
    return {SESSION_COOKIE: encode_session(LAUNCH_SECRET, session)}


async def test_the_stream_sends_the_status_then_each_change_and_ends_when_final(
    client: Client, orders: FakeOrders
) -> None:
    topup = orders.put(order())
    changes = client.app[events.CHANGES_KEY]
    async with client.get(f"/topup/{topup.id}/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await read_event(response) == ("retry", 3000)
        kind, first = await read_event(response)
        assert kind == "status" and first == status_message(view(topup, now=datetime.now(UTC)), Translator("en"), "EUR")
        assert changes.streams == 1
        orders.put(replace(topup, status=OrderStatus.PAID))
        changes.notified(str(topup.id))
        _, paid = await read_event(response)
        assert isinstance(paid, dict) and paid["status"] == "paid" and paid["text"] == SOURCE["status_paid"]
        # A notification that changed nothing the page shows sends nothing.
        changes.notified(str(topup.id))
        orders.put(replace(topup, status=OrderStatus.CREDITED, balance_minor=5000))
        changes.notified(str(topup.id))
        _, credited = await read_event(response)
        assert isinstance(credited, dict)
        assert credited["final"] and credited["balance"] == "New balance: €50.00" and credited["back_to_app"]
        with pytest.raises(EOFError):
            await read_event(response)
    await asyncio.sleep(0.05)
    assert changes.streams == 0


async def test_the_stream_of_a_final_order_is_its_status_only(client: Client, orders: FakeOrders) -> None:
    topup = orders.put(order(status=OrderStatus.FAILED))
    async with client.get(f"/topup/{topup.id}/events") as response:
        assert await read_event(response) == ("retry", 3000)
        _, failed = await read_event(response)
        assert isinstance(failed, dict) and failed["status"] == "failed" and failed["try_again"]
        with pytest.raises(EOFError):
            await read_event(response)


async def test_without_a_notification_the_stream_reads_again_and_beats(
    client: Client, orders: FakeOrders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "REREAD_S", 0.2)
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.3)
    topup = orders.put(order())
    async with client.get(f"/topup/{topup.id}/events") as response:
        await read_event(response)  # retry
        await read_event(response)
        assert await read_event(response) == ("comment", "heartbeat")
        orders.put(replace(topup, status=OrderStatus.EXPIRED))  # a change nobody was told of
        _, expired = await read_event(response)
        assert isinstance(expired, dict) and expired["status"] == "expired"


async def test_the_stream_ends_after_its_life(
    client: Client, orders: FakeOrders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "STREAM_LIFETIME_S", 0.3)
    topup = orders.put(order())
    async with client.get(f"/topup/{topup.id}/events") as response:
        await read_event(response)  # retry
        await read_event(response)
        with pytest.raises(EOFError):
            await read_event(response)


async def test_only_the_drivers_own_order_and_only_with_a_session(client: Client, orders: FakeOrders) -> None:
    someone_elses = orders.put(order(user_id="driver-2"))
    for path in ("events", "status"):
        async with client.get(f"/topup/{someone_elses.id}/{path}") as response:
            assert response.status == 404
        async with client.get(f"/topup/{uuid.uuid4()}/{path}") as response:
            assert response.status == 404
        async with client.get(f"/topup/not-an-id/{path}") as response:
            assert response.status == 404
    mine = orders.put(order())
    client.session.cookie_jar.clear()
    for path in ("events", "status"):
        async with client.get(f"/topup/{mine.id}/{path}") as response:
            assert response.status == 401


async def test_streams_beyond_the_limit_are_refused_and_the_poll_answers(client: Client, orders: FakeOrders) -> None:
    topup = orders.put(order())
    first = await client.get(f"/topup/{topup.id}/events")
    second = await client.get(f"/topup/{topup.id}/events")
    try:
        assert (first.status, second.status) == (200, 200)
        async with client.get(f"/topup/{topup.id}/events") as refused:
            assert refused.status == 503 and refused.headers["Retry-After"] == "30"
        async with client.get(f"/topup/{topup.id}/status") as polled:
            assert polled.status == 200 and polled.headers["Cache-Control"] == "no-store"
            assert (await polled.json())["status"] == "pending"
    finally:
        first.close()
        second.close()


async def test_the_return_page_renders_what_the_stream_sends_first(client: Client, orders: FakeOrders) -> None:
    topup = orders.put(order(status=OrderStatus.PAID))
    async with client.get(f"/topup/{topup.id}/return") as response:
        html = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert f'<script src="/static/return.js?v={events.SCRIPT.version}" defer></script>' in html
    assert 'role="status" aria-live="polite"' in html and SOURCE["status_paid"] in html
    assert f'data-events="/topup/{topup.id}/events"' in html and f'data-poll="/topup/{topup.id}/status"' in html
    assert f'<noscript><meta http-equiv="refresh" content="5;url=/topup/{topup.id}/return?refreshes=1">' in html
    async with client.get(f"/topup/{topup.id}/return?refreshes=stop") as response:
        stopped = await response.text()
    assert 'http-equiv="refresh"' not in stopped and SOURCE["refresh_stopped"] in stopped
    async with client.get(events.SCRIPT.url) as response:
        assert response.status == 200 and response.content_type == "text/javascript"
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "EventSource" in await response.text()
    async with client.get("/static/return.js") as response:  # an old page's link: not for a year
        assert response.headers["Cache-Control"] == "public, max-age=3600"
