"""Razorpay as the adapter sees it: Payment Links, payments on them, refunds, disputes, and webhooks
signed over the raw body, written from the reference (``/work/shared/reference/processors.md`` §5)
and Razorpay's documentation, not from the adapter, so that the two cannot share one mistake. (Named
``razorpay_sim`` so that it never shadows the ``razorpay`` SDK.)

Served (all with HTTP Basic ``key_id:key_secret``; a wrong pair gets 401 ``{"error": {"code":
"BAD_REQUEST_ERROR", "description": "The api key provided is invalid", …}}``, the failure sample of
Razorpay's API pages):

- ``POST /v1/payment_links`` → the link entity (``id`` ``plink_`` + 14 characters, ``status``
  "created", ``short_url``, ``reference_id``, ``payments`` null, …). A ``reference_id`` already used
  is refused with 400 BAD_REQUEST_ERROR (Razorpay keeps reference ids unique; the description
  "reference_id already exists" is the simulator's [UNVERIFIED wording]). ``callback_url`` needs
  ``callback_method: "get"``; ``expire_by`` must be at least 15 minutes ahead.
- ``GET /v1/payment_links/{id}`` → the entity with ``order_id`` (once the driver opened the link:
  the create answer has none, as integrators report: razorpay/razorpay-php#372) and ``payments``
  ``[{payment_id, amount, method, status, created_at}]`` (SDK mock ``fake_payment_link.json``).
- ``GET /v1/payment_links?reference_id=…`` → ``{"payment_links": [...]}`` (fetch-all page).
- ``POST /v1/payments/{id}/refund`` ``{amount, speed?, receipt?, notes?}`` with ``X-Refund-Idempotency``
  (≥ 10 of ``[A-Za-z0-9_-]``): the same key and body answer the first refund again; another body under
  the key is 400 "Different request with the same idempotency key has already been processed."; a key
  still being processed is 409 (normal-refunds-idempotent page). More than is left: 400 (wording the
  simulator's). A refund is created ``pending`` (``refund.created``) and then ``processed``
  (``refund.processed``); ``fail_refund`` sends ``refund.failed``.
- ``GET|POST /i/{code}``: the link's page; ``act()`` posts the driver's ``outcome`` to it.

Webhooks: ``{"entity": "event", "account_id", "event", "contains": [...], "payload": {<entity name>:
{"entity": {...}}}, "created_at"}`` (markdown-docs ``webhooks/payments.md``; payment-links payloads),
``Content-Type: application/json``, ``X-Razorpay-Signature`` = hex HMAC-SHA256(webhook secret, body),
``X-Razorpay-Event-Id`` unique per event (``webhooks/validate-test.md``). Delivery: a 2xx within 5 s
is accepted, anything else is retried with exponential backoff "for 24 hours", then the webhook is
disabled (``webhooks/best-practices.md``), compressed here to ``RETRY_DELAYS_S``; a disabled webhook
sends nothing until ``enable_webhook()``. After ``rotate_webhook_secret()``, retries of older events
are still signed with the secret they were first signed with (payment-links payloads page, "Watch Out!").

What the driver does (``act``): "succeeded" opens the link (its order), pays and captures:
``payment.authorized``, ``payment.captured``, ``payment_link.paid`` (with ``payment``, ``order`` and
``payment_link``); "declined" sends ``payment.failed`` and leaves the link payable; "expired" expires
it (``payment_link.expired``). ``fail_then_capture`` is the documented "payment.failed followed by
payment.captured for the same transaction". ``authorize_after_capture`` sends ``payment.authorized``
after ``payment.captured`` (order is not guaranteed, validate-test.md).

Disputes: ``open_dispute`` → ``payment.dispute.created`` (phase chargeback, status open);
``settle_dispute`` → ``payment.dispute.won`` / ``payment.dispute.lost``.

Simulator-chosen details no source fixes: id and short URL formats, error descriptions other than the
two quoted, the order and payment fields beyond the documented samples."""

