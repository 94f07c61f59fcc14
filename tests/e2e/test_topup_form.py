"""The top-up form through the real services, as an operator brands it without code: a custom amount
with min, max and step (the step enforced, with a translated error), the methods with the page's own
icons and their fees, the total for the choice, the operator's terms (their version recorded on the
order and returned by the API), the balance before paying (signed launches), the operator's colours
as a generated stylesheet and the logo served by the page itself, all small and long cached."""

from __future__ import annotations

import html
import re
import uuid
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from services.page.i18n import Translator
from services.page.pages import content_security_policy
from tests.harness import Driver, Stack, eventually, fetch, own_stack, services_running

pytestmark = pytest.mark.e2e

TERMS_URL = "https://cpo.example.com/terms"
TERMS_VERSION = "2024-06"
PRIMARY, ACCENT = "#0b5394", "#7a1f5c"
LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><rect width="40" height="40" rx="8" fill="#0b5394"/>'
    b'<path d="M12 20h16M20 12v16" stroke="#fff" stroke-width="4"/></svg>'
)
LONG_CACHE = "public, max-age=31536000, immutable"


@pytest_asyncio.fixture(scope="module")
async def branded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    logo = tmp_path_factory.mktemp("brand") / "logo.svg"
    logo.write_bytes(LOGO)
    overrides = {
        "EVTOPUP__AMOUNTS__STEP_MINOR": "50",
        "EVTOPUP__OPERATOR__TERMS_URL": TERMS_URL,
        "EVTOPUP__OPERATOR__TERMS_VERSION": TERMS_VERSION,
        "EVTOPUP__OPERATOR__PRIMARY_COLOR": PRIMARY,
        "EVTOPUP__OPERATOR__ACCENT_COLOR": ACCENT,
        "EVTOPUP__OPERATOR__LOGO_PATH": str(logo),
    }
    async with own_stack(tmp_path_factory.mktemp("form"), overrides) as stack, services_running(stack):
        yield stack


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def user() -> str:
    return f"form-{uuid.uuid4().hex[:8]}"


def field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} in the page"
    return html.unescape(match.group(1))


