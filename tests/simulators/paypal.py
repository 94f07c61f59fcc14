"""PayPal (Orders v2, Payments v2, webhooks, disputes) as the PayPal adapter and the conformance suite
see it: an aiohttp server on 127.0.0.1 with PayPal's endpoints, its hosted approval page as state, and
webhooks signed and delivered as PayPal does. Written from ``../shared/reference/processors.md`` §9 and
PayPal's own documents (named below), NOT from ``services/payments/processors/paypal``, so that the
adapter and this simulator cannot share one mistake.

Served (every API call but the token one needs ``Authorization: Bearer <token>``; an unknown or
expired token gets PayPal's 401 ``{"error": "invalid_token", ...}``):

- ``POST /v1/oauth2/token``: HTTP Basic ``client_id:client_secret``, form
  ``grant_type=client_credentials`` -> ``{scope, access_token, token_type: "Bearer", app_id,
  expires_in, nonce}``; wrong credentials -> 401 ``{"error": "invalid_client", ...}``.
- ``POST /v2/checkout/orders``: ``intent: CAPTURE``, one purchase unit; amounts checked as PayPal
  does (``DECIMALS_NOT_SUPPORTED`` for a decimal HUF/JPY/TWD value, ``DECIMAL_PRECISION``,
  ``CURRENCY_NOT_SUPPORTED``, ``CANNOT_BE_ZERO_OR_NEGATIVE``: PayPal's Orders errors page). The same
  ``PayPal-Request-Id`` returns the same order ("PayPal returns the latest status of the previous
  request that used that same header": PayPal's idempotency guide). 201 ``{id, status:
  "PAYER_ACTION_REQUIRED", payment_source, links: [self, payer-action]}``.
- ``GET /v2/checkout/orders/{id}``: the order; 404 ``RESOURCE_NOT_FOUND`` once it expired.
- ``POST /v2/checkout/orders/{id}/capture``: ``PayPal-Request-Id`` idempotent; 422
  ``ORDER_ALREADY_CAPTURED`` / ``ORDER_NOT_APPROVED``; 201 with the whole order, its capture in
  ``purchase_units[0].payments.captures[0]``; sends ``PAYMENT.CAPTURE.COMPLETED`` (or ``.DENIED``).
- ``POST /v2/payments/captures/{id}/refund``: ``PayPal-Request-Id`` idempotent (PayPal keeps refund
  ids 45 days); partial refunds up to what is left (422 ``REFUND_AMOUNT_EXCEEDED``, then
  ``CAPTURE_FULLY_REFUNDED``); 201 ``{id, status, links}``; sends ``PAYMENT.CAPTURE.REFUNDED`` whose
  resource is the refund (``links``: ``self``, ``up`` = the capture).
- ``GET /v1/notifications/certs/{id}``: the signing certificate (PEM).
- ``POST /v1/notifications/verify-webhook-signature``: checks ``webhook_id`` and the RSA signature
  over ``transmission_id|transmission_time|webhook_id|crc32`` where the CRC32 is computed over the
  ``webhook_event`` bytes exactly as they appear in the request: a re-serialised event fails, as at
  PayPal ("The actual JSON string is what is validated against", paypal/PayPal-Python-SDK#196).
- ``GET|POST /checkoutnow?token=<order id>``: the payer's approval page.

Webhooks (PayPal's envelope ``{id: "WH-…", event_version, create_time, resource_type,
resource_version, event_type, summary, resource, links}``) are POSTed to ``webhook_url`` with
PAYPAL-AUTH-ALGO ``SHA256withRSA``, PAYPAL-AUTH-VERSION ``v2``, PAYPAL-CERT-URL, PAYPAL-TRANSMISSION-ID,
PAYPAL-TRANSMISSION-SIG, PAYPAL-TRANSMISSION-TIME. Each HTTP attempt is a new transmission, signed
afresh with its own id and time (PayPal documents both as those "of the HTTP transmission"; no source
shows what a retry carries: this is the simulator's choice). A non-2xx answer or no connection is
retried after 0.2 s, 0.5 s and 1 s (PayPal: "up to 25 times over 3 days", compressed).

``act`` (decided here, see the report): "succeeded" approves the order at the approval link (order
``APPROVED``, ``CHECKOUT.ORDER.APPROVED`` sent; the capture is the adapter's); "declined" approves with a
funding source that the capture then declines (capture ``DECLINED``, ``PAYMENT.CAPTURE.DENIED``);
"expired" lets the unapproved order expire: PayPal forgets it (``GET`` answers 404) and sends nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime as dt
import hmac
import json
import secrets
import string
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from html import escape
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict, CIMultiDictProxy

from services.payments.processors.base import Checkout, Redirect, WebhookRequest
from shared.money import to_major
from tests.simulators.processor import (
    CreateFault,
    OnHost,
    Outcome,
    SimulatorHost,
    WebhookFaults,
    post_webhook,
    with_retries,
)

# PayPal's currency codes page: these three "do not support decimals"; the others take two.
ZERO_DECIMAL_CURRENCIES = frozenset({"HUF", "JPY", "TWD"})
SUPPORTED_CURRENCIES = frozenset(
    [
        "AUD",
        "BRL",
        "CAD",
        "CNY",
        "CZK",
        "DKK",
        "EUR",
        "HKD",
        "HUF",
        "ILS",
        "INR",
        "JPY",
        "MYR",
        "MXN",
        "TWD",
        "NZD",
        "NOK",
        "PHP",
        "PLN",
        "GBP",
        "SGD",
        "SEK",
        "CHF",
        "THB",
        "USD",
    ]
)
ID_ALPHABET = string.ascii_uppercase + string.digits
RETRY_BACKOFF_S = (0.2, 0.5, 1.0)
DELIVERY_TIMEOUT_S = 5.0


def paypal_id(length: int = 17) -> str:
    """An id shaped like PayPal's order, capture and refund ids (``5O190127TN364715T``)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def iso_time(at_s: float | None = None, *, millis: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if at_s is None else at_s, tz=dt.UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def decimals_of(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL_CURRENCIES else 2


