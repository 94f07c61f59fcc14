"""The page in the driver's language, through the real services: a stack offering every language the
page speaks. The launch's locale, else the browser's ``Accept-Language``, else the default; right to
left for Arabic; the language switch on every page of a session (a plain form), back to the page the
driver was on; errors in the driver's language with amounts formatted for it."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from services.page.i18n import Translator
from services.page.messages import SOURCE
from tests.harness import Driver, Stack, own_stack, services_running

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def every_language(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # Every language the page speaks (``operator.locales`` empty); the operator's default is English.
    overrides = {"EVTOPUP__OPERATOR__LOCALES": "[]"}
    async with own_stack(tmp_path_factory.mktemp("languages"), overrides) as stack, services_running(stack):
        yield stack


def user() -> str:
    return f"lang-{uuid.uuid4().hex[:8]}"


def field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} in the page"
    return html.unescape(match.group(1))


async def launch(stack: Stack, browser: aiohttp.ClientSession, locale: str, accept_language: str | None = None) -> str:
    async with aiohttp.ClientSession() as http:
        token = Driver(stack, http).token(user(), locale)
    headers = {"Accept-Language": accept_language} if accept_language else {}
    async with browser.get(stack.url("page", f"/topup?token={token}"), headers=headers) as response:
        assert response.status == 200
        return await response.text()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.mark.parametrize(
    ("locale", "accept_language", "expected", "direction"),
    [
        ("ar", None, "ar", "rtl"),
        ("he-IL", None, "he", "rtl"),
        ("de-AT", None, "de", "ltr"),
        ("pt-BR", None, "pt-BR", "ltr"),
        ("xx", "sw-KE,en;q=0.5", "sw", "ltr"),  # the launch names none we speak: the browser's
        ("xx", "zz;q=0.9", "en", "ltr"),  # nor does the browser: the operator's default
    ],
)
async def test_the_page_speaks_the_launchs_language_else_the_browsers(
    every_language: Stack,
    browser: aiohttp.ClientSession,
    locale: str,
    accept_language: str | None,
    expected: str,
    direction: str,
) -> None:
    page = await launch(every_language, browser, locale, accept_language)
    t = Translator(expected)
    assert f'<html lang="{expected}" dir="{direction}">' in page
    assert html.escape(t("title"), quote=False) in page
    assert t.money(1000, "EUR") in html.unescape(page)  # the package, formatted for the language


async def test_the_language_switch_keeps_the_driver_on_the_page(
    every_language: Stack, browser: aiohttp.ClientSession
) -> None:
    page = await launch(every_language, browser, "en")
    form = {"csrf_token": field(page, "csrf_token"), "next": "/topup", "locale": "ar"}
    async with browser.post(every_language.url("page", "/topup/language"), data=form) as switched:
        assert switched.status == 200 and str(switched.url).endswith("/topup")
        arabic = await switched.text()
    assert '<html lang="ar" dir="rtl">' in arabic and html.escape(Translator("ar")("pay"), quote=False) in arabic
    # Elsewhere than this page, or a language not offered: the form page, in the language it had.
    form = {"csrf_token": field(arabic, "csrf_token"), "next": "https://evil.example/", "locale": "tlh"}
    async with browser.post(every_language.url("page", "/topup/language"), data=form) as odd:
        assert str(odd.url) == every_language.url("page", "/topup")
        assert '<html lang="ar" dir="rtl">' in await odd.text()
    # Without the session's CSRF token nothing changes.
    async with browser.post(
        every_language.url("page", "/topup/language"), data={"csrf_token": "forged", "locale": "de"}
    ) as forged:
        assert forged.status == 403
    async with browser.get(every_language.url("page", "/topup")) as still:
        assert '<html lang="ar" dir="rtl">' in await still.text()


async def test_errors_are_in_the_drivers_language_with_its_money_format(
    every_language: Stack, browser: aiohttp.ClientSession
) -> None:
    page = await launch(every_language, browser, "de")
    form = {
        "csrf_token": field(page, "csrf_token"),
        "idempotency_key": field(page, "idempotency_key"),
        "package_id": "",
        "amount": "5000",
        "method": "card",
    }
    async with browser.post(every_language.url("page", "/topup"), data=form) as refused:
        assert refused.status == 422
        text = html.unescape(await refused.text())
    t = Translator("de")
    print(re.findall(r'class="error"[^>]*>([^<]*)', text))
    assert t.error("amount_out_of_range", {"min_minor": 100, "max_minor": 100_000}, "EUR") in text
    assert "1.000,00" in text and "amount_minor must be" not in text  # German, not the API's English
    form["amount"] = "12,345"
    async with browser.post(every_language.url("page", "/topup"), data=form) as decimals:
        text = html.unescape(await decimals.text())
    assert t("error_amount_too_many_decimals", example=t.amount(100, "EUR")) in text
    assert SOURCE["error_amount_too_many_decimals"].split(".")[0] not in text


async def test_the_api_says_what_is_wrong_with_a_code_and_parameters(every_language: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        driver = Driver(every_language, http)
        status, problem = await driver.create_topup(user(), {"amount_minor": 999_999})
    assert status == 422
    assert (problem["field"], problem["code"], problem["params"]) == (
        "amount_minor",
        "amount_out_of_range",
        {"min_minor": 100, "max_minor": 100_000},
    )


def test_this_module_runs_with_the_catalogues_compiled() -> None:
    # The services read compiled catalogues (tests/conftest.py compiles them, as `make test` does).
    assert (Path(__file__).resolve().parents[2] / "services/page/locales/ar/LC_MESSAGES/page.mo").is_file()


async def test_the_page_and_its_stylesheet_come_compressed(
    every_language: Stack, browser: aiohttp.ClientSession
) -> None:
    await launch(every_language, browser, "ar")
    for path in ("/topup", "/static/page.css"):
        async with browser.get(every_language.url("page", path), headers={"Accept-Encoding": "gzip"}) as response:
            assert response.status == 200
            assert response.headers.get("Content-Encoding") == "gzip", path
            assert "Accept-Encoding" in response.headers.get("Vary", "")
            await response.read()  # and it decompresses
    async with browser.get(every_language.url("page", "/topup"), headers={"Accept-Encoding": "identity"}) as plain:
        assert "Content-Encoding" not in plain.headers


async def test_the_browsers_favicon_request_is_answered_empty_not_404(every_language: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(every_language.url("page", "/favicon.ico")) as response:
        assert response.status == 204 and "max-age" in response.headers["Cache-Control"]
