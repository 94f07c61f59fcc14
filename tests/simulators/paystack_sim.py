"""Paystack as the adapter tests see it: the API a hosted-checkout integration calls, the checkout
page (as state plus :meth:`PaystackSimulator.act`), signed webhooks with Paystack's delivery habits,
refunds, disputes and faults. Implements ``tests/simulators/processor.py``'s Protocol.

Written from ``/work/shared/reference/processors.md`` §4, Paystack's API reference and Webhooks page
(as mirrored in alexasomba/paystack-openapi ``Paystack-API/1-Transactions.md``, ``25-Disputes.md``,
``26-Refunds.md``, ``Docs/02-Webhooks.md``) and the event samples of PaystackOSS/doc-code-snippets
(``dist/doc/payments/webhooks/events.js``), NOT from ``services/payments/processors/paystack``.

Served (``Authorization: Bearer <secret key>``; anything else is 401 ``Invalid key`` [message
UNVERIFIED]); every answer is Paystack's envelope ``{"status": bool, "message": str, "data": …}``:

- ``POST /transaction/initialize`` (JSON): ``email`` (required), ``amount`` (subunits, a JSON integer
  or a string of digits; else 400 "Invalid Amount Sent", the message in laravel-paystack issue #106),
  ``currency``, ``reference`` (``-``, ``.``, ``=`` and alphanumerics), ``callback_url``, ``metadata``,
  ``channels``. A reference used before is 400 "Duplicate Transaction Reference" (issue threads:
  laravel-paystack #89/#106, drupal.org node 3539432: also after the first attempt was abandoned).
  Answers ``authorization_url`` (``{base}/checkout/{access_code}``), ``access_code``, ``reference``.
- ``GET /transaction/verify/{reference}``: the transaction (``status`` abandoned until the driver
  acts; then success or failed; reversed once refunded in full or a dispute is lost), or 400
  "Transaction reference not found" [status code UNVERIFIED].
- ``POST /refund`` (``transaction`` id or reference, ``amount``, ``currency``, ``customer_note``,
  ``merchant_note``): no idempotency key, as Paystack has none; more than is left is 400 [message
  UNVERIFIED]. ``GET /refund?transaction=<id>`` lists a transaction's refunds, ``GET /refund/{id}``.

The driver (:meth:`~PaystackSimulator.act`): "succeeded" pays (status success) and sends
``charge.success``; "declined" fails the transaction (status failed) and "expired" leaves the page:
Paystack sends no webhook for either (no failure event is documented for the hosted flow), so they
are seen through verify only. A transaction nobody paid stays ``abandoned``: the adapter's
``checkout_expiry_s`` (``settings()`` gives a short one) turns that into an expiry.

Money back: a refund is ``pending`` (``refund.pending``), then ``processed`` after
``refund_settle_s`` (``refund.processing``, ``refund.processed``); :meth:`fail_refund` fails one
(``refund.failed``). Refund events name the transaction (``transaction_reference``) and not the
refund, and state ``amount`` as a string, except ``refund.failed`` which has a number, as in
Paystack's samples. :meth:`open_dispute` sends ``charge.dispute.create`` (status
``awaiting-merchant-feedback``), :meth:`remind_dispute` ``charge.dispute.remind``,
:meth:`settle_dispute` ``charge.dispute.resolve`` (resolution ``declined`` when the operator won,
``auto-accepted`` when it lost, as in the sample).

Webhooks: ``Content-Type: application/json``, ``x-paystack-signature`` = hex HMAC-SHA512 of the body
keyed with the secret key. The body is compact JSON with non-ASCII unescaped — what Node's
``JSON.stringify`` writes: Paystack's own Node snippet verifies over ``JSON.stringify(req.body)``,
which only works if that is the body Paystack signed [inferred]. Events carry no id. Delivery is at
least once and unordered; an answer other than 200 is retried on ``retry_backoffs_s``: Paystack's
Webhooks page says live mode retries "every 3 minutes for the first 4 tries, then hourly for the
next 72 hours", test mode "hourly for 10 hours, with a request timeout of 30 seconds" (only a
mirror of that page was reachable here: [UNVERIFIED] against paystack.com itself); compressed.

Faults (``faults``): ``copies``, ``hold`` (released newest first), ``drop``;
``fail_next_create("error_500")`` answers 500 before anything is created; ``"timeout_after_create"``
creates the transaction and answers only once the client has given up; ``fail_next_refund`` does the
same for ``POST /refund``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

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

# Currencies Paystack takes whose subunit is the hundredth (Paystack's currency list: NGN kobo,
# GHS pesewas, ZAR/KES/USD cents, EGP piastres).
CURRENCIES = frozenset({"NGN", "GHS", "ZAR", "KES", "USD", "EGP"})
CHANNELS = frozenset(
    {"card", "bank", "apple_pay", "ussd", "qr", "mobile_money", "bank_transfer", "eft", "capitec_pay", "payattitude"}
)
REFERENCE = re.compile(r"[A-Za-z0-9.=-]{1,100}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
WEBHOOK_TIMEOUT_S = 30  # test mode's documented request timeout
DOMAIN = "live"


def _code(length: int) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def paystack_json(value: Any) -> bytes:
    """A webhook body as Paystack writes it (see the module docstring)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret_key: str, body: bytes) -> str:
    return hmac.new(secret_key.encode(), body, hashlib.sha512).hexdigest()


