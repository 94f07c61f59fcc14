"""Mollie (Payments API v2, classic webhooks) as the tests see it: an aiohttp server with Mollie's
payments, refunds and chargebacks, the driver's choice held as state until :meth:`MollieSimulator.act`,
and the id-only webhook POSTed to each payment's ``webhookUrl``. Written from
``reference/processors.md`` §3 and mollie/api-documentation (``create-payment.rst``, ``get-payment.rst``,
``status-changes.rst``, ``api-idempotency.rst``, the refunds and chargebacks pages), not from
``services/payments/processors/mollie``, so the adapter and this simulator cannot share one mistake.

What is served (every call needs ``Authorization: Bearer <api key>``; otherwise 401 ``{"status": 401,
"title": "Unauthorized Request", "detail": "Missing authentication, or failed to authenticate"}``). A key
sees only the payments of its own mode (``live_`` / ``test_``); another's answer 404, as unknown ones do.

- ``POST /v2/payments`` (JSON): ``amount {currency, value}`` with ``value`` a string with the currency's
  exact decimals, ``description`` and ``redirectUrl`` required, ``webhookUrl``, ``metadata`` (at most
  1024 bytes of JSON), ``method`` (create-payment.rst's codes), ``locale`` (its list); anything wrong:
  422 ``{"status": 422, "title": "Unprocessable Entity", "detail", "field"}``. 201 with the payment
  (``status: "open"``, ``_links.checkout.href`` on this server). Real Mollie refuses a ``webhookUrl`` on
  localhost; this one takes it (the tests have nothing else).
- ``Idempotency-Key`` on every POST (api-idempotency.rst): the same key with the same endpoint and body
  is answered with the first answer and ``Idempotent-Replayed: true``; with another endpoint or body:
  400; while the first is still running: 409.
- ``GET /v2/payments/{id}`` (``embed=refunds,chargebacks`` puts them in ``_embedded``; ``amountRefunded``
  and ``amountRemaining`` once paid), ``GET /v2/payments/{id}/refunds``, ``…/chargebacks``; unknown:
  404 ``"No payment exists with token tr_…."``.
- ``POST /v2/payments/{id}/refunds`` (``amount``, ``description``, ``metadata``): only a paid payment,
  at most ``amountRemaining`` (else 422). The refund is ``pending``, then ``processing``, then
  ``refunded`` (each step after ``refund_step_s``), the webhook called at ``processing`` and
  ``refunded`` (docs.mollie.com/payments/refunds: no webhook for queued, pending, canceled).
  :meth:`fail_refund` makes one ``failed`` (webhook).
- ``GET /checkout/select-method/{token}``: the hosted page, an HTML stub (the driver acts through
  :meth:`act`).

The driver (:meth:`act`): "succeeded" -> ``paid``; "declined" -> ``failed`` for a card, ``canceled``
otherwise (the driver left the bank's page); "expired" -> ``expired``. The webhook is called for those
statuses only, never for ``open`` or ``pending`` (status-changes.rst). Chargebacks
(:meth:`open_dispute`) call the payment's webhook; a reversal (:meth:`settle_dispute` won) sets
``reversedAt`` and calls it again. A chargeback Mollie does not reverse simply stays: Mollie has no
"lost" state, so ``settle_dispute(won=False)`` changes nothing and sends nothing.

Webhooks: ``POST`` with ``Content-Type: application/x-www-form-urlencoded``, ``User-Agent: Mollie HTTP
client/1.0``, ``Accept: */*``, body ``id=tr_…`` (docs.mollie.com/reference/webhooks). Anything but a
200 within 15 s (the timeout seen in Mollie's delivery log, mollie/PrestaShop#1025) is retried; Mollie
retries for about 26 hours (hookdeck's Mollie skill; the exact schedule is [UNVERIFIED]), compressed
here into ``webhook_backoff_s``. ``faults``: ``copies`` duplicates, ``hold`` keeps them until
:meth:`release` (newest first), ``drop`` loses them (the API still tells the truth). ``webhook_delay_s``
sends each one late: the driver is back on the return page before the webhook (the redirect/webhook race
of mollie/Shopware6#1016).

:meth:`signed_webhook` is the webhook Mollie would send (nothing is signed; nothing in it but the id).
For a payment still open it first decides it that way, without sending anything. Since the id is all a
webhook says, the only false webhook is one naming a payment Mollie does not know for the integration's
key (one of another account or mode, or a guess): that is what :meth:`with_other_secret`'s view sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

DOCS = "https://docs.mollie.com/reference/handling-errors"
METHODS = frozenset(
    {
        "applepay",
        "bancontact",
        "banktransfer",
        "belfius",
        "creditcard",
        "directdebit",
        "eps",
        "giftcard",
        "giropay",
        "ideal",
        "kbc",
        "mybank",
        "paypal",
        "paysafecard",
        "przelewy24",
        "sofort",
    }
)
LOCALES = frozenset(
    {
        "en_US",
        "en_GB",
        "nl_NL",
        "nl_BE",
        "fr_FR",
        "fr_BE",
        "de_DE",
        "de_AT",
        "de_CH",
        "es_ES",
        "ca_ES",
        "pt_PT",
        "it_IT",
        "nb_NO",
        "sv_SE",
        "fi_FI",
        "da_DK",
        "is_IS",
        "hu_HU",
        "pl_PL",
        "lv_LV",
        "lt_LT",
    }
)
# ISO 4217 decimals of the currencies Mollie settles that the tests use.
DECIMALS = {
    "EUR": 2,
    "GBP": 2,
    "USD": 2,
    "PLN": 2,
    "CHF": 2,
    "SEK": 2,
    "DKK": 2,
    "NOK": 2,
    "CZK": 2,
    "HUF": 2,
    "JPY": 0,
}
ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
WEBHOOK_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "Mollie HTTP client/1.0",
    "Accept": "*/*",
}


def _token(length: int = 10) -> str:
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _value(amount_minor: int, currency: str) -> str:
    decimals = DECIMALS[currency]
    return f"{Decimal(amount_minor).scaleb(-decimals):.{decimals}f}"


class MollieApiError(Exception):
    TITLES = {400: "Bad Request", 401: "Unauthorized Request", 404: "Not Found", 409: "Conflict"}

    def __init__(self, status: int, detail: str, field_name: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field_name

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "status": self.status,
            "title": self.TITLES.get(self.status, "Unprocessable Entity"),
            "detail": self.detail,
        }
        if self.field:
            body["field"] = self.field
        body["_links"] = {"documentation": {"href": DOCS, "type": "text/html"}}
        return web.json_response(body, status=self.status, content_type="application/hal+json")


@dataclass
class SimRefund:
    id: str
    payment_id: str
    amount_minor: int
    currency: str
    description: str
    metadata: Any
    status: str = "pending"
    created_at: str = field(default_factory=_now)

    def json(self) -> dict[str, Any]:
        return {
            "resource": "refund",
            "id": self.id,
            "amount": {"currency": self.currency, "value": _value(self.amount_minor, self.currency)},
            "status": self.status,
            "createdAt": self.created_at,
            "description": self.description,
            "metadata": self.metadata,
            "paymentId": self.payment_id,
            "_links": {
                "self": {"href": f"/v2/payments/{self.payment_id}/refunds/{self.id}", "type": "application/hal+json"}
            },
        }


@dataclass
class SimChargeback:
    id: str
    payment_id: str
    amount_minor: int
    currency: str
    created_at: str = field(default_factory=_now)
    reversed_at: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "resource": "chargeback",
            "id": self.id,
            "amount": {"currency": self.currency, "value": _value(self.amount_minor, self.currency)},
            "settlementAmount": {"currency": self.currency, "value": "-" + _value(self.amount_minor, self.currency)},
            "createdAt": self.created_at,
            "reversedAt": self.reversed_at,
            "paymentId": self.payment_id,
            "_links": {
                "self": {
                    "href": f"/v2/payments/{self.payment_id}/chargebacks/{self.id}",
                    "type": "application/hal+json",
                }
            },
        }


@dataclass
class SimPayment:
    id: str
    mode: Literal["live", "test"]
    amount_minor: int
    currency: str
    description: str
    redirect_url: str
    webhook_url: str | None
    metadata: Any
    method: str | None
    locale: str | None
    checkout_url: str
    status: str = "open"
    created_at: str = field(default_factory=_now)
    status_at: dict[str, str] = field(default_factory=dict)
    refunds: list[SimRefund] = field(default_factory=list)
    chargebacks: list[SimChargeback] = field(default_factory=list)

    def refunded_minor(self) -> int:
        return sum(r.amount_minor for r in self.refunds if r.status not in ("failed", "canceled"))

    def json(self, base_url: str, embed: frozenset[str] = frozenset()) -> dict[str, Any]:
        money = {"currency": self.currency, "value": _value(self.amount_minor, self.currency)}
        body: dict[str, Any] = {
            "resource": "payment",
            "id": self.id,
            "mode": self.mode,
            "createdAt": self.created_at,
            "amount": money,
            "description": self.description,
            "method": self.method,
            "metadata": self.metadata,
            "status": self.status,
            "isCancelable": False,
            "locale": self.locale,
            "profileId": "pfl_QkEhN94Ba",
            "sequenceType": "oneoff",
            "redirectUrl": self.redirect_url,
            "webhookUrl": self.webhook_url,
        }
        for status, key in (
            ("paid", "paidAt"),
            ("canceled", "canceledAt"),
            ("expired", "expiredAt"),
            ("failed", "failedAt"),
        ):
            if status in self.status_at:
                body[key] = self.status_at[status]
        if self.status == "open":
            body["expiresAt"] = self.created_at
        if self.status == "paid":
            refunded = self.refunded_minor()
            body["amountRefunded"] = {"currency": self.currency, "value": _value(refunded, self.currency)}
            body["amountRemaining"] = {
                "currency": self.currency,
                "value": _value(self.amount_minor - refunded, self.currency),
            }
        if self.status == "failed" and self.method == "creditcard":
            body["details"] = {"failureReason": "refused_by_issuer", "failureMessage": "The card was declined"}
        links: dict[str, Any] = {
            "self": {"href": f"{base_url}/v2/payments/{self.id}", "type": "application/hal+json"},
            "dashboard": {"href": f"https://my.mollie.com/dashboard/payments/{self.id}", "type": "text/html"},
            "documentation": {"href": "https://docs.mollie.com/reference/get-payment", "type": "text/html"},
        }
        if self.status == "open":
            links["checkout"] = {"href": self.checkout_url, "type": "text/html"}
        if self.refunds:
            links["refunds"] = {"href": f"{base_url}/v2/payments/{self.id}/refunds", "type": "application/hal+json"}
        if self.chargebacks:
            links["chargebacks"] = {
                "href": f"{base_url}/v2/payments/{self.id}/chargebacks",
                "type": "application/hal+json",
            }
        body["_links"] = links
        embedded: dict[str, Any] = {}
        if "refunds" in embed:
            embedded["refunds"] = [r.json() for r in self.refunds]
        if "chargebacks" in embed:
            embedded["chargebacks"] = [c.json() for c in self.chargebacks]
        if embedded:
            body["_embedded"] = embedded
        return body


@dataclass
class Delivery:
    """One POST attempt of a webhook: the answer's status, or the error's kind."""

    url: str
    body: bytes
    status: int | None
    error: str | None = None


@dataclass
class _Outgoing:
    url: str
    body: bytes


@dataclass
class _Idempotent:
    fingerprint: str
    status: int | None = None  # None while the first request runs
    body: Any = None


class MollieSimulator(OnHost):
    processor = "mollie"

    def __init__(
        self,
        *,
        mode: Literal["live", "test"] = "live",
        webhook_url: str | None = None,
        webhook_backoff_s: Sequence[float] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0),
        webhook_timeout_s: float = 15.0,
        refund_step_s: float = 0.05,
        create_delay_s: float = 30.0,
    ) -> None:
        self.mode: Literal["live", "test"] = mode
        self.api_key = f"{mode}_{_token(30)}"
        # The same profile's key of the other mode: it sees none of this mode's payments.
        self.other_mode_key = f"{'test' if mode == 'live' else 'live'}_{_token(30)}"
        self.webhook_url = webhook_url
        self.webhook_backoff_s = tuple(webhook_backoff_s)  # 10 attempts in all, Mollie's "about 26 hours"
        self.webhook_timeout_s = webhook_timeout_s
        self.refund_step_s = refund_step_s
        self.create_delay_s = create_delay_s
        self.webhook_delay_s = 0.0
        self.faults = WebhookFaults()
        self.payments: dict[str, SimPayment] = {}
        self.requests: list[tuple[str, str, Mapping[str, str], Any]] = []  # method, path, headers, JSON body
        self.deliveries: list[Delivery] = []
        self.dropped: list[bytes] = []
        self.api_failures: list[int] = []  # statuses the next API calls answer, whatever they are
        self._held: list[_Outgoing] = []
        self._idempotency: dict[str, _Idempotent] = {}
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # -- lifecycle ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v2/payments", self._create_payment)
        app.router.add_get("/v2/payments/{id}", self._get_payment)
        app.router.add_get("/v2/payments/{id}/refunds", self._list_refunds)
        app.router.add_post("/v2/payments/{id}/refunds", self._create_refund)
        app.router.add_get("/v2/payments/{id}/chargebacks", self._list_chargebacks)
        app.router.add_get("/checkout/select-method/{token}", self._hosted_page)
        return app

    async def start(self) -> None:
        await self._host.start(self.app(), shutdown_timeout=0.5)

    def settings(self) -> dict[str, Any]:
        return {}

    def secrets(self) -> dict[str, str]:
        return {"api_key": self.api_key}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        return len(self.payments)

    # -- the API -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/checkout/"):
            return await handler(request)  # type: ignore[no-any-return]
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        self.requests.append((request.method, request.path, dict(request.headers), parsed))
        try:
            if self.api_failures:
                status = self.api_failures.pop(0)
                raise MollieApiError(status, "Simulated failure")
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or key not in (self.api_key, self.other_mode_key):
                raise MollieApiError(401, "Missing authentication, or failed to authenticate")
            return await handler(request)  # type: ignore[no-any-return]
        except MollieApiError as exc:
            return exc.response()

    def _mode(self, request: web.Request) -> Literal["live", "test"]:
        """The mode of the key the request was made with (the middleware let only known keys through)."""
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return self.mode
        return "test" if self.mode == "live" else "live"

    def _json(self, body: Any, status: int = 200, replayed: bool = False) -> web.Response:
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return web.json_response(body, status=status, content_type="application/hal+json", headers=headers)

    def _payment_of(self, request: web.Request) -> SimPayment:
        payment = self.payments.get(request.match_info["id"])
        if payment is None or payment.mode != self._mode(request):
            raise MollieApiError(404, f"No payment exists with token {request.match_info['id']}.")
        return payment

    async def _idempotent(self, request: web.Request, body: Any) -> tuple[_Idempotent | None, web.Response | None]:
        """The record of this request's Idempotency-Key, or the answer it already has."""
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None, None
        fingerprint = hashlib.sha256(
            json.dumps([request.path, self._mode(request), body], sort_keys=True).encode()
        ).hexdigest()
        record = self._idempotency.get(key)
        if record is None:
            record = self._idempotency[key] = _Idempotent(fingerprint)
            return record, None
        if record.fingerprint != fingerprint:
            raise MollieApiError(400, "The Idempotency-Key was used earlier with another endpoint or other parameters")
        if record.status is None:
            raise MollieApiError(409, "A request with this Idempotency-Key is still being processed")
        return None, self._json(record.body, record.status, replayed=True)

    @staticmethod
    def _amount(value: Any, name: str = "amount") -> tuple[int, str]:
        if not isinstance(value, dict):
            raise MollieApiError(422, "The amount is required", name)
        currency, text = value.get("currency"), value.get("value")
        if currency not in DECIMALS:
            raise MollieApiError(422, "The currency is not supported", f"{name}.currency")
        if not isinstance(text, str):
            raise MollieApiError(422, "Non-string values are not accepted", f"{name}.value")
        decimals = DECIMALS[currency]
        whole, _, fraction = text.partition(".")
        if not whole.isdigit() or len(fraction) != decimals or (fraction and not fraction.isdigit()):
            raise MollieApiError(422, f"The amount must have {decimals} decimals", f"{name}.value")
        if decimals == 0 and "." in text:
            raise MollieApiError(422, "The amount must have 0 decimals", f"{name}.value")
        minor = int(whole + fraction)
        if minor <= 0:
            raise MollieApiError(422, "The amount must be positive", f"{name}.value")
        return minor, currency

    async def _create_payment(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.content_type == "application/json" else None
        if not isinstance(body, dict):
            raise MollieApiError(422, "The request body must be JSON")
        record, replay = await self._idempotent(request, body)
        if replay is not None:
            return replay
        try:
            fault, self._create_fault = self._create_fault, None
            if fault == "error_500":
                raise MollieApiError(500, "Internal server error")
            payment = self._new_payment(body, self._mode(request))
            answer = payment.json(self.base_url)
            if record is not None:
                record.status, record.body = 201, answer
            if fault == "timeout_after_create":
                await asyncio.sleep(self.create_delay_s)  # the client gives up long before
            return self._json(answer, 201)
        except MollieApiError:
            if record is not None:
                # A refused request is not a result to replay: the next try with this key starts afresh.
                self._idempotency.pop(request.headers["Idempotency-Key"], None)
            raise

    def _new_payment(self, body: Mapping[str, Any], mode: Literal["live", "test"]) -> SimPayment:
        amount_minor, currency = self._amount(body.get("amount"))
        description = body.get("description")
        if not isinstance(description, str) or not description.strip():
            raise MollieApiError(422, "The description is invalid", "description")
        redirect = body.get("redirectUrl")
        if not isinstance(redirect, str) or urlsplit(redirect).scheme not in ("http", "https"):
            raise MollieApiError(422, "The redirect URL is invalid", "redirectUrl")
        webhook = body.get("webhookUrl")
        if webhook is not None and (not isinstance(webhook, str) or urlsplit(webhook).scheme not in ("http", "https")):
            raise MollieApiError(422, "The webhook URL is invalid", "webhookUrl")
        method = body.get("method")
        if method is not None and method not in METHODS:
            raise MollieApiError(422, "The payment method is invalid", "method")
        locale = body.get("locale")
        if locale is not None and locale not in LOCALES:
            raise MollieApiError(422, "The locale is invalid", "locale")
        metadata = body.get("metadata")
        if len(json.dumps(metadata)) > 1024:
            raise MollieApiError(422, "The metadata is too large", "metadata")
        token = _token()
        payment = SimPayment(
            id=f"tr_{token}",
            mode=mode,
            amount_minor=amount_minor,
            currency=currency,
            description=description[:255],
            redirect_url=redirect,
            webhook_url=webhook,
            metadata=metadata,
            method=method,
            locale=locale,
            checkout_url=f"{self.base_url}/checkout/select-method/{token}",
        )
        self.payments[payment.id] = payment
        return payment

    async def _get_payment(self, request: web.Request) -> web.StreamResponse:
        payment = self._payment_of(request)
        embed = frozenset(part.strip() for part in request.query.get("embed", "").split(",") if part.strip())
        return self._json(payment.json(self.base_url, embed & {"refunds", "chargebacks"}))

    def _list(self, name: str, items: list[dict[str, Any]], path: str) -> web.Response:
        return self._json(
            {
                "count": len(items),
                "_embedded": {name: items},
                "_links": {"self": {"href": f"{self.base_url}{path}", "type": "application/hal+json"}, "next": None},
            }
        )

    async def _list_refunds(self, request: web.Request) -> web.StreamResponse:
        payment = self._payment_of(request)
        return self._list("refunds", [r.json() for r in payment.refunds], request.path)

    async def _list_chargebacks(self, request: web.Request) -> web.StreamResponse:
        payment = self._payment_of(request)
        return self._list("chargebacks", [c.json() for c in payment.chargebacks], request.path)

    async def _create_refund(self, request: web.Request) -> web.StreamResponse:
        payment = self._payment_of(request)
        body = await request.json() if request.content_type == "application/json" else None
        if not isinstance(body, dict):
            raise MollieApiError(422, "The request body must be JSON")
        record, replay = await self._idempotent(request, body)
        if replay is not None:
            return replay
        try:
            refund = self._new_refund(payment, body)
        except MollieApiError:
            if record is not None:
                self._idempotency.pop(request.headers["Idempotency-Key"], None)
            raise
        answer = refund.json()
        if record is not None:
            record.status, record.body = 201, answer
        self._host.tasks.spawn(self._settle_refund(payment, refund))
        return self._json(answer, 201)

    def _new_refund(self, payment: SimPayment, body: Mapping[str, Any]) -> SimRefund:
        if payment.status != "paid":
            raise MollieApiError(422, "The payment is not refundable", "amount")
        amount_minor, currency = self._amount(body.get("amount"))
        if currency != payment.currency:
            raise MollieApiError(422, "The currency does not match the payment's", "amount.currency")
        if amount_minor > payment.amount_minor - payment.refunded_minor():
            raise MollieApiError(422, "The amount is higher than the amount remaining", "amount.value")
        description = body.get("description", "")
        refund = SimRefund(
            id=f"re_{_token()}",
            payment_id=payment.id,
            amount_minor=amount_minor,
            currency=currency,
            description=description if isinstance(description, str) else "",
            metadata=body.get("metadata"),
        )
        payment.refunds.append(refund)
        return refund

    async def _settle_refund(self, payment: SimPayment, refund: SimRefund) -> None:
        for status in ("processing", "refunded"):
            await asyncio.sleep(self.refund_step_s)
            if refund.status in ("failed", "canceled"):
                return
            refund.status = status
            self._call_webhook(payment)

    async def _hosted_page(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>Mollie checkout</title><p>Select a payment method</p>", content_type="text/html"
        )

    # -- the driver, refunds and chargebacks ------------------------------------------------------

    def payment(self, processor_reference: str) -> SimPayment:
        return self.payments[processor_reference]

    def _decide(self, payment: SimPayment, outcome: Outcome) -> None:
        if payment.status != "open":
            raise ValueError(f"payment {payment.id} is already {payment.status}")
        if outcome == "succeeded":
            payment.status = "paid"
        elif outcome == "declined":
            payment.status = "failed" if payment.method == "creditcard" else "canceled"
        else:
            payment.status = "expired"
        payment.status_at[payment.status] = _now()
        if payment.method is None:
            payment.method = "ideal"  # what the driver chose on the selection page

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        payment = self.payments[checkout.processor_reference]
        self._decide(payment, outcome)
        self._call_webhook(payment)

    async def fail_refund(self, refund_id: str) -> None:
        """The refund fails after processing (the driver's account is closed): Mollie calls the webhook."""
        payment, refund = self._refund(refund_id)
        refund.status = "failed"
        self._call_webhook(payment)

    def _refund(self, refund_id: str) -> tuple[SimPayment, SimRefund]:
        for payment in self.payments.values():
            for refund in payment.refunds:
                if refund.id == refund_id:
                    return payment, refund
        raise KeyError(refund_id)

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        payment = self.payments[processor_reference]
        if payment.status != "paid":
            raise ValueError(f"payment {payment.id} is {payment.status}: nothing to charge back")
        chargeback = SimChargeback(f"chb_{_token(6)}", payment.id, amount_minor, payment.currency)
        payment.chargebacks.append(chargeback)
        self._call_webhook(payment)
        return chargeback.id

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        payment, chargeback = next((p, c) for p in self.payments.values() for c in p.chargebacks if c.id == dispute_id)
        if not won:
            return  # Mollie has no "lost": the chargeback simply stays, and nothing is sent
        chargeback.reversed_at = _now()
        self._call_webhook(payment)

    # -- webhooks ----------------------------------------------------------------------------------

    def _call_webhook(self, payment: SimPayment) -> None:
        url = self.webhook_url or payment.webhook_url
        if url is None:
            return
        out = _Outgoing(url, f"id={payment.id}".encode())
        if self.faults.drop:
            self.dropped.append(out.body)
            return
        copies = max(1, self.faults.copies)
        if self.faults.hold:
            self._held.extend([out] * copies)
            return
        self._host.tasks.spawn(self._deliver_copies(out, copies))

    async def _deliver_copies(self, out: _Outgoing, copies: int) -> None:
        if self.webhook_delay_s:
            await asyncio.sleep(self.webhook_delay_s)
        for _ in range(copies):
            await self._deliver(out)

    async def _deliver(self, out: _Outgoing) -> bool:
        http = self._host.http
        assert http is not None, "start() first"

        async def attempt(_: int) -> bool:
            answer = await post_webhook(http, out.url, out.body, WEBHOOK_HEADERS, self.webhook_timeout_s)
            self.deliveries.append(Delivery(out.url, out.body, answer.status, answer.error))
            return answer.status == 200  # Mollie retries anything but a 200

        return await with_retries(attempt, self.webhook_backoff_s)

    async def release(self) -> None:
        held, self._held = self._held, []
        for out in reversed(held):
            await self._deliver(out)

    def _webhook_request(self, url: str, payment_id: str) -> WebhookRequest:
        body = f"id={payment_id}".encode()
        parts = urlsplit(url)
        headers = CIMultiDictProxy(
            CIMultiDict({"Host": parts.netloc, **WEBHOOK_HEADERS, "Content-Length": str(len(body))})
        )
        return WebhookRequest(
            method="POST",
            path=parts.path or "/",
            query={},
            headers=headers,
            body=body,
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        payment = self.payments[processor_reference]
        if payment.status == "open":
            self._decide(payment, outcome)
        return self._webhook_request(self.webhook_url or payment.webhook_url or "http://127.0.0.1/", payment.id)

    def with_other_secret(self) -> ForgedWebhooks:
        return ForgedWebhooks(self)


class ForgedWebhooks(MollieSimulator):
    """The simulator as a forger sees it. Mollie signs nothing and a webhook says nothing but an id; the
    id of a real payment only makes the receiver fetch the truth. So a false webhook names a payment
    Mollie does not know for the integration's key (another account's, another mode's, a guess).
    Everything else is the simulator itself: the view shares its state (the same instance dict)."""

    def __init__(self, simulator: MollieSimulator) -> None:
        self.__dict__ = simulator.__dict__

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        payment = self.payments.get(processor_reference)
        url = self.webhook_url or (payment.webhook_url if payment else None) or "http://127.0.0.1/"
        return self._webhook_request(url, f"tr_{_token()}")

    def with_other_secret(self) -> ForgedWebhooks:
        return self