def value_of_minor(amount_minor: int, currency: str) -> str:
    """PayPal's value string for an amount in ISO minor units (the simulator's own conversion)."""
    major = to_major(amount_minor, currency)
    exact = major.quantize(Decimal(1).scaleb(-decimals_of(currency)))
    if exact != major:
        raise ValueError(f"{major} {currency} is not an amount PayPal takes")
    return format(exact, "f")


def transmission_message(transmission_id: str, transmission_time: str, webhook_id: str, body: bytes) -> bytes:
    """What PayPal signs: ``<transmission id>|<transmission time>|<webhook id>|<CRC32 of the body as an
    unsigned decimal>`` (reference §9, from paypalrestsdk ``notifications.py``)."""
    return b"%s|%s|%s|%d" % (
        transmission_id.encode(),
        transmission_time.encode(),
        webhook_id.encode(),
        binascii.crc32(body) & 0xFFFFFFFF,
    )


def sign_transmission(
    key: rsa.RSAPrivateKey, transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> str:
    """PAYPAL-TRANSMISSION-SIG: base64 of SHA256withRSA (PKCS#1 v1.5) over the transmission message."""
    message = transmission_message(transmission_id, transmission_time, webhook_id, body)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def self_signed_certificate(key: rsa.RSAPrivateKey, common_name: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def split_verification_request(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """The fields of a verify-webhook-signature request, and ``webhook_event`` exactly as its bytes
    appear in the request (not re-serialised)."""
    text = raw.decode("utf-8")
    decoder = json.JSONDecoder()
    fields: dict[str, Any] = {}
    event: bytes | None = None

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if text[i : i + 1] != "{":
        raise ValueError("not an object")
    i = skip(i + 1)
    while text[i : i + 1] != "}":
        if text[i : i + 1] != '"':
            raise ValueError("expected a key")
        key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = skip(i)
        if text[i : i + 1] != ":":
            raise ValueError("expected ':'")
        i = skip(i + 1)
        value, end = decoder.raw_decode(text, i)
        if key == "webhook_event":
            event = text[i:end].encode("utf-8")
        else:
            fields[key] = value
        i = skip(end)
        if text[i : i + 1] == ",":
            i = skip(i + 1)
        elif text[i : i + 1] != "}":
            raise ValueError("expected ',' or '}'")
    if skip(i + 1) != len(text):
        raise ValueError("trailing data")
    if event is None:
        raise ValueError("no webhook_event")
    return fields, event


@dataclass
class SimOrder:
    id: str
    amount: dict[str, str]
    custom_id: str | None
    reference_id: str
    description: str | None
    return_url: str | None
    cancel_url: str | None
    create_time: str
    status: str = "PAYER_ACTION_REQUIRED"
    funding_declines: bool = False
    payer_id: str | None = None
    capture: dict[str, Any] | None = None
    refunded_value: Decimal = Decimal(0)
    update_time: str | None = None


@dataclass
class Delivery:
    """One HTTP attempt of one webhook."""

    event_id: str
    event_type: str
    attempt: int
    status: int | None  # None: no connection / no answer
    transmission_id: str


@dataclass
class _Keys:
    trusted: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    cert_id: str
    cert_pem: bytes


@dataclass
class _State:
    """Everything the views of one simulator share."""

    orders: dict[str, SimOrder] = field(default_factory=dict)
    orders_by_request: dict[str, str] = field(default_factory=dict)
    capture_requests: dict[tuple[str, str], str] = field(default_factory=dict)  # (order, request id) -> order
    refunds_by_request: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    captures: dict[str, str] = field(default_factory=dict)  # capture id -> order id
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expires at (time.time())
    held: list[tuple[PayPalSimulator, bytes]] = field(default_factory=list)
    sent_events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    token_requests: int = 0
    create_calls: int = 0
    verify_calls: int = 0
    refused_tokens: int = 0
    orders_created: int = 0
    next_create_fault: CreateFault | None = None


def _with_query(url: str, params: Mapping[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _error(status: int, name: str, issue: str, description: str) -> web.Response:
    """PayPal's error body: ``{name, message, debug_id, details: [{issue, description}], links}``."""
    body = {
        "name": name,
        "message": description,
        "debug_id": secrets.token_hex(6),
        "details": [{"issue": issue, "description": description}],
        "links": [],
    }
    return web.json_response(body, status=status)


def _unprocessable(issue: str, description: str) -> web.Response:
    return _error(422, "UNPROCESSABLE_ENTITY", issue, description)


def _not_found() -> web.Response:
    return _error(
        404,
        "RESOURCE_NOT_FOUND",
        "INVALID_RESOURCE_ID",
        "Specified resource ID does not exist. Please check the resource ID and try again.",
    )


class PayPalSimulator(OnHost):
    """See the module docstring. Faults: ``faults`` (copies, hold, drop), ``fail_next_create``,
    ``expire_tokens`` (every token PayPal issued so far is refused from now on),
    ``forget_request_ids`` (PayPal keeps a ``PayPal-Request-Id`` only for hours)."""

    processor = "paypal"

    def __init__(self, webhook_url: str | None = None, *, token_ttl_s: int = 32400) -> None:
        self.faults = WebhookFaults()
        self.webhook_url = webhook_url
        self.token_ttl_s = token_ttl_s
        # How long a create held by "timeout_after_create" waits before it answers.
        self.slow_answer_s = 12.0
        self.client_id = "SIM" + secrets.token_urlsafe(30)
        self.client_secret = "SIM" + secrets.token_urlsafe(30)
        self.webhook_id = paypal_id(17)
        self.merchant_id = paypal_id(13)
        trusted = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._keys = _Keys(
            trusted=trusted,
            other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            cert_id=f"CERT-{uuid.uuid4()}",
            cert_pem=self_signed_certificate(trusted, "messageverificationcerts.simulator.paypal.com"),
        )
        self._signing_key = trusted
        self._state = _State()
        self._host = SimulatorHost()

    # ----------------------------------------------------------------------------------------------
    # Lifecycle and the Protocol's plain parts
    # ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/oauth2/token", self._token)
        app.router.add_post("/v2/checkout/orders", self._create_order)
        app.router.add_get("/v2/checkout/orders/{order_id}", self._get_order)
        app.router.add_post("/v2/checkout/orders/{order_id}/capture", self._capture_order)
        app.router.add_post("/v2/payments/captures/{capture_id}/refund", self._refund_capture)
        app.router.add_get("/v1/notifications/certs/{cert_id}", self._certificate)
        app.router.add_post("/v1/notifications/verify-webhook-signature", self._verify_signature)
        app.router.add_get("/checkoutnow", self._approval_page)
        app.router.add_post("/checkoutnow", self._approval_submit)
        await self._host.start(app)

    @property
    def certificate_pem(self) -> bytes:
        """The certificate served at ``cert_url`` (the key PayPal's verification trusts)."""
        return self._keys.cert_pem

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}/v1/notifications/certs/{self._keys.cert_id}"

    def settings(self) -> dict[str, Any]:
        return {"webhook_id": self.webhook_id}

    def secrets(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._state.next_create_fault = fault

    def created_payments(self) -> int:
        """Orders ever created (an expired one, forgotten by PayPal, still counts)."""
        return self._state.orders_created

    def expire_tokens(self) -> None:
        self._state.tokens.clear()

    def forget_request_ids(self) -> None:
        self._state.orders_by_request.clear()
        self._state.capture_requests.clear()
        self._state.refunds_by_request.clear()

    def with_other_secret(self) -> PayPalSimulator:
        """A view of this simulator (same orders, same deliveries) whose webhooks are signed with a
        key PayPal's verification does not know: verify-webhook-signature answers FAILURE."""
        view = copy.copy(self)
        view._signing_key = self._keys.other
        return view

    # Introspection for tests.
    @property
    def token_requests(self) -> int:
        return self._state.token_requests

    @property
    def create_calls(self) -> int:
        return self._state.create_calls

    @property
    def refused_tokens(self) -> int:
        """API calls answered 401 for their bearer token."""
        return self._state.refused_tokens

    @property
    def verify_calls(self) -> int:
        return self._state.verify_calls

    @property
    def deliveries(self) -> list[Delivery]:
        return self._state.deliveries

    @property
    def sent_events(self) -> list[dict[str, Any]]:
        return self._state.sent_events

    def order(self, order_id: str) -> SimOrder:
        return self._state.orders[order_id]

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until every webhook delivery under way has finished (retries included)."""
        async with asyncio.timeout(timeout_s):
            await self._host.tasks.idle()

    # ----------------------------------------------------------------------------------------------
    # The payer, disputes
    # ----------------------------------------------------------------------------------------------

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        order_id = checkout.processor_reference
        if outcome == "expired":
            order = self._state.orders.get(order_id)
            if order is None or order.status not in ("CREATED", "PAYER_ACTION_REQUIRED"):
                raise ValueError(f"order {order_id} cannot expire now")
            # An unapproved order expires and PayPal no longer has it; no webhook is sent.
            del self._state.orders[order_id]
            return
        assert isinstance(checkout.next_step, Redirect)
        form = {"action": "approve", "funding": "declines" if outcome == "declined" else "ok"}
        assert self._host.http is not None
        async with self._host.http.post(checkout.next_step.url, data=form, allow_redirects=False) as response:
            await response.read()
            if response.status != 303:
                raise AssertionError(f"the approval page answered {response.status}")

    async def release(self) -> None:
        held, self._state.held = self._state.held, []
        for sender, body in reversed(held):
            await sender._deliver(body)

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        order = self._state.orders[processor_reference]
        capture = order.capture
        if capture is None or capture["status"] == "DECLINED":
            raise ValueError("only a captured payment can be disputed")
        currency = capture["amount"]["currency_code"]
        dispute_id = f"PP-D-{secrets.randbelow(10**8):08d}"
        now = iso_time(millis=True)
        dispute: dict[str, Any] = {
            "dispute_id": dispute_id,
            "create_time": now,
            "update_time": now,
            "disputed_transactions": [
                {
                    "buyer_transaction_id": paypal_id(17),
                    "seller_transaction_id": capture["id"],
                    "create_time": capture["create_time"],
                    "transaction_status": "COMPLETED",
                    "gross_amount": dict(capture["amount"]),
                    "seller": {"merchant_id": self.merchant_id},
                }
            ],
            "reason": "UNAUTHORISED",
            "status": "OPEN",
            "dispute_amount": {"currency_code": currency, "value": value_of_minor(amount_minor, currency)},
            "dispute_life_cycle_stage": "CHARGEBACK",
            "dispute_channel": "EXTERNAL",
            "links": [{"href": f"{self.base_url}/v1/customer/disputes/{dispute_id}", "rel": "self", "method": "GET"}],
        }
        self._state.disputes[dispute_id] = dispute
        self._emit(self._envelope("CUSTOMER.DISPUTE.CREATED", "dispute", dispute, "A new dispute opened", "1.0"))
        return dispute_id

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        dispute = self._state.disputes[dispute_id]
        dispute["status"] = "RESOLVED"
        dispute["update_time"] = iso_time(millis=True)
        outcome: dict[str, Any] = {"outcome_code": "RESOLVED_SELLER_FAVOUR" if won else "RESOLVED_BUYER_FAVOUR"}
        if not won:
            outcome["amount_refunded"] = dict(dispute["dispute_amount"])
        dispute["dispute_outcome"] = outcome
        self._emit(self._envelope("CUSTOMER.DISPUTE.RESOLVED", "dispute", dispute, "A dispute was resolved", "1.0"))

    # ----------------------------------------------------------------------------------------------
    # Webhooks
    # ----------------------------------------------------------------------------------------------

    def signed_headers(self, body: bytes, *, age_s: int = 0) -> dict[str, str]:
        """The headers of one transmission of ``body``, signed ``age_s`` seconds ago."""
        transmission_id = str(uuid.uuid1())  # PayPal's look like v1 UUIDs (PayPal-Python-SDK#166)
        transmission_time = iso_time(time.time() - age_s)
        return {
            "Content-Type": "application/json",
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "PAYPAL-AUTH-VERSION": "v2",
            "PAYPAL-CERT-URL": self.cert_url,
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-SIG": sign_transmission(
                self._signing_key, transmission_id, transmission_time, self.webhook_id, body
            ),
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
        }

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        """``PAYMENT.CAPTURE.COMPLETED`` (or ``.DENIED``) for the order's capture (a capture made up
        for the occasion if the order has none yet), signed, not sent."""
        order = self._state.orders[processor_reference]
        status = "COMPLETED" if outcome == "succeeded" else "DECLINED"
        capture = dict(order.capture) if order.capture is not None else self._new_capture(order, status)
        capture["status"] = status
        event_type = "PAYMENT.CAPTURE.COMPLETED" if outcome == "succeeded" else "PAYMENT.CAPTURE.DENIED"
        value = f"{capture['amount']['value']} {capture['amount']['currency_code']}"
        summary = f"Payment {'completed' if outcome == 'succeeded' else 'denied'} for {value}"
        event = self._envelope(event_type, "capture", self._capture_resource(order, capture), summary)
        body = json.dumps(event).encode()
        return WebhookRequest(
            method="POST",
            path="/webhooks/paypal",
            query={},
            headers=CIMultiDictProxy(CIMultiDict(self.signed_headers(body, age_s=age_s))),
            body=body,
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def _envelope(
        self,
        event_type: str,
        resource_type: str,
        resource: Mapping[str, Any],
        summary: str,
        resource_version: str = "2.0",
    ) -> dict[str, Any]:
        event_id = f"WH-{paypal_id(17)}-{paypal_id(17)}"
        events = f"{self.base_url}/v1/notifications/webhooks-events/{event_id}"
        return {
            "id": event_id,
            "event_version": "1.0",
            "create_time": iso_time(millis=True),
            "resource_type": resource_type,
            "resource_version": resource_version,
            "event_type": event_type,
            "summary": summary,
            "resource": copy.deepcopy(dict(resource)),
            "links": [
                {"href": events, "rel": "self", "method": "GET"},
                {"href": f"{events}/resend", "rel": "resend", "method": "POST"},
            ],
        }

    def _emit(self, event: dict[str, Any]) -> None:
        self._state.sent_events.append(event)
        if self.faults.drop:
            return
        body = json.dumps(event).encode()
        for _ in range(self.faults.copies):
            if self.faults.hold:
                self._state.held.append((self, body))
            else:
                self._host.tasks.spawn(self._deliver(body))

    async def _deliver(self, body: bytes) -> None:
        if self.webhook_url is None or self._host.http is None:
            return
        http, url, event = self._host.http, self.webhook_url, json.loads(body)

        async def attempt(n: int) -> bool:
            headers = self.signed_headers(body)  # each attempt is a new transmission
            answer = await post_webhook(http, url, body, headers, DELIVERY_TIMEOUT_S)
            self._state.deliveries.append(
                Delivery(event["id"], event["event_type"], n, answer.status, headers["PAYPAL-TRANSMISSION-ID"])
            )
            return answer.accepted

        await with_retries(attempt, RETRY_BACKOFF_S)

    # ----------------------------------------------------------------------------------------------
    # Orders, captures, refunds as PayPal shows them
    # ----------------------------------------------------------------------------------------------

    def _order_links(self, order: SimOrder) -> list[dict[str, str]]:
        links = [{"href": f"{self.base_url}/v2/checkout/orders/{order.id}", "rel": "self", "method": "GET"}]
        if order.status == "PAYER_ACTION_REQUIRED":
            approve = f"{self.base_url}/checkoutnow?{urlencode({'token': order.id})}"
            links.append({"href": approve, "rel": "payer-action", "method": "GET"})
        if order.status == "APPROVED":
            capture = f"{self.base_url}/v2/checkout/orders/{order.id}/capture"
            links.append({"href": capture, "rel": "capture", "method": "POST"})
        return links

    def _order_body(self, order: SimOrder) -> dict[str, Any]:
        unit: dict[str, Any] = {"reference_id": order.reference_id, "amount": dict(order.amount)}
        if order.custom_id is not None:
            unit["custom_id"] = order.custom_id
        if order.description is not None:
            unit["description"] = order.description
        unit["payee"] = {"merchant_id": self.merchant_id}
        if order.capture is not None:
            unit["payments"] = {"captures": [copy.deepcopy(order.capture)]}
        body: dict[str, Any] = {
            "id": order.id,
            "intent": "CAPTURE",
            "status": order.status,
            "purchase_units": [unit],
            "create_time": order.create_time,
            "links": self._order_links(order),
        }
        if order.payer_id is not None:
            body["payment_source"] = {"paypal": {"account_id": order.payer_id, "account_status": "VERIFIED"}}
            body["payer"] = {"payer_id": order.payer_id}
        if order.update_time is not None:
            body["update_time"] = order.update_time
        return body

    def _new_capture(self, order: SimOrder, status: str) -> dict[str, Any]:
        capture_id = paypal_id(17)
        now = iso_time()
        capture: dict[str, Any] = {
            "id": capture_id,
            "status": status,
            "amount": dict(order.amount),
            "final_capture": True,
            "seller_protection": {"status": "ELIGIBLE"},
            "create_time": now,
            "update_time": now,
            "links": [
                {"href": f"{self.base_url}/v2/payments/captures/{capture_id}", "rel": "self", "method": "GET"},
                {
                    "href": f"{self.base_url}/v2/payments/captures/{capture_id}/refund",
                    "rel": "refund",
                    "method": "POST",
                },
                {"href": f"{self.base_url}/v2/checkout/orders/{order.id}", "rel": "up", "method": "GET"},
            ],
        }
        if order.custom_id is not None:
            capture["custom_id"] = order.custom_id
        if status == "DECLINED":
            capture["status_details"] = {"reason": "DECLINED_BY_RISK_FRAUD_FILTERS"}
        return capture

    @staticmethod
    def _capture_resource(order: SimOrder, capture: Mapping[str, Any]) -> dict[str, Any]:
        # The webhook's capture also names its order (PayPal's sample PAYMENT.CAPTURE.COMPLETED).
        return {**capture, "supplementary_data": {"related_ids": {"order_id": order.id}}}

    # ----------------------------------------------------------------------------------------------
    # HTTP handlers
    # ----------------------------------------------------------------------------------------------

    def _bearer_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        expires_at = self._state.tokens.get(token)
        return expires_at is not None and time.time() < expires_at

    def _invalid_token(self) -> web.Response:
        self._state.refused_tokens += 1
        body = {"error": "invalid_token", "error_description": "Access Token not found in cache"}
        return web.json_response(body, status=401)

    async def _token(self, request: web.Request) -> web.Response:
        self._state.token_requests += 1
        header = request.headers.get("Authorization", "")
        try:
            given_id, _, given_secret = base64.b64decode(header.removeprefix("Basic "), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            given_id, given_secret = b"", b""
        id_ok = hmac.compare_digest(given_id, self.client_id.encode())
        secret_ok = hmac.compare_digest(given_secret, self.client_secret.encode())
        if not header.startswith("Basic ") or not (id_ok and secret_ok):
            body = {"error": "invalid_client", "error_description": "Client Authentication failed"}
            return web.json_response(body, status=401)
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            body = {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}
            return web.json_response(body, status=400)
        token = "A21AA" + secrets.token_urlsafe(48)
        self._state.tokens[token] = time.time() + self.token_ttl_s
        return web.json_response(
            {
                "scope": "https://uri.paypal.com/services/payments/payment https://uri.paypal.com/services/payments/refund",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_ttl_s,
                "nonce": f"{iso_time()}{secrets.token_urlsafe(12)}",
            }
        )

    @staticmethod
    def _check_money(money: object) -> web.Response | None:
        """PayPal's validation of an amount, or None if it takes it."""
        if not isinstance(money, Mapping):
            return _error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER", "amount is required")
        currency, value = money.get("currency_code"), money.get("value")
        if not isinstance(currency, str) or not isinstance(value, str):
            return _error(400, "INVALID_REQUEST", "INVALID_PARAMETER_SYNTAX", "currency_code and value are strings")
        if currency not in SUPPORTED_CURRENCIES:
            return _unprocessable("CURRENCY_NOT_SUPPORTED", "Currency code is not currently supported.")
        try:
            amount = Decimal(value)
        except InvalidOperation:
            return _error(400, "INVALID_REQUEST", "INVALID_PARAMETER_SYNTAX", "value is not a number")
        if not amount.is_finite() or len(value) > 32 or "e" in value.lower():
            return _error(400, "INVALID_REQUEST", "INVALID_PARAMETER_SYNTAX", "value is not a number")
        places = len(value.partition(".")[2])
        if currency in ZERO_DECIMAL_CURRENCIES and "." in value:
            return _unprocessable("DECIMALS_NOT_SUPPORTED", "Currency does not support decimals.")
        if places > decimals_of(currency):
            return _unprocessable(
                "DECIMAL_PRECISION", "If the currency supports decimals, only two decimal place precision is supported."
            )
        if amount <= 0:
            return _unprocessable("CANNOT_BE_ZERO_OR_NEGATIVE", "Must be greater than zero.")
        return None

    async def _create_order(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._invalid_token()
        self._state.create_calls += 1
        fault, self._state.next_create_fault = self._state.next_create_fault, None
        if fault == "error_500":
            return _error(500, "INTERNAL_SERVER_ERROR", "INTERNAL_SERVER_ERROR", "An internal server error occurred.")
        request_id = request.headers.get("PayPal-Request-Id")
        if request_id is not None and request_id in self._state.orders_by_request:
            order = self._state.orders.get(self._state.orders_by_request[request_id])
            if order is not None:
                return web.json_response(self._create_answer(order), status=200)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
        if not isinstance(body, dict) or body.get("intent") != "CAPTURE":
            return _error(400, "INVALID_REQUEST", "INVALID_PARAMETER_VALUE", "intent must be CAPTURE here")
        units = body.get("purchase_units")
        if not isinstance(units, list) or len(units) != 1 or not isinstance(units[0], dict):
            return _error(400, "INVALID_REQUEST", "INVALID_ARRAY_MAX_ITEMS", "one purchase unit, please")
        unit = units[0]
        problem = self._check_money(unit.get("amount"))
        if problem is not None:
            return problem
        custom_id, description = unit.get("custom_id"), unit.get("description")
        if custom_id is not None and (not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 255):
            return _error(400, "INVALID_REQUEST", "INVALID_STRING_LENGTH", "custom_id is 1-255 characters")
        if description is not None and (not isinstance(description, str) or not 1 <= len(description.encode()) <= 127):
            return _error(400, "INVALID_REQUEST", "INVALID_STRING_LENGTH", "description is 1-127 characters")
        source = body.get("payment_source", {})
        context = source.get("paypal", {}).get("experience_context", {}) if isinstance(source, dict) else {}
        if not isinstance(context, dict) or context.get("user_action", "PAY_NOW") not in ("PAY_NOW", "CONTINUE"):
            return _error(400, "INVALID_REQUEST", "INVALID_PARAMETER_VALUE", "experience_context is not valid")
        order = SimOrder(
            id=paypal_id(17),
            amount={"currency_code": unit["amount"]["currency_code"], "value": unit["amount"]["value"]},
            custom_id=custom_id,
            reference_id=str(unit.get("reference_id", "default")),
            description=description,
            return_url=context.get("return_url"),
            cancel_url=context.get("cancel_url"),
            create_time=iso_time(),
        )
        self._state.orders[order.id] = order
        self._state.orders_created += 1
        if request_id is not None:
            self._state.orders_by_request[request_id] = order.id
        if fault == "timeout_after_create":
            await asyncio.sleep(self.slow_answer_s)
        return web.json_response(self._create_answer(order), status=201)

    def _create_answer(self, order: SimOrder) -> dict[str, Any]:
        # The default (Prefer: return=minimal) answer: id, status and HATEOAS links.
        return {
            "id": order.id,
            "status": order.status,
            "payment_source": {"paypal": {}},
            "links": self._order_links(order),
        }

    async def _get_order(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._invalid_token()
        order = self._state.orders.get(request.match_info["order_id"])
        if order is None:
            return _not_found()
        return web.json_response(self._order_body(order))

    async def _capture_order(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._invalid_token()
        order = self._state.orders.get(request.match_info["order_id"])
        if order is None:
            return _not_found()
        request_id = request.headers.get("PayPal-Request-Id")
        if request_id is not None and (order.id, request_id) in self._state.capture_requests:
            return web.json_response(self._order_body(order), status=201)
        if order.status == "COMPLETED":
            return _unprocessable(
                "ORDER_ALREADY_CAPTURED",
                "Order already captured.If 'intent=CAPTURE' only one capture per order is allowed.",
            )
        if order.status != "APPROVED":
            return _unprocessable("ORDER_NOT_APPROVED", "Payer has not yet approved the Order for payment.")
        capture = self._new_capture(order, "DECLINED" if order.funding_declines else "COMPLETED")
        order.capture = capture
        order.status = "COMPLETED"
        order.update_time = capture["update_time"]
        self._state.captures[capture["id"]] = order.id
        if request_id is not None:
            self._state.capture_requests[(order.id, request_id)] = order.id
        value = f"{capture['amount']['value']} {capture['amount']['currency_code']}"
        if capture["status"] == "COMPLETED":
            event = self._envelope(
                "PAYMENT.CAPTURE.COMPLETED",
                "capture",
                self._capture_resource(order, capture),
                f"Payment completed for {value}",
            )
        else:
            event = self._envelope(
                "PAYMENT.CAPTURE.DENIED",
                "capture",
                self._capture_resource(order, capture),
                f"Payment denied for {value}",
            )
        self._emit(event)
        return web.json_response(self._order_body(order), status=201)

    async def _refund_capture(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._invalid_token()
        capture_id = request.match_info["capture_id"]
        order_id = self._state.captures.get(capture_id)
        order = self._state.orders.get(order_id) if order_id is not None else None
        if order is None or order.capture is None:
            return _not_found()
        capture = order.capture
        request_id = request.headers.get("PayPal-Request-Id")
        if request_id is not None and (capture_id, request_id) in self._state.refunds_by_request:
            return web.json_response(
                self._refund_answer(self._state.refunds_by_request[(capture_id, request_id)]), status=201
            )
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return _error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
        if capture["status"] == "REFUNDED":
            return _unprocessable("CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded.")
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            # The simulator's choice of issue for refunding a capture that holds no money.
            return _unprocessable("REFUND_NOT_ALLOWED", "This capture cannot be refunded.")
        captured = Decimal(capture["amount"]["value"])
        left = captured - order.refunded_value
        money = body.get("amount") if isinstance(body, dict) else None
        if money is None:
            money = {"currency_code": capture["amount"]["currency_code"], "value": format(left, "f")}
        problem = self._check_money(money)
        if problem is not None:
            return problem
        if money["currency_code"] != capture["amount"]["currency_code"]:
            return _unprocessable("CURRENCY_MISMATCH", "The refund currency must match the capture's.")
        amount = Decimal(money["value"])
        if amount > left:
            return _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount that has not yet been refunded.",
            )
        refund_id = paypal_id(17)
        now = iso_time()
        refund: dict[str, Any] = {
            "id": refund_id,
            "amount": {"currency_code": money["currency_code"], "value": money["value"]},
            "status": "COMPLETED",
            "create_time": now,
            "update_time": now,
            "links": [
                {"href": f"{self.base_url}/v2/payments/refunds/{refund_id}", "rel": "self", "method": "GET"},
                {"href": f"{self.base_url}/v2/payments/captures/{capture_id}", "rel": "up", "method": "GET"},
            ],
        }
        note = body.get("note_to_payer") if isinstance(body, dict) else None
        if isinstance(note, str):
            refund["note_to_payer"] = note
        order.refunded_value += amount
        capture["status"] = "REFUNDED" if order.refunded_value == captured else "PARTIALLY_REFUNDED"
        self._state.refunds[refund_id] = refund
        if request_id is not None:
            self._state.refunds_by_request[(capture_id, request_id)] = refund
        self._emit(
            self._envelope(
                "PAYMENT.CAPTURE.REFUNDED",
                "refund",
                refund,
                f"A {money['value']} {money['currency_code']} capture payment was refunded",
            )
        )
        return web.json_response(self._refund_answer(refund), status=201)

    @staticmethod
    def _refund_answer(refund: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": refund["id"], "status": refund["status"], "links": refund["links"]}

    async def _certificate(self, request: web.Request) -> web.Response:
        if request.match_info["cert_id"] != self._keys.cert_id:
            return _not_found()
        return web.Response(body=self._keys.cert_pem, content_type="application/x-pem-file")

    async def _verify_signature(self, request: web.Request) -> web.Response:
        if not self._bearer_ok(request):
            return self._invalid_token()
        self._state.verify_calls += 1
        try:
            fields, event = split_verification_request(await request.read())
            json.loads(event)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "VALIDATION_ERROR", "MALFORMED_REQUEST_JSON", "Invalid request - see details")
        names = ("auth_algo", "cert_url", "transmission_id", "transmission_sig", "transmission_time", "webhook_id")
        if any(not isinstance(fields.get(name), str) or not fields[name] for name in names):
            return _error(400, "VALIDATION_ERROR", "MISSING_REQUIRED_PARAMETER", "Invalid request - see details")
        verified = (
            fields["webhook_id"] == self.webhook_id
            and fields["auth_algo"] == "SHA256withRSA"
            and fields["cert_url"] == self.cert_url
            and self._signature_ok(fields, event)
        )
        return web.json_response({"verification_status": "SUCCESS" if verified else "FAILURE"})

    def _signature_ok(self, fields: Mapping[str, str], event: bytes) -> bool:
        try:
            signature = base64.b64decode(fields["transmission_sig"], validate=True)
        except (binascii.Error, ValueError):
            return False
        message = transmission_message(
            fields["transmission_id"], fields["transmission_time"], fields["webhook_id"], event
        )
        certificate = x509.load_pem_x509_certificate(self._keys.cert_pem)
        public_key = certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except CryptoInvalidSignature:
            return False
        return True

    async def _approval_page(self, request: web.Request) -> web.Response:
        order = self._state.orders.get(request.query.get("token", ""))
        if order is None:
            return web.Response(status=404, text="This order is no longer available.")
        amount = f"{order.amount['value']} {order.amount['currency_code']}"
        if order.status == "PAYER_ACTION_REQUIRED":
            action = (
                '<form method="post"><input type="hidden" name="funding" value="ok">'
                '<button name="action" value="approve">Pay Now</button> '
                '<button name="action" value="cancel">Cancel and return</button></form>'
            )
        else:
            action = f"<p>This order is {escape(order.status)}.</p>"
        html = f"<!doctype html><title>PayPal (simulated)</title><h1>Pay {escape(amount)}</h1>{action}"
        return web.Response(text=html, content_type="text/html")

    async def _approval_submit(self, request: web.Request) -> web.Response:
        order = self._state.orders.get(request.query.get("token", ""))
        if order is None:
            return web.Response(status=404, text="This order is no longer available.")
        form = await request.post()
        if form.get("action") == "cancel":
            # The payer went back without approving: the order stays as it was, PayPal sends nothing.
            raise web.HTTPSeeOther(_with_query(order.cancel_url or self.base_url, {"token": order.id}))
        if form.get("action") != "approve":
            return web.Response(status=400, text="approve or cancel")
        if order.status == "PAYER_ACTION_REQUIRED":
            order.status = "APPROVED"
            order.payer_id = paypal_id(13)
            order.funding_declines = form.get("funding") == "declines"
            order.update_time = iso_time()
            self._emit(
                self._envelope(
                    "CHECKOUT.ORDER.APPROVED",
                    "checkout-order",
                    self._order_body(order),
                    "An order has been approved by buyer",
                )
            )
        raise web.HTTPSeeOther(
            _with_query(order.return_url or self.base_url, {"token": order.id, "PayerID": order.payer_id or ""})
        )
