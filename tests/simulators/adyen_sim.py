"""Adyen as the adapter sees it: the Checkout API's payment links and refunds, the hosted link page
(as state and ``act()``), and standard notifications signed per item, written from the reference
(``/work/shared/reference/processors.md`` §2) and Adyen's documentation, not from the adapter, so the
two cannot share one mistake. (Named ``adyen_sim`` so that it never shadows the ``Adyen`` SDK.)

Served (all with ``X-API-Key``; a wrong key gets Adyen's 401
``{"status":401,"errorCode":"000","message":"HTTP Status Response - Unauthorized","errorType":"security"}``):

- ``POST /v72/paymentLinks`` ``{amount:{value,currency}, merchantAccount, reference, returnUrl?,
  description?, shopperLocale?, expiresAt?}`` → 201 with the link (``id``, ``url``, ``status`` "active",
  ``expiresAt``, …). ``Idempotency-Key`` (≤ 64 characters): the same key answers the first answer again;
  while the first request is still being processed, 409 errorCode 704 "request already processed or in
  progress" with ``transient-error: true`` (Adyen's idempotency page).
- ``GET /v72/paymentLinks/{linkId}`` → the link, ``status`` active / completed / expired.
- ``POST /v72/payments/{paymentPspReference}/refunds`` ``{merchantAccount, amount, reference?}`` → 201
  ``{merchantAccount, paymentPspReference, pspReference, reference, status: "received", amount}``; the
  outcome follows as a REFUND notification (success "false" when the payment has not that much left).
- ``GET|POST /paylink/{linkId}``: the shopper's page (``act()`` posts ``outcome`` to it).

Notifications go to ``webhook_url`` as ``{"live": "false", "notificationItems": [{"NotificationRequestItem":
{…}}]}`` with ``Content-Type: application/json`` and (when configured) basic authentication; each item
carries ``additionalData.hmacSignature`` (HMAC-SHA256 with the hex-decoded key over the eight fields
joined by ':', base64, no escaping). Adyen's JSON webhooks carry one item each; a batch of several is
what :meth:`AdyenSimulator.release` sends (held items, newest first), so receivers meet one. A
delivery is accepted on any 2xx (Adyen's docs today); otherwise it is retried after 0.2 s, 0.5 s and
1 s (compressed from Adyen's three immediate retries), then given up (Adyen's 30-day queue is not
modelled: polling heals what is lost).

What the driver does (``act``): "succeeded" authorises a payment (new pspReference), completes the link
and sends AUTHORISATION success "true" with ``additionalData.paymentLinkId``; "declined" sends
AUTHORISATION success "false" (reason "Refused") and leaves the link active, as a refused card does;
"expired" expires the link and sends nothing: Adyen documents no notification for an expired link.

Disputes (``open_dispute``): NOTIFICATION_OF_CHARGEBACK (informational), then CHARGEBACK with the
dispute's own pspReference and ``originalReference`` = the payment's; ``settle_dispute`` sends
CHARGEBACK_REVERSED (won) or SECOND_CHARGEBACK (lost) with the same pspReference and, as in Adyen's
webhooks OpenAPI examples, no ``originalReference``.

Amounts: the simulator takes and sends Adyen's ``amount.value`` as given; the Protocol's ``amount_minor``
is used as that value (the same for the two-decimal currencies the tests use).

Simulator-chosen details no source fixes (kept plausible, and irrelevant to the adapter's decisions):
the link URL and id formats, the REFUND failure reason, error codes and messages other than 401 and
704, and the 404 for an unknown link."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

API_VERSION = "v72"
RETRY_DELAYS_S = (0.2, 0.5, 1.0)
DELIVERY_TIMEOUT_S = 10.0
LINK_TTL = timedelta(hours=24)  # "By default, payment links expire after 24 hours"
WEBHOOK_PATH = "/webhooks/adyen"


def signing_string(item: dict[str, Any]) -> str:
    """Adyen's HMAC input, written from the reference (not from the adapter's wire.py)."""
    amount = item.get("amount") or {}
    parts = [
        item.get("pspReference", ""),
        item.get("originalReference", ""),
        item.get("merchantAccountCode", ""),
        item.get("merchantReference", ""),
        amount.get("value", ""),
        amount.get("currency", ""),
        item.get("eventCode", ""),
        item.get("success", ""),
    ]
    return ":".join(str(part) for part in parts)


def sign_item(item: dict[str, Any], hex_key: str) -> str:
    mac = hmac.new(binascii.unhexlify(hex_key), signing_string(item).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _error(status: int, code: str, message: str, error_type: str, **headers: str) -> web.Response:
    body = {"status": status, "errorCode": code, "message": message, "errorType": error_type}
    return web.json_response(body, status=status, headers=headers or None)


def _psp_reference() -> str:
    # Adyen's pspReferences are 16 characters (the OpenAPI's examples: "QFQTPCQ8HXSKGK82", "9913140798220028").
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


def _now_iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=offset_s)).replace(microsecond=0).isoformat()


@dataclass
class SimLink:
    id: str
    reference: str
    amount_value: int
    currency: str
    return_url: str | None
    description: str | None
    expires_at: str
    status: str = "active"
    psp_reference: str | None = None  # the authorised payment's, once paid


@dataclass
class SimPayment:
    psp_reference: str
    link: SimLink
    refunded_value: int = 0


@dataclass
class SimRefund:
    psp_reference: str
    payment: SimPayment
    value: int
    reference: str
    succeeded: bool


@dataclass
class SimDispute:
    psp_reference: str
    payment: SimPayment
    value: int


@dataclass
class Delivery:
    """One notification as sent: its items' event codes and every attempt's HTTP status (None: no answer)."""

    event_codes: list[str]
    statuses: list[int | None] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return any(s is not None and 200 <= s < 300 for s in self.statuses)


@dataclass
class _Idempotent:
    status: int
    body: dict[str, Any]
    done: bool


class AdyenSimulator(OnHost):
    processor = "adyen"

    def __init__(
        self,
        *,
        merchant_account: str = "EvTopupECOM",
        live: bool = False,
        basic_auth: bool = True,
        hang_s: float = 12.0,
        webhook_url: str | None = None,
    ) -> None:
        self.merchant_account = merchant_account
        self.live = live
        self.faults = WebhookFaults()
        self.webhook_url = webhook_url
        # How long a "timeout_after_create" answer is held back (past the client's timeout).
        self.hang_s = hang_s
        self.api_key = "AQE" + secrets.token_urlsafe(30)
        self.hmac_key = secrets.token_hex(32).upper()
        self.webhook_username = "ws_" + secrets.token_hex(4) if basic_auth else None
        self.webhook_password = secrets.token_urlsafe(18) if basic_auth else None
        self.links: dict[str, SimLink] = {}
        self.payments: dict[str, SimPayment] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.disputes: dict[str, SimDispute] = {}
        self.deliveries: list[Delivery] = []
        self.requests: list[tuple[str, str, dict[str, Any] | None, str | None]] = []  # method, path, body, key
        self.held: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self._idempotency: dict[tuple[str, str], _Idempotent] = {}
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # ---- Protocol: lifecycle and configuration ------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/paymentLinks", self._create_link)
        app.router.add_get(f"/{API_VERSION}/paymentLinks/{{link_id}}", self._get_link, allow_head=False)
        app.router.add_post(f"/{API_VERSION}/payments/{{psp}}/refunds", self._refund)
        app.router.add_get("/paylink/{link_id}", self._pay_page, allow_head=False)
        app.router.add_post("/paylink/{link_id}", self._pay)
        await self._host.start(app, shutdown_timeout=1.0)

    def settings(self) -> dict[str, Any]:
        # Notifications say "live": "false"; the integration must be a test one to accept them.
        return {"merchant_account": self.merchant_account, "environment": "production" if self.live else "test"}

    def secrets(self) -> dict[str, str]:
        values = {"api_key": self.api_key, "hmac_key": self.hmac_key}
        if self.webhook_username is not None and self.webhook_password is not None:
            values["webhook_username"] = self.webhook_username
            values["webhook_password"] = self.webhook_password
        return values

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        return len(self.links)

    # ---- the API ------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("X-API-Key", "")
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    @staticmethod
    def _unauthorised() -> web.Response:
        return _error(401, "000", "HTTP Status Response - Unauthorized", "security")

    async def _json_body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @staticmethod
    def _amount(body: dict[str, Any]) -> tuple[int, str] | None:
        amount = body.get("amount")
        if not isinstance(amount, dict):
            return None
        value, currency = amount.get("value"), amount.get("currency")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return None
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
            return None
        return value, currency

    def _idempotent(self, kind: str, request: web.Request) -> tuple[str | None, web.Response | None]:
        """The Idempotency-Key, and the stored answer for it if there is one."""
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None, None
        if not key or len(key) > 64:
            return key, _error(422, "000", "Idempotency-Key must be 1 to 64 characters", "validation")
        stored = self._idempotency.get((kind, key))
        if stored is None:
            return key, None
        if not stored.done:
            return key, _error(
                409, "704", "request already processed or in progress", "validation", **{"transient-error": "true"}
            )
        return key, web.json_response(stored.body, status=stored.status)

    def _link_body(self, link: SimLink) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": link.id,
            "url": f"{self.base_url}/paylink/{link.id}",
            "status": link.status,
            "amount": {"value": link.amount_value, "currency": link.currency},
            "merchantAccount": self.merchant_account,
            "reference": link.reference,
            "expiresAt": link.expires_at,
            "reusable": False,
        }
        if link.return_url is not None:
            body["returnUrl"] = link.return_url
        if link.description is not None:
            body["description"] = link.description
        return body

    async def _create_link(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await self._json_body(request)
        key, replay = self._idempotent("paymentLinks", request)
        self.requests.append(("POST", request.path, body, key))
        if replay is not None:
            return replay
        fault, self._create_fault = self._create_fault, None
        if fault == "error_500":
            return _error(500, "000", "Internal error", "internal")
        if body is None:
            return _error(400, "000", "The request body is not a JSON object", "validation")
        amount = self._amount(body)
        if amount is None:
            return _error(422, "000", "amount must be {value: positive integer, currency}", "validation")
        if body.get("merchantAccount") != self.merchant_account:
            return _error(403, "901", "Invalid Merchant Account", "security")
        reference = body.get("reference")
        if not isinstance(reference, str) or not reference:
            return _error(422, "000", "reference is required", "validation")
        return_url, description = body.get("returnUrl"), body.get("description")
        link = SimLink(
            id="PL" + secrets.token_hex(8).upper(),
            reference=reference,
            amount_value=amount[0],
            currency=amount[1],
            return_url=return_url if isinstance(return_url, str) else None,
            description=description if isinstance(description, str) else None,
            expires_at=(datetime.now(UTC) + LINK_TTL).replace(microsecond=0).isoformat(),
        )
        self.links[link.id] = link
        answer = self._link_body(link)
        stored = _Idempotent(201, answer, done=fault != "timeout_after_create")
        if key is not None:
            self._idempotency[("paymentLinks", key)] = stored
        if fault == "timeout_after_create":
            # Created; the answer comes only after the client has given up.
            try:
                await asyncio.sleep(self.hang_s)
            finally:
                stored.done = True
        return web.json_response(answer, status=201)

    async def _get_link(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        self.requests.append(("GET", request.path, None, None))
        link = self.links.get(request.match_info["link_id"])
        if link is None:
            return _error(404, "000", "Payment link not found", "validation")
        return web.json_response(self._link_body(link))

    async def _refund(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await self._json_body(request)
        key, replay = self._idempotent("refunds", request)
        self.requests.append(("POST", request.path, body, key))
        if replay is not None:
            return replay
        if body is None:
            return _error(400, "000", "The request body is not a JSON object", "validation")
        if body.get("merchantAccount") != self.merchant_account:
            return _error(403, "901", "Invalid Merchant Account", "security")
        payment = self.payments.get(request.match_info["psp"])
        amount = self._amount(body)
        if payment is None:
            return _error(422, "167", "Original pspReference required for this operation", "validation")
        if amount is None or amount[1] != payment.link.currency:
            return _error(422, "000", "Invalid amount", "validation")
        reference = body.get("reference")
        refund = SimRefund(
            psp_reference=_psp_reference(),
            payment=payment,
            value=amount[0],
            reference=reference if isinstance(reference, str) else "",
            succeeded=payment.refunded_value + amount[0] <= payment.link.amount_value,
        )
        self.refunds[refund.psp_reference] = refund
        if refund.succeeded:
            payment.refunded_value += refund.value
        answer = {
            "merchantAccount": self.merchant_account,
            "paymentPspReference": payment.psp_reference,
            "pspReference": refund.psp_reference,
            "reference": refund.reference,
            "status": "received",
            "amount": {"value": refund.value, "currency": payment.link.currency},
        }
        if key is not None:
            self._idempotency[("refunds", key)] = _Idempotent(201, answer, done=True)
        # A modification's REFUND item: merchantReference is the refund request's reference when it
        # has one (as Adyen's REFUND_WITH_DATA example, "YOUR_MODIFICATION_REFERENCE"), else the payment's.
        self._notify(
            [
                self._item(
                    "REFUND",
                    refund.succeeded,
                    refund.psp_reference,
                    refund.reference or payment.link.reference,
                    refund.value,
                    payment.link.currency,
                    original_reference=payment.psp_reference,
                    reason="" if refund.succeeded else "Insufficient balance on payment",
                )
            ]
        )
        return web.json_response(answer, status=201)

    # ---- the shopper's page -------------------------------------------------------------------

    async def _pay_page(self, request: web.Request) -> web.Response:
        link = self.links.get(request.match_info["link_id"])
        if link is None:
            raise web.HTTPNotFound()
        return web.Response(
            text=f"<!doctype html><title>Pay</title><p>{link.amount_value} {link.currency}: {link.status}</p>",
            content_type="text/html",
        )

    async def _pay(self, request: web.Request) -> web.Response:
        link = self.links.get(request.match_info["link_id"])
        if link is None:
            raise web.HTTPNotFound()
        outcome = (await request.post()).get("outcome")
        if outcome not in ("succeeded", "declined", "expired"):
            raise web.HTTPBadRequest(text="outcome must be succeeded, declined or expired")
        if link.status == "active":
            if outcome == "succeeded":
                payment = SimPayment(_psp_reference(), link)
                self.payments[payment.psp_reference] = payment
                link.status, link.psp_reference = "completed", payment.psp_reference
                self._notify([self._authorisation(link, payment.psp_reference, True)])
            elif outcome == "declined":
                self._notify([self._authorisation(link, _psp_reference(), False)])
            else:
                link.status = "expired"
        if link.return_url is None:
            return web.Response(text=f"The link is {link.status}.")
        raise web.HTTPSeeOther(link.return_url)

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        assert isinstance(checkout.next_step, Redirect)
        assert self._host.http is not None
        async with self._host.http.post(
            checkout.next_step.url, data={"outcome": outcome}, allow_redirects=False
        ) as response:
            assert response.status in (200, 303), await response.text()
        await self.idle()

    # ---- disputes -----------------------------------------------------------------------------

    def _paid_link(self, processor_reference: str) -> tuple[SimLink, SimPayment]:
        link = self.links[processor_reference]
        if link.psp_reference is None:
            raise ValueError(f"link {processor_reference} is not paid")
        return link, self.payments[link.psp_reference]

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        link, payment = self._paid_link(processor_reference)
        dispute = SimDispute(_psp_reference(), payment, amount_minor)
        self.disputes[dispute.psp_reference] = dispute
        self._notify(
            [
                self._item(
                    "NOTIFICATION_OF_CHARGEBACK",
                    True,
                    dispute.psp_reference,
                    link.reference,
                    amount_minor,
                    link.currency,
                    reason="Fraudulent Use of Account Number",
                    original_reference=payment.psp_reference,
                    extra={"disputeStatus": "Undefended", "chargebackReasonCode": "10.4"},
                )
            ]
        )
        self._notify(
            [
                self._item(
                    "CHARGEBACK",
                    True,
                    dispute.psp_reference,
                    link.reference,
                    amount_minor,
                    link.currency,
                    reason="Fraudulent Use of Account Number",
                    original_reference=payment.psp_reference,
                    extra={"disputeStatus": "Undefended", "chargebackReasonCode": "10.4", "defendable": "true"},
                )
            ]
        )
        await self.idle()
        return dispute.psp_reference

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        dispute = self.disputes[dispute_id]
        link = dispute.payment.link
        self._notify(
            [
                self._item(
                    "CHARGEBACK_REVERSED" if won else "SECOND_CHARGEBACK",
                    True,
                    dispute.psp_reference,
                    link.reference,
                    dispute.value,
                    link.currency,
                    reason="Fraudulent Use of Account Number",
                    extra={"disputeStatus": "Won" if won else "Lost"},
                )
            ]
        )
        await self.idle()

    async def fail_refund(self, refund_id: str, *, reversed_: bool = False) -> None:
        """A refund Adyen confirmed earlier fails after all: REFUND_FAILED (or REFUNDED_REVERSED)."""
        refund = self.refunds[refund_id]
        payment = refund.payment
        payment.refunded_value -= refund.value
        self._notify(
            [
                self._item(
                    "REFUNDED_REVERSED" if reversed_ else "REFUND_FAILED",
                    True,
                    refund.psp_reference,
                    refund.reference or payment.link.reference,
                    refund.value,
                    payment.link.currency,
                    original_reference=payment.psp_reference,
                    reason="Refund Failed",
                )
            ]
        )
        await self.idle()

    # ---- notifications ------------------------------------------------------------------------

    def _item(
        self,
        event_code: str,
        success: bool,
        psp_reference: str,
        merchant_reference: str,
        value: int,
        currency: str,
        *,
        original_reference: str | None = None,
        reason: str = "",
        extra: dict[str, str] | None = None,
        age_s: float = 0,
        hex_key: str | None = None,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "amount": {"currency": currency, "value": value},
            "eventCode": event_code,
            "eventDate": _now_iso(age_s),
            "merchantAccountCode": self.merchant_account,
            "merchantReference": merchant_reference,
            "paymentMethod": "visa",
            "pspReference": psp_reference,
            "reason": reason,
            "success": "true" if success else "false",
        }
        if original_reference is not None:
            item["originalReference"] = original_reference
        additional = dict(extra or {})
        additional["hmacSignature"] = sign_item(item, hex_key or self.hmac_key)
        item["additionalData"] = additional
        return item

    def _authorisation(
        self, link: SimLink, psp_reference: str, success: bool, *, age_s: float = 0, hex_key: str | None = None
    ) -> dict[str, Any]:
        return self._item(
            "AUTHORISATION",
            success,
            psp_reference,
            link.reference,
            link.amount_value,
            link.currency,
            reason="033899:1111:03/2030" if success else "Refused",
            extra={"paymentLinkId": link.id, "expiryDate": "03/2030", "cardSummary": "1111"},
            age_s=age_s,
            hex_key=hex_key,
        )

    def notification_body(self, items: list[dict[str, Any]]) -> bytes:
        return json.dumps(
            {
                "live": "true" if self.live else "false",
                "notificationItems": [{"NotificationRequestItem": item} for item in items],
            }
        ).encode()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.webhook_username is not None and self.webhook_password is not None:
            credentials = base64.b64encode(f"{self.webhook_username}:{self.webhook_password}".encode()).decode()
            headers["Authorization"] = f"Basic {credentials}"
        return headers

    def _notify(self, items: list[dict[str, Any]]) -> None:
        """One notification, delivered according to ``faults``."""
        if self.faults.drop:
            self.dropped.extend(items)
            return
        if self.faults.hold:
            self.held.extend(items)
            return
        self._send_later(items)

    def _send_later(self, items: list[dict[str, Any]]) -> None:
        for _ in range(max(self.faults.copies, 1)):
            self._host.tasks.spawn(self._deliver(items))

    async def release(self) -> None:
        held, self.held = self.held, []
        if held:
            self._send_later(list(reversed(held)))  # newest first, in one batch
        await self.idle()

    async def _deliver(self, items: list[dict[str, Any]]) -> None:
        delivery = Delivery([item["eventCode"] for item in items])
        self.deliveries.append(delivery)
        if self.webhook_url is None or self._host.http is None:
            return
        http, url, body = self._host.http, self.webhook_url, self.notification_body(items)

        async def attempt(_: int) -> bool:
            answer = await post_webhook(http, url, body, self._headers(), DELIVERY_TIMEOUT_S)
            delivery.statuses.append(answer.status)
            return answer.accepted

        await with_retries(attempt, RETRY_DELAYS_S)

    # ---- for the conformance suite: a signed notification, not sent ----------------------------

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        link = self.links[processor_reference]
        success = outcome == "succeeded"
        psp = link.psp_reference if success and link.psp_reference is not None else _psp_reference()
        body = self.notification_body([self._authorisation(link, psp, success, age_s=age_s)])
        return WebhookRequest(
            method="POST",
            path=WEBHOOK_PATH,
            query={},
            headers=CIMultiDictProxy(CIMultiDict(self._headers())),
            body=body,
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def with_other_secret(self) -> AdyenSimulator:
        other = copy.copy(self)
        other.hmac_key = secrets.token_hex(32).upper()
        return other
