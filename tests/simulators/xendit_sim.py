"""Xendit Invoices as the tests see it: the invoice API, the hosted invoice page (as state plus
:meth:`XenditSimulator.act`), invoice and refund callbacks with Xendit's delivery habits, the Refund
API and faults. Implements ``tests/simulators/processor.py``'s Protocol.

Written from ``/work/shared/reference/processors.md`` §8 and the official SDKs' generated models
(xendit-python ``invoice_api.py``, ``refund_api.py``, ``Invoice``, ``InvoiceCallback``,
``CreateRefund``, ``RefundCallback``/``RefundCallbackData``; xendit-php ``CreateInvoiceRequest``),
NOT from ``services/payments/processors/xendit``, so the adapter and this simulator cannot share one
mistake.

What is served (HTTP Basic with the secret key as user name and an empty password; anything else is
401 ``INVALID_API_KEY``):

- ``POST /v2/invoices`` (JSON): ``external_id`` and ``amount`` required; ``currency`` (IDR, PHP, THB,
  VND, MYR, USD; default IDR); IDR and VND amounts whole, the others at most two decimals;
  ``invoice_duration`` seconds (default 86400); ``payment_methods`` of known codes; the redirect URLs,
  ``description``, ``locale``, ``metadata`` (≤50 keys, names ≤40, values ≤500 characters),
  ``should_send_email``. A field of the wrong type is 400 ``API_VALIDATION_ERROR``. No idempotency:
  ``external_id`` is not unique, the same request again is a second invoice (processors.md §8.a: the
  idempotency header is unverified; the SDKs send none for invoices). The answer is the invoice:
  ``id`` (24 hex digits), ``external_id``, ``user_id``, ``status`` PENDING, ``merchant_name``,
  ``amount``, ``currency``, ``description``, ``invoice_url`` (``{base}/web/{id}``), ``expiry_date``,
  ``created``, ``updated``, the redirect URLs, ``payment_methods``, ``should_send_email``, ``metadata``.
- ``GET /v2/invoices/{id}`` (404 ``INVOICE_NOT_FOUND_ERROR``); ``GET /v2/invoices?external_id=…`` (a JSON
  array, newest first); ``POST /invoices/{id}/expire!`` (a PENDING invoice expires now; otherwise 404
  ``INVOICE_NOT_FOUND_ERROR``, as Xendit answers for one it cannot expire [decision]).
- ``POST /refunds`` (``invoice_id``, ``amount``, ``currency``, ``reason`` of FRAUDULENT, DUPLICATE,
  REQUESTED_BY_CUSTOMER, CANCELLATION, OTHERS, ``reference_id``, ``metadata``), ``idempotency-key``
  header: the same key again answers the first refund (another body with the same key is 409
  ``DUPLICATE_ERROR`` [decision]); a refund of an unpaid invoice is 400 ``INVALID_PAYMENT_STATUS``
  [decision]; more than is left is 400 ``REFUND_AMOUNT_EXCEEDED`` [decision]. The refund is
  ``PENDING`` and succeeds ``refund_settle_s`` later (``refund.succeeded``) unless ``fail_refunds``
  (``refund.failed``). ``GET /refunds/{id}``.

The driver (:meth:`act`): "succeeded" pays the invoice with the first of its payment methods
(``PAID`` with ``paid_amount``, ``paid_at``, ``payment_id``, ``payment_method``/``payment_channel``) and
sends the PAID callback; "expired" lets the clock run out (``expiry_date`` now) and sends the
EXPIRED callback; "declined": a declined attempt leaves a Xendit invoice payable (it has no failed
status), so the simulator models the driver's failed payment as the invoice being ended unpaid
before its time (``expire!``: ``updated`` well before ``expiry_date``), with the EXPIRED callback —
what Xendit calls its "Expired/Failure callback" [modelling decision, see the adapter]. A manual
``expire!`` sends the EXPIRED callback too [decision: the worst case for the adapter].

Callbacks: JSON POSTs (``Content-Type: application/json``) with ``x-callback-token`` = the account's
callback verification token. Invoice callbacks carry the invoice's fields (InvoiceCallback: ``id,
external_id, user_id, is_high, status, merchant_name, amount, paid_amount, initial_amount, currency,
paid_at, payment_method, payment_channel, payment_destination, payment_id, bank_code | ewallet_type,
description, created, updated``, redirect URLs). Refund callbacks: ``{"event", "business_id",
"created", "data": {…}}``. Delivery (help.xendit.co 360038049331, docs.xendit.co webhook-behavior):
a non-2xx answer or a refused connection is retried up to 6 times after the original, at 15 min,
45 min, 2 h, 3 h, 6 h and 12 h (compressed by ``time_scale``); a **timeout** (``callback_timeout_s``,
Xendit's 30 s) is not retried: the callback is lost. Faults (``faults``): ``copies`` sends each
callback that many times; ``hold`` keeps them for :meth:`release` (newest first); ``drop`` records
them in ``dropped`` and sends nothing.

``unseen_searches`` makes the next searches by ``external_id`` find nothing (a first attempt still
in flight when the adapter looked). ``fail_next_create("error_500")`` answers 500 ``SERVER_ERROR``
before anything is created; ``"timeout_after_create"`` creates the invoice and answers only once the
client has given up.

:meth:`signed_webhook` is the callback Xendit would send for an invoice's outcome (paying or ending
the invoice first, without sending anything, so that the API agrees, as after a lost callback).
:meth:`with_other_secret` is a view whose callbacks carry another token. Xendit documents no disputes
for invoices: :meth:`open_dispute` and :meth:`settle_dispute` raise."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from services.payments.processors.base import Checkout, WebhookRequest
from tests.simulators.processor import (
    CreateFault,
    OnHost,
    Outcome,
    SimulatorHost,
    WebhookFaults,
    post_webhook,
    with_retries,
)

DECIMALS = {"IDR": 0, "VND": 0, "PHP": 2, "THB": 2, "MYR": 2, "USD": 2}
MINOR_EXPONENT = {"IDR": 2, "VND": 0, "PHP": 2, "THB": 2, "MYR": 2, "USD": 2}  # ISO 4217
# Invoice payment_methods codes (xendit-python EwalletType, QrCodeType, BankCode, + CREDIT_CARD), with
# what the paid callback says of each: (payment_method, payment_channel, extra fields).
EWALLETS = ("OVO", "DANA", "LINKAJA", "PAYMAYA", "SHOPEEPAY", "GCASH", "GRABPAY", "ASTRAPAY", "NEXCASH", "JENIUSPAY")
BANKS = ("BCA", "BNI", "BRI", "MANDIRI", "PERMATA", "BSI", "BJB", "SAHABAT_SAMPOERNA", "CIMB", "BNC")
QR_CODES = ("QRIS", "PROMPTPAY")
METHOD_CODES = frozenset({"CREDIT_CARD", *EWALLETS, *BANKS, *QR_CODES})
REFUND_REASONS = frozenset({"FRAUDULENT", "DUPLICATE", "REQUESTED_BY_CUSTOMER", "CANCELLATION", "OTHERS"})
# Xendit's schedule after the original attempt: 15 min, 45 min, 2 h, 3 h, 6 h, 12 h.
RETRY_SCHEDULE_S = (900, 2700, 7200, 10800, 21600, 43200)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _hex_id() -> str:
    return secrets.token_hex(12)


def _number(amount: Decimal) -> int | float:
    """A JSON number for an amount with at most two decimals (float repr is exact for those)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def minor_to_xendit(amount_minor: int, currency: str) -> Decimal:
    """What the tests expect Xendit's amount to be for our minor units (computed here independently)."""
    return Decimal(amount_minor).scaleb(-MINOR_EXPONENT[currency])


class XenditApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error_code": code, "message": message}


def _validation(message: str) -> XenditApiError:
    return XenditApiError(400, "API_VALIDATION_ERROR", message)


@dataclass
class SimInvoice:
    id: str
    external_id: str
    amount: Decimal
    currency: str
    description: str | None
    payment_methods: list[str]
    created: datetime
    expiry_date: datetime
    success_redirect_url: str | None
    failure_redirect_url: str | None
    locale: str | None
    metadata: dict[str, Any] | None
    invoice_url: str
    status: str = "PENDING"
    updated: datetime = field(default_factory=_now)
    paid_at: datetime | None = None
    payment_id: str | None = None
    channel: str | None = None
    refunded: Decimal = Decimal(0)

    def _method_fields(self) -> dict[str, Any]:
        if self.channel is None:
            return {}
        if self.channel == "CREDIT_CARD":
            return {
                "payment_method": "CREDIT_CARD",
                "payment_channel": "CREDIT_CARD",
                "credit_card_charge_id": _hex_id(),
            }
        if self.channel in EWALLETS:
            return {"payment_method": "EWALLET", "payment_channel": self.channel, "ewallet_type": self.channel}
        if self.channel in BANKS:
            return {
                "payment_method": "BANK_TRANSFER",
                "payment_channel": self.channel,
                "bank_code": self.channel,
                "payment_destination": "8860" + "".join(secrets.choice("0123456789") for _ in range(9)),
            }
        return {"payment_method": "QR_CODE", "payment_channel": self.channel}

    def api_json(self, user_id: str) -> dict[str, Any]:
        """As ``GET /v2/invoices/{id}`` answers (xendit-python ``Invoice``)."""
        body: dict[str, Any] = {
            "id": self.id,
            "external_id": self.external_id,
            "user_id": user_id,
            "status": self.status,
            "merchant_name": "EV Charging Co",
            "merchant_profile_picture_url": "https://xnd-companies.s3.amazonaws.com/prod/default.png",
            "amount": _number(self.amount),
            "currency": self.currency,
            "description": self.description,
            "expiry_date": _iso(self.expiry_date),
            "invoice_url": self.invoice_url,
            "available_banks": [],
            "available_retail_outlets": [],
            "available_ewallets": [],
            "available_qr_codes": [],
            "available_direct_debits": [],
            "available_paylaters": [],
            "should_exclude_credit_card": "CREDIT_CARD" not in self.payment_methods,
            "should_send_email": False,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
        }
        for key in ("success_redirect_url", "failure_redirect_url", "locale", "metadata"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.status in ("PAID", "SETTLED"):
            assert self.paid_at is not None
            body |= {"paid_amount": _number(self.amount), "paid_at": _iso(self.paid_at), "payment_id": self.payment_id}
            body |= self._method_fields()
        return body

    def callback_json(self, user_id: str, status: str) -> dict[str, Any]:
        """The invoice callback (xendit-python ``InvoiceCallback``, the captured sample in the docs)."""
        body: dict[str, Any] = {
            "id": self.id,
            "external_id": self.external_id,
            "user_id": user_id,
            "is_high": False,
            "status": status,
            "merchant_name": "EV Charging Co",
            "amount": _number(self.amount),
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "currency": self.currency,
            "description": self.description,
        }
        for key in ("success_redirect_url", "failure_redirect_url"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if status == "PAID":
            body |= {
                "paid_amount": _number(self.amount),
                "initial_amount": _number(self.amount),
                "paid_at": _iso(self.paid_at or _now()),
                "payment_id": self.payment_id or _hex_id(),
            }
            body |= self._method_fields()
        return body


@dataclass
class SimRefund:
    id: str
    invoice_id: str
    amount: Decimal
    currency: str
    reason: str
    reference_id: str | None
    metadata: dict[str, Any] | None
    created: datetime
    status: str = "PENDING"
    failure_code: str | None = None
    updated: datetime = field(default_factory=_now)

    def json(self, channel: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "payment_request_id": None,
            "invoice_id": self.invoice_id,
            "payment_id": None,
            "payment_method_type": "EWALLET" if channel in EWALLETS else "CARD",
            "amount": _number(self.amount),
            "channel_code": channel or "CREDIT_CARD",
            "country": {"IDR": "ID", "PHP": "PH", "THB": "TH", "VND": "VN", "MYR": "MY"}.get(self.currency, "ID"),
            "currency": self.currency,
            "reference_id": self.reference_id,
            "failure_code": self.failure_code,
            "refund_fee_amount": None,
            "status": self.status,
            "reason": self.reason,
            "metadata": self.metadata,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
        }


@dataclass
class Delivery:
    url: str
    body: bytes
    status: int | None
    error: str | None = None


@dataclass
class _Outgoing:
    body: bytes
    token: str


class XenditSimulator(OnHost):
    processor = "xendit"

    def __init__(
        self,
        *,
        environment: Literal["production", "test"] = "production",
        time_scale: float = 1 / 6000,
        callback_timeout_s: float = 30.0,
        refund_settle_s: float = 0.05,
    ) -> None:
        prefix = "xnd_production_" if environment == "production" else "xnd_development_"
        self.secret_key = prefix + secrets.token_urlsafe(45).replace("-", "a").replace("_", "b")
        self.callback_token = secrets.token_urlsafe(36)
        self.user_id = _hex_id()
        self.retry_backoffs_s = tuple(s * time_scale for s in RETRY_SCHEDULE_S)
        self.callback_timeout_s = callback_timeout_s
        self.refund_settle_s = refund_settle_s
        self.fail_refunds = False
        # The next this many invoice searches find nothing: an invoice whose create is still in
        # flight at Xendit when the search runs (the race a lost answer leaves).
        self.unseen_searches = 0
        self.faults = WebhookFaults()
        self.webhook_url: str | None = None
        self.invoices: dict[str, SimInvoice] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.create_requests: list[dict[str, Any]] = []  # accepted invoice creations, as received
        self.refund_requests: list[tuple[str | None, dict[str, Any]]] = []  # (idempotency key, body)
        self.expired_by_api: list[str] = []
        self.deliveries: list[Delivery] = []
        self.dropped: list[bytes] = []
        self.lost: list[bytes] = []  # timed out: Xendit does not retry them
        self._held: list[_Outgoing] = []
        self._refund_keys: dict[str, tuple[str, bytes]] = {}
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # -- Protocol: lifecycle and configuration ---------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/invoices", self._create_invoice)
        app.router.add_post("/v2/invoices/", self._create_invoice)
        app.router.add_get("/v2/invoices", self._list_invoices)
        app.router.add_get("/v2/invoices/{id}", self._get_invoice)
        app.router.add_post("/invoices/{id}/expire!", self._expire_invoice)
        app.router.add_post("/refunds", self._create_refund)
        app.router.add_get("/refunds/{id}", self._get_refund)
        return app

    async def start(self) -> None:
        await self._host.start(self.app(), shutdown_timeout=0.5)

    def settings(self) -> dict[str, Any]:
        return {}

    def secrets(self) -> dict[str, str]:
        return {"secret_key": self.secret_key, "callback_token": self.callback_token}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        """Invoices that can be (or were) paid: one the merchant expired at once cannot be."""
        return sum(1 for invoice in self.invoices.values() if invoice.id not in self.expired_by_api)

    # -- the API -----------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8") if scheme == "Basic" else ""
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        expected = f"{self.secret_key}:"
        if not hmac.compare_digest(decoded.encode(), expected.encode()):
            raise XenditApiError(401, "INVALID_API_KEY", "API key is invalid")

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read(), parse_float=Decimal)
        except ValueError:
            raise _validation("Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _validation("Request body must be an object")
        return body

    @staticmethod
    def _answer(body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status)

    async def _guarded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            self._authenticate(request)
            result: web.StreamResponse = await handler(request)
            return result
        except XenditApiError as exc:
            return self._answer(exc.body, exc.status)

    async def _create_invoice(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, self._do_create_invoice)

    async def _do_create_invoice(self, request: web.Request) -> web.StreamResponse:
        fault, self._create_fault = self._create_fault, None
        if fault == "error_500":
            raise XenditApiError(500, "SERVER_ERROR", "Something unexpected happened")
        params = await self._json(request)
        invoice = self._new_invoice(params)
        self.invoices[invoice.id] = invoice
        self.create_requests.append(params)
        if fault == "timeout_after_create":
            await self._until_client_gone(request)
        return self._answer(invoice.api_json(self.user_id))

    @staticmethod
    async def _until_client_gone(request: web.Request, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.02)

    @staticmethod
    def _amount(value: Any, currency: str, name: str = "amount") -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise _validation(f"{name} must be a number")
        amount = Decimal(value)
        if amount <= 0:
            raise _validation(f"{name} must be greater than 0")
        if amount != round(amount, DECIMALS[currency]):
            raise _validation(f"{name} has too many decimals for {currency}")
        return amount

    def _new_invoice(self, params: dict[str, Any]) -> SimInvoice:
        external_id = params.get("external_id")
        if not isinstance(external_id, str) or not 1 <= len(external_id) <= 1000:
            raise _validation('"external_id" is required')
        currency = params.get("currency", "IDR")
        if currency not in DECIMALS:
            raise XenditApiError(400, "UNSUPPORTED_CURRENCY", f"Currency {currency} is not supported")
        amount = self._amount(params.get("amount"), currency)
        duration = params.get("invoice_duration", 86400)
        if isinstance(duration, bool) or not isinstance(duration, int | Decimal) or not 1 <= duration <= 31536000:
            raise _validation('"invoice_duration" must be between 1 and 31536000')
        methods = params.get("payment_methods")
        if methods is not None and (
            not isinstance(methods, list) or not methods or not all(m in METHOD_CODES for m in methods)
        ):
            raise _validation('"payment_methods" has an unknown payment method')
        for key in ("description", "success_redirect_url", "failure_redirect_url", "locale"):
            if key in params and not isinstance(params[key], str):
                raise _validation(f'"{key}" must be a string')
        for key in ("success_redirect_url", "failure_redirect_url"):
            if key in params and urlsplit(params[key]).scheme not in ("http", "https"):
                raise _validation(f'"{key}" must be a URL')
        metadata = params.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 50
            or any(len(k) > 40 or (isinstance(v, str) and len(v) > 500) for k, v in metadata.items())
        ):
            raise _validation('"metadata" is too large')
        if "should_send_email" in params and not isinstance(params["should_send_email"], bool):
            raise _validation('"should_send_email" must be a boolean')
        now = _now()
        invoice_id = _hex_id()
        return SimInvoice(
            id=invoice_id,
            external_id=external_id,
            amount=amount,
            currency=currency,
            description=params.get("description"),
            payment_methods=list(methods or ["CREDIT_CARD"]),
            created=now,
            expiry_date=now + timedelta(seconds=int(duration)),
            success_redirect_url=params.get("success_redirect_url"),
            failure_redirect_url=params.get("failure_redirect_url"),
            locale=params.get("locale"),
            metadata=metadata,
            invoice_url=f"{self.base_url}/web/{invoice_id}",
            updated=now,
        )

    def _invoice(self, invoice_id: str) -> SimInvoice:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise XenditApiError(404, "INVOICE_NOT_FOUND_ERROR", "Invoice not found")
        return invoice

    async def _get_invoice(self, request: web.Request) -> web.StreamResponse:
        async def handler(request: web.Request) -> web.Response:
            return self._answer(self._invoice(request.match_info["id"]).api_json(self.user_id))

        return await self._guarded(request, handler)

    async def _list_invoices(self, request: web.Request) -> web.StreamResponse:
        async def handler(request: web.Request) -> web.Response:
            external_id = request.query.get("external_id")
            if self.unseen_searches > 0:
                self.unseen_searches -= 1
                return self._answer([])
            found = [i for i in self.invoices.values() if external_id is None or i.external_id == external_id]
            found.sort(key=lambda invoice: invoice.created, reverse=True)
            return self._answer([invoice.api_json(self.user_id) for invoice in found])

        return await self._guarded(request, handler)

    async def _expire_invoice(self, request: web.Request) -> web.StreamResponse:
        async def handler(request: web.Request) -> web.Response:
            invoice = self._invoice(request.match_info["id"])
            if invoice.status != "PENDING":
                raise XenditApiError(404, "INVOICE_NOT_FOUND_ERROR", "Invoice not found or already paid/expired")
            self._end(invoice, early=True)
            self.expired_by_api.append(invoice.id)
            self._dispatch(self._callback(invoice.callback_json(self.user_id, "EXPIRED")))
            return self._answer(invoice.api_json(self.user_id))

        return await self._guarded(request, handler)

    async def _create_refund(self, request: web.Request) -> web.StreamResponse:
        async def handler(request: web.Request) -> web.Response:
            raw = await request.read()
            key = request.headers.get("idempotency-key")
            params = await self._json(request)
            self.refund_requests.append((key, params))
            if key is not None and key in self._refund_keys:
                refund_id, first = self._refund_keys[key]
                if first != raw:
                    raise XenditApiError(409, "DUPLICATE_ERROR", "Idempotency key was used with another request")
                refund = self.refunds[refund_id]
                return self._answer(refund.json(self.invoices[refund.invoice_id].channel))
            refund = self._new_refund(params)
            if key is not None:
                self._refund_keys[key] = (refund.id, raw)
            self._host.tasks.spawn(self._settle_refund(refund))
            return self._answer(refund.json(self.invoices[refund.invoice_id].channel))

        return await self._guarded(request, handler)

    def _new_refund(self, params: dict[str, Any]) -> SimRefund:
        invoice_id = params.get("invoice_id")
        if not isinstance(invoice_id, str):
            raise _validation('"invoice_id" or "payment_request_id" is required')
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise XenditApiError(404, "DATA_NOT_FOUND", "Invoice not found")
        if invoice.status not in ("PAID", "SETTLED"):
            raise XenditApiError(400, "INVALID_PAYMENT_STATUS", "The invoice is not paid")
        currency = params.get("currency", invoice.currency)
        if currency != invoice.currency:
            raise _validation('"currency" must be the invoice\'s')
        amount = self._amount(params.get("amount", invoice.amount - invoice.refunded), currency)
        if amount > invoice.amount - invoice.refunded:
            raise XenditApiError(400, "REFUND_AMOUNT_EXCEEDED", "Refund amount exceeds what is left")
        reason = params.get("reason")
        if reason not in REFUND_REASONS:
            raise _validation('"reason" must be one of ' + ", ".join(sorted(REFUND_REASONS)))
        invoice.refunded += amount
        refund = SimRefund(
            id=f"rfd-{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}",
            invoice_id=invoice.id,
            amount=amount,
            currency=currency,
            reason=reason,
            reference_id=params.get("reference_id"),
            metadata=params.get("metadata"),
            created=_now(),
        )
        self.refunds[refund.id] = refund
        return refund

    async def _settle_refund(self, refund: SimRefund) -> None:
        await asyncio.sleep(self.refund_settle_s)
        failed = self.fail_refunds
        refund.status = "FAILED" if failed else "SUCCEEDED"
        refund.failure_code = "INSUFFICIENT_BALANCE" if failed else None
        refund.updated = _now()
        if failed:
            self.invoices[refund.invoice_id].refunded -= refund.amount
        self._dispatch(self._callback(self.refund_callback_json(refund)))

    def refund_callback_json(self, refund: SimRefund) -> dict[str, Any]:
        event = "refund.succeeded" if refund.status == "SUCCEEDED" else "refund.failed"
        data = refund.json(self.invoices[refund.invoice_id].channel)
        return {"event": event, "business_id": self.user_id, "created": _iso(_now()), "data": data}

    async def _get_refund(self, request: web.Request) -> web.StreamResponse:
        async def handler(request: web.Request) -> web.Response:
            refund = self.refunds.get(request.match_info["id"])
            if refund is None:
                raise XenditApiError(404, "DATA_NOT_FOUND", "Refund not found")
            return self._answer(refund.json(self.invoices[refund.invoice_id].channel))

        return await self._guarded(request, handler)

    # -- the driver --------------------------------------------------------------------------------

    def invoice(self, invoice_id: str) -> SimInvoice:
        return self.invoices[invoice_id]

    def _pay(self, invoice: SimInvoice) -> None:
        now = _now()
        invoice.status, invoice.paid_at, invoice.updated = "PAID", now, now
        invoice.payment_id = _hex_id()
        invoice.channel = invoice.payment_methods[0]

    def _end(self, invoice: SimInvoice, *, early: bool) -> None:
        now = _now()
        invoice.status, invoice.updated = "EXPIRED", now
        if not early:
            invoice.expiry_date = now  # the clock ran out (compressed)

    def _decide(self, invoice: SimInvoice, outcome: Outcome) -> str:
        if invoice.status != "PENDING":
            raise ValueError(f"invoice {invoice.id} is {invoice.status} already")
        if outcome == "succeeded":
            self._pay(invoice)
            return "PAID"
        self._end(invoice, early=outcome == "declined")
        return "EXPIRED"

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        invoice = self.invoices[checkout.processor_reference]
        status = self._decide(invoice, outcome)
        self._dispatch(self._callback(invoice.callback_json(self.user_id, status)))

    def settle(self, invoice_id: str) -> None:
        """The paid invoice's funds reach the balance: SETTLED (no callback)."""
        invoice = self.invoices[invoice_id]
        assert invoice.status == "PAID"
        invoice.status, invoice.updated = "SETTLED", _now()

    # -- callbacks ---------------------------------------------------------------------------------

    def _callback(self, body: Mapping[str, Any], token: str | None = None) -> _Outgoing:
        return _Outgoing(json.dumps(body).encode(), token or self.callback_token)

    def _dispatch(self, out: _Outgoing) -> None:
        if self.faults.drop:
            self.dropped.append(out.body)
            return
        copies = max(1, self.faults.copies)
        if self.faults.hold:
            self._held.extend([out] * copies)
            return
        for _ in range(copies):
            self._host.tasks.spawn(self._deliver(out))

    async def _deliver(self, out: _Outgoing) -> bool:
        http = self._host.http
        assert http is not None, "start() first"
        assert self.webhook_url is not None, "no webhook_url (the Dashboard's callback URL)"
        url = self.webhook_url
        headers = {"Content-Type": "application/json", "x-callback-token": out.token}

        async def attempt(_: int) -> bool:
            answer = await post_webhook(http, url, out.body, headers, self.callback_timeout_s)
            self.deliveries.append(Delivery(url, out.body, answer.status, answer.error))
            if answer.error is not None and "Timeout" in answer.error:
                self.lost.append(out.body)  # Xendit does not retry a timeout
                return True
            return answer.accepted

        return await with_retries(attempt, self.retry_backoffs_s)

    async def release(self) -> None:
        held, self._held = self._held, []
        for out in reversed(held):
            await self._deliver(out)

    # -- what Xendit invoices do not have ----------------------------------------------------------

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        raise NotImplementedError("Xendit documents no disputes for invoices")

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        raise NotImplementedError("Xendit documents no disputes for invoices")

    # -- callbacks not sent ------------------------------------------------------------------------

    def webhook_request(self, body: bytes, token: str | None = None) -> WebhookRequest:
        url = urlsplit(self.webhook_url or "http://127.0.0.1/webhooks/xendit_main")
        headers = CIMultiDictProxy(
            CIMultiDict(
                {
                    "Host": url.netloc,
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                    "x-callback-token": token or self.callback_token,
                }
            )
        )
        return WebhookRequest("POST", url.path or "/", {}, headers, body, "127.0.0.1", time.time())

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        return self._webhook_with(processor_reference, outcome, self.callback_token)

    def _webhook_with(self, processor_reference: str, outcome: Outcome, token: str) -> WebhookRequest:
        invoice = self.invoices[processor_reference]
        if invoice.status == "PENDING":
            self._decide(invoice, outcome)
        status = "PAID" if outcome == "succeeded" else "EXPIRED"
        return self.webhook_request(self._callback(invoice.callback_json(self.user_id, status)).body, token)

    def with_other_secret(self) -> OtherTokenView:
        return OtherTokenView(self)


class OtherTokenView(XenditSimulator):
    """The simulator as seen with another account's callback token (or a guessed one): the same
    state (the same instance dict); its callbacks carry the wrong ``x-callback-token``, and claim
    what the caller asks without changing Xendit's state."""

    def __init__(self, simulator: XenditSimulator) -> None:
        self.__dict__ = simulator.__dict__
        self._other_token = secrets.token_urlsafe(36)

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        invoice = self.invoices[processor_reference]
        status = "PAID" if outcome == "succeeded" else "EXPIRED"
        body = self._callback(invoice.callback_json(self.user_id, status)).body
        return self.webhook_request(body, self._other_token)

    def with_other_secret(self) -> OtherTokenView:
        return self
