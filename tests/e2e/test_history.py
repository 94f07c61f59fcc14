"""The driver's history and receipts through the real services: a stack whose operator has its
details (legal name, address, VAT ID, support address) and timezone set, and speaks English,
Bulgarian, Arabic and Thai. Drivers pay (or decline) on the sandbox's page; the history lists only
the driver's own top-ups, newest first, a page at a time; each receipt shows what was paid and the
processor's reference, printable and as a PDF in the driver's language and script; another
driver's receipt is not found; and a page opened with a bare user id (open mode) shows none of it."""

from __future__ import annotations

import html
import io
import random
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from pypdf import PdfReader

from services.page.i18n import Translator
from tests.e2e.test_open_launch import open_page
from tests.harness import Driver, Stack, fetch, own_stack, services_running, superuser_dsn

pytestmark = pytest.mark.e2e

OPERATOR = {
    "EVTOPUP__OPERATOR__LOCALES": '["en", "bg", "ar", "th"]',
    "EVTOPUP__OPERATOR__LEGAL_NAME": "Test CPO Ltd.",
    "EVTOPUP__OPERATOR__ADDRESS": "1 Charge Street\nSofia 1000",
    "EVTOPUP__OPERATOR__VAT_ID": "BG123456789",
    "EVTOPUP__OPERATOR__SUPPORT_EMAIL": "help@cpo.example",
    "EVTOPUP__OPERATOR__TIMEZONE": "Europe/Sofia",
}
ORDER_ID = re.compile(r'<li id="order-([0-9a-f-]{36})" data-status="([a-z_]+)"')


@pytest_asyncio.fixture(scope="module")
async def cpo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(tmp_path_factory.mktemp("history"), OPERATOR) as stack, services_running(stack):
        yield stack


@pytest_asyncio.fixture
async def driver(cpo: Stack) -> AsyncIterator[Driver]:
    async with aiohttp.ClientSession() as http:
        yield Driver(cpo, http)


def user() -> str:
    return f"hist-{uuid.uuid4().hex[:10]}"


def browser() -> aiohttp.ClientSession:
    """A driver's phone: its own cookie jar."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def launch(driver: Driver, http: aiohttp.ClientSession, user_id: str, locale: str = "en") -> str:
    async with http.get(driver.page(f"/topup?token={driver.token(user_id, locale)}")) as response:
        assert response.status == 200
        return await response.text()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with http.get(url, allow_redirects=False) as response:
        return response.status, await response.text(errors="replace"), response


async def topup(driver: Driver, user_id: str, body: dict[str, object], outcome: str | None = "succeeded") -> str:
    """A top-up made through the API; paid (or declined) on the sandbox's page unless ``outcome`` is None."""
    status, order = await driver.create_topup(user_id, body)
    assert status == 201, order
    if outcome is not None:
        await driver.pay(order["redirect_url"], outcome=outcome)
        await driver.wait_status(user_id, order["id"], "credited" if outcome == "succeeded" else "failed")
    return str(order["id"])


def listed(page: str) -> list[tuple[str, str]]:
    return ORDER_ID.findall(page)


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def pdf_text(document: bytes) -> str:
    assert document.startswith(b"%PDF-")
    # Compatibility forms: a PDF's text gives Thai's SARA AM back as NIKHAHIT and SARA AA.
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(document)).pages)
    return unicodedata.normalize("NFKC", text)


async def processor_reference(stack: Stack, order_id: str) -> str:
    rows = await fetch(
        stack.dsn("payments"), "SELECT processor_reference FROM payments WHERE order_id = $1", uuid.UUID(order_id)
    )
    return str(rows[0]["processor_reference"])