class PaystackError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _amount(value: Any) -> int:
    if isinstance(value, bool):
        raise PaystackError(400, "Invalid Amount Sent")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and value.isdigit() and value.isascii():
        amount = int(value)
    else:
        raise PaystackError(400, "Invalid Amount Sent")
    if amount <= 0:
        raise PaystackError(400, "Invalid Amount Sent")
    return amount


@dataclass
class SimCustomer:
    id: int
    email: str
    customer_code: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": None,
            "last_name": None,
            "email": self.email,
            "customer_code": self.customer_code,
            "phone": None,
            "metadata": None,
            "risk_action": "default",
            "international_format_phone": None,
        }


@dataclass
class SimTransaction:
    id: int
    reference: str
    access_code: str
    amount: int
    currency: str
    customer: SimCustomer
    channels: list[str]
    callback_url: str | None
    metadata: Any
    created_at: float
    status: str = "abandoned"
    paid_at: float | None = None
    channel: str | None = None
    gateway_response: str | None = None
    refunded: int = 0

    def json(self) -> dict[str, Any]:
        paid = _iso(self.paid_at) if self.paid_at is not None else None
        authorization: dict[str, Any] = {}
        if self.status in ("success", "reversed"):
            authorization = {
                "authorization_code": f"AUTH_{_code(10)}",
                "bin": "408408",
                "last4": "4081",
                "exp_month": "12",
                "exp_year": "2030",
                "channel": self.channel,
                "card_type": "visa ",
                "bank": "TEST BANK",
                "country_code": "NG",
                "brand": "visa",
                "reusable": True,
                "signature": f"SIG_{_code(20)}",
                "account_name": None,
            }
        return {
            "id": self.id,
            "domain": DOMAIN,
            "status": self.status,
            "reference": self.reference,
            "receipt_number": None,
            "amount": self.amount,
            "message": None,
            "gateway_response": self.gateway_response or "The transaction was not completed",
            "paid_at": paid,
            "created_at": _iso(self.created_at),
            "channel": self.channel or "card",
            "currency": self.currency,
            "ip_address": "197.210.54.33",
            "metadata": self.metadata if self.metadata is not None else "",
            "log": None,
            "fees": self.amount // 100 if paid else None,
            "fees_split": None,
            "authorization": authorization,
            "customer": self.customer.json(),
            "plan": None,
            "split": {},
            "order_id": None,
            "paidAt": paid,
            "createdAt": _iso(self.created_at),
            "requested_amount": self.amount,
            "pos_transaction_data": None,
            "source": None,
            "fees_breakdown": None,
        }


