"""launch.mode = "open" on the real broker and database: the page (in this process, configured as
for AMPECO) confirms each user id over crediting's user lookup RPC (``crediting.user_rpc``) before it
starts a session, says clearly when the user is unknown or cannot be checked, limits launches, logs
each one with the id masked, and never shows a balance.

A configuration with ``launch.mode = "open"`` needs ``csms.kind = "ampeco"``, which no deployment
with the sandbox processor may have (``demo`` credits only the built-in ledger, ``production``
refuses the sandbox); so the page runs in this process with the stack's settings switched to open
mode, and:

- on a stack of its own, a small fake user lookup answers on ``crediting.user_rpc`` as crediting's
  own broker user (so its permissions are exercised: read the queue, reply on the default exchange);
- on the session's stack, the real crediting (built-in ledger: every id is a user) answers, and a
  driver pays through the sandbox and comes back to a return page without a balance."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from services.page import app as page_app
from services.page.i18n import Translator
from services.page.open_launch import LaunchLimits, SlidingWindowLimiter
from services.page.pages import LIMITS_KEY
from shared import amqp
from shared.amqp import CSMS_USER_RPC_QUEUE, RpcError, RpcServer
from shared.http import start_site
from shared.runtime import Runtime
from shared.settings import Settings
from tests.harness import Driver, Stack, eventually, fetch, free_ports, own_stack, superuser_dsn

pytestmark = [pytest.mark.e2e]

# The fake CSMS's users and their locales; other ids are unknown, a few misbehave.
KNOWN_USERS: dict[str, str | None] = {"1001": "bg-BG", "1002": None, "1003": "fr-FR", "2002": "en-GB"}
CSMS_DOWN, CSMS_SLOW, NONSENSE, NOT_AN_ID = "5003", "5004", "5005", "5006"
RPC_TIMEOUT_S = 1.0
BG = Translator("bg")


def open_mode(settings: Settings, page_port: int, user_param: str, locale_param: str) -> Settings:
    """``settings`` as a page launched by AMPECO would have them (see the module docstring)."""
    return settings.model_copy(
        update={
            "launch": settings.launch.model_copy(
                update={"mode": "open", "user_param": user_param, "locale_param": locale_param}
            ),
            "csms": settings.csms.model_copy(
                update={
                    "kind": "ampeco",
                    "base_url": "https://tenant.invalid",
                    "notification_url": "https://crediting.invalid/webhooks/ampeco",
                }
            ),
            "services": settings.services.model_copy(
                update={"page_port": page_port, "page_public_url": f"http://127.0.0.1:{page_port}"}
            ),
        }
    )


@dataclass
class OpenPage:
    url: str
    runtime: Runtime

    def at(self, path: str) -> str:
        return f"{self.url}{path}"

    @property
    def limits(self) -> LaunchLimits:
        return self.runtime.app[LIMITS_KEY]


@contextlib.asynccontextmanager
async def open_page(
    settings: Settings, user_param: str = "user_id", locale_param: str = "locale"
) -> AsyncIterator[OpenPage]:
    """The page service, in this process, in open mode, on a port of its own."""
    (port,) = free_ports(1)
    runtime = Runtime("page", open_mode(settings, port, user_param, locale_param))
    await runtime.start()
    runner = None
    try:
        await page_app.build(runtime)
        runner = await start_site(runtime.app, "127.0.0.1", port)
        yield OpenPage(f"http://127.0.0.1:{port}", runtime)
    finally:
        if runner is not None:
            await runner.cleanup()
        await runtime.stop()


@dataclass
class FakeUserLookup:
    """crediting's user lookup as a CSMS would answer it; ``asked`` is every user id it was asked about."""

    asked: list[str] = field(default_factory=list)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        user_id = str(request.get("user_id"))
        self.asked.append(user_id)
        if user_id == CSMS_DOWN:
            raise RpcError("csms_unavailable", "AMPECO answered 503")
        if user_id == CSMS_SLOW:
            await asyncio.sleep(RPC_TIMEOUT_S * 2)
        if user_id == NONSENSE:
            return {"user_id": "someone-else", "exists": True, "locale": None}
        if user_id == NOT_AN_ID:
            raise ValueError("user_id is not a user id of this CSMS")
        return {"user_id": user_id, "exists": user_id in KNOWN_USERS, "locale": KNOWN_USERS.get(user_id)}