@pytest.mark.timeout(120)
async def test_the_history_lists_the_drivers_own_top_ups_newest_first(driver: Driver) -> None:
    me, someone_else = user(), user()
    credited = await topup(driver, me, {"package_id": "p25", "method": "wallet"})
    failed = await topup(driver, me, {"amount_minor": 1500, "method": "card"}, outcome="failed")
    pending = await topup(driver, me, {"package_id": "p10"}, outcome=None)
    theirs = await topup(driver, someone_else, {"package_id": "p10"})
    # An order whose checkout never came back was never shown to the driver: not in the history.
    await fetch(
        superuser_dsn(driver.stack, "page"),
        "INSERT INTO orders (id, user_id, idempotency_key, request_hash, amount_minor, bonus_minor, fee_minor,"
        " currency, method, integration_id, correlation_id) VALUES ($1, $2, 'k', 'h', 500, 0, 0, 'EUR', 'card',"
        " 'sandbox_main', 'c')",
        uuid.uuid4(),
        me,
    )
    async with browser() as http:
        form = await launch(driver, http, me)
        assert 'href="/topup/history"' in form  # the form links to the history
        status, page, response = await get(http, driver.page("/topup/history"))
        assert status == 200 and response.headers["Cache-Control"] == "no-store"
        assert listed(page) == [(pending, "pending"), (failed, "failed"), (credited, "credited")]
        assert theirs not in page
        t = Translator("en")
        for label in ("status_label_pending", "status_label_failed", "status_label_credited", "receipt_link"):
            assert t(label) in page
        assert f'href="/topup/{credited}/receipt"' in page and "€25.00" in page and "€1.50" in page
        assert 'id="history-more"' not in page and 'id="history-newest"' not in page
        # The return page of a finished top-up links to the history too.
        status, returned, _ = await get(http, driver.page(f"/topup/{credited}/return"))
        assert status == 200
        assert '<p class="history-link" id="history-link"><a href="/topup/history">' in returned  # not hidden
    async with browser() as http:
        await launch(driver, http, someone_else, "bg")
        status, page, _ = await get(http, driver.page("/topup/history"))
        assert listed(page) == [(theirs, "credited")]
        assert Translator("bg")("history_title") in page and '<html lang="bg"' in page
        # Without a session: the page asks to open it from the app.
    async with browser() as http:
        status, page, _ = await get(http, driver.page("/topup/history"))
        assert status == 401 and Translator("en")("unauthorized") in html.unescape(page)


@pytest.mark.timeout(120)
async def test_the_history_comes_a_page_at_a_time(driver: Driver) -> None:
    me = user()
    made = [await topup(driver, me, {"package_id": "p10"}, outcome=None) for _ in range(21)]
    async with browser() as http:
        await launch(driver, http, me)
        _, first, _ = await get(http, driver.page("/topup/history"))
        assert [order for order, _ in listed(first)] == made[::-1][:20]
        more = re.search(r'id="history-more" href="([^"]+)"', first)
        assert more is not None and 'id="history-newest"' not in first
        _, second, _ = await get(http, driver.page(html.unescape(more.group(1))))
        assert [order for order, _ in listed(second)] == [made[0]]
        assert 'id="history-more"' not in second and 'id="history-newest"' in second
        for cursor in ("nonsense", "1_2", f"99999999999999999999_{made[0]}"):
            status, _, _ = await get(http, driver.page(f"/topup/history?before={cursor}"))
            assert status == 400


@pytest.mark.timeout(120)
async def test_a_receipt_says_what_was_paid_to_whom_and_prints(driver: Driver) -> None:
    me = user()
    order_id = await topup(driver, me, {"package_id": "p25", "method": "wallet"})
    reference = await processor_reference(driver.stack, order_id)
    [row] = await fetch(
        superuser_dsn(driver.stack, "page"),
        "SELECT paid_at, processor_reference FROM orders WHERE id = $1",
        uuid.UUID(order_id),
    )
    assert row["processor_reference"] == reference and row["paid_at"] is not None  # from payment.succeeded
    t = Translator("en")
    async with browser() as http:
        await launch(driver, http, me)
        status, page, response = await get(http, driver.page(f"/topup/{order_id}/receipt"))
        assert status == 200 and response.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    text = text_of(page)
    expected = {
        "number": order_id,
        "status": t("status_label_credited"),
        "method": t("method_wallet"),
        "amount": "€25.00",
        "bonus": "€1.50",
        "fee": "€0.75",  # 25 fixed + 2 % of 25.00
        "total": "€25.75",
        "added": "€26.50",
        "reference": reference,
        "time": t.datetime(row["paid_at"], "Europe/Sofia", detailed=True),  # at the operator's time
    }
    for row_id, value in expected.items():
        found = re.search(rf'id="receipt-{row_id}"><dt>[^<]+</dt><dd>(.*?)</dd>', page)
        assert found is not None and value in html.unescape(found.group(1)), (row_id, value)
    assert "+0200" in expected["time"]
    for detail in ("Test CPO Ltd.", "1 Charge Street", "Sofia 1000", "help@cpo.example"):
        assert detail in text, detail
    assert re.search(r"VAT ID:\s+BG123456789", text)
    # Printable: the Print button (shown by the page's own script), the PDF, the print stylesheet.
    assert '<script src="/static/receipt.js" defer></script>' in page and 'id="print" hidden' in page
    assert f'href="/topup/{order_id}/receipt.pdf"' in page
    async with aiohttp.ClientSession() as http:
        status, script, response = await get(http, driver.page("/static/receipt.js"))
        assert status == 200 and response.content_type == "text/javascript" and "window.print()" in script
        status, css, response = await get(http, driver.page("/static/receipt.css"))
        assert status == 200 and response.content_type == "text/css" and "@media print" in css


