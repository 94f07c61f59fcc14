"""The built-in sandbox processor: the *remote* side that ``adapter.py`` talks to, served
under ``/sandbox/`` so that a demo or a test pays without any third party. It behaves like a real
processor: an authenticated, idempotent checkout API, a hosted page with Pay and Decline, and signed
webhooks delivered over real HTTP with retries (at least once; a webhook whose retries all fail is
simply lost, as with real processors, and the payments poller heals it)."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from html import escape
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from services.payments.processors.sandbox.adapter import SIGNATURE_HEADER, sign_sandbox_payload
from services.payments.processors.sandbox.config import SandboxSettings
from shared.http import Problem, json_response, read_form, read_json_object
from shared.logging import get_logger
from shared.money import MoneyError, currency_exponent, require_minor, to_major
from shared.settings import Settings

log = get_logger(__name__)

WEBHOOK_ATTEMPTS = 8
WEBHOOK_FIRST_BACKOFF_S = 0.5
WEBHOOK_TIMEOUT_S = 10
OUTCOMES = {"succeeded", "failed"}
# A checkout nobody paid within this time expires, as hosted checkouts at real processors do.
CHECKOUT_TTL_S = 3600


class SandboxProcessor:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.pool = pool
        self.http = http
        self._deliveries: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/sandbox/api/v1/checkouts", self.create_checkout)
        app.router.add_get("/sandbox/api/v1/checkouts/{reference}", self.get_checkout)
        app.router.add_get("/sandbox/checkout/{reference}", self.hosted_page)
        app.router.add_post("/sandbox/checkout/{reference}", self.submit_outcome)

    def _integration_for_key(self, request: web.Request) -> str:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        for integration_id, integration in self.settings.integrations.items():
            if isinstance(integration, SandboxSettings) and hmac.compare_digest(
                given, integration.api_key.get_secret_value().encode()
            ):
                return integration_id
        raise Problem(401, "Unauthorized", "unknown API key")

    async def create_checkout(self, request: web.Request) -> web.Response:
        integration_id = self._integration_for_key(request)
        idempotency_key = request.headers.get("Idempotency-Key")
        if not idempotency_key or len(idempotency_key) > 255:
            raise Problem(400, "Missing Idempotency-Key")
        body = await read_json_object(request)
        try:
            amount_minor = require_minor(body.get("amount_minor"), "amount_minor")
            currency = str(body.get("currency"))
            currency_exponent(currency)
        except MoneyError as exc:
            raise Problem(422, "Invalid amount", str(exc)) from None
        if amount_minor <= 0 or not isinstance(body.get("method"), str) or not isinstance(body.get("return_url"), str):
            raise Problem(422, "Invalid checkout", "amount_minor > 0, method and return_url are required")
        reference = f"sbx_{secrets.token_hex(12)}"
        row = await self.pool.fetchrow(
            "INSERT INTO sandbox_checkouts (reference, integration_id, idempotency_key, amount_minor,"
            " currency, method, return_url) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (integration_id, idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key"
            " RETURNING *",
            reference,
            integration_id,
            idempotency_key,
            amount_minor,
            currency,
            body["method"],
            body["return_url"],
        )
        assert row is not None
        if row["amount_minor"] != amount_minor or row["currency"] != currency:
            raise Problem(422, "Idempotency-Key reused with other parameters")
        return json_response(self._checkout_body(row), status=201)

    def _checkout_body(self, row: asyncpg.Record) -> dict[str, Any]:
        public = self.settings.services.payments_public_url.rstrip("/")
        return {
            "reference": row["reference"],
            "status": row["status"],
            "amount_minor": row["amount_minor"],
            "currency": row["currency"].strip(),
            "hosted_url": f"{public}/sandbox/checkout/{row['reference']}",
        }

    async def _load(self, reference: str) -> asyncpg.Record:
        """The checkout as it stands now: one left pending past its lifetime expires on first look
        (and says so by webhook)."""
        expired = await self.pool.fetchrow(
            "UPDATE sandbox_checkouts SET status = 'expired' WHERE reference = $1 AND status = 'pending'"
            " AND created_at < now() - make_interval(secs => $2) RETURNING *",
            reference,
            CHECKOUT_TTL_S,
        )
        if expired is not None:
            self._deliver_later(expired)
            return expired
        row = await self.pool.fetchrow("SELECT * FROM sandbox_checkouts WHERE reference = $1", reference)
        if row is None:
            raise Problem(404, "No such checkout")
        return row

    async def get_checkout(self, request: web.Request) -> web.Response:
        integration_id = self._integration_for_key(request)
        row = await self._load(request.match_info["reference"])
        if row["integration_id"] != integration_id:
            raise Problem(404, "No such checkout")
        return json_response(self._checkout_body(row))

    async def hosted_page(self, request: web.Request) -> web.Response:
        row = await self._load(request.match_info["reference"])
        amount = f"{to_major(row['amount_minor'], row['currency'].strip())} {row['currency']}"
        reference = escape(row["reference"])
        if row["status"] == "pending":
            action = (
                f'<form method="post" action="/sandbox/checkout/{reference}">'
                '<button name="outcome" value="succeeded">Pay</button> '
                '<button name="outcome" value="failed">Decline</button></form>'
            )
        else:
            action = f"<p>This checkout is {escape(row['status'])}.</p>"
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            "<title>Sandbox checkout</title></head><body>"
            '<p role="note" id="demo-banner"><strong>Demo — no real money is taken; balances are not real.'
            "</strong></p>"
            f"<h1>Sandbox checkout</h1><p>Amount: <strong>{escape(amount)}</strong> "
            f"({escape(row['method'])})</p>{action}</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def submit_outcome(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        outcome = form.get("outcome")
        if outcome not in OUTCOMES:
            raise Problem(400, "Bad outcome", "outcome must be succeeded or failed")
        await self._load(request.match_info["reference"])  # expires it first if its time is up
        row = await self.pool.fetchrow(
            "UPDATE sandbox_checkouts SET status = $2 WHERE reference = $1 AND status = 'pending' RETURNING *",
            request.match_info["reference"],
            outcome,
        )
        if row is None:
            # Already decided (a double click): no second webhook, just send the driver back.
            row = await self._load(request.match_info["reference"])
        else:
            self._deliver_later(row)
        raise web.HTTPSeeOther(row["return_url"])

    def _deliver_later(self, row: asyncpg.Record) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver_webhook(row))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def webhook_body(self, row: asyncpg.Record) -> bytes:
        return json.dumps(
            {
                "id": f"evt_{secrets.token_hex(12)}",
                "type": f"checkout.{row['status']}",
                "created": int(time.time()),
                "data": {
                    "reference": row["reference"],
                    "status": row["status"],
                    "amount_minor": row["amount_minor"],
                    "currency": row["currency"].strip(),
                },
            }
        ).encode()

    async def deliver_webhook(self, row: asyncpg.Record) -> None:
        integration = self.settings.integrations[row["integration_id"]]
        assert isinstance(integration, SandboxSettings)
        url = f"{self.settings.services.payments_internal_url.rstrip('/')}/webhooks/{row['integration_id']}"
        body = self.webhook_body(row)
        backoff_s = WEBHOOK_FIRST_BACKOFF_S
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            # Signed afresh on every attempt, as real processors do, so the timestamp stays current.
            signature = sign_sandbox_payload(integration.webhook_secret.get_secret_value(), body, int(time.time()))
            try:
                async with self.http.post(
                    url,
                    data=body,
                    headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S),
                ) as response:
                    if response.status < 300:
                        return
                    log.warning("sandbox_webhook_rejected", status=response.status, attempt=attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("sandbox_webhook_failed", error=repr(exc), attempt=attempt)
            await asyncio.sleep(backoff_s)
            backoff_s *= 2
        log.error("sandbox_webhook_given_up", reference=row["reference"])

    async def close(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
