"""The form's script (services/page/static/form.js) in Chromium: the summary follows the driver's
choice live (package, typed amount, method), computed from the numbers the server put in the page
with the server's rounding, and formatted exactly as the server formats money, in every language the
page speaks and currencies of 0, 2 and 3 decimals; after a refused submit, the error takes the focus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from services.page import assets, pages
from services.page.i18n import Translator, available_locales
from services.page.launch import Session
from shared.money import basis_points, to_major
from shared.settings import Settings, load_settings
from tests.browser.helpers import Site, launch, open_page
from tests.unit.test_settings import DEMO_TOML, SECRETS

pytestmark = pytest.mark.e2e

SCRIPT = (assets.STATIC_DIR / "form.js").read_text()


async def total_of(page: Page) -> str:
    return (await page.locator("#summary-total").text_content() or "").strip()


async def test_the_summary_follows_the_choice_live(chromium: Browser, site: Site) -> None:
    t = Translator("en")
    async with open_page(chromium) as page:
        await launch(page, site, "en")
        assert await total_of(page) == t.money(1000, "EUR")  # the server's, for the first choice
        await page.locator('input[name="package_id"][value="p25"]').check()
        await page.locator('input[name="method"][value="wallet"]').check()
        # 25.00 + 0.25 + 2 % of 25.00
        await expect(page.locator("#summary-total")).to_have_text(t.money(2575, "EUR"))
        await expect(page.locator("#summary-for")).to_have_text(
            t("summary_for", amount=t.money(2500, "EUR"), method=t("method_wallet"))
        )
        await expect(page.locator("#summary-bonus")).to_have_text(t.money(150, "EUR"))
        await expect(page.locator("#summary-bonus-row")).to_be_visible()
        # Typing an amount chooses it; 2 % of 12.34 is 0.2468, half up to 0.25, as the server rounds.
        await page.locator("#amount").fill("12.34")
        await expect(page.locator('input[name="package_id"][value=""]')).to_be_checked()
        await expect(page.locator("#summary-total")).to_have_text(t.money(1234 + 25 + basis_points(1234, 200), "EUR"))
        await expect(page.locator("#summary-bonus-row")).to_be_hidden()
        await expect(page.locator("#summary-balance-after")).to_have_text(t.money(1234, "EUR"))
        # An amount the server would refuse: no total, the hint to choose instead.
        for refused in ("abc", "0.50", "1000.01", "1.234"):
            await page.locator("#amount").fill(refused)
            await expect(page.locator("#summary-values")).to_be_hidden()
            await expect(page.locator("#summary-empty")).to_be_visible()
        await page.locator("#amount").fill("7,5")
        await page.locator('input[name="method"][value="card"]').check()
        await expect(page.locator("#summary-total")).to_have_text(t.money(750, "EUR"))


async def test_a_refused_submit_puts_the_focus_on_the_error(chromium: Browser, site: Site) -> None:
    t = Translator("de")
    async with open_page(chromium) as page:
        await launch(page, site, "de")
        await page.locator("#amount").fill("5000")
        await page.get_by_role("button", name=t("pay")).click()
        error = page.locator("#form-error")
        await expect(error).to_be_focused()
        await expect(error).to_contain_text(
            t.error("amount_out_of_range", {"min_minor": 100, "max_minor": 100_000}, "EUR")
        )
        await error.get_by_role("link", name=t("error_go_to")).click()
        await expect(page.locator("#amount")).to_be_focused()


def settings_in(tmp_path: Path, currency: str) -> Settings:
    path = tmp_path / f"{currency}.toml"
    path.write_text(DEMO_TOML)
    env = {
        **SECRETS,
        "EVTOPUP__OPERATOR__CURRENCY": currency,
        "EVTOPUP__OPERATOR__LOCALES": "[]",
        "EVTOPUP__AMOUNTS__MAX_MINOR": "1000000000",
    }
    return load_settings(path, env)


@pytest.mark.parametrize("currency", ["EUR", "JPY", "KWD", "INR"])
async def test_the_script_formats_money_as_the_server_does_in_every_language(
    chromium: Browser, tmp_path: Path, currency: str
) -> None:
    settings = settings_in(tmp_path, currency)
    # The demo's wallet: 0.20 + 1.5 %; amounts whose groups of digits show (and a four-digit one).
    fee = settings.integrations["sandbox_demo"].fees["wallet"]
    typed = [123_456_789, 1_234_000, 98_765, 1_234]
    async with open_page(chromium, java_script_enabled=True) as page:
        for locale in available_locales():
            t = Translator(locale)
            session = Session("driver-1", locale, "csrf", int(time.time()))
            html = pages._form_page(settings, session).text
            assert html is not None
            await page.set_content(html.replace('<script src="', '<script data-src="'))
            await page.add_script_tag(content=SCRIPT)
            await page.locator('input[name="method"][value="wallet"]').check()
            for minor in typed:
                await page.locator("#amount").fill(str(to_major(minor, currency)))
                expected = t.money(minor + fee.fixed_minor + basis_points(minor, fee.rate_bp), currency)
                await expect(page.locator("#summary-total")).to_have_text(expected)
                # Exactly, character for character (to_have_text forgives kinds of spaces).
                assert await page.locator("#summary-total").text_content() == expected, locale
                assert await page.locator("#summary-amount").text_content() == t.money(minor, currency), locale
