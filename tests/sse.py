"""Reading a page's server-sent events (``GET /topup/{id}/events``) as a browser's EventSource would,
and a browser-like client session launched for a driver."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.harness import Driver


async def read_event(response: aiohttp.ClientResponse, timeout_s: float = 30) -> tuple[str, Any]:
    """The next event on the stream, as (its type, its JSON data), or ``("comment", text)`` for a
    comment; ``("retry", ms)`` for a retry field alone. EOFError when the stream has ended."""
    fields: dict[str, str] = {}
    while True:
        raw = await asyncio.wait_for(response.content.readline(), timeout_s)
        if raw == b"":
            raise EOFError
        line = raw.decode().rstrip("\n")
        if line:
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
            continue
        if "event" in fields:
            return fields["event"], json.loads(fields["data"])
        if "comment" in fields:
            return "comment", fields["comment"]
        if "retry" in fields:
            return "retry", int(fields["retry"])
        fields = {}


async def statuses_until_the_end(response: aiohttp.ClientResponse, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every status event until the stream ends (heartbeats skipped)."""
    sent: list[dict[str, Any]] = []
    while True:
        try:
            kind, data = await read_event(response, timeout_s)
        except EOFError:
            return sent
        if kind == "status":
            sent.append(data)


async def launched(driver: Driver, user_id: str, page_url: str | None = None) -> aiohttp.ClientSession:
    """A browser (its own cookie jar) with a session for ``user_id``, launched on ``page_url`` (the
    stack's page by default). The caller closes it."""
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    base = page_url or driver.stack.url("page")
    async with browser.get(f"{base}/topup?token={driver.token(user_id)}") as response:
        assert response.status == 200, await response.text()
    return browser
