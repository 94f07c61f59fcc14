"""The sandbox processor's webhook side, written independently of ``services/payments`` from its
documented wire format (``processors/sandbox.py`` docstring), so the adapter and this simulator
cannot share one mistake. Sends signed, duplicated, reordered and stale webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

import aiohttp


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    signed_payload = b"%d.%s" % (timestamp, body)
    digest = hmac.HMAC(secret.encode("utf-8"), signed_payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_body(reference: str, status: str, amount_minor: int, currency: str, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(8)}",
            "type": f"checkout.{status}",
            "created": int(time.time()),
            "data": {"reference": reference, "status": status, "amount_minor": amount_minor, "currency": currency},
        }
    ).encode()


async def send_webhook(
    http: aiohttp.ClientSession,
    url: str,
    secret: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    signature: str | None = None,
) -> int:
    if signature is None:
        signature = signature_header(secret, body, int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json"}
    if signature:
        headers["Sandbox-Signature"] = signature
    async with http.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


class SandboxSimulator:
    """The sandbox as the adapter conformance tests see it: signed webhooks in its wire format, and a
    way to make the processor itself consider a checkout paid or declined."""

    processor = "sandbox"
    signature_header_name = "Sandbox-Signature"

    def __init__(self, webhook_secret: str, http: aiohttp.ClientSession) -> None:
        self.webhook_secret = webhook_secret
        self.http = http

    def signed_webhook(
        self, reference: str, status: str, amount_minor: int, currency: str, *, age_s: int = 0
    ) -> tuple[dict[str, str], bytes]:
        body = webhook_body(reference, status, amount_minor, currency)
        header = signature_header(self.webhook_secret, body, int(time.time()) - age_s)
        return {self.signature_header_name: header, "Content-Type": "application/json"}, body

    async def settle(self, redirect_url: str, outcome: str) -> None:
        """The driver pays (or declines) on the processor's hosted page."""
        async with self.http.post(redirect_url, data={"outcome": outcome}, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
