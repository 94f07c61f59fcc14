"""A driver's top-up in Chromium, from the app's launch link to the credited balance, through the
sandbox's hosted page: in four languages (one right to left), switching language on the way, after a
decline, without JavaScript, and the return page following the payment live. (On a phone:
test_accessibility.py, which sees every page at a phone's size.)"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from services.page.i18n import Translator
from tests.browser.helpers import (
    CURRENCY,
    PACKAGES,
    RETURN_PAGE,
    Site,
    html_attributes,
    launch,
    on_sandbox,
    open_page,
    order_of,
    to_checkout,
    visit,
    wait_status,
)

pytestmark = pytest.mark.e2e


async def assert_credited(page: Page, site: Site, t: Translator, user_id: str, credit_minor: int) -> None:
    """The return page says, in the driver's language, that the balance was topped up, shows the new
    balance and offers the way back to the app; and the balance is what it says."""
    await wait_status(page, "credited")
    await expect(page.locator("#status")).to_contain_text(t("status_credited"))
    await expect(page.locator("body")).to_contain_text(t("new_balance", balance=t.money(credit_minor, CURRENCY)))
    back = page.get_by_role("link", name=t("back_to_app"))
    assert await back.get_attribute("href") == site.stack.settings.operator.return_deep_link
    assert await site.driver.balance(user_id) == credit_minor


async def side_of_control(page: Page, name: str) -> str:
    """Which side of its label a radio button sits on: "left" in a left-to-right layout, "right" when
    the layout is mirrored."""
    sides: list[str] = await page.locator(f'label:has(input[name="{name}"])').evaluate_all(
        """labels => labels.map(label => {
            const box = label.getBoundingClientRect();
            const control = label.querySelector('input').getBoundingClientRect();
            return control.left + control.width / 2 > box.left + box.width / 2 ? 'right' : 'left';
        })"""
    )
    assert sides and len(set(sides)) == 1, sides
    return sides[0]


@pytest.mark.parametrize(("locale", "direction"), [("en", "ltr"), ("de", "ltr"), ("ar", "rtl"), ("sw", "ltr")])
async def test_a_whole_top_up_in_the_drivers_language(
    chromium: Browser, site: Site, locale: str, direction: str
) -> None:
    t = Translator(locale)
    async with open_page(chromium) as page:  # the browser's own language is English: the launch's wins
        user_id = await launch(page, site, locale)
        assert await html_attributes(page) == (locale, direction)
        await expect(page.get_by_role("heading", name=t("title"))).to_be_visible()
        await expect(page.locator("body")).to_contain_text(t.money(PACKAGES["p25"][0], CURRENCY))
        await expect(page.locator("body")).to_contain_text(t("bonus", bonus=t.money(PACKAGES["p25"][1], CURRENCY)))
        # Right to left: the whole layout mirrored, not only the text's direction.
        assert await page.evaluate("getComputedStyle(document.body).direction") == direction
        assert await side_of_control(page, "method") == ("right" if direction == "rtl" else "left")

        await to_checkout(page, t, package="p25", method="card")
        await on_sandbox(page, "succeeded")
        assert await html_attributes(page) == (locale, direction)
        await assert_credited(page, site, t, user_id, sum(PACKAGES["p25"]))


async def test_the_language_switch_at_the_bottom_of_every_page(chromium: Browser, site: Site) -> None:
    async with open_page(chromium) as page:
        await launch(page, site, "en")
        # The form: English to German, on the same page.
        await page.locator("#language").select_option("de")
        await page.get_by_role("button", name=Translator("en")("change_language")).click()
        await expect(page.locator("html")).to_have_attribute("lang", "de")
        assert page.url == site.url("/topup")
        de = Translator("de")
        await expect(page.get_by_role("heading", name=de("title"))).to_be_visible()
        # The return page: German to Arabic, staying there, right to left.
        await to_checkout(page, de)
        await on_sandbox(page, "failed")
        await wait_status(page, "failed")
        return_url = page.url
        await page.locator("#language").select_option("ar")
        await page.get_by_role("button", name=de("change_language")).click()
        await expect(page.locator("html")).to_have_attribute("dir", "rtl")
        assert page.url == return_url
        await expect(page.locator("#status")).to_contain_text(Translator("ar")("status_failed"))


async def test_a_declined_payment_then_a_retry_that_succeeds(chromium: Browser, site: Site) -> None:
    t = Translator("en")
    async with open_page(chromium) as page:
        user_id = await launch(page, site, "en")
        await to_checkout(page, t, package="p25")
        await on_sandbox(page, "failed")
        await wait_status(page, "failed")
        await expect(page.locator("#status")).to_contain_text(t("status_failed"))
        await expect(page.locator("body")).to_contain_text(t("next_failed"))
        # No new balance for a failed payment, and nothing moved.
        await expect(page.locator("body")).not_to_contain_text(t("new_balance", balance="").strip())
        assert await site.driver.balance(user_id) == 0

        await page.get_by_role("link", name=t("try_again")).click()
        await page.wait_for_url(site.url("/topup"))
        await to_checkout(page, t, package="p10")
        await on_sandbox(page, "succeeded")
        await assert_credited(page, site, t, user_id, PACKAGES["p10"][0])


async def test_the_whole_top_up_without_javascript(chromium: Browser, site: Site) -> None:
    t = Translator("de")
    async with open_page(chromium, java_script_enabled=False) as page:
        user_id = await launch(page, site, "de")
        await to_checkout(page, t, package="p10", method="wallet")
        await on_sandbox(page, "succeeded")
        # Plain form posts all the way, and the return page reaches credited by refreshing itself.
        await assert_credited(page, site, t, user_id, PACKAGES["p10"][0])


async def test_the_return_page_follows_the_payment_live_without_reloading(chromium: Browser, site: Site) -> None:
    """With JavaScript the return page follows the top-up by server-sent events: from pending to
    credited without a reload (the marker set on ``window`` survives, no new document loads)."""
    t = Translator("en")
    async with open_page(chromium) as page:
        user_id = await launch(page, site, "en")
        checkout = await to_checkout(page, t, package="p10")
        order_id, _, _ = await order_of(site, checkout)
        await visit(page, site.url(f"/topup/{order_id}/return"))
        await wait_status(page, "pending")
        await page.evaluate("window.__evtopupMarker = 'the same document'")
        loads: list[str] = []
        page.on("load", lambda loaded: loads.append(loaded.url))

        # The processor's page in another tab (here: the sandbox's Pay, pressed over HTTP).
        assert RETURN_PAGE.fullmatch(await site.driver.pay(checkout))
        await wait_status(page, "credited")
        await expect(page.locator("#status")).to_contain_text(t("status_credited"))
        assert await page.evaluate("window.__evtopupMarker") == "the same document"
        assert loads == [], f"the return page reloaded: {loads}"
        await expect(page.get_by_role("link", name=t("back_to_app"))).to_be_visible()
        assert await site.driver.balance(user_id) == PACKAGES["p10"][0]
