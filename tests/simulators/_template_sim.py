"""Template as the adapter sees it: hosted checkouts, the driver paying on them, refunds, disputes, and
webhooks signed over ``"<timestamp>.<raw body>"``, written from the processor's documentation, NOT
from the adapter (``services/payments/processors/_template``), so that the two cannot share one
mistake. (Named ``…_sim`` so that it never shadows the processor's official SDK.)

Served (all with ``Authorization: Bearer <api key>``; a wrong key gets 401 ``{"error": {"code":
"unauthorized", "message": "Invalid API key …"}}``, which quotes the key, as some processors' do):

- ``POST /v1/checkouts`` ``{amount, currency, reference, method, return_url, description}`` → the
  checkout ``{id: "co_…", status: "open", amount, currency, reference, method, url, failure_reason}``.
- ``GET /v1/checkouts/{id}`` → the checkout (404 ``not_found`` for an unknown one).
- ``POST /v1/refunds`` ``{checkout, amount, reference}`` → the refund ``{id: "re_…", status:
  "pending", …}``; it then succeeds (``refund.succeeded``); ``fail_refund`` sends ``refund.failed``.
  More than is left: 400 ``amount_too_large``.
- Both POSTs take ``Idempotency-Key``: the same key and body answer the first answer again; another
  body under the key is 400 ``idempotency_error``.
- ``GET|POST /pay/{id}``: the hosted page; ``act()`` posts the driver's ``outcome`` to it.

Webhooks: ``{"id": "evt_…", "type", "created", "data": {…}}``, ``Content-Type: application/json``,
``Template-Timestamp`` and ``Template-Signature`` (hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with
the webhook secret), signed anew at each attempt. A 2xx within ``DELIVERY_TIMEOUT_S`` is accepted;
anything else is retried on ``RETRY_DELAYS_S``, then given up.

Simulator-chosen details no source fixes: id formats, error codes and messages."""

# TEMPLATE: write this simulator from the processor's documentation alone (never from the adapter),
# citing each fact as above; mark a detail no source fixes as the simulator's own choice. Reproduce:
# - the API calls the adapter makes, with their authentication (a wrong credential → the documented
#   401), idempotency (a retried create or refund answers the first; a reused key with another body
#   is refused) and validation (amount limits, currency, method, expiry);
# - the objects exactly as documented (field names, id formats, status values, amount notation);
# - the driver's actions (``act``): paying, declining, letting it expire, and which webhooks each
#   sends, in the documented order (several per payment, where the processor sends several);
# - the webhooks' body shape, headers and signature, whether a retry is signed anew or keeps its first
#   signature (razorpay keeps it), the delivery timeout, the retry schedule (compressed) and what
#   happens when retries run out (a disabled endpoint: razorpay);
# - what the processor itself says may happen: duplicates, reordering, an event that arrives before
#   the object is in that state, a failure followed by a success (razorpay's fail_then_capture);
# - ``fail_next_create``: a 500 before anything is created, and a created checkout whose answer comes
#   only after the client gave up (``hang_s``).

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from services.payments.processors.base import Checkout, Redirect, WebhookRequest
from tests.simulators.processor import (
    CreateFault,
    OnHost,
    Outcome,
    SimulatorHost,
    WebhookFaults,
    post_webhook,
    with_retries,
)

# TEMPLATE: the retry schedule of the processor's webhook deliveries (e.g. "exponential back-off for
# 3 days"), compressed here, and how long it waits for an answer before counting a timeout.
RETRY_DELAYS_S = (0.2, 0.4, 0.8, 1.6)
DELIVERY_TIMEOUT_S = 5.0
WEBHOOK_PATH = "/webhooks/template"
# TEMPLATE: the processor's method codes the hosted page can be limited to.
METHODS = frozenset({"card"})
_ALPHABET = string.ascii_letters + string.digits