@dataclass
class Fixture:
    page: OpenPage
    lookup: FakeUserLookup


@pytest_asyncio.fixture(scope="module")
async def fake_csms(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fixture]:
    overrides = {"EVTOPUP__AMQP__RPC_TIMEOUT_S": str(RPC_TIMEOUT_S), "EVTOPUP__DATABASES__POOL_MAX_SIZE": "4"}
    async with own_stack(tmp_path_factory.mktemp("open_launch"), overrides) as stack:
        lookup = FakeUserLookup()
        # As crediting's own broker user: what it may read and where it may reply are what it needs.
        connection = await amqp.connect_robust(stack.settings.amqp, "crediting")
        server = RpcServer(CSMS_USER_RPC_QUEUE, lookup.handle)
        try:
            await server.start(connection)
            async with open_page(stack.settings, user_param="uid", locale_param="lang") as page:
                yield Fixture(page, lookup)
        finally:
            await server.stop(5)
            await connection.close()


@pytest.fixture
def csms(fake_csms: Fixture) -> Iterator[Fixture]:
    """Each test with fresh launch limits and a fresh record of lookups."""
    limits = fake_csms.page.limits
    fresh = LaunchLimits.default()
    limits.per_client, limits.per_process = fresh.per_client, fresh.per_process
    fake_csms.lookup.asked.clear()
    yield fake_csms