@dataclass
class SimRefund:
    id: int
    transaction: SimTransaction
    amount: int
    currency: str
    merchant_note: str
    customer_note: str
    created_at: float
    status: str = "pending"
    refund_reference: str | None = None

    def json(self, *, embed_transaction: bool = False) -> dict[str, Any]:
        transaction: Any = self.transaction.id
        if embed_transaction:
            transaction = {
                "id": self.transaction.id,
                "domain": DOMAIN,
                "reference": self.transaction.reference,
                "amount": self.transaction.amount,
                "paid_at": _iso(self.transaction.paid_at or self.created_at),
                "channel": self.transaction.channel,
                "currency": self.transaction.currency,
            }
        return {
            "id": self.id,
            "integration": 412829,
            "domain": DOMAIN,
            "transaction": transaction,
            "dispute": None,
            "settlement": None,
            "amount": self.amount,
            "deducted_amount": self.amount,
            "fully_deducted": True,
            "currency": self.currency,
            "channel": None,
            "status": self.status,
            "refunded_by": "ops@cpo.example",
            "refunded_at": _iso(time.time()) if self.status == "processed" else None,
            "expected_at": _iso(self.created_at + 86400),
            "customer_note": self.customer_note,
            "merchant_note": self.merchant_note,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(time.time()),
        }

    def event_data(self, amount_as_string: bool) -> dict[str, Any]:
        """A ``refund.*`` event's data, shaped as Paystack's samples: no refund id."""
        return {
            "status": self.status,
            "transaction_reference": self.transaction.reference,
            "refund_reference": self.refund_reference,
            "amount": str(self.amount) if amount_as_string else self.amount,
            "currency": self.currency,
            "processor": "mpgs_zen",
            "customer": {"first_name": None, "last_name": None, "email": self.transaction.customer.email},
            "integration": 412829,
            "domain": DOMAIN,
        }


@dataclass
class SimDispute:
    id: int
    transaction: SimTransaction
    refund_amount: int
    created_at: float
    status: str = "awaiting-merchant-feedback"
    resolution: str | None = None
    resolved_at: float | None = None

    def json(self) -> dict[str, Any]:
        tx = self.transaction.json()
        return {
            "id": self.id,
            "refund_amount": self.refund_amount,
            "currency": self.transaction.currency,
            "status": self.status,
            "resolution": self.resolution,
            "domain": DOMAIN,
            "transaction": {k: tx[k] for k in ("id", "domain", "status", "reference", "amount", "currency", "paid_at")},
            "transaction_reference": None,
            "category": "chargeback",
            "customer": self.transaction.customer.json(),
            "bin": "408408",
            "last4": "4081",
            "dueAt": _iso(self.created_at + 86400),
            "resolvedAt": _iso(self.resolved_at) if self.resolved_at else None,
            "evidence": None,
            "attachments": None,
            "note": None,
            "history": [{"status": "pending", "by": "bank@example.com", "createdAt": _iso(self.created_at)}],
            "messages": [],
            "created_at": _iso(self.created_at),
            "updated_at": _iso(time.time()),
        }


@dataclass
class Delivery:
    event: str
    attempt: int
    status: int | None  # None: unreachable


@dataclass
class _Held:
    event: dict[str, Any]
    body: bytes