def _rid(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The webhook signature as the documentation states it (written here, not taken from wire.py)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _error(status: int, code: str, message: str) -> web.Response:
    # TEMPLATE: the processor's error body, status by status (its "Errors" page).
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@dataclass
class SimCheckout:
    id: str
    reference: str
    amount: int
    currency: str
    method: str
    return_url: str
    description: str
    status: str = "open"  # open | succeeded | failed | expired
    failure_reason: str | None = None
    refunded: int = 0


@dataclass
class SimRefund:
    id: str
    checkout: SimCheckout
    amount: int
    reference: str | None
    status: str = "pending"  # pending | succeeded | failed


@dataclass
class SimDispute:
    id: str
    checkout: SimCheckout
    amount: int
    status: str = "open"  # open | won | lost


@dataclass
class SimEvent:
    id: str
    type: str
    body: bytes
    secret: str
    statuses: list[int | None] = field(default_factory=list)


class TemplateSimulator(OnHost):
    processor = "template"

    def __init__(self, *, hang_s: float = 12.0, webhook_url: str | None = None) -> None:
        self.faults = WebhookFaults()
        self.webhook_url = webhook_url
        self.hang_s = hang_s  # how long a "timeout_after_create" answer is held back
        self.api_key = "sk_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))
        self.webhook_secret = secrets.token_urlsafe(24)
        self.checkouts: dict[str, SimCheckout] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.disputes: dict[str, SimDispute] = {}
        self.sent: list[SimEvent] = []  # every webhook handed to delivery (copies are one)
        self.held: list[SimEvent] = []
        self.dropped: list[SimEvent] = []
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []  # method, path, body, headers
        self._keys: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = {}  # (path, key) → (body, answer)
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # ---- Protocol: lifecycle and configuration ----------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkouts", self._create_checkout)
        app.router.add_get("/v1/checkouts/{checkout_id}", self._get_checkout, allow_head=False)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_get("/pay/{checkout_id}", self._page, allow_head=False)
        app.router.add_post("/pay/{checkout_id}", self._pay)
        await self._host.start(app, shutdown_timeout=1.0)

    def settings(self) -> dict[str, Any]:
        return {}

    def secrets(self) -> dict[str, str]:
        return {"api_key": self.api_key, "webhook_secret": self.webhook_secret}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        return len(self.checkouts)

    # ---- the API ----------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode())

    def _unauthorised(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return _error(401, "unauthorized", f"Invalid API key {given}")

    async def _record(self, request: web.Request) -> tuple[bytes, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append((request.method, request.path_qs, body, dict(request.headers)))
        return raw, body

    def _replayed(self, request: web.Request, raw: bytes) -> web.Response | None:
        """The first answer under the request's idempotency key, or a refusal; None for a new key."""
        key = request.headers.get("Idempotency-Key")
        stored = self._keys.get((request.path, key)) if key else None
        if stored is None:
            return None
        first_body, answer = stored
        if first_body != raw:
            return _error(400, "idempotency_error", "Keys may not be reused with different parameters")
        return web.json_response(answer)

    def _remember(self, request: web.Request, raw: bytes, answer: dict[str, Any]) -> None:
        key = request.headers.get("Idempotency-Key")
        if key:
            self._keys[(request.path, key)] = (raw, answer)

    def _checkout_object(self, checkout: SimCheckout) -> dict[str, Any]:
        return {
            "id": checkout.id,
            "object": "checkout",
            "status": checkout.status,
            "amount": checkout.amount,
            "currency": checkout.currency,
            "reference": checkout.reference,
            "method": checkout.method,
            "description": checkout.description,
            "return_url": checkout.return_url,
            "url": f"{self.base_url}/pay/{checkout.id}",
            "failure_reason": checkout.failure_reason,
            "amount_refunded": checkout.refunded,
        }

    def _refund_object(self, refund: SimRefund) -> dict[str, Any]:
        return {
            "id": refund.id,
            "object": "refund",
            "status": refund.status,
            "checkout": refund.checkout.id,
            "amount": refund.amount,
            "currency": refund.checkout.currency,
            "reference": refund.reference,
        }

    def _dispute_object(self, dispute: SimDispute) -> dict[str, Any]:
        return {
            "id": dispute.id,
            "object": "dispute",
            "status": dispute.status,
            "checkout": dispute.checkout.id,
            "amount": dispute.amount,
            "currency": dispute.checkout.currency,
            "reason": "fraudulent",
        }

    async def _create_checkout(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised(request)
        raw, body = await self._record(request)
        fault, self._create_fault = self._create_fault, None
        if fault == "error_500":
            return _error(500, "internal_error", "Something went wrong on our side")
        replayed = self._replayed(request, raw)
        if replayed is not None:
            return replayed
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "The body must be a JSON object")
        amount, currency, reference = body.get("amount"), body.get("currency"), body.get("reference")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            return _error(400, "invalid_amount", "amount must be a positive integer")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            return _error(400, "invalid_currency", "currency must be an ISO 4217 code")
        if not isinstance(reference, str) or not reference:
            return _error(400, "invalid_request", "reference is required")
        method = body.get("method", "card")
        if method not in METHODS:
            return _error(400, "invalid_method", f"method must be one of {sorted(METHODS)}")
        return_url, description = body.get("return_url"), body.get("description")
        checkout = SimCheckout(
            id=_rid("co_"),
            reference=reference,
            amount=amount,
            currency=currency,
            method=method,
            return_url=return_url if isinstance(return_url, str) else "",
            description=description if isinstance(description, str) else "",
        )
        self.checkouts[checkout.id] = checkout
        answer = self._checkout_object(checkout)
        self._remember(request, raw, answer)
        if fault == "timeout_after_create":
            await asyncio.sleep(self.hang_s)  # created; the answer comes after the client gave up
        return web.json_response(answer)

    async def _get_checkout(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised(request)
        await self._record(request)
        checkout = self.checkouts.get(request.match_info["checkout_id"])
        if checkout is None:
            return _error(404, "not_found", "No such checkout")
        return web.json_response(self._checkout_object(checkout))

    async def _create_refund(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised(request)
        raw, body = await self._record(request)
        replayed = self._replayed(request, raw)
        if replayed is not None:
            return replayed
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "The body must be a JSON object")
        checkout = self.checkouts.get(body.get("checkout") or "")
        if checkout is None:
            return _error(404, "not_found", "No such checkout")
        if checkout.status != "succeeded":
            return _error(400, "not_paid", "The checkout has not been paid")
        left = checkout.amount - checkout.refunded
        amount = body.get("amount", left)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            return _error(400, "invalid_amount", "amount must be a positive integer")
        if amount > left:
            return _error(400, "amount_too_large", f"Only {left} is left to refund")
        reference = body.get("reference")
        refund = SimRefund(_rid("re_"), checkout, amount, reference if isinstance(reference, str) else None)
        checkout.refunded += amount
        self.refunds[refund.id] = refund
        answer = self._refund_object(refund)
        self._remember(request, raw, answer)
        # TEMPLATE: how a refund proceeds (at once, or days later; its statuses and their webhooks).
        refund.status = "succeeded"
        self._emit("refund.succeeded", self._refund_object(refund))
        return web.json_response(answer)

    # ---- the driver's page ------------------------------------------------------------------------

    def _checkout_of(self, request: web.Request) -> SimCheckout:
        checkout = self.checkouts.get(request.match_info["checkout_id"])
        if checkout is None:
            raise web.HTTPNotFound()
        return checkout

    async def _page(self, request: web.Request) -> web.Response:
        checkout = self._checkout_of(request)
        return web.Response(
            text=f"<!doctype html><title>Pay</title><p>{checkout.amount} {checkout.currency}: {checkout.status}</p>",
            content_type="text/html",
        )

    async def _pay(self, request: web.Request) -> web.Response:
        checkout = self._checkout_of(request)
        outcome = (await request.post()).get("outcome")
        if outcome not in ("succeeded", "declined", "expired"):
            raise web.HTTPBadRequest(text="outcome must be succeeded, declined or expired")
        if checkout.status == "open":
            # TEMPLATE: the webhooks each action sends, in the processor's order.
            if outcome == "succeeded":
                checkout.status = "succeeded"
                self._emit("checkout.succeeded", self._checkout_object(checkout))
            elif outcome == "declined":
                checkout.status, checkout.failure_reason = "failed", "card_declined"
                self._emit("checkout.failed", self._checkout_object(checkout))
            else:
                self._expire(checkout)
        if checkout.status == "succeeded" and checkout.return_url:
            raise web.HTTPSeeOther(checkout.return_url)
        return web.Response(text=f"The checkout is {checkout.status}.")

    def _expire(self, checkout: SimCheckout) -> None:
        checkout.status = "expired"
        self._emit("checkout.expired", self._checkout_object(checkout))

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        assert isinstance(checkout.next_step, Redirect)
        assert self._host.http is not None
        async with self._host.http.get(checkout.next_step.url) as response:
            assert response.status == 200, await response.text()
        async with self._host.http.post(
            checkout.next_step.url, data={"outcome": outcome}, allow_redirects=False
        ) as response:
            assert response.status in (200, 303), await response.text()
        await self.idle()

    async def expire_now(self, processor_reference: str) -> None:
        """The checkout's time runs out (compressed)."""
        checkout = self.checkouts[processor_reference]
        if checkout.status == "open":
            self._expire(checkout)
        await self.idle()

    # ---- disputes and refunds ---------------------------------------------------------------------

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        checkout = self.checkouts[processor_reference]
        if checkout.status != "succeeded":
            raise ValueError(f"checkout {processor_reference} is not paid")
        dispute = SimDispute(_rid("dp_"), checkout, amount_minor)
        self.disputes[dispute.id] = dispute
        self._emit("dispute.opened", self._dispute_object(dispute))
        await self.idle()
        return dispute.id

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        dispute = self.disputes[dispute_id]
        dispute.status = "won" if won else "lost"
        self._emit(f"dispute.{dispute.status}", self._dispute_object(dispute))
        await self.idle()

    async def fail_refund(self, refund_id: str) -> None:
        """A refund that did not go through after all: ``refund.failed``."""
        refund = self.refunds[refund_id]
        refund.status = "failed"
        refund.checkout.refunded -= refund.amount
        self._emit("refund.failed", self._refund_object(refund))
        await self.idle()

    # ---- webhooks ---------------------------------------------------------------------------------

    def event_body(self, event_id: str, event_type: str, data: dict[str, Any], *, age_s: int = 0) -> bytes:
        # TEMPLATE: the webhook body exactly as documented (an event envelope, or the object itself).
        payload = {"id": event_id, "object": "event", "type": event_type, "created": int(time.time()) - age_s}
        return json.dumps({**payload, "data": data}).encode()

    def headers(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        # TEMPLATE: the headers the processor sends (names, signature encoding, any event id header).
        return {
            "Content-Type": "application/json",
            "Template-Timestamp": str(timestamp),
            "Template-Signature": sign(secret, timestamp, body),
        }

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        event_id = _rid("evt_")
        event = SimEvent(event_id, event_type, self.event_body(event_id, event_type, data), self.webhook_secret)
        if self.faults.drop:
            self.dropped.append(event)
            return
        if self.faults.hold:
            self.held.append(event)
            return
        self._send_later(event)

    def _send_later(self, event: SimEvent) -> None:
        self.sent.append(event)
        for _ in range(max(self.faults.copies, 1)):
            self._host.tasks.spawn(self._deliver(event))

    async def release(self) -> None:
        held, self.held = self.held, []
        for event in reversed(held):  # newest first
            self._send_later(event)
        await self.idle()

    async def _deliver(self, event: SimEvent) -> None:
        if self.webhook_url is None or self._host.http is None:
            return
        http, url = self._host.http, self.webhook_url

        async def attempt(_: int) -> bool:
            headers = self.headers(event.body, event.secret, int(time.time()))  # signed anew each attempt
            answer = await post_webhook(http, url, event.body, headers, DELIVERY_TIMEOUT_S)
            event.statuses.append(answer.status)
            return answer.accepted

        await with_retries(attempt, RETRY_DELAYS_S)

    # ---- for the conformance suite: a signed webhook, not sent ------------------------------------

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        snapshot = copy.copy(self.checkouts[processor_reference])
        if outcome == "succeeded":
            snapshot.status, event_type = "succeeded", "checkout.succeeded"
        else:
            snapshot.status, snapshot.failure_reason, event_type = "failed", "card_declined", "checkout.failed"
        body = self.event_body(_rid("evt_"), event_type, self._checkout_object(snapshot), age_s=age_s)
        headers = self.headers(body, self.webhook_secret, int(time.time()) - age_s)
        return WebhookRequest(
            method="POST",
            path=WEBHOOK_PATH,
            query={},
            headers=CIMultiDictProxy(CIMultiDict(headers)),
            body=body,
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def with_other_secret(self) -> TemplateSimulator:
        other = copy.copy(self)
        other.webhook_secret = secrets.token_urlsafe(24)
        return other
