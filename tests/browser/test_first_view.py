"""The first view (the launch link to the form, ready to use) as a phone on a bad network gets it:
what goes over the wire, compressed, and how long it takes on a slow-3G profile."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.async_api import Browser, CDPSession, Page, expect

from services.page.i18n import Translator
from tests.browser.helpers import PHONE, Site, open_page, user

pytestmark = pytest.mark.e2e

# Issue 9: under 60 KB transferred for the first view, compressed.
FIRST_VIEW_BUDGET_BYTES = 60 * 1024
TEXT_TYPES = ("text/html", "text/css", "javascript", "image/svg+xml")
COMPRESSED = {"gzip", "deflate", "br", "zstd"}
# A body this small may go as it is: compressing it saves nothing worth a header.
COMPRESS_FROM_BYTES = 1024

# The slow-3G profile (Chrome DevTools' "Slow 3G" bandwidth, Lighthouse's mobile RTT): 400 kbit/s
# each way, 400 ms added to every request; and a phone's CPU, four times slower than this machine's.
SLOW_3G = {"offline": False, "latency": 400, "downloadThroughput": 400_000 / 8, "uploadThroughput": 400_000 / 8}
CPU_SLOWDOWN = 4
# Usable within 5 s on it. The first view takes, one after the other, the launch (a 303), the form's
# HTML, then its stylesheet, scripts and method logos (in parallel): three round trips at least,
# five with a chain of subresources: 5 x 400 ms = 2.0 s; the whole 60 KB budget at 400 kbit/s is
# 1.2 s more; about a second is left for the servers, parsing and layout on a slow CPU. A page within
# its byte budget and without chains of requests is well inside; one that is not, is not.
USABLE_WITHIN_S = 5.0


@dataclass
class Transfer:
    url: str = ""
    status: int = 0
    mime_type: str = ""
    encoding: str = ""
    bytes: int = 0  # over the network: headers and the (compressed) body
    body_bytes: int = 0  # the body as it came (compressed)


@dataclass
class Wire:
    """What one page's requests cost on the network, as Chromium counts it (the DevTools protocol's
    ``encodedDataLength``): redirects included."""

    transfers: dict[str, Transfer] = field(default_factory=dict)
    redirects: list[Transfer] = field(default_factory=list)

    async def listen(self, cdp: CDPSession) -> None:
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.responseReceived", self._received)
        cdp.on("Network.dataReceived", self._data)
        cdp.on("Network.loadingFinished", self._finished)
        await cdp.send("Network.enable")

    def _transfer(self, request_id: str) -> Transfer:
        return self.transfers.setdefault(request_id, Transfer())

    def _sent(self, event: dict[str, Any]) -> None:
        redirect = event.get("redirectResponse")
        if redirect is not None:
            self.redirects.append(
                Transfer(redirect["url"], redirect["status"], "", "", int(redirect.get("encodedDataLength", 0)))
            )

    def _received(self, event: dict[str, Any]) -> None:
        response = event["response"]
        headers = {name.lower(): value for name, value in response["headers"].items()}
        transfer = self._transfer(event["requestId"])
        transfer.url, transfer.status = response["url"], response["status"]
        transfer.mime_type = response.get("mimeType", "")
        transfer.encoding = headers.get("content-encoding", "")

    def _data(self, event: dict[str, Any]) -> None:
        self._transfer(event["requestId"]).body_bytes += int(event.get("encodedDataLength", 0))

    def _finished(self, event: dict[str, Any]) -> None:
        self._transfer(event["requestId"]).bytes = int(event["encodedDataLength"])

    def total(self) -> int:
        return sum(t.bytes for t in self.transfers.values()) + sum(r.bytes for r in self.redirects)

    def report(self) -> str:
        rows = [*self.redirects, *self.transfers.values()]
        # The launch link's token stays out of the test's output.
        return "\n".join(
            f"{r.bytes:>7} B {r.status} {r.encoding or '-':7} {r.mime_type:24} {r.url.split('?token=')[0]}"
            for r in rows
        )


async def first_view(page: Page, site: Site, locale: str) -> Wire:
    wire = Wire()
    await wire.listen(await page.context.new_cdp_session(page))
    await page.goto(site.launch_url(user(), locale), wait_until="load")
    await expect(page.get_by_role("button", name=Translator(locale)("pay"))).to_be_enabled()
    return wire


@pytest.mark.parametrize("locale", ["en", "ar"])
async def test_the_first_view_is_under_60_kb_compressed(chromium: Browser, site: Site, locale: str) -> None:
    async with open_page(chromium, **PHONE) as page:
        wire = await first_view(page, site, locale)
        await page.wait_for_load_state("networkidle")
    print(f"first view ({locale}): {wire.total()} bytes\n{wire.report()}")
    assert wire.transfers, "nothing was measured"
    uncompressed = [
        t.url
        for t in wire.transfers.values()
        if any(kind in t.mime_type for kind in TEXT_TYPES)
        and t.body_bytes >= COMPRESS_FROM_BYTES
        and t.encoding not in COMPRESSED
    ]
    assert uncompressed == [], f"sent uncompressed:\n{wire.report()}"
    assert wire.total() < FIRST_VIEW_BUDGET_BYTES, wire.report()


async def test_the_first_view_is_usable_within_5_s_on_slow_3g(chromium: Browser, site: Site) -> None:
    async with open_page(chromium, **PHONE) as page:
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.emulateNetworkConditions", SLOW_3G)
        await cdp.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
        started = time.monotonic()
        wire = await first_view(page, site, "en")
        usable_s = time.monotonic() - started
        # Usable: laid out with its stylesheet (not the browser's plain form), and a package can be chosen.
        styled = "[...document.styleSheets].some(sheet => sheet.href && sheet.cssRules.length > 0)"
        assert await page.evaluate(styled), "no stylesheet applied"
        await expect(page.locator('input[name="package_id"]').first).to_be_enabled()
    print(f"usable after {usable_s:.2f} s on slow 3G ({wire.total()} bytes)\n{wire.report()}")
    assert usable_s < USABLE_WITHIN_S, wire.report()
