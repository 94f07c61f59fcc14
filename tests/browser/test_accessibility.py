"""Every page of the page service, in English, German and Arabic (right to left), at a phone's size:
checked by axe-core against WCAG 2.2 AA, checked for sideways scrolling and small targets, and
photographed for a person to look at (build/screenshots/<locale>/<page>.png). The pages: the message
page (no session), the form, the account switch, the return page in each state a test can bring
about (pending, failed, credited, under review), the history and a receipt.

One tour of the pages per language (the ``tour`` fixture) serves the tests of this module; the
top-ups behind the return pages are made and paid over HTTP (the browser's own top-ups, through the
form and the sandbox's page, are in test_topup.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from tests.browser.helpers import (
    PHONE,
    Site,
    axe_violations,
    launch,
    open_page,
    order_of,
    phone_problems,
    screenshot,
    user,
    visit,
    wait_status,
)
from tests.simulators.sandbox import send_webhook, webhook_body

pytestmark = pytest.mark.e2e

# Each return page, and the status its top-up reaches.
RETURN_PAGES = {
    "return-pending": "pending",
    "return-failed": "failed",
    "return-credited": "credited",
    "return-under_review": "under_review",
}
# The pages every locale's tour must have seen.
PAGES = ["message", "form", "switch", *RETURN_PAGES, "history", "receipt"]


@dataclass
class Tour:
    locale: str
    axe: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    phone: dict[str, dict[str, Any]] = field(default_factory=dict)
    pictures: dict[str, Path] = field(default_factory=dict)
    # The pages with the language switch (the form at the bottom).
    language_switch: set[str] = field(default_factory=set)

    async def look_at(self, page: Page, name: str, axe_script: Path) -> None:
        self.pictures[name] = await screenshot(page, self.locale, name)
        if await page.locator('form[action="/topup/language"] select[name="locale"]').count():
            self.language_switch.add(name)
        problems = await phone_problems(page)
        if problems:
            self.phone[name] = problems
        violations = await axe_violations(page, axe_script)
        if violations:
            self.axe[name] = violations


async def topup(site: Site, user_id: str, status: str) -> str:
    """A top-up of ``user_id`` made over the page's API that reaches ``status``: left pending, declined
    or paid on the sandbox's page, or held for review (the processor confirming another amount than
    charged). Its order id."""
    created, order = await site.driver.create_topup(user_id, {"package_id": "p10", "method": "card"})
    assert created == 201, order
    if status in ("credited", "failed"):
        await site.driver.pay(order["redirect_url"], "succeeded" if status == "credited" else "failed")
    elif status == "under_review":
        _, reference, charge_minor = await order_of(site, order["redirect_url"])
        body = webhook_body(reference, "succeeded", charge_minor - 1, "EUR")
        webhooks = site.stack.url("payments", "/webhooks/sandbox_main")
        assert await send_webhook(site.driver.http, webhooks, site.stack.webhook_secret, body) == 200
    return str(order["id"])


@pytest_asyncio.fixture(scope="module", params=["en", "de", "ar"])
async def tour(request: pytest.FixtureRequest, chromium: Browser, site: Site, axe_script: Path) -> AsyncIterator[Tour]:
    locale: str = request.param
    tour = Tour(locale)
    # axe-core is injected as a script of the test's own, which the page's CSP (rightly) refuses:
    # these contexts bypass it. Every other test runs under the page's real CSP.
    async with open_page(chromium, locale=locale, bypass_csp=True, **PHONE) as page:
        # No session: the message page, in the browser's language.
        await visit(page, site.url("/topup"), 401)
        await tour.look_at(page, "message", axe_script)

        user_id = await launch(page, site, locale)
        orders = asyncio.gather(*(topup(site, user_id, status) for status in RETURN_PAGES.values()))
        await tour.look_at(page, "form", axe_script)

        # Someone else's launch link in the same browser: the account switch asks first.
        await visit(page, site.launch_url(user(), locale))
        await tour.look_at(page, "switch", axe_script)

        order_ids = dict(zip(RETURN_PAGES, await orders, strict=True))
        for name, status in RETURN_PAGES.items():
            await visit(page, site.url(f"/topup/{order_ids[name]}/return"))
            await wait_status(page, status)
            await tour.look_at(page, name, axe_script)

        # The driver's history, and the receipt of the credited top-up.
        await visit(page, site.url("/topup/history"))
        await tour.look_at(page, "history", axe_script)
        await visit(page, site.url(f"/topup/{order_ids['return-credited']}/receipt"))
        await tour.look_at(page, "receipt", axe_script)
    yield tour


def test_every_page_was_seen_and_photographed(tour: Tour) -> None:
    assert set(PAGES) <= set(tour.pictures), sorted(tour.pictures)
    assert all(picture.stat().st_size > 0 for picture in tour.pictures.values())


def test_every_page_of_a_session_has_the_language_switch(tour: Tour) -> None:
    # Not the message page (no session to change) nor the account switch (the question is about
    # another launch, in its language).
    of_a_session = set(tour.pictures) - {"message", "switch"}
    assert of_a_session - tour.language_switch == set()


def test_every_page_meets_wcag_2_2_aa(tour: Tour) -> None:
    assert tour.axe == {}, format_violations(tour.axe)


def test_on_a_phone_nothing_scrolls_sideways_and_every_target_fits_a_thumb(tour: Tour) -> None:
    assert tour.phone == {}


def format_violations(violations: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for page, found in violations.items():
        for violation in found:
            lines.append(
                f"{page}: {violation['rule']} ({violation['impact']}, {violation['wcag']}): {violation['help']}"
            )
            lines.extend(
                f"    {node['target']}: {node['html']}\n      {node['summary']}" for node in violation["nodes"]
            )
    return "\n".join(lines)
