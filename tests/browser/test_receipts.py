"""The history and a receipt in a real browser: from the form to the history to a receipt by links;
the receipt's Print button (shown by the page's own script, under the page's real CSP), what paper
gets (the receipt, without the buttons and the language switch), the PDF as a download; and without
JavaScript, no button that would do nothing."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from services.page.i18n import Translator
from tests.browser.helpers import PHONE, Site, launch, open_page, screenshot, user

pytestmark = pytest.mark.e2e


async def paid_topup(site: Site, user_id: str) -> str:
    created, order = await site.driver.create_topup(user_id, {"package_id": "p25", "method": "card"})
    assert created == 201, order
    await site.driver.pay(order["redirect_url"])
    await site.driver.wait_status(user_id, order["id"], "credited")
    return str(order["id"])


@pytest.mark.parametrize("locale", ["en", "ar"])
async def test_from_the_form_to_a_receipt_to_paper_and_pdf(chromium: Browser, site: Site, locale: str) -> None:
    t = Translator(locale)
    user_id = user()
    order_id = await paid_topup(site, user_id)
    async with open_page(chromium, locale=locale, accept_downloads=True, **PHONE) as page:
        await launch(page, site, locale, user_id)
        await page.get_by_role("link", name=t("history_link")).click()
        await page.wait_for_url(site.url("/topup/history"))
        await expect(page.locator(f"#order-{order_id}")).to_have_attribute("data-status", "credited")
        await screenshot(page, locale, "history-browser")
        await page.locator(f"#order-{order_id}").get_by_role("link", name=t("receipt_link")).click()
        await page.wait_for_url(site.url(f"/topup/{order_id}/receipt"))
        await expect(page.locator("#receipt-total dd")).to_contain_text(re.compile(r"25[.,]00"))

        print_button = page.get_by_role("button", name=t("receipt_print"))
        await expect(print_button).to_be_visible()  # receipt.js ran under the page's CSP
        await page.emulate_media(media="print")
        await expect(page.locator("#receipt")).to_be_visible()
        for hidden in ("#receipt-actions", "form.language"):
            await expect(page.locator(hidden)).to_be_hidden()
        await screenshot(page, locale, "receipt-print")
        await page.emulate_media(media="screen")

        async with page.expect_download() as download_info:
            await page.get_by_role("link", name=t("receipt_pdf")).click()
        download = await download_info.value
        assert download.suggested_filename == f"receipt-{order_id[:8]}.pdf"
        path = await download.path()
        assert path is not None and path.read_bytes().startswith(b"%PDF-")


async def test_without_javascript_no_print_button_and_the_pdf_is_a_link(chromium: Browser, site: Site) -> None:
    user_id = user()
    order_id = await paid_topup(site, user_id)
    async with open_page(chromium, java_script_enabled=False, **PHONE) as page:
        await launch(page, site, "en", user_id)
        await page.goto(site.url(f"/topup/{order_id}/receipt"))
        await expect(page.locator("#print")).to_be_hidden()
        await expect(page.get_by_role("link", name="Download PDF")).to_have_attribute(
            "href", f"/topup/{order_id}/receipt.pdf"
        )