def browser() -> aiohttp.ClientSession:
    """A driver's phone: its own cookie jar (cookies for 127.0.0.1 too)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def launch(http: aiohttp.ClientSession, page: OpenPage, query: str, **headers: str) -> tuple[int, str, Any]:
    async with http.get(page.at(f"/topup?{query}"), allow_redirects=False, headers=headers) as response:
        return response.status, await response.text(), response


def launches(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == "launch"]


# --- a known user --------------------------------------------------------------------------------------


async def test_a_known_user_gets_a_session_and_a_clean_url(csms: Fixture) -> None:
    async with browser() as http:
        with capture_logs() as logs:
            status, _, response = await launch(http, csms.page, "uid=1001&lang=bg-BG")
        assert status == 303 and response.headers["Location"] == "/topup"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "evtopup_session" in response.cookies
        async with http.get(csms.page.at("/topup")) as form:
            assert form.status == 200
            text = await form.text()
    assert '<html lang="bg" dir="ltr">' in text and BG("title") in text
    assert "1••••" in text and "1001" not in text  # the account, masked
    assert 'name="csrf_token"' in text
    assert csms.lookup.asked == ["1001"]
    assert [(e["mode"], e["outcome"], e["user"]) for e in launches(logs)] == [("open", "session", "1••••")]


@pytest.mark.parametrize(
    ("query", "html_lang"),
    [
        ("uid=1001", "bg"),  # no locale in the URL: the user's own at the CSMS (bg-BG → bg)
        ("uid=1002", "en"),  # the user has none: the operator's default
        ("uid=2002&lang=bg_BG", "bg"),  # the URL's wins over the user's
        ("uid=1001&lang=en-US", "en"),  # en-US → en
        ("uid=2002&lang=fr", "en"),  # not offered: the user's (en-GB → en)
        ("uid=1003&lang=de", "en"),  # neither offered: the default
    ],
)
async def test_the_page_speaks_the_url_s_locale_else_the_user_s_else_the_default(
    csms: Fixture, query: str, html_lang: str
) -> None:
    async with browser() as http, http.get(csms.page.at(f"/topup?{query}")) as response:
        assert response.status == 200 and str(response.url) == csms.page.at("/topup")
        assert f'<html lang="{html_lang}" dir="ltr">' in await response.text()


async def test_another_user_s_launch_asks_before_switching(csms: Fixture) -> None:
    async with browser() as http:
        await launch(http, csms.page, "uid=1001&lang=en")
        with capture_logs() as logs:
            status, text, _ = await launch(http, csms.page, "uid=2002&lang=en")
        assert status == 200 and 'id="switch-question"' in text
        assert "You are signed in as 1••••. Switch to 2••••?" in text
        switch_token = text.split('name="switch_token" value="')[1].split('"')[0]
        # Until the driver confirms, the session is still the first user's.
        async with http.get(csms.page.at("/topup")) as form:
            assert "1••••" in await form.text()
        async with http.post(
            csms.page.at("/topup/switch"), data={"switch_token": switch_token}, allow_redirects=False
        ) as switched:
            assert switched.status == 303
        async with http.get(csms.page.at("/topup")) as form:
            assert "Topping up account 2••••" in await form.text()
    assert [e["outcome"] for e in launches(logs)] == ["switch_asked"]


# --- refusals -------------------------------------------------------------------------------------------


async def test_an_unknown_user_is_not_found_in_the_requested_locale(csms: Fixture) -> None:
    async with browser() as http:
        with capture_logs() as logs:
            status, text, response = await launch(http, csms.page, "uid=4040&lang=bg")
        assert status == 404
        assert BG("user_not_found") in text and "4040" not in text
        assert "evtopup_session" not in response.cookies
        status, text, _ = await launch(http, csms.page, "uid=4041")
        assert status == 404 and "We could not find your account" in text
        # No session was started: the page still asks to open it from the app.
        async with http.get(csms.page.at("/topup")) as plain:
            assert plain.status == 401
    assert [(e["outcome"], e["user"]) for e in launches(logs)] == [("unknown_user", "4••••")]


@pytest.mark.parametrize("user_id", [CSMS_DOWN, CSMS_SLOW, NONSENSE])
async def test_a_user_who_cannot_be_checked_now_is_asked_to_try_again_and_nothing_is_recorded(
    csms: Fixture, user_id: str
) -> None:
    async with browser() as http:
        status, text, response = await launch(http, csms.page, f"uid={user_id}&lang=en")
        assert status == 503
        assert "Please try again in a moment" in text and "Traceback" not in text
        assert "evtopup_session" not in response.cookies
    assert csms.lookup.asked == [user_id]


async def test_an_id_the_lookup_refuses_is_a_bad_id(csms: Fixture) -> None:
    async with browser() as http:
        status, text, _ = await launch(http, csms.page, f"uid={NOT_AN_ID}")
    assert status == 400 and "does not name a valid account" in text


@pytest.mark.parametrize(
    "query",
    ["uid=abc", "uid=0", "uid=", "uid=1e3", "uid=%201001", "uid=1001&uid=1002", "uid=" + "1" * 19, "uid=%D9%A1"],
)
async def test_an_id_the_csms_cannot_have_is_400_and_never_looked_up(csms: Fixture, query: str) -> None:
    async with browser() as http:
        with capture_logs() as logs:
            status, text, response = await launch(http, csms.page, f"{query}&lang=bg")
        assert status == 400
        assert BG("bad_user_id") in text
        assert response.content_type == "text/html"
    assert csms.lookup.asked == []
    # Logged without the id: it may be anything a client typed.
    assert [(e["outcome"], e["user"]) for e in launches(logs)] == [("bad_user_id", None)]


async def test_a_signed_launch_is_refused_in_open_mode(csms: Fixture) -> None:
    async with browser() as http:
        for query in ("token=eyJhbGciOiJIUzI1NiJ9.e30.x", "token=x&uid=1001"):
            status, text, response = await launch(http, csms.page, query)
            assert status == 400 and "This link cannot open the top-up" in text
            assert "evtopup_session" not in response.cookies
    assert csms.lookup.asked == []


async def test_no_launch_and_no_session_asks_to_open_from_the_app(csms: Fixture) -> None:
    async with browser() as http:
        status, text, _ = await launch(http, csms.page, "lang=bg")
    assert status == 401 and BG("unauthorized") in text


async def test_the_api_is_not_there_for_bare_ids(csms: Fixture) -> None:
    async with browser() as http:
        await launch(http, csms.page, "uid=1001")  # even with a session cookie
        for method, path in (("POST", "/api/v1/topups"), ("GET", f"/api/v1/topups/{uuid.uuid4()}")):
            async with http.request(
                method, csms.page.at(path), headers={"Authorization": "Bearer 1001"}, json={"package_id": "p10"}
            ) as response:
                assert response.status == 404
                assert response.content_type == "application/problem+json"
                assert "signed launches only" in (await response.json())["detail"]


# --- limits ---------------------------------------------------------------------------------------------


async def test_a_client_trying_ids_is_slowed_down_and_logged(csms: Fixture) -> None:
    csms.page.limits.per_client = SlidingWindowLimiter(3, 60.0, max_keys=100)
    async with browser() as http:
        with capture_logs() as logs:
            statuses = [
                (await launch(http, csms.page, f"uid={4100 + i}", **{"X-Forwarded-For": "203.0.113.9"}))[0]
                for i in range(5)
            ]
            # Another client is not held back.
            other, _, _ = await launch(http, csms.page, "uid=1001", **{"X-Forwarded-For": "203.0.113.10"})
        status, text, response = await launch(http, csms.page, "uid=1001&lang=bg", **{"X-Forwarded-For": "203.0.113.9"})
    assert statuses == [404, 404, 404, 429, 429] and other == 303
    assert status == 429 and BG("too_many_launches") in text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert csms.lookup.asked == ["4100", "4101", "4102", "1001"]
    refused = [e for e in launches(logs) if e["outcome"] == "rate_limited"]
    assert [(e["reason"], e["client"], e["user"]) for e in refused] == [("client", "203.0.113.9", None)] * 2


async def test_the_page_process_limits_lookups_whoever_asks(csms: Fixture) -> None:
    csms.page.limits.per_process = SlidingWindowLimiter(2, 60.0)
    async with browser() as http:
        statuses = [
            (await launch(http, csms.page, "uid=1001", **{"X-Forwarded-For": f"198.51.100.{i}"}))[0] for i in range(3)
        ]
        _, _, response = await launch(http, csms.page, "uid=1001", **{"X-Forwarded-For": "198.51.100.99"})
    assert statuses == [303, 303, 429]
    assert "Retry-After" in response.headers
    assert csms.lookup.asked == ["1001", "1001"]


# --- the whole top-up, with the real crediting answering --------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def open_page_on_the_session_stack(stack: Stack, services: Any) -> AsyncIterator[OpenPage]:
    """An open-mode page beside the session's signed one (same databases, same vhost): the session's
    crediting answers its lookups (built-in ledger: every id is a user)."""
    async with open_page(stack.settings) as page:
        yield page


@pytest.mark.timeout(120)
async def test_an_open_top_up_is_paid_and_credited_and_no_balance_is_shown(
    open_page_on_the_session_stack: OpenPage, stack: Stack
) -> None:
    page = open_page_on_the_session_stack
    user_id = str(random.randint(10**11, 10**12 - 1))
    async with browser() as http:
        async with http.get(page.at(f"/topup?user_id={user_id}&locale=bg-BG")) as launched:
            assert launched.status == 200 and str(launched.url) == page.at("/topup")
            text = await launched.text()
        csrf = text.split('name="csrf_token" value="')[1].split('"')[0]
        key = text.split('name="idempotency_key" value="')[1].split('"')[0]
        form = {"csrf_token": csrf, "idempotency_key": key, "package_id": "p25", "method": "card"}
        async with http.post(page.at("/topup"), data=form, allow_redirects=False) as submitted:
            assert submitted.status == 303, await submitted.text()
            checkout = submitted.headers["Location"]
        return_url = await Driver(stack, http).pay(checkout)
        assert return_url.startswith(page.at("/topup/"))
        order_id = return_url.rsplit("/", 2)[1]

        async def credited_page() -> str | None:
            async with http.get(return_url) as response:
                body = await response.text()
                return body if 'data-status="credited"' in body else None

        credited = await eventually(credited_page, 60, "the return page never showed credited")
        assert BG("status_credited") in credited
        assert "25,00" in credited and "1,50" in credited  # what was paid, and the bonus
        assert BG("new_balance", balance="").rstrip(": ") not in credited  # never the balance,
        assert "26,50" not in credited  # not even its amount
        # The balance is there (crediting reported it with credit.applied); the page keeps it to itself.
        rows = await fetch(
            superuser_dsn(stack, "page"), "SELECT balance_minor FROM orders WHERE id = $1::uuid", order_id
        )
        assert rows[0]["balance_minor"] == 2650
        # The order status API is not there for open launches.
        async with http.get(page.at(f"/api/v1/topups/{order_id}")) as api:
            assert api.status == 404 and "balance_minor" not in await api.text()

        # The session's page takes signed launches only: it refuses the open session (the browser
        # sends the cookie to 127.0.0.1 whatever the port) and a bare user id.
        async with http.get(stack.url("page", "/topup"), allow_redirects=False) as signed:
            assert signed.status == 401
        async with http.get(stack.url("page", f"/topup/{order_id}/return"), allow_redirects=False) as signed:
            assert signed.status == 401
        async with http.get(stack.url("page", f"/topup?user_id={user_id}&locale=en"), allow_redirects=False) as bare:
            assert bare.status == 400 and "This link cannot open the top-up" in await bare.text()