from __future__ import annotations

import asyncio
import base64
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

RETRY_DELAYS_S = (0.2, 0.4, 0.8, 1.6)  # "exponential back-off … 24 hours", compressed
DELIVERY_TIMEOUT_S = 5.0  # "If your server fails to respond in 5 seconds … marked as timeout"
MIN_EXPIRY_S = 15 * 60
WEBHOOK_PATH = "/webhooks/razorpay"
_ALPHABET = string.ascii_letters + string.digits
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{10,}$")


def _rid(prefix: str) -> str:
    # Razorpay ids are a prefix and 14 characters ("plink_FOGqq3O6E5bkml", "pay_DESlfW9H8K9uqM").
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(14))


def sign(body: bytes, secret: str) -> str:
    """Razorpay's webhook signature, written from the docs (not from the adapter's wire.py)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _error(status: int, description: str, field_: str | None = None, code: str = "BAD_REQUEST_ERROR") -> web.Response:
    body: dict[str, Any] = {
        "error": {
            "code": code,
            "description": description,
            "source": "business" if status == 400 else "NA",
            "step": "payment_initiation" if status == 400 else "NA",
            "reason": "input_validation_failed" if status == 400 else "NA",
            "metadata": {},
            "field": field_,
        }
    }
    return web.json_response(body, status=status)


@dataclass
class SimPayment:
    id: str
    link: SimLink
    amount: int
    method: str
    status: str  # created | authorized | captured | failed
    created_at: int
    refunded: int = 0
    error: tuple[str, str] | None = None


@dataclass
class SimLink:
    id: str
    code: str
    reference_id: str
    amount: int
    currency: str
    description: str
    expire_by: int
    callback_url: str | None
    notes: dict[str, Any]
    options: dict[str, Any] | None
    created_at: int
    status: str = "created"
    order_id: str | None = None
    payments: list[SimPayment] = field(default_factory=list)
    amount_paid: int = 0
    expired_at: int = 0


@dataclass
class SimRefund:
    id: str
    payment: SimPayment
    amount: int
    notes: dict[str, Any]
    receipt: str | None
    status: str = "pending"
    created_at: int = 0


@dataclass
class SimDispute:
    id: str
    payment: SimPayment
    amount: int
    status: str = "open"
    phase: str = "chargeback"


@dataclass
class SimEvent:
    """One webhook: its body and the secret it was first signed with (retries keep it)."""

    event_id: str
    name: str
    body: bytes
    secret: str
    statuses: list[int | None] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return any(s is not None and 200 <= s < 300 for s in self.statuses)


class RazorpaySimulator(OnHost):
    processor = "razorpay"

    def __init__(self, *, live: bool = True, hang_s: float = 12.0, webhook_url: str | None = None) -> None:
        self.live = live
        self.faults = WebhookFaults()
        self.webhook_url = webhook_url
        self.hang_s = hang_s  # how long a "timeout_after_create" answer is held back
        self.account_id = _rid("acc_")
        self.key_id = ("rzp_live_" if live else "rzp_test_") + "".join(secrets.choice(_ALPHABET) for _ in range(14))
        self.key_secret = "".join(secrets.choice(_ALPHABET) for _ in range(24))
        self.webhook_secret = secrets.token_urlsafe(24)
        self.links: dict[str, SimLink] = {}
        self.payments: dict[str, SimPayment] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.disputes: dict[str, SimDispute] = {}
        self.orders: dict[str, SimLink] = {}
        self.sent: list[SimEvent] = []  # every webhook handed to delivery (copies are one)
        self.held: list[SimEvent] = []
        self.dropped: list[SimEvent] = []
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []  # method, path (with query), body, headers
        self.webhook_disabled = False
        self._refund_keys: dict[str, tuple[str, bytes, SimRefund | None]] = {}  # key → (payment, body, refund)
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # ---- Protocol: lifecycle and configuration ----------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/payment_links", self._create_link)
        app.router.add_post("/v1/payment_links/", self._create_link)
        app.router.add_get("/v1/payment_links", self._list_links, allow_head=False)
        app.router.add_get("/v1/payment_links/", self._list_links, allow_head=False)
        app.router.add_get("/v1/payment_links/{link_id}", self._get_link, allow_head=False)
        app.router.add_post("/v1/payments/{payment_id}/refund", self._refund)
        app.router.add_get("/i/{code}", self._page, allow_head=False)
        app.router.add_post("/i/{code}", self._pay)
        await self._host.start(app, shutdown_timeout=1.0)

    def settings(self) -> dict[str, Any]:
        return {"environment": "production" if self.live else "test"}

    def secrets(self) -> dict[str, str]:
        return {"key_id": self.key_id, "key_secret": self.key_secret, "webhook_secret": self.webhook_secret}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        return len(self.links)

    def rotate_webhook_secret(self) -> str:
        """A new secret for new events; returns the old one (retries of older events keep it)."""
        old, self.webhook_secret = self.webhook_secret, secrets.token_urlsafe(24)
        return old

    def enable_webhook(self) -> None:
        self.webhook_disabled = False

    # ---- the API ----------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, f"{self.key_id}:{self.key_secret}".encode())

    @staticmethod
    def _unauthorised() -> web.Response:
        return _error(401, "The api key provided is invalid")

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        self.requests.append((request.method, request.path_qs, body, dict(request.headers)))
        return body

    def _link_entity(self, link: SimLink, *, with_order: bool = True) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "accept_partial": False,
            "amount": link.amount,
            "amount_paid": link.amount_paid,
            "callback_method": "get" if link.callback_url else "",
            "callback_url": link.callback_url or "",
            "cancelled_at": 0,
            "created_at": link.created_at,
            "currency": link.currency,
            "customer": {},
            "description": link.description,
            "expire_by": link.expire_by,
            "expired_at": link.expired_at,
            "first_min_partial_amount": 0,
            "id": link.id,
            "notes": link.notes or [],
            "notify": {"email": False, "sms": False},
            "payments": [
                {
                    "amount": p.amount,
                    "created_at": p.created_at,
                    "method": p.method,
                    "payment_id": p.id,
                    "status": p.status,
                }
                for p in link.payments
            ]
            or None,
            "reference_id": link.reference_id,
            "reminder_enable": False,
            "reminders": [],
            "short_url": f"{self.base_url}/i/{link.code}",
            "status": link.status,
            "updated_at": int(time.time()),
            "upi_link": False,
            "user_id": "",
        }
        if with_order and link.order_id is not None:
            entity["order_id"] = link.order_id
        return entity

    async def _create_link(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await self._record(request)
        fault, self._create_fault = self._create_fault, None
        if fault == "error_500":
            return _error(500, "We are facing some trouble completing your request at the moment.", code="SERVER_ERROR")
        if not isinstance(body, dict):
            return _error(400, "The request body is not valid JSON")
        amount, currency = body.get("amount"), body.get("currency", "INR")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 100:
            return _error(400, "The amount must be atleast INR 1.00", "amount")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            return _error(400, "The currency is invalid", "currency")
        reference = body.get("reference_id")
        if reference is not None and (not isinstance(reference, str) or len(reference) > 40):
            return _error(400, "The reference id may not be greater than 40 characters.", "reference_id")
        if reference and any(link.reference_id == reference for link in self.links.values()):
            return _error(400, "reference_id already exists", "reference_id")
        callback_url, callback_method = body.get("callback_url"), body.get("callback_method")
        if callback_url is not None and callback_method != "get":
            return _error(400, "callback_method must be get when callback_url is passed", "callback_method")
        now = int(time.time())
        expire_by = body.get("expire_by", now + 180 * 86_400)
        if not isinstance(expire_by, int) or expire_by < now + MIN_EXPIRY_S:
            return _error(400, "expire_by: timestamp must be atleast 15 minutes in future", "expire_by")
        options = body.get("options")
        if options is not None:
            methods = (options.get("checkout") or {}).get("method") if isinstance(options, dict) else None
            if not isinstance(methods, dict) or not set(methods) <= {"card", "netbanking", "upi", "wallet"}:
                return _error(400, "options.checkout.method is invalid", "options")
            if not all(isinstance(v, bool) for v in methods.values()) or not any(methods.values()):
                return _error(400, "options.checkout.method must enable a method", "options")
        notes = body.get("notes") or {}
        description = body.get("description") or ""
        link = SimLink(
            id=_rid("plink_"),
            code=secrets.token_urlsafe(6),
            reference_id=reference or "",
            amount=amount,
            currency=currency,
            description=description if isinstance(description, str) else "",
            expire_by=expire_by,
            callback_url=callback_url if isinstance(callback_url, str) else None,
            notes=notes if isinstance(notes, dict) else {},
            options=options if isinstance(options, dict) else None,
            created_at=now,
        )
        self.links[link.id] = link
        answer = self._link_entity(link, with_order=False)
        if fault == "timeout_after_create":
            await asyncio.sleep(self.hang_s)  # created; the answer comes after the client gave up
        return web.json_response(answer)

    async def _list_links(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        await self._record(request)
        reference = request.query.get("reference_id")
        links = [link for link in self.links.values() if reference is None or link.reference_id == reference]
        links.sort(key=lambda link: link.created_at, reverse=True)
        return web.json_response({"payment_links": [self._link_entity(link) for link in links]})

    async def _get_link(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        await self._record(request)
        link = self.links.get(request.match_info["link_id"])
        if link is None:
            return _error(400, "The id provided does not exist", "id")
        self._expire_if_due(link)
        return web.json_response(self._link_entity(link))

    def _refund_entity(self, refund: SimRefund) -> dict[str, Any]:
        return {
            "id": refund.id,
            "entity": "refund",
            "amount": refund.amount,
            "currency": refund.payment.link.currency,
            "payment_id": refund.payment.id,
            "notes": refund.notes or [],
            "receipt": refund.receipt,
            "acquirer_data": {"arn": None},
            "created_at": refund.created_at,
            "batch_id": None,
            "status": refund.status,
            "speed_processed": "normal",
            "speed_requested": "normal",
        }

    async def _refund(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        raw = await request.read()
        body = await self._record(request)
        payment = self.payments.get(request.match_info["payment_id"])
        key = request.headers.get("X-Refund-Idempotency")
        if key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(key):
                return _error(400, "The idempotency key is invalid", "X-Refund-Idempotency")
            stored = self._refund_keys.get(key)
            if stored is not None:
                payment_id, first_body, first = stored
                if payment_id != request.match_info["payment_id"] or first_body != raw:
                    return _error(400, "Different request with the same idempotency key has already been processed.")
                if first is None:
                    return _error(409, "Request with the same idempotency key is being processed")
                return web.json_response(self._refund_entity(first))
            self._refund_keys[key] = (request.match_info["payment_id"], raw, None)
        if payment is None:
            self._forget(key)
            return _error(400, "The id provided does not exist", "id")
        if not isinstance(body, dict):
            self._forget(key)
            return _error(400, "The request body is not valid JSON")
        amount = body.get("amount", payment.amount - payment.refunded)
        if payment.status != "captured":
            self._forget(key)
            return _error(400, "The payment has not been captured")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 100:
            self._forget(key)
            return _error(400, "The amount must be atleast INR 1.00", "amount")
        if amount > payment.amount - payment.refunded:
            self._forget(key)
            return _error(400, "The refund amount provided is greater than amount captured", "amount")
        notes, receipt = body.get("notes"), body.get("receipt")
        refund = SimRefund(
            id=_rid("rfnd_"),
            payment=payment,
            amount=amount,
            notes=notes if isinstance(notes, dict) else {},
            receipt=receipt if isinstance(receipt, str) else None,
            created_at=int(time.time()),
        )
        payment.refunded += amount
        self.refunds[refund.id] = refund
        if key is not None:
            self._refund_keys[key] = (request.match_info["payment_id"], raw, refund)
        answer = self._refund_entity(refund)
        self._emit("refund.created", {"refund": self._refund_entity(refund), "payment": self._payment_entity(payment)})
        refund.status = "processed"
        self._emit(
            "refund.processed", {"refund": self._refund_entity(refund), "payment": self._payment_entity(payment)}
        )
        return web.json_response(answer)

    def _forget(self, key: str | None) -> None:
        if key is not None:
            self._refund_keys.pop(key, None)

    # ---- the driver's page ------------------------------------------------------------------------

    def _link_of_code(self, code: str) -> SimLink:
        link = next((link for link in self.links.values() if link.code == code), None)
        if link is None:
            raise web.HTTPNotFound()
        return link

    async def _page(self, request: web.Request) -> web.Response:
        link = self._link_of_code(request.match_info["code"])
        self._open(link)
        return web.Response(
            text=f"<!doctype html><title>Pay</title><p>{link.amount} {link.currency}: {link.status}</p>",
            content_type="text/html",
        )

    async def _pay(self, request: web.Request) -> web.Response:
        link = self._link_of_code(request.match_info["code"])
        outcome = (await request.post()).get("outcome")
        if outcome not in ("succeeded", "declined", "expired"):
            raise web.HTTPBadRequest(text="outcome must be succeeded, declined or expired")
        self._expire_if_due(link)
        if link.status == "created":
            if outcome == "succeeded":
                self._pay_link(link)
            elif outcome == "declined":
                self._decline(link)
            else:
                self._expire(link)
        if link.callback_url is None or link.status != "paid":
            return web.Response(text=f"The link is {link.status}.")
        payment = link.payments[-1]
        signed = f"{link.id}|{link.reference_id}|{link.status}|{payment.id}"
        query = {
            "razorpay_payment_id": payment.id,
            "razorpay_payment_link_id": link.id,
            "razorpay_payment_link_reference_id": link.reference_id,
            "razorpay_payment_link_status": link.status,
            "razorpay_signature": hmac.new(self.key_secret.encode(), signed.encode(), hashlib.sha256).hexdigest(),
        }
        separator = "&" if "?" in link.callback_url else "?"
        raise web.HTTPSeeOther(link.callback_url + separator + "&".join(f"{k}={v}" for k, v in query.items()))

    def _open(self, link: SimLink) -> str:
        """The driver opened the link: its order exists from now on."""
        if link.order_id is None:
            link.order_id = _rid("order_")
            self.orders[link.order_id] = link
        return link.order_id

    def _method(self, link: SimLink) -> str:
        methods = ((link.options or {}).get("checkout") or {}).get("method") or {}
        return next((name for name, on in methods.items() if on), "upi")

    def _new_payment(self, link: SimLink, status: str) -> SimPayment:
        self._open(link)
        payment = SimPayment(_rid("pay_"), link, link.amount, self._method(link), status, int(time.time()))
        link.payments.append(payment)
        self.payments[payment.id] = payment
        return payment

    def _pay_link(self, link: SimLink, payment: SimPayment | None = None) -> SimPayment:
        if payment is None:
            payment = self._new_payment(link, "authorized")
            self._emit("payment.authorized", {"payment": self._payment_entity(payment)})
        payment.status, payment.error = "captured", None
        link.status, link.amount_paid = "paid", payment.amount
        self._emit("payment.captured", {"payment": self._payment_entity(payment)})
        self._emit(
            "payment_link.paid",
            {
                "payment_link": self._link_entity(link),
                "payment": self._payment_entity(payment),
                "order": self._order_entity(link),
            },
        )
        return payment

    def _decline(self, link: SimLink) -> SimPayment:
        payment = self._new_payment(link, "failed")
        payment.error = ("BAD_REQUEST_ERROR", "Payment failed")
        self._emit("payment.failed", {"payment": self._payment_entity(payment)})
        return payment

    def _expire(self, link: SimLink) -> None:
        link.status, link.expired_at = "expired", int(time.time())
        self._emit("payment_link.expired", {"payment_link": self._link_entity(link)})

    def _expire_if_due(self, link: SimLink) -> None:
        if link.status == "created" and time.time() >= link.expire_by:
            self._expire(link)

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

    async def fail_then_capture(self, processor_reference: str) -> str:
        """The documented sequence: ``payment.failed``, then ``payment.captured`` for the same payment
        (a late authorisation, or the driver retrying in the UPI app). Returns the payment id."""
        link = self.links[processor_reference]
        payment = self._decline(link)
        self._pay_link(link, payment)
        await self.idle()
        return payment.id

    async def capture_then_fail(self, processor_reference: str) -> str:
        """The same two webhooks the other way round (delivery order is not guaranteed)."""
        link = self.links[processor_reference]
        payment = self._new_payment(link, "failed")
        payment.error = ("BAD_REQUEST_ERROR", "Payment failed")
        failed = self._payment_entity(payment)
        self._pay_link(link, payment)
        self._emit("payment.failed", {"payment": failed})
        await self.idle()
        return payment.id

    async def expire_now(self, processor_reference: str) -> None:
        """The link's ``expire_by`` passes (compressed time)."""
        link = self.links[processor_reference]
        link.expire_by = int(time.time())
        self._expire_if_due(link)
        await self.idle()

    # ---- entities ---------------------------------------------------------------------------------

    def _payment_entity(self, payment: SimPayment) -> dict[str, Any]:
        code, description = payment.error or (None, None)
        return {
            "id": payment.id,
            "entity": "payment",
            "amount": payment.amount,
            "currency": payment.link.currency,
            "base_amount": payment.amount,
            "status": payment.status,
            "order_id": payment.link.order_id,
            "invoice_id": None,
            "international": False,
            "method": payment.method,
            "amount_refunded": payment.refunded,
            "refund_status": None if not payment.refunded else "partial",
            "captured": payment.status == "captured",
            "description": "#" + payment.link.id.removeprefix("plink_"),
            "card_id": None,
            "bank": None,
            "wallet": None,
            "vpa": "driver@upi" if payment.method == "upi" else None,
            "email": "void@razorpay.com",
            "contact": "+919000090000",
            "notes": [],
            "fee": None,
            "tax": None,
            "error_code": code,
            "error_description": description,
            "error_source": "customer" if code else None,
            "error_step": "payment_authentication" if code else None,
            "error_reason": "payment_failed" if code else None,
            "acquirer_data": {"rrn": None},
            "created_at": payment.created_at,
        }

    def _order_entity(self, link: SimLink) -> dict[str, Any]:
        return {
            "id": link.order_id,
            "entity": "order",
            "amount": link.amount,
            "amount_paid": link.amount_paid,
            "amount_due": link.amount - link.amount_paid,
            "currency": link.currency,
            "receipt": link.reference_id,
            "status": "paid" if link.status == "paid" else "attempted",
            "attempts": len(link.payments),
            "notes": link.notes or [],
            "offer_id": None,
            "created_at": link.created_at,
        }

    def _dispute_entity(self, dispute: SimDispute) -> dict[str, Any]:
        return {
            "id": dispute.id,
            "entity": "dispute",
            "payment_id": dispute.payment.id,
            "amount": dispute.amount,
            "currency": dispute.payment.link.currency,
            "amount_deducted": dispute.amount if dispute.status == "lost" else 0,
            "reason_code": "chargeback",
            "reason_description": "The cardholder does not recognise the payment",
            "respond_by": int(time.time()) + 7 * 86_400,
            "status": dispute.status,
            "phase": dispute.phase,
            "created_at": int(time.time()),
        }

    # ---- disputes and refunds ---------------------------------------------------------------------

    def _captured(self, processor_reference: str) -> SimPayment:
        link = self.links[processor_reference]
        payment = next((p for p in link.payments if p.status == "captured"), None)
        if payment is None:
            raise ValueError(f"link {processor_reference} is not paid")
        return payment

    async def open_dispute(self, processor_reference: str, amount_minor: int, *, phase: str = "chargeback") -> str:
        payment = self._captured(processor_reference)
        dispute = SimDispute(_rid("disp_"), payment, amount_minor, phase=phase)
        self.disputes[dispute.id] = dispute
        self._emit(
            "payment.dispute.created",
            {"payment": self._payment_entity(payment), "dispute": self._dispute_entity(dispute)},
        )
        await self.idle()
        return dispute.id

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        dispute = self.disputes[dispute_id]
        dispute.status = "won" if won else "lost"
        self._emit(
            f"payment.dispute.{dispute.status}",
            {"payment": self._payment_entity(dispute.payment), "dispute": self._dispute_entity(dispute)},
        )
        await self.idle()

    async def fail_refund(self, refund_id: str) -> None:
        """A refund Razorpay could not process after all: ``refund.failed``."""
        refund = self.refunds[refund_id]
        refund.status = "failed"
        refund.payment.refunded -= refund.amount
        self._emit(
            "refund.failed", {"refund": self._refund_entity(refund), "payment": self._payment_entity(refund.payment)}
        )
        await self.idle()

    # ---- webhooks ---------------------------------------------------------------------------------

    def event_body(self, name: str, payload: dict[str, Any], *, age_s: int = 0) -> bytes:
        return json.dumps(
            {
                "entity": "event",
                "account_id": self.account_id,
                "event": name,
                "contains": list(payload),
                "payload": {kind: {"entity": entity} for kind, entity in payload.items()},
                "created_at": int(time.time()) - age_s,
            }
        ).encode()

    def _headers(self, event: SimEvent) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Razorpay-Signature": sign(event.body, event.secret),
            "X-Razorpay-Event-Id": event.event_id,
        }

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        event = SimEvent(_rid(""), name, self.event_body(name, payload), self.webhook_secret)
        if self.faults.drop or self.webhook_disabled:
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
            if self.webhook_disabled:
                return True  # a disabled webhook sends nothing more (given up, not retried)
            answer = await post_webhook(http, url, event.body, self._headers(event), DELIVERY_TIMEOUT_S)
            event.statuses.append(answer.status)
            return answer.accepted

        if not await with_retries(attempt, RETRY_DELAYS_S):
            self.webhook_disabled = True  # "disabled" once the retries of 24 hours have all failed

    # ---- for the conformance suite: a signed webhook, not sent ------------------------------------

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        link = self.links[processor_reference]
        if outcome == "succeeded":
            payment = next((p for p in link.payments if p.status == "captured"), None)
            if payment is None:
                payment = SimPayment(_rid("pay_"), link, link.amount, self._method(link), "captured", int(time.time()))
            self._open(link)
            paid = copy.copy(link)
            paid.status, paid.amount_paid = "paid", link.amount
            name = "payment_link.paid"
            body = self.event_body(
                name,
                {
                    "payment_link": self._link_entity(paid),
                    "payment": self._payment_entity(payment),
                    "order": self._order_entity(paid),
                },
                age_s=age_s,
            )
        else:
            self._open(link)
            payment = SimPayment(_rid("pay_"), link, link.amount, self._method(link), "failed", int(time.time()))
            payment.error = ("BAD_REQUEST_ERROR", "Payment failed")
            name = "payment.failed"
            body = self.event_body(name, {"payment": self._payment_entity(payment)}, age_s=age_s)
        event = SimEvent(_rid(""), name, body, self.webhook_secret)
        return WebhookRequest(
            method="POST",
            path=WEBHOOK_PATH,
            query={},
            headers=CIMultiDictProxy(CIMultiDict(self._headers(event))),
            body=body,
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def with_other_secret(self) -> RazorpaySimulator:
        other = copy.copy(self)
        other.webhook_secret = secrets.token_urlsafe(24)
        return other
