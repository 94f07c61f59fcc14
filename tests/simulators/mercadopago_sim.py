"""Mercado Pago as the adapter sees it: Checkout Pro preferences, the payments the driver makes on
them, refunds, chargebacks, and Webhooks notifications signed with ``x-signature``, written from the
reference (``/work/shared/reference/processors.md`` §7), Mercado Pago's documentation and SDK 3.6.0,
not from the adapter, so the two cannot share one mistake. (Named ``mercadopago_sim`` so that it
never shadows the ``mercadopago`` SDK.)

Served (all with ``Authorization: Bearer <access_token>``; a wrong token gets 401):

- ``POST /checkout/preferences`` → 201 with ``id`` (``<collector>-<uuid>``), ``init_point``,
  ``sandbox_init_point``, and the preference as sent. ``X-Idempotency-Key`` (1 to 64 characters, SDK
  ``request_options.py``): the same key answers the first answer again; while the first is still
  being made, 409 (the SDK's ``MPIdempotencyError``: "idempotency-key conflict").
- ``GET /checkout/preferences/{id}``; ``GET /v1/payments/{id}``; ``GET /v1/payments/search`` (filter
  ``external_reference``, ``sort=date_created``, ``criteria=asc|desc``) → ``{paging, results}``.
- ``POST /v1/payments/{id}/refunds`` ``{amount?}`` → 201 refund ``{id, payment_id, amount, status:
  "approved", …}``; more than what is left → 400. The payment becomes ``approved``/
  ``partially_refunded`` or ``refunded``/``refunded`` and a ``payment.updated`` notification follows.
- ``GET /v1/chargebacks/{id}`` → ``{id, payments: [id], currency, amount, reason, coverage_applied, …}``.
- ``GET|POST /checkout/v1/redirect?pref_id=…``: the driver's page (``act()`` posts ``outcome``).

Payments the driver makes (``act``), by the payment types the preference leaves (its
``excluded_payment_types``): Pix (``bank_transfer`` in BRL) and vouchers (``ticket``) start
``pending`` (``pending_waiting_transfer`` / ``pending_waiting_payment``) and are then approved; a card
is ``approved``/``accredited`` at once; "declined" makes a ``rejected`` payment
(``cc_rejected_other_reason``, or ``bank_error`` for a bank transfer) and leaves the preference open,
as Checkout Pro lets the driver try again; "expired" makes the preference lapse
(``expiration_date_to`` passes): Mercado Pago notifies nothing for that.

Notifications: for each payment change, a Webhooks notification ``POST <url>?data.id=<id>&type=payment``
with ``{"action": "payment.created"|"payment.updated", "api_version": "v1", "data": {"id": "<id>"},
"date_created", "id", "live_mode", "type": "payment", "user_id"}`` and ``x-signature: ts=<seconds>,
v1=<hex>`` over ``id:<data.id>;request-id:<x-request-id>;ts:<ts>;`` (SDK ``webhook/validator.py``),
plus the IPN-format copies that ``notification_url`` also receives: ``?id=<id>&topic=payment`` and
``?id=<merchant order>&topic=merchant_order`` with ``{"resource", "topic"}``. Chargebacks send
``payment.updated`` and ``?data.id=<case>&type=topic_chargebacks_wh`` with the documented body
(checkout-pro/chargebacks/notifications). The URL is the preference's ``notification_url`` when it
has one, else ``webhook_url`` (the one configured under Webhooks); chargebacks always go to the latter.
A delivery is accepted on 200 or 201 within 22 seconds (validator docstring); otherwise it is tried
again "every 15 minutes", compressed to 0.3 s, five times.

Simulator-chosen details no source fixes: id formats, error bodies other than their status, the
``source_news`` query parameter (left out), whether IPN copies are signed (they are signed here over
what they have: no ``data.id``), the merchant order id, and the 404 for unknown objects."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

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

RETRY_DELAYS_S = (0.3, 0.3, 0.3, 0.3, 0.3)
DELIVERY_TIMEOUT_S = 22.0
WEBHOOK_PATH = "/webhooks/mercadopago"
EXCLUDABLE = ("ticket", "atm", "bank_transfer", "credit_card", "debit_card", "prepaid_card")


def sign(secret: str, data_id: str | None, request_id: str | None, ts: int) -> str:
    """``v1`` of ``x-signature``: the manifest as Mercado Pago documents it, each missing pair left out."""
    manifest = ""
    if data_id:
        manifest += f"id:{data_id};"
    if request_id:
        manifest += f"request-id:{request_id};"
    manifest += f"ts:{ts};"
    return hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"message": message, "error": error, "status": status, "cause": []}, status=status)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _number(value: Decimal) -> Any:
    # Answers carry JSON numbers: an integral amount as an int, else a float of the same digits.
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass
class SimPreference:
    id: str
    body: dict[str, Any]
    reference: str | None
    amount: Decimal
    currency: str
    notification_url: str | None
    expiration_date_to: datetime | None
    allowed_types: tuple[str, ...]
    payments: list[int] = field(default_factory=list)

    def expired(self) -> bool:
        return self.expiration_date_to is not None and self.expiration_date_to <= datetime.now(UTC)


@dataclass
class SimRefund:
    id: int
    payment_id: int
    amount: Decimal
    status: str = "approved"
    created: str = field(default_factory=lambda: _iso(datetime.now(UTC)))


@dataclass
class SimPayment:
    id: int
    preference: SimPreference
    status: str
    status_detail: str
    payment_type_id: str
    payment_method_id: str
    merchant_order_id: int
    created: str = field(default_factory=lambda: _iso(datetime.now(UTC)))
    refunds: list[SimRefund] = field(default_factory=list)

    @property
    def refunded(self) -> Decimal:
        return sum((r.amount for r in self.refunds if r.status == "approved"), Decimal(0))


@dataclass
class SimChargeback:
    id: str
    payment: SimPayment
    amount: Decimal


@dataclass
class Notification:
    url: str
    query: dict[str, str]
    body: dict[str, Any]
    topic: str


@dataclass
class Delivery:
    topic: str
    statuses: list[int | None] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return any(s in (200, 201) for s in self.statuses)


@dataclass
class _Idempotent:
    status: int
    body: dict[str, Any]
    done: bool


class MercadoPagoSimulator(OnHost):
    processor = "mercadopago"

    def __init__(self, *, live: bool = True, hang_s: float = 12.0, webhook_url: str | None = None) -> None:
        self.live = live
        self.faults = WebhookFaults()
        self.webhook_url = webhook_url
        self.hang_s = hang_s  # how long a "timeout_after_create" answer is held back
        self.collector_id = 100000000 + secrets.randbelow(900000000)
        self.access_token = f"APP_USR-{secrets.randbelow(10**16):016d}-{secrets.token_hex(16)}-{self.collector_id}"
        self.webhook_secret = secrets.token_hex(32)
        self.preferences: dict[str, SimPreference] = {}
        self.payments: dict[int, SimPayment] = {}
        self.chargebacks: dict[str, SimChargeback] = {}
        self.deliveries: list[Delivery] = []
        self.requests: list[tuple[str, str, Any, str | None]] = []  # method, path_qs, body, idempotency key
        self.held: list[Notification] = []
        self.dropped: list[Notification] = []
        self._idempotency: dict[tuple[str, str], _Idempotent] = {}
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # ---- Protocol: lifecycle and configuration ------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/checkout/preferences", self._create_preference)
        app.router.add_get("/checkout/preferences/{pref_id}", self._get_preference, allow_head=False)
        app.router.add_get("/v1/payments/search", self._search, allow_head=False)
        app.router.add_get("/v1/payments/{payment_id}", self._get_payment, allow_head=False)
        app.router.add_post("/v1/payments/{payment_id}/refunds", self._refund)
        app.router.add_get("/v1/chargebacks/{chargeback_id}", self._get_chargeback, allow_head=False)
        app.router.add_get("/checkout/v1/redirect", self._pay_page, allow_head=False)
        app.router.add_post("/checkout/v1/redirect", self._pay)
        await self._host.start(app, shutdown_timeout=1.0)

    def settings(self) -> dict[str, Any]:
        return {"environment": "production" if self.live else "test"}

    def secrets(self) -> dict[str, str]:
        return {"access_token": self.access_token, "webhook_secret": self.webhook_secret}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        return len(self.preferences)

    # ---- the API ------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.access_token}".encode())

    @staticmethod
    def _unauthorised() -> web.Response:
        return _error(401, "unauthorized", "invalid access token")

    @staticmethod
    async def _json(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        try:
            return json.loads(raw, parse_float=Decimal)
        except ValueError:
            return None

    def _idempotent(self, kind: str, request: web.Request) -> tuple[str | None, web.Response | None]:
        key = request.headers.get("X-Idempotency-Key")
        if key is None:
            return None, None
        if not 1 <= len(key) <= 64:
            return key, _error(400, "bad_request", "X-Idempotency-Key must be between 1 and 64 characters")
        stored = self._idempotency.get((kind, key))
        if stored is None:
            return key, None
        if not stored.done:
            return key, _error(409, "conflict", "a request with this idempotency key is being processed")
        return key, self._json_answer(stored.body, stored.status)

    def _preference_body(self, preference: SimPreference) -> dict[str, Any]:
        return {
            **preference.body,
            "id": preference.id,
            "collector_id": self.collector_id,
            "init_point": f"{self.base_url}/checkout/v1/redirect?pref_id={preference.id}",
            "sandbox_init_point": f"{self.base_url}/checkout/v1/redirect?pref_id={preference.id}&sandbox=1",
            "operation_type": "regular_payment",
        }

    async def _create_preference(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await self._json(request)
        key, replay = self._idempotent("preferences", request)
        self.requests.append(("POST", request.path_qs, body, key))
        if replay is not None:
            return replay
        fault, self._create_fault = self._create_fault, None
        if fault == "error_500":
            return _error(500, "internal_error", "internal error")
        if not isinstance(body, dict):
            return _error(400, "bad_request", "the body must be a JSON object")
        items = body.get("items")
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            return _error(400, "invalid_items", "items must hold one item here")
        item = items[0]
        price, currency, quantity = item.get("unit_price"), item.get("currency_id"), item.get("quantity")
        if not isinstance(price, Decimal | int) or isinstance(price, bool) or price <= 0:
            return _error(400, "invalid_items", "unit_price must be a positive number")
        if not isinstance(currency, str) or quantity != 1 or not isinstance(item.get("title"), str):
            return _error(400, "invalid_items", "currency_id, title and quantity are required")
        expiry: datetime | None = None
        if body.get("expires") is True:
            try:
                expiry = datetime.fromisoformat(str(body.get("expiration_date_to")))
            except ValueError:
                return _error(400, "invalid_expiration_date_to", "expiration_date_to must be ISO 8601")
        methods = body.get("payment_methods") or {}
        excluded = {e.get("id") for e in methods.get("excluded_payment_types", []) if isinstance(e, dict)}
        reference = body.get("external_reference")
        notification_url = body.get("notification_url")
        preference = SimPreference(
            id=f"{self.collector_id}-{uuid.uuid4()}",
            body={k: v for k, v in body.items() if k != "items"} | {"items": [dict(item)]},
            reference=reference if isinstance(reference, str) else None,
            amount=Decimal(price),
            currency=currency,
            notification_url=notification_url if isinstance(notification_url, str) else None,
            expiration_date_to=expiry,
            allowed_types=(*(t for t in EXCLUDABLE if t not in excluded), "account_money"),
        )
        self.preferences[preference.id] = preference
        answer = self._preference_body(preference)
        stored = _Idempotent(201, answer, done=fault != "timeout_after_create")
        if key is not None:
            self._idempotency[("preferences", key)] = stored
        if fault == "timeout_after_create":
            try:
                await asyncio.sleep(self.hang_s)
            finally:
                stored.done = True
        return self._json_answer(answer, 201)

    @staticmethod
    def _json_answer(body: dict[str, Any], status: int = 200) -> web.Response:
        def numbers(value: object) -> Any:
            if isinstance(value, Decimal):
                return _number(value)
            raise TypeError(type(value).__name__)

        return web.Response(
            body=json.dumps(body, default=numbers).encode(), status=status, content_type="application/json"
        )

    async def _get_preference(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        self.requests.append(("GET", request.path_qs, None, None))
        preference = self.preferences.get(request.match_info["pref_id"])
        if preference is None:
            return _error(404, "not_found", "preference not found")
        return self._json_answer(self._preference_body(preference))

    def _payment_body(self, payment: SimPayment) -> dict[str, Any]:
        preference = payment.preference
        return {
            "id": payment.id,
            "status": payment.status,
            "status_detail": payment.status_detail,
            "transaction_amount": _number(preference.amount),
            "transaction_amount_refunded": _number(payment.refunded),
            "currency_id": preference.currency,
            "external_reference": preference.reference,
            "payment_type_id": payment.payment_type_id,
            "payment_method_id": payment.payment_method_id,
            "date_created": payment.created,
            "live_mode": self.live,
            "collector_id": self.collector_id,
            "order": {"id": payment.merchant_order_id, "type": "mercadopago"},
            "metadata": preference.body.get("metadata") or {},
            "refunds": [self._refund_body(r) for r in payment.refunds],
        }

    def _refund_body(self, refund: SimRefund) -> dict[str, Any]:
        return {
            "id": refund.id,
            "payment_id": refund.payment_id,
            "amount": _number(refund.amount),
            "status": refund.status,
            "source": {"id": str(self.collector_id), "type": "collector"},
            "date_created": refund.created,
            "refund_mode": "standard",
        }

    async def _get_payment(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        self.requests.append(("GET", request.path_qs, None, None))
        payment_id = request.match_info["payment_id"]
        payment = self.payments.get(int(payment_id)) if payment_id.isdigit() else None
        if payment is None:
            return _error(404, "not_found", "Payment not found")
        return self._json_answer(self._payment_body(payment))

    async def _search(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        self.requests.append(("GET", request.path_qs, None, None))
        reference = request.query.get("external_reference")
        found = [p for p in self.payments.values() if reference is None or p.preference.reference == reference]
        found.sort(key=lambda p: (p.created, p.id), reverse=request.query.get("criteria") == "desc")
        results = [self._payment_body(p) for p in found]
        return self._json_answer({"paging": {"total": len(results), "limit": 30, "offset": 0}, "results": results})

    async def _refund(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await self._json(request)
        key, replay = self._idempotent("refunds", request)
        self.requests.append(("POST", request.path_qs, body, key))
        if replay is not None:
            return replay
        payment_id = request.match_info["payment_id"]
        payment = self.payments.get(int(payment_id)) if payment_id.isdigit() else None
        if payment is None:
            return _error(404, "not_found", "Payment not found")
        if not isinstance(body, dict):
            return _error(400, "bad_request", "the body must be a JSON object")
        if payment.status not in ("approved",):
            return _error(400, "invalid_payment_status", f"cannot refund a payment that is {payment.status}")
        left = payment.preference.amount - payment.refunded
        amount = body.get("amount", left)
        if not isinstance(amount, Decimal | int) or isinstance(amount, bool) or amount <= 0 or amount > left:
            return _error(400, "invalid_refund_amount", "the amount is more than what is left to refund")
        refund = SimRefund(id=_new_id(), payment_id=payment.id, amount=Decimal(amount))
        payment.refunds.append(refund)
        if payment.refunded == payment.preference.amount:
            payment.status, payment.status_detail = "refunded", "refunded"
        else:
            payment.status_detail = "partially_refunded"
        answer = self._refund_body(refund)
        if key is not None:
            self._idempotency[("refunds", key)] = _Idempotent(201, answer, done=True)
        self._notify_payment(payment, "payment.updated")
        return self._json_answer(answer, 201)

    async def _get_chargeback(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        self.requests.append(("GET", request.path_qs, None, None))
        chargeback = self.chargebacks.get(request.match_info["chargeback_id"])
        if chargeback is None:
            return _error(404, "not_found", "chargeback not found")
        detail = chargeback.payment.status_detail
        return self._json_answer(
            {
                "id": chargeback.id,
                "payments": [chargeback.payment.id],
                "currency": chargeback.payment.preference.currency,
                "amount": _number(chargeback.amount),
                "reason": "general",
                "coverage_applied": {"reimbursed": True, "settled": False}.get(detail),
                "coverage_elegible": True,
                "documentation_required": False,
                "documentation_status": "not_supplied",
                "documentation": [],
                "date_documentation_deadline": None,
                "date_created": chargeback.payment.created,
                "date_last_updated": _iso(datetime.now(UTC)),
                "live_mode": self.live,
            }
        )

    # ---- the driver's page --------------------------------------------------------------------

    async def _pay_page(self, request: web.Request) -> web.Response:
        preference = self.preferences.get(request.query.get("pref_id", ""))
        if preference is None:
            raise web.HTTPNotFound()
        return web.Response(
            text=f"<!doctype html><title>Pagar</title><p>{preference.amount} {preference.currency}</p>",
            content_type="text/html",
        )

    async def _pay(self, request: web.Request) -> web.Response:
        preference = self.preferences.get(request.query.get("pref_id", ""))
        if preference is None:
            raise web.HTTPNotFound()
        outcome = (await request.post()).get("outcome")
        if outcome not in ("succeeded", "declined", "expired"):
            raise web.HTTPBadRequest(text="outcome must be succeeded, declined or expired")
        if preference.expired():
            return web.Response(status=410, text="This checkout has expired.")
        if outcome == "expired":
            preference.expiration_date_to = datetime.now(UTC) - timedelta(seconds=1)
            preference.body["expiration_date_to"] = _iso(preference.expiration_date_to)
            preference.body["expires"] = True
            return web.Response(text="expired")
        payment_type, method = self._method_of(preference)
        if outcome == "declined":
            detail = "bank_error" if payment_type == "bank_transfer" else "cc_rejected_other_reason"
            payment = self._new_payment(preference, "rejected", detail, payment_type, method)
            self._notify_payment(payment, "payment.created")
        elif payment_type in ("bank_transfer", "ticket"):
            waiting = "pending_waiting_transfer" if payment_type == "bank_transfer" else "pending_waiting_payment"
            payment = self._new_payment(preference, "pending", waiting, payment_type, method)
            self._notify_payment(payment, "payment.created")
            payment.status, payment.status_detail = "approved", "accredited"
            self._notify_payment(payment, "payment.updated")
        else:
            payment = self._new_payment(preference, "approved", "accredited", payment_type, method)
            self._notify_payment(payment, "payment.created")
        back = preference.body.get("back_urls") or {}
        target = back.get("success" if payment.status == "approved" else "failure")
        if not isinstance(target, str):
            return web.Response(text=payment.status)
        url = URL(target).update_query(
            {
                "collection_id": str(payment.id),
                "collection_status": payment.status,
                "payment_id": str(payment.id),
                "status": payment.status,
                "external_reference": preference.reference or "null",
                "preference_id": preference.id,
            }
        )
        raise web.HTTPSeeOther(str(url))

    @staticmethod
    def _method_of(preference: SimPreference) -> tuple[str, str]:
        allowed = preference.allowed_types
        if "credit_card" in allowed:
            return "credit_card", "visa"
        if "bank_transfer" in allowed:
            return "bank_transfer", {"COP": "pse"}.get(preference.currency, "pix")
        if "ticket" in allowed:
            return "ticket", {"MXN": "oxxo"}.get(preference.currency, "bolbradesco")
        return "account_money", "account_money"

    def _new_payment(
        self, preference: SimPreference, status: str, detail: str, payment_type: str, method: str
    ) -> SimPayment:
        payment = SimPayment(_new_id(), preference, status, detail, payment_type, method, _new_id())
        self.payments[payment.id] = payment
        preference.payments.append(payment.id)
        return payment

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        assert isinstance(checkout.next_step, Redirect)
        assert self._host.http is not None
        async with self._host.http.post(
            checkout.next_step.url, data={"outcome": outcome}, allow_redirects=False
        ) as response:
            assert response.status in (200, 303), await response.text()
        await self.idle()

    # ---- disputes -----------------------------------------------------------------------------

    def _taken_payment(self, processor_reference: str) -> SimPayment:
        preference = self.preferences[processor_reference]
        for payment_id in preference.payments:
            payment = self.payments[payment_id]
            if payment.status in ("approved", "refunded", "charged_back"):
                return payment
        raise ValueError(f"preference {processor_reference} has no paid payment")

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        payment = self._taken_payment(processor_reference)
        # The Protocol's amount is in minor units; the currencies here have two decimals.
        chargeback = SimChargeback(str(_new_id(18)), payment, Decimal(amount_minor).scaleb(-2))
        self.chargebacks[chargeback.id] = chargeback
        payment.status, payment.status_detail = "charged_back", "in_process"
        self._notify_payment(payment, "payment.updated")
        self._notify_chargeback(chargeback)
        await self.idle()
        return chargeback.id

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        chargeback = self.chargebacks[dispute_id]
        chargeback.payment.status_detail = "reimbursed" if won else "settled"
        self._notify_payment(chargeback.payment, "payment.updated")
        self._notify_chargeback(chargeback)
        await self.idle()

    # ---- notifications ------------------------------------------------------------------------

    def payment_notification(self, payment_id: int, action: str, url: str) -> Notification:
        return Notification(
            url,
            {"data.id": str(payment_id), "type": "payment"},
            {
                "action": action,
                "api_version": "v1",
                "data": {"id": str(payment_id)},
                "date_created": _iso(datetime.now(UTC)),
                "id": _new_id(),
                "live_mode": self.live,
                "type": "payment",
                "user_id": str(self.collector_id),
            },
            "payment",
        )

    def _notify_payment(self, payment: SimPayment, action: str) -> None:
        url = payment.preference.notification_url or self.webhook_url
        if url is None:
            return
        self._notify(self.payment_notification(payment.id, action, url))
        # What a notification_url also receives, in the IPN format (acknowledged, not used).
        if payment.preference.notification_url is not None:
            self._notify(
                Notification(
                    url,
                    {"id": str(payment.id), "topic": "payment"},
                    {"resource": str(payment.id), "topic": "payment"},
                    "ipn:payment",
                )
            )
            order = payment.merchant_order_id
            self._notify(
                Notification(
                    url,
                    {"id": str(order), "topic": "merchant_order"},
                    {"resource": f"https://api.mercadolibre.com/merchant_orders/{order}", "topic": "merchant_order"},
                    "ipn:merchant_order",
                )
            )

    def _notify_chargeback(self, chargeback: SimChargeback) -> None:
        if self.webhook_url is None:
            return
        body = {
            "actions": ["changed_case_status"],
            "api_version": "v1",
            "application_id": 1000000000000000 + secrets.randbelow(10**15),
            "data": {
                "checkout": "PRO",
                "date_updated": _iso(datetime.now(UTC)),
                "id": int(chargeback.id),
                "payment_id": chargeback.payment.id,
                "product_id": "C00A2J8RF4DI8BCIMFU0",
                "site_id": "MLB",
                "transaction_intent_id": "",
            },
            "date_created": _iso(datetime.now(UTC)),
            "id": _new_id(),
            "live_mode": self.live,
            "type": "topic_chargebacks_wh",
            "user_id": self.collector_id,
            "version": int(time.time()),
        }
        query = {"data.id": chargeback.id, "type": "topic_chargebacks_wh"}
        self._notify(Notification(self.webhook_url, query, body, "topic_chargebacks_wh"))

    def signed_headers(self, query: Mapping[str, str], ts: int, secret: str | None = None) -> dict[str, str]:
        request_id = str(uuid.uuid4())
        signature = sign(secret or self.webhook_secret, query.get("data.id"), request_id, ts)
        return {
            "Content-Type": "application/json",
            "x-signature": f"ts={ts},v1={signature}",
            "x-request-id": request_id,
        }

    def _notify(self, notification: Notification) -> None:
        if self.faults.drop:
            self.dropped.append(notification)
            return
        if self.faults.hold:
            self.held.append(notification)
            return
        self._send_later(notification)

    def _send_later(self, notification: Notification) -> None:
        for _ in range(max(self.faults.copies, 1)):
            self._host.tasks.spawn(self._deliver(notification))

    async def release(self) -> None:
        held, self.held = self.held, []
        for notification in reversed(held):  # newest first
            self._send_later(notification)
        await self.idle()

    async def _deliver(self, notification: Notification) -> None:
        delivery = Delivery(notification.topic)
        self.deliveries.append(delivery)
        if self._host.http is None:
            return
        http = self._host.http
        url = str(URL(notification.url).update_query(notification.query))
        body = json.dumps(notification.body).encode()

        async def attempt(_: int) -> bool:
            # Each attempt is signed when sent (an assumption: Mercado Pago does not say).
            headers = self.signed_headers(notification.query, int(time.time()))
            answer = await post_webhook(http, url, body, headers, DELIVERY_TIMEOUT_S)
            delivery.statuses.append(answer.status)
            return answer.status in (200, 201)

        await with_retries(attempt, RETRY_DELAYS_S)

    # ---- for the conformance suite: a signed notification, not sent ----------------------------

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        preference = self.preferences[processor_reference]
        wanted = ("approved", "refunded", "charged_back") if outcome == "succeeded" else ("rejected",)
        payment_id = next((p for p in preference.payments if self.payments[p].status in wanted), _new_id())
        notification = self.payment_notification(payment_id, "payment.updated", WEBHOOK_PATH)
        headers = self.signed_headers(notification.query, int(time.time()) - age_s)
        return WebhookRequest(
            method="POST",
            path=WEBHOOK_PATH,
            query=notification.query,
            headers=CIMultiDictProxy(CIMultiDict(headers)),
            body=json.dumps(notification.body).encode(),
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def with_other_secret(self) -> MercadoPagoSimulator:
        other = copy.copy(self)
        other.webhook_secret = secrets.token_hex(32)
        return other


def _new_id(digits: int = 11) -> int:
    low = int(10 ** (digits - 1))
    return low + secrets.randbelow(9 * low)