def by_id(page: str, element_id: str) -> str:
    """The text inside the element with this id (no nested elements of the same tag expected)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no #{element_id} in the page"
    return html.unescape(match.group(1)).strip()


async def launch(stack: Stack, browser: aiohttp.ClientSession, user_id: str, locale: str = "en") -> str:
    async with aiohttp.ClientSession() as http:
        token = Driver(stack, http).token(user_id, locale)
    async with browser.get(stack.url("page", f"/topup?token={token}")) as response:
        assert response.status == 200
        return await response.text()


async def submit(stack: Stack, browser: aiohttp.ClientSession, page: str, **choice: str) -> aiohttp.ClientResponse:
    form = {"csrf_token": field(page, "csrf_token"), "idempotency_key": field(page, "idempotency_key")}
    async with browser.post(stack.url("page", "/topup"), data=form | choice, allow_redirects=False) as response:
        await response.read()
        return response


async def test_the_form_shows_icons_fees_total_terms_step_and_balance(
    branded: Stack, browser: aiohttp.ClientSession
) -> None:
    page = await launch(branded, browser, user())
    t = Translator("en")
    text = html.unescape(page)
    # Each method with the page's own icon (decorative: its name is text beside it) and its fee.
    icons = re.findall(r'<img class="icon" src="(/static/methods/(\w+)\.svg\?v=[0-9a-f]{16})" alt="" width="24"', page)
    assert [kind for _, kind in icons] == ["card", "wallet"]
    assert t("fee", fee=f"{t.money(25, 'EUR')} + {t.percent(200)}") in text
    assert 'data-fee-fixed="25" data-fee-rate="200"' in page and 'data-fee-fixed="0" data-fee-rate="0"' in page
    # Each package with its price; the custom amount with its limits and step.
    assert t.money(1000, "EUR") in text and t("bonus", bonus=t.money(150, "EUR")) in text
    assert t("custom_amount", min=t.money(100, "EUR"), max=t.money(100_000, "EUR")) in text
    assert by_id(page, "amount-step") == t("amount_step_hint", step=t.money(50, "EUR"))
    assert 'data-min="100" data-max="100000" data-step="50"' in page
    # The summary for the first package and method, rendered by the server (no JavaScript needed).
    assert by_id(page, "summary-for") == t("summary_for", amount=t.money(1000, "EUR"), method=t("method_card"))
    assert by_id(page, "summary-amount") == t.money(1000, "EUR")
    assert by_id(page, "summary-fee") == t.money(0, "EUR")
    assert by_id(page, "summary-total") == t.money(1000, "EUR")
    # Signed launch: the balance before paying, from crediting, and what it will be after.
    assert by_id(page, "balance-before") == t("current_balance", balance=t.money(0, "EUR"))
    assert by_id(page, "summary-balance-after") == t.money(1000, "EUR")
    # The terms, linked, with their version.
    assert f'By continuing you accept the <a href="{TERMS_URL}">terms and conditions</a> (version 2024-06).' in page
    # The operator's brand and the form's script, each a file of the page's own, versioned.
    assert re.search(r'<link rel="stylesheet" href="/static/brand\.css\?v=[0-9a-f]{16}">', page)
    assert re.search(r'<img class="logo" src="/static/brand/logo\?v=[0-9a-f]{16}" alt="">', page)
    assert re.search(r'<script src="/static/form\.js\?v=[0-9a-f]{16}" defer></script>', page)
    assert "<style" not in page and "style=" not in page and re.search(r"<script>|<script [^s]", page) is None


async def test_the_summary_follows_the_choice_the_form_comes_back_with(
    branded: Stack, browser: aiohttp.ClientSession
) -> None:
    page = await launch(branded, browser, user())
    assert (await submit(branded, browser, page, package_id="p10", method="card")).status == 303
    # The same form (the same key) sent again with another choice: refused, and the form comes back
    # with that choice, its summary priced for it.
    form = {"csrf_token": field(page, "csrf_token"), "idempotency_key": field(page, "idempotency_key")}
    choice = {"package_id": "p25", "method": "wallet"}
    async with browser.post(branded.url("page", "/topup"), data=form | choice, allow_redirects=False) as response:
        assert response.status == 422
        again = await response.text()
    t = Translator("en")
    assert '<input type="radio" name="package_id" value="p25" checked>' in again
    assert '<input type="radio" name="method" value="wallet" checked>' in again
    assert by_id(again, "summary-for") == t("summary_for", amount=t.money(2500, "EUR"), method=t("method_wallet"))
    assert by_id(again, "summary-bonus") == t.money(150, "EUR")
    assert by_id(again, "summary-fee") == t.money(25 + 50, "EUR")  # 0.25 + 2 % of 25.00
    assert by_id(again, "summary-total") == t.money(2575, "EUR")
    assert 'id="summary-bonus-row" hidden' not in again and 'id="summary-values" hidden' not in again


async def test_the_step_is_enforced_with_a_translated_error(branded: Stack, browser: aiohttp.ClientSession) -> None:
    user_id = user()
    page = await launch(branded, browser, user_id, "bg")
    form = {"csrf_token": field(page, "csrf_token"), "idempotency_key": field(page, "idempotency_key")}
    choice = {"package_id": "", "amount": "12,30", "method": "wallet"}
    async with browser.post(branded.url("page", "/topup"), data=form | choice, allow_redirects=False) as response:
        assert response.status == 422
        again = await response.text()
    t = Translator("bg")
    expected = t.error("amount_step", {"step_minor": 50, "lower_minor": 1200, "higher_minor": 1250}, "EUR")
    assert expected in html.unescape(again) and "12,00" in expected and "12,50" in expected
    # The error is focusable and linked: the field names it as its description, and it links to the field.
    assert '<div class="error" role="alert" id="form-error" tabindex="-1">' in again
    assert f'<a href="#amount">{html.escape(t("error_go_to"), quote=False)}</a>' in again
    amount_input = re.search(r'<input type="text" id="amount"[^>]*>', again)
    assert amount_input is not None
    assert 'aria-describedby="amount-limits amount-step form-error"' in amount_input.group(0)
    assert 'aria-invalid="true"' in amount_input.group(0) and 'value="12,30"' in amount_input.group(0)
    # No total for an amount that is refused; the same key, so pressing Pay again makes one order.
    assert 'id="summary-values" hidden' in again
    assert field(again, "idempotency_key") == form["idempotency_key"]
    rows = await fetch(branded.dsn("page"), "SELECT count(*) AS n FROM orders WHERE user_id = $1", user_id)
    assert rows[0]["n"] == 0
    # A multiple of the step goes through, priced as the summary said.
    async with browser.post(
        branded.url("page", "/topup"), data=form | choice | {"amount": "12,50"}, allow_redirects=False
    ) as accepted:
        assert accepted.status == 303
    # The API says the same in its own terms: a code and parameters.
    async with aiohttp.ClientSession() as http:
        status, problem = await Driver(branded, http).create_topup(user_id, {"amount_minor": 1230})
    assert status == 422
    assert (problem["code"], problem["params"]) == (
        "amount_step",
        {"step_minor": 50, "lower_minor": 1200, "higher_minor": 1250},
    )


async def test_the_terms_version_is_recorded_on_the_order_and_returned(
    branded: Stack, browser: aiohttp.ClientSession
) -> None:
    user_id = user()
    page = await launch(branded, browser, user_id)
    submitted = await submit(branded, browser, page, package_id="p25", method="wallet")
    assert submitted.status == 303
    rows = await fetch(
        branded.dsn("page"), "SELECT id, terms_version, fee_minor FROM orders WHERE user_id = $1", user_id
    )
    assert [(r["terms_version"], r["fee_minor"]) for r in rows] == [(TERMS_VERSION, 25 + 50)]
    async with aiohttp.ClientSession() as http:
        driver = Driver(branded, http)
        status, order = await driver.get_topup(user_id, str(rows[0]["id"]))
        assert status == 200 and order["terms_version"] == TERMS_VERSION
        status, created = await driver.create_topup(user_id, {"package_id": "p10"})
        assert status == 201 and created["terms_version"] == TERMS_VERSION


async def test_the_balance_before_paying_follows_the_ledger(branded: Stack, browser: aiohttp.ClientSession) -> None:
    user_id = user()
    page = await launch(branded, browser, user_id)
    submitted = await submit(branded, browser, page, package_id="p25", method="card")
    async with aiohttp.ClientSession() as http:
        driver = Driver(branded, http)
        return_url = await driver.pay(submitted.headers["Location"])
        await driver.wait_status(user_id, return_url.rsplit("/", 2)[1], "credited")

    async def with_balance() -> str | None:
        async with browser.get(branded.url("page", "/topup")) as response:
            text = await response.text()
        return text if t.money(2650, "EUR") in html.unescape(text) else None

    t = Translator("en")
    again = await eventually(with_balance, 15, "the form never showed the new balance")
    assert by_id(again, "balance-before") == t("current_balance", balance=t.money(2650, "EUR"))
    assert by_id(again, "summary-balance-after") == t.money(2650 + 1000, "EUR")


async def test_the_brand_stylesheet_logo_script_and_icons_are_served_long_cached(
    branded: Stack, browser: aiohttp.ClientSession
) -> None:
    page = await launch(branded, browser, user())
    css_url = re.findall(r'href="(/static/brand\.css\?v=[0-9a-f]+)"', page)[0]
    async with browser.get(branded.url("page", css_url)) as css:
        assert css.status == 200 and css.content_type == "text/css"
        assert css.headers["Cache-Control"] == LONG_CACHE
        assert await css.text() == f":root{{--brand-primary:{PRIMARY};--brand-accent:{ACCENT}}}\n"
    logo_url = re.findall(r'src="(/static/brand/logo\?v=[0-9a-f]+)"', page)[0]
    async with browser.get(branded.url("page", logo_url)) as logo:
        assert logo.status == 200 and logo.content_type == "image/svg+xml"
        assert await logo.read() == LOGO
        assert logo.headers["Cache-Control"] == LONG_CACHE
        assert "sandbox" in logo.headers["Content-Security-Policy"]  # opened on its own, it runs nothing
        assert logo.headers["X-Content-Type-Options"] == "nosniff"
    script_url = re.findall(r'src="(/static/form\.js\?v=[0-9a-f]+)"', page)[0]
    async with browser.get(branded.url("page", script_url)) as script:
        assert script.status == 200 and script.content_type == "text/javascript"
        assert script.headers["Cache-Control"] == LONG_CACHE
        assert "basisPoints" in await script.text()
    for icon_url in re.findall(r'src="(/static/methods/\w+\.svg\?v=[0-9a-f]+)"', page):
        async with browser.get(branded.url("page", icon_url)) as icon:
            assert icon.status == 200 and icon.content_type == "image/svg+xml"
            assert icon.headers["Cache-Control"] == LONG_CACHE
    # Without the current version (an old page, a typed URL): the same file, cached for an hour only.
    async with browser.get(branded.url("page", "/static/brand.css?v=old")) as stale:
        assert stale.status == 200 and stale.headers["Cache-Control"] == "public, max-age=3600"
    async with browser.get(branded.url("page", "/static/methods/nothing.svg")) as missing:
        assert missing.status == 404
    # The pages may load images and scripts from the page itself only.
    policy = content_security_policy(branded.settings.services.payments_public_url)
    assert "img-src 'self'" in policy and "script-src 'self'" in policy


async def test_the_first_view_stays_small(branded: Stack) -> None:
    """The form's HTML, page.css, the brand stylesheet, the script, the icons and the logo, compressed
    as a phone's browser asks for them, well under the 60 KB of the first view."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), auto_decompress=False) as phone:
        async with aiohttp.ClientSession() as http:
            token = Driver(branded, http).token(user())
        gzip = {"Accept-Encoding": "gzip"}
        async with phone.get(branded.url("page", f"/topup?token={token}"), headers=gzip) as response:
            body = await response.read()
            total = len(body)
            compressed = response.headers.get("Content-Encoding") == "gzip"
        page = (zlib.decompress(body, 16 + zlib.MAX_WBITS) if compressed else body).decode()
        linked = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
        assert len(linked) >= 6, linked
        for path in linked:
            async with phone.get(branded.url("page", path), headers=gzip) as response:
                assert response.status == 200, path
                total += len(await response.read())
    assert total < 20 * 1024, total