@dataclass
class PaystackSimulator(OnHost):
    """One Paystack integration (live mode unless ``live`` is False) with one webhook URL."""

    live: bool = True
    secret_key: str = ""
    webhook_url: str | None = None
    processor: str = "paystack"
    faults: WebhookFaults = field(default_factory=WebhookFaults)
    # Compressed: live retries every 3 minutes 4 times, then hourly (see the module docstring).
    retry_backoffs_s: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.3)
    refund_settle_s: float = 0.05
    refunds_settle: bool = True
    # The adapter's settings for this simulator: an unpaid transaction expires after this.
    checkout_expiry_s: float = 5.0
    customer_email: str = "topup+{payment}@cpo.example"
    create_delay_limit_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.secret_key:
            self.secret_key = ("sk_live_" if self.live else "sk_test_") + _code(40)
        self.transactions: dict[str, SimTransaction] = {}  # by reference
        self.customers: dict[str, SimCustomer] = {}  # by email
        self.refunds: dict[int, SimRefund] = {}
        self.disputes: dict[int, SimDispute] = {}
        self.initialize_bodies: list[dict[str, Any]] = []  # accepted initialize bodies, as received
        self.refund_bodies: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # every event emitted, in order
        self.dropped: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.auth_failures = 0
        self._held: list[_Held] = []
        self._create_faults: list[CreateFault] = []
        self._refund_faults: list[CreateFault] = []
        self._ids = 1_000_000
        self._host = SimulatorHost()

    # --- Protocol: lifecycle and configuration ----------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/transaction/initialize", self._initialize)
        app.router.add_get("/transaction/verify/{reference}", self._verify)
        app.router.add_post("/refund", self._create_refund)
        app.router.add_get("/refund", self._list_refunds)
        app.router.add_get("/refund/{id}", self._get_refund)
        app.router.add_get("/checkout/{code}", self._checkout_page)
        app.router.add_post("/checkout/{code}", self._checkout_submit)
        await self._host.start(app)

    def settings(self) -> dict[str, Any]:
        return {"customer_email": self.customer_email, "checkout_expiry_s": self.checkout_expiry_s}

    def secrets(self) -> dict[str, str]:
        return {"secret_key": self.secret_key}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_faults.append(fault)

    def fail_next_refund(self, fault: CreateFault) -> None:
        self._refund_faults.append(fault)

    def created_payments(self) -> int:
        return len(self.transactions)

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._host.tasks.idle()

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # --- the API ----------------------------------------------------------------------------

    @staticmethod
    def _ok(message: str, data: Any) -> web.Response:
        return web.json_response({"status": True, "message": message, "data": data})

    @staticmethod
    def _error(exc: PaystackError) -> web.Response:
        return web.json_response({"status": False, "message": exc.message}, status=exc.status)

    def _authenticate(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        key = given[len("Bearer ") :] if given.startswith("Bearer ") else ""
        if not key or not hmac.compare_digest(key.encode(), self.secret_key.encode()):
            self.auth_failures += 1
            raise PaystackError(401, "Invalid key")

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise PaystackError(400, "Invalid JSON") from None
        if not isinstance(body, dict):
            raise PaystackError(400, "Invalid JSON")
        return body

    async def _until_client_gone(self, request: web.Request) -> None:
        """The work is done, the answer is late: it is written only after the client gave up."""
        deadline = time.monotonic() + self.create_delay_limit_s
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.02)

    async def _initialize(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authenticate(request)
            body = await self._json(request)
            if self._create_faults and self._create_faults[0] == "error_500":
                self._create_faults.pop(0)
                raise PaystackError(500, "An error occurred")
            tx = self._new_transaction(body)
            self.initialize_bodies.append(body)
        except PaystackError as exc:
            return self._error(exc)
        if self._create_faults and self._create_faults[0] == "timeout_after_create":
            self._create_faults.pop(0)
            await self._until_client_gone(request)
        data = {
            "authorization_url": f"{self.base_url}/checkout/{tx.access_code}",
            "access_code": tx.access_code,
            "reference": tx.reference,
        }
        return self._ok("Authorization URL created", data)

    def _new_transaction(self, body: Mapping[str, Any]) -> SimTransaction:
        email = body.get("email")
        if not isinstance(email, str) or not EMAIL.fullmatch(email):
            raise PaystackError(400, "Invalid Email Address Passed")
        amount = _amount(body.get("amount"))
        currency = body.get("currency", "NGN")
        if currency not in CURRENCIES:
            raise PaystackError(400, "Currency not supported by merchant")
        reference = body.get("reference") or _code(15)
        if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
            raise PaystackError(400, "Invalid transaction reference")
        if reference in self.transactions:
            raise PaystackError(400, "Duplicate Transaction Reference")
        channels = body.get("channels", [])
        if not isinstance(channels, list) or any(c not in CHANNELS for c in channels):
            raise PaystackError(400, "Invalid channels")
        callback_url = body.get("callback_url")
        if callback_url is not None and (
            not isinstance(callback_url, str) or urlsplit(callback_url).scheme not in ("http", "https")
        ):
            raise PaystackError(400, "Invalid callback url")
        metadata = body.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                raise PaystackError(400, "Invalid metadata") from None
        if metadata is not None and not isinstance(metadata, dict):
            raise PaystackError(400, "Invalid metadata")
        customer = self.customers.get(email)
        if customer is None:
            customer = SimCustomer(self._next_id(), email, f"CUS_{_code(15)}")
            self.customers[email] = customer
        tx = SimTransaction(
            id=self._next_id(),
            reference=reference,
            access_code=_code(15),
            amount=amount,
            currency=currency,
            customer=customer,
            channels=list(channels),
            callback_url=callback_url,
            metadata=metadata,
            created_at=time.time(),
        )
        self.transactions[reference] = tx
        return tx

    async def _verify(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
            tx = self.transactions.get(request.match_info["reference"])
            if tx is None:
                raise PaystackError(400, "Transaction reference not found")
        except PaystackError as exc:
            return self._error(exc)
        return self._ok("Verification successful", tx.json())

    def _transaction(self, given: Any) -> SimTransaction:
        """A refund's ``transaction``: the id (number or digits) or the reference."""
        for tx in self.transactions.values():
            if str(given) in (str(tx.id), tx.reference):
                return tx
        raise PaystackError(404, "Transaction not found")

    async def _create_refund(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authenticate(request)
            body = await self._json(request)
            if self._refund_faults and self._refund_faults[0] == "error_500":
                self._refund_faults.pop(0)
                raise PaystackError(500, "An error occurred")
            refund = self._new_refund(body)
            self.refund_bodies.append(body)
        except PaystackError as exc:
            return self._error(exc)
        self._emit("refund.pending", refund.event_data(amount_as_string=True))
        if self.refunds_settle:
            self._host.tasks.spawn(self._settle_refund(refund))
        if self._refund_faults and self._refund_faults[0] == "timeout_after_create":
            self._refund_faults.pop(0)
            await self._until_client_gone(request)
        return self._ok("Refund has been queued for processing", refund.json(embed_transaction=True))

    def _new_refund(self, body: Mapping[str, Any]) -> SimRefund:
        tx = self._transaction(body.get("transaction"))
        if tx.status not in ("success", "reversed"):
            raise PaystackError(400, "Cannot refund a transaction that was not successful")
        left = tx.amount - tx.refunded
        amount = left if body.get("amount") is None else _amount(body.get("amount"))
        currency = body.get("currency", tx.currency)
        if currency != tx.currency:
            raise PaystackError(400, "Currency does not match the transaction currency")
        if left <= 0:
            raise PaystackError(400, "Transaction has been fully reversed")
        if amount > left:
            raise PaystackError(400, "Refund amount cannot be more than the transaction amount left")
        notes = {k: body.get(k) or "" for k in ("merchant_note", "customer_note")}
        if any(not isinstance(v, str) for v in notes.values()):
            raise PaystackError(400, "Invalid note")
        tx.refunded += amount
        if tx.refunded == tx.amount:
            tx.status = "reversed"
        refund = SimRefund(
            self._next_id(), tx, amount, currency, notes["merchant_note"], notes["customer_note"], time.time()
        )
        self.refunds[refund.id] = refund
        return refund

    async def _settle_refund(self, refund: SimRefund) -> None:
        await asyncio.sleep(self.refund_settle_s)
        if refund.status != "pending":
            return
        refund.status = "processing"
        self._emit("refund.processing", refund.event_data(amount_as_string=True))
        refund.status = "processed"
        refund.refund_reference = str(secrets.randbelow(10**12))
        self._emit("refund.processed", refund.event_data(amount_as_string=True))

    async def fail_refund(self, refund_id: int | str) -> None:
        """The refund cannot be made: Paystack gives the amount back to the operator's balance."""
        refund = self.refunds[int(refund_id)]
        refund.status = "failed"
        refund.refund_reference = f"TRF_{_code(15)}"
        refund.transaction.refunded -= refund.amount
        if refund.transaction.status == "reversed":
            refund.transaction.status = "success"
        self._emit("refund.failed", refund.event_data(amount_as_string=False))

    async def _list_refunds(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
        except PaystackError as exc:
            return self._error(exc)
        wanted = request.query.get("transaction")
        refunds = [r.json() for r in self.refunds.values() if wanted is None or str(r.transaction.id) == wanted]
        per_page = int(request.query.get("perPage", "50"))
        return web.json_response(
            {"status": True, "message": "Refunds retrieved", "data": refunds[:per_page], "meta": {"perPage": per_page}}
        )

    async def _get_refund(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
            refund = self.refunds.get(int(request.match_info["id"])) if request.match_info["id"].isdigit() else None
            if refund is None:
                raise PaystackError(404, "Refund not found")
        except PaystackError as exc:
            return self._error(exc)
        return self._ok("Refund retrieved", refund.json())

    # --- the checkout page ------------------------------------------------------------------

    def _by_code(self, code: str) -> SimTransaction | None:
        return next((tx for tx in self.transactions.values() if tx.access_code == code), None)

    async def _checkout_page(self, request: web.Request) -> web.Response:
        tx = self._by_code(request.match_info["code"])
        if tx is None:
            return web.Response(status=404, text="Invalid transaction", content_type="text/html")
        buttons = "".join(
            f'<button name="outcome" value="{o}">{o}</button>' for o in ("succeeded", "declined", "expired")
        )
        html = f'<!doctype html><title>Paystack Checkout (simulated)</title><form method="post">{buttons}</form>'
        return web.Response(text=html, content_type="text/html")

    async def _checkout_submit(self, request: web.Request) -> web.Response:
        tx = self._by_code(request.match_info["code"])
        if tx is None:
            return web.Response(status=404, text="Invalid transaction")
        outcome = (await request.post()).get("outcome")
        if tx.status == "success":
            return web.Response(text="This transaction has been completed")
        if outcome == "succeeded":
            tx.status, tx.paid_at, tx.gateway_response = "success", time.time(), "Successful"
            tx.channel = tx.channels[0] if tx.channels else "card"
            self._emit("charge.success", tx.json())
            target = tx.callback_url or "http://127.0.0.1/"
            query = urlencode({"trxref": tx.reference, "reference": tx.reference})
            raise web.HTTPFound(f"{target}{'&' if '?' in target else '?'}{query}")
        if outcome == "declined":
            # No webhook: Paystack documents none for a failed charge on its checkout.
            tx.status, tx.gateway_response = "failed", "Declined"
            tx.channel = tx.channels[0] if tx.channels else "card"
            return web.Response(text="Declined")
        if outcome == "expired":
            return web.Response(text="The driver closed the page")  # stays abandoned, no webhook
        return web.Response(status=400, text="unknown outcome")

    # --- Protocol: the driver, disputes, webhooks ---------------------------------------------

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        assert isinstance(checkout.next_step, Redirect), checkout.next_step
        assert self._host.http is not None, "start() first"
        async with self._host.http.post(
            checkout.next_step.url, data={"outcome": outcome}, allow_redirects=False
        ) as response:
            assert response.status in (200, 302), (response.status, await response.text())

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        tx = self.transactions[processor_reference]
        assert tx.status in ("success", "reversed"), "only a paid transaction is disputed"
        dispute = SimDispute(self._next_id(), tx, amount_minor, time.time())
        self.disputes[dispute.id] = dispute
        self._emit("charge.dispute.create", dispute.json())
        return str(dispute.id)

    async def remind_dispute(self, dispute_id: str) -> None:
        self._emit("charge.dispute.remind", self.disputes[int(dispute_id)].json())

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        dispute = self.disputes[int(dispute_id)]
        dispute.status, dispute.resolved_at = "resolved", time.time()
        dispute.resolution = "declined" if won else "auto-accepted"
        if not won and dispute.refund_amount >= dispute.transaction.amount:
            dispute.transaction.status = "reversed"
        self._emit("charge.dispute.resolve", dispute.json())

    def _emit(self, event_name: str, data: dict[str, Any]) -> None:
        event = {"event": event_name, "data": data}
        self.events.append(event)
        body = paystack_json(event)
        if self.faults.drop:
            self.dropped.append(event)
        elif self.faults.hold:
            self._held.append(_Held(event, body))
        else:
            for _ in range(self.faults.copies):
                self._host.tasks.spawn(self._deliver(event, body))

    def headers(self, body: bytes, secret_key: str | None = None) -> dict[str, str]:
        return {"Content-Type": "application/json", "x-paystack-signature": sign(secret_key or self.secret_key, body)}

    async def _deliver(self, event: Mapping[str, Any], body: bytes, first: int = 0) -> None:
        if self.webhook_url is None:  # no URL set on the Dashboard: nothing is sent
            return
        await with_retries(lambda n: self._attempt(event, body, n + 1), self.retry_backoffs_s, first=first)

    async def _attempt(self, event: Mapping[str, Any], body: bytes, attempt: int) -> bool:
        status: int | None = None
        accepted = False
        if self._host.http is not None and self.webhook_url is not None:
            answer = await post_webhook(self._host.http, self.webhook_url, body, self.headers(body), WEBHOOK_TIMEOUT_S)
            # Paystack counts only a 200 as received (Webhooks page: "Without a 200 OK …").
            status, accepted = answer.status, answer.status == 200
        self.deliveries.append(Delivery(str(event["event"]), attempt, status))
        return accepted

    async def _retry_later(self, event: Mapping[str, Any], body: bytes) -> None:
        if self.retry_backoffs_s:
            await asyncio.sleep(self.retry_backoffs_s[0])
            await self._deliver(event, body, first=1)

    async def release(self) -> None:
        """The held webhooks, newest first; a failed first attempt is retried in the background."""
        held, self._held = self._held, []
        for item in reversed(held):
            for _ in range(self.faults.copies):
                if not await self._attempt(item.event, item.body, 1):
                    self._host.tasks.spawn(self._retry_later(item.event, item.body))

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        return self._signed_webhook(processor_reference, outcome, self.secret_key)

    def _signed_webhook(self, processor_reference: str, outcome: str, secret_key: str) -> WebhookRequest:
        """``charge.success`` for the transaction as if paid. For "declined" Paystack sends nothing
        (no failure event is documented): the body is the transaction in its failed state under the
        name ``charge.failed``, which stands for whatever else one might post; the adapter acts on it
        only if signed, and then ignores it. Paystack signs no time, so ``age_s`` changes nothing."""
        tx = self.transactions[processor_reference]
        view = tx.json()
        if outcome == "succeeded":
            view.update(status="success", gateway_response="Successful", paid_at=_iso(time.time()))
            event = {"event": "charge.success", "data": view}
        else:
            view.update(status="failed", gateway_response="Declined")
            event = {"event": "charge.failed", "data": view}
        body = paystack_json(event)
        path = urlsplit(self.webhook_url).path if self.webhook_url else "/webhooks/paystack"
        headers = CIMultiDictProxy(CIMultiDict(self.headers(body, secret_key)))
        return WebhookRequest("POST", path, {}, headers, body, "52.31.139.75", time.time())

    def with_other_secret(self) -> PaystackSimulatorWithOtherSecret:
        return PaystackSimulatorWithOtherSecret(self)


class PaystackSimulatorWithOtherSecret:
    """This simulator, but its ``signed_webhook`` signs with a key the adapter does not know."""

    def __init__(self, simulator: PaystackSimulator) -> None:
        self._simulator = simulator
        self.other_secret = ("sk_live_" if simulator.live else "sk_test_") + _code(40)

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        return self._simulator._signed_webhook(processor_reference, outcome, self.other_secret)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._simulator, name)