@pytest.mark.timeout(120)
async def test_the_receipt_as_a_pdf_in_the_drivers_language_and_script(driver: Driver) -> None:
    me = user()
    order_id = await topup(driver, me, {"package_id": "p25", "method": "wallet"})
    reference = await processor_reference(driver.stack, order_id)
    async with browser() as http:
        page = await launch(driver, http, me)
        csrf = html.unescape(page.split('name="csrf_token" value="')[1].split('"')[0])
        for locale in ("en", "ar", "th"):
            form = {"csrf_token": csrf, "next": f"/topup/{order_id}/receipt", "locale": locale}
            async with http.post(driver.page("/topup/language"), data=form) as switched:
                assert str(switched.url) == driver.page(f"/topup/{order_id}/receipt")  # back on the receipt
                assert f'<html lang="{locale}"' in await switched.text()
            async with http.get(driver.page(f"/topup/{order_id}/receipt.pdf")) as response:
                assert response.status == 200, await response.text()
                assert response.content_type == "application/pdf"
                assert response.headers["Content-Disposition"] == f'attachment; filename="receipt-{order_id[:8]}.pdf"'
                assert response.headers["Cache-Control"] == "no-store"
                text = pdf_text(await response.read())
            t = Translator(locale)
            for key in ("receipt_title", "receipt_amount", "receipt_total", "receipt_reference", "method_wallet"):
                assert all(word in text for word in re.findall(r"\w+", nfkc(t(key)))), (locale, key, text)
            assert all(word in text for word in re.findall(r"\w+", nfkc(t("demo_banner")))), (locale, text)
            for amount_minor in (2500, 150, 75, 2575, 2650):
                assert re.sub(r"[^0-9.,]", "", t.money(amount_minor, "EUR")) in text, (locale, amount_minor)
            for fixed in (reference, order_id, "Test CPO Ltd.", "Sofia 1000", "BG123456789", "help@cpo.example"):
                assert fixed in text, (locale, fixed)


@pytest.mark.timeout(120)
async def test_another_drivers_receipt_is_not_found(driver: Driver) -> None:
    me, someone_else = user(), user()
    theirs = await topup(driver, someone_else, {"package_id": "p10"})
    async with browser() as http:
        await launch(driver, http, me)
        for path in (
            f"/topup/{theirs}/receipt",
            f"/topup/{theirs}/receipt.pdf",
            f"/topup/{uuid.uuid4()}/receipt",
            "/topup/not-a-top-up/receipt",
            "/topup/not-a-top-up/receipt.pdf",
        ):
            status, page, response = await get(http, driver.page(path))
            assert status == 404 and response.content_type == "text/html", path
            assert Translator("en")("receipt_not_found") in html.unescape(page)
            assert theirs not in page
    async with browser() as http:  # no session at all
        status, _, _ = await get(http, driver.page(f"/topup/{theirs}/receipt.pdf"))
        assert status == 401


@pytest.mark.timeout(120)
async def test_an_open_launch_shows_no_history_nor_receipts(driver: Driver) -> None:
    """Anyone can type a user id into an open launch: nothing of a driver's top-ups is shown there."""
    user_id = str(random.randint(10**11, 10**12 - 1))
    someones = await topup(driver, user_id, {"package_id": "p10"})
    async with open_page(driver.stack.settings) as page, browser() as http:
        async with http.get(page.at(f"/topup?user_id={user_id}&locale=en")) as launched:
            assert launched.status == 200 and str(launched.url) == page.at("/topup")
            form = await launched.text()
        assert "/topup/history" not in form  # no link to it
        unavailable = Translator("en")("history_unavailable")
        for path in ("/topup/history", f"/topup/{someones}/receipt", f"/topup/{someones}/receipt.pdf"):
            status, body, _ = await get(http, page.at(path))
            assert status == 404 and unavailable in html.unescape(body), path
            assert "€10.00" not in body and someones not in body
