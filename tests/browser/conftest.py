"""The page in a real browser: Debian's Chromium driven by Playwright, headless, against a stack of
the real services offering every language, the sandbox processor's hosted page being the processor.
One browser for the session, one stack for this package; each test opens contexts of its own (a
context is a fresh profile: its own cookies, cache, viewport, language, JavaScript on or off)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.browser.helpers import AXE_SCRIPT, Site
from tests.harness import Driver, own_stack, services_running


def _chromium() -> str | None:
    path = os.environ.get("EVTOPUP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).is_file() else None


def missing(what: str) -> None:
    """Without Chromium or axe-core a developer's plain ``pytest`` skips these tests; CI (``CI`` set,
    where ``.ci/run`` installs both) fails instead, so that a missing install step cannot hide them."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: .ci/run installs it", pytrace=False)
    pytest.skip(what)


@pytest_asyncio.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    executable = _chromium()
    if executable is None:
        missing("no Chromium (apt-get install chromium, or EVTOPUP_CHROMIUM=/path/to/chromium)")
    async with async_playwright() as playwright:
        # Debian's Chromium, never a downloaded one. Nothing but localhost is reachable here: no
        # background connections (updates, sync, field trials) that the closed network refuses.
        browser = await playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    if not AXE_SCRIPT.is_file():
        missing("no axe-core: npm ci --prefix tests/browser")
    return AXE_SCRIPT


@pytest_asyncio.fixture(scope="package")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """The three services on a stack of their own, offering every language the page speaks."""
    every_language = {"EVTOPUP__OPERATOR__LOCALES": "[]"}
    async with (
        own_stack(tmp_path_factory.mktemp("browser"), every_language) as stack,
        services_running(stack),
        aiohttp.ClientSession() as http,
    ):
        yield Site(stack, Driver(stack, http))
