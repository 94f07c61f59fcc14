"""What a driver does in the browser, in a few steps the tests share: open the launch link, choose
on the form, press Pay (or Decline) on the sandbox's hosted page, come back to the return page; and
the checks run on a page: axe-core, screenshots."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect
from playwright.async_api import Error as PlaywrightError

from services.page.i18n import Translator
from tests.harness import REPO, Driver, Stack, fetch

AXE_SCRIPT = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "build" / "screenshots"
# WCAG 2.0, 2.1 and 2.2, levels A and AA: the rules axe-core checks for each.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# A phone a driver holds at a charging station: a small Android's CSS viewport, twice as many pixels.
PHONE: dict[str, Any] = {
    "viewport": {"width": 360, "height": 740},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
RETURN_PAGE = re.compile(r".*/topup/(?P<order>[0-9a-f-]{36})/return$")
CHECKOUT_PAGE = re.compile(r".*/sandbox/checkout/[^/]+$")
# The stack's currency and packages (tests/harness.py CONFIG_TEMPLATE).
CURRENCY = "EUR"
PACKAGES = {"p10": (1000, 0), "p25": (2500, 150)}


@dataclass
class Site:
    stack: Stack
    driver: Driver

    def url(self, path: str = "") -> str:
        return self.stack.url("page", path)

    def launch_url(self, user_id: str, locale: str) -> str:
        return self.url(f"/topup?token={self.driver.token(user_id, locale)}")


def user() -> str:
    return f"web-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def open_page(browser: Browser, locale: str = "en-US", **options: Any) -> AsyncIterator[Page]:
    """A page in a fresh browser profile (``locale`` is the browser's language: ``Accept-Language``)."""
    context = await browser.new_context(locale=locale, **options)
    context.set_default_timeout(20_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def launch(page: Page, site: Site, locale: str, user_id: str | None = None) -> str:
    """Open a launch link as the app would; the form is shown at /topup (the token gone from the address)."""
    user_id = user_id or user()
    response = await page.goto(site.launch_url(user_id, locale))
    assert response is not None and response.status == 200, response and await response.text()
    assert page.url == site.url("/topup"), page.url
    return user_id


async def visit(page: Page, url: str, status: int = 200) -> None:
    """Go to ``url``; the page must answer ``status`` (a 500's body in the failure, not a timeout later)."""
    response = await page.goto(url)
    assert response is not None, url
    assert response.status == status, f"{url}: {response.status} {await response.text()}"


async def choose(page: Page, name: str, value: str) -> None:
    """Tick a radio button as a driver does: by the control, or (if the design hides the control
    itself behind its label) by what covers it."""
    radio = page.locator(f'input[name="{name}"][value="{value}"]')
    try:
        await radio.check(timeout=3_000)
    except PlaywrightError:
        await radio.check(force=True)
    await expect(radio).to_be_checked()


async def to_checkout(page: Page, t: Translator, package: str = "p10", method: str = "card") -> str:
    """On the form: choose a package and a method, press the Pay button (found by its text in the
    driver's language); the browser lands on the sandbox's hosted page, whose address is returned."""
    await choose(page, "package_id", package)
    await choose(page, "method", method)
    await page.get_by_role("button", name=t("pay")).click()
    await page.wait_for_url(CHECKOUT_PAGE)
    return page.url


async def on_sandbox(page: Page, outcome: str = "succeeded") -> str:
    """Press Pay (or Decline) on the sandbox's hosted page; back on the return page, its order id."""
    await page.get_by_role("button", name="Pay" if outcome == "succeeded" else "Decline", exact=True).click()
    await page.wait_for_url(RETURN_PAGE)
    match = RETURN_PAGE.fullmatch(page.url)
    assert match is not None
    return match["order"]


async def wait_status(page: Page, status: str, timeout_s: float = 30) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-status", status, timeout=timeout_s * 1000)


async def order_of(site: Site, checkout_url: str) -> tuple[str, str, int]:
    """The order behind a sandbox checkout page: (order id, processor reference, charge)."""
    reference = checkout_url.rstrip("/").rsplit("/", 1)[1]
    rows = await fetch(
        site.stack.dsn("payments"),
        "SELECT order_id, processor_reference, charge_minor FROM payments WHERE processor_reference = $1",
        reference,
    )
    assert rows, f"no payment for {checkout_url}"
    return str(rows[0]["order_id"]), rows[0]["processor_reference"], rows[0]["charge_minor"]


async def html_attributes(page: Page) -> tuple[str | None, str | None]:
    root = page.locator("html")
    return await root.get_attribute("lang"), await root.get_attribute("dir")


async def axe_violations(page: Page, axe_script: Path) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 AA violations on the page as it stands, summed up: rule, impact, what to
    fix and where. The page's context must bypass its CSP (axe is injected as a script of the test's,
    which ``script-src`` would refuse). A page that refreshes itself (meta refresh) may reload under
    axe: run again on the new document."""
    for _ in range(5):
        try:
            await page.wait_for_load_state("load")
            await page.add_script_tag(path=str(axe_script))
            result: list[dict[str, Any]] = await page.evaluate(
                """async (tags) => {
                    const results = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
                    return results.violations.map(v => ({
                        rule: v.id, impact: v.impact, help: v.help, wcag: v.tags.filter(t => t.startsWith('wcag')),
                        nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 160),
                                                  summary: n.failureSummary})),
                    }));
                }""",
                AXE_TAGS,
            )
            return result
        except PlaywrightError as exc:
            if "destroyed" not in str(exc) and "navigat" not in str(exc) and "axe is not defined" not in str(exc):
                raise
    raise AssertionError(f"axe could not finish on {page.url}: the page kept reloading")


async def screenshot(page: Page, locale: str, name: str) -> Path:
    """The whole page as a picture for a person to look at: build/screenshots/<locale>/<name>.png."""
    path = SCREENSHOTS / locale / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            await page.wait_for_load_state("load")
            await page.screenshot(path=str(path), full_page=True, animations="disabled")
            return path
        except PlaywrightError as exc:
            if "navigat" not in str(exc) and "destroyed" not in str(exc):
                raise
    raise AssertionError(f"no screenshot of {page.url}: the page kept reloading")


# On a phone: whether the page is wider than the screen (it would scroll sideways), and every target
# smaller than a thumb can hit: 24 x 24 CSS pixels (WCAG 2.2, 2.5.8), measured strictly, without the
# criterion's spacing exception. A radio button's target is its label (a tap on it ticks it); a link
# inside a sentence is exempt, as the criterion says.
PHONE_CHECK = """() => {
    const root = document.documentElement;
    const small = [];
    const targets = document.querySelectorAll(
        'a[href], button, select, textarea, summary, [role=button], input:not([type=hidden])');
    for (const element of targets) {
        let target = element;
        if (element.matches('input[type=radio], input[type=checkbox]') && element.closest('label')) {
            target = element.closest('label');
        }
        const box = target.getBoundingClientRect();
        if (box.width === 0 || box.height === 0 || getComputedStyle(target).visibility === 'hidden') continue;
        if (element.matches('a') && element.parentElement.textContent.trim() !== element.textContent.trim()) {
            continue;  // in a sentence
        }
        if (box.width < 24 || box.height < 24) {
            const tag = target.outerHTML.slice(0, 100).replace(/\\s+/g, ' ');
            small.push(`${tag} ${Math.round(box.width)}x${Math.round(box.height)}`);
        }
    }
    return {sideways_px: root.scrollWidth - root.clientWidth, small};
}"""


async def phone_problems(page: Page) -> dict[str, Any]:
    """What is wrong with the page on a phone (``PHONE_CHECK``); empty if nothing is."""
    result: dict[str, Any] = await page.evaluate(PHONE_CHECK)
    return {name: value for name, value in result.items() if value}
