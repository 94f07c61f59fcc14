"""Stripe as the adapter tests see it: the API calls a Checkout integration makes, the hosted page
(as state plus :meth:`StripeSimulator.act`), signed webhooks with Stripe's delivery habits, refunds,
disputes, idempotency and faults. Implements ``tests/simulators/processor.py``'s Protocol.

Written from ``/work/shared/reference/processors.md`` §1 and the official SDK's object definitions
(stripe-python 16.1.0), NOT from ``services/payments/processors/stripe``, so the adapter and this
simulator cannot share one mistake. The file is ``stripe_sim.py`` so that ``import stripe`` stays
the official SDK, which signs the webhooks here (``WebhookSignature.generate_signature_header``).

What is served (``Authorization: Bearer sk_…`` or HTTP Basic with the key as user name, as Stripe
takes both; anything else is Stripe's 401):

- ``POST /v1/checkout/sessions`` (form): ``mode=payment``, one ``line_items[0]`` with ``price_data``
  (lower-case ``currency``, ``unit_amount`` in Stripe's unit, ``product_data[name]``) and ``quantity``,
  ``success_url``, ``cancel_url``, ``client_reference_id``, ``metadata``, ``payment_intent_data[metadata]``,
  ``payment_method_types``, ``locale``, ``expires_at``. An unknown parameter is Stripe's 400
  ``parameter_unknown``. The hosted page is ``{base}/c/pay/{session_id}``.
- ``GET /v1/checkout/sessions/{id}`` (``expand[]=payment_intent`` expands it), ``GET /v1/payment_intents/{id}``,
  ``POST /v1/refunds`` (``payment_intent`` or ``charge``, ``amount``, ``metadata``, ``reason``),
  ``GET /v1/refunds/{id}``.
- Idempotency (docs.stripe.com/idempotency): the first result of an executed request is saved per
  key and replayed (``Idempotent-Replayed: true``); the same key with other parameters or on another
  endpoint is a 400 ``idempotency_error``; a request that fails validation saves nothing.

The driver (:meth:`~StripeSimulator.act`): "succeeded" completes the session (``complete``/``paid``;
its PaymentIntent succeeds with a charge) and sends ``payment_intent.succeeded`` and
``checkout.session.completed``; "declined" leaves the session open (the driver may pay on it yet)
with the PaymentIntent back at ``requires_payment_method`` and its ``last_payment_error``, and sends
``payment_intent.payment_failed``; "expired" expires the session (a tried PaymentIntent is canceled)
and sends ``checkout.session.expired``. :meth:`~StripeSimulator.act_delayed` and
:meth:`~StripeSimulator.finish_delayed` play a delayed method (``completed`` unpaid, then
``async_payment_succeeded``/``…_failed``). Sessions do not expire by the clock here.

Money back: a refund sends ``refund.created``, ``charge.refunded`` and (once it succeeds)
``refund.updated``; :meth:`~StripeSimulator.fail_refund` fails a succeeded one (``refund.updated``
from ``succeeded``, then ``refund.failed``). :meth:`~StripeSimulator.open_dispute` is a chargeback
(``needs_response``: ``charge.dispute.created`` and ``charge.dispute.funds_withdrawn``) or, with
``inquiry=True``, an inquiry (``warning_needs_response``: created only, until
:meth:`~StripeSimulator.escalate_inquiry`); :meth:`~StripeSimulator.settle_dispute` sends
``charge.dispute.closed`` (won or lost; an inquiry closes as ``warning_closed``) and, when won,
``charge.dispute.funds_reinstated``. A disputed charge cannot be refunded (``charge_disputed``).

Faults (``faults``): ``copies`` sends each webhook that many times (same event, each copy signed
afresh); ``hold`` keeps them for :meth:`~StripeSimulator.release`, which sends them newest first
(a failed first attempt is retried in the background); ``drop`` records them in ``dropped`` and
sends nothing. ``fail_next_create("error_500")`` answers Stripe's 500 before anything is created;
``"timeout_after_create"`` creates the session (and saves the idempotent result) and answers only
once the client has hung up.

Webhooks: the v1 event envelope, written as Stripe writes JSON (:func:`stripe_json`),
``Content-Type: application/json; charset=utf-8``, ``User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)``,
``Stripe-Signature: t=<now>,v1=<hmac>`` (plus a ``v1`` per rolled secret in ``also_sign_with``),
signed afresh on each attempt. Each event is delivered on its own, concurrently, so the order is not
guaranteed (Stripe does not order events); a non-2xx or unreachable endpoint is retried after
``retry_backoffs_s`` (Stripe: for up to three days, here compressed), then given up.

Decisions the sources do not settle, marked where they are made: a session's PaymentIntent appears
once the driver has submitted the page (API versions since 2022-08-01 create it then); refunds are
``pending`` and succeed ``refund_settle_s`` later unless ``refunds_succeed_at_once``; error codes
and messages for refunds beyond what is left follow Stripe's published codes (``charge_already_refunded``,
``amount_too_large``) with messages modelled on those reported in issue threads."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import stripe
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from services.payments.processors.base import Checkout, Redirect, WebhookRequest
from shared.money import currency_exponent, to_major
from tests.simulators.processor import (
    CreateFault,
    OnHost,
    Outcome,
    SimulatorHost,
    WebhookFaults,
    post_webhook,
    with_retries,
)

API_VERSION = "2024-10-28.acacia"
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
WEBHOOK_TIMEOUT_S = 10  # Stripe's own is not documented (processors.md §1.c, [UNVERIFIED])
# docs.stripe.com/currencies: zero-decimal and three-decimal currencies; ISK stays two-decimal in the
# API with whole krónur only (support.stripe.com, "Deprecation of fractional ISK charges").
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
# The PaymentIntent doc: "The amount value supports up to eight digits".
MAX_AMOUNT = 99_999_999
CHECKOUT_TTL_S = 24 * 3600


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


LOCALES = _words(
    "auto bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hi-IN hr hu id it ja ko lt lv ms mt nb nl pl pt pt-BR"
    " ro ru sk sl sv th tr vi zh zh-HK zh-TW"
)
PAYMENT_METHOD_TYPES = _words(
    "acss_debit affirm afterpay_clearpay alipay alma amazon_pay au_becs_debit bacs_debit bancontact billie blik boleto"
    " card cashapp customer_balance eps fpx giropay grabpay ideal kakao_pay klarna konbini kr_card link mobilepay"
    " multibanco naver_pay oxxo p24 pay_by_bank payco paynow paypal payto pix promptpay revolut_pay samsung_pay"
    " satispay sepa_debit sofort swish twint us_bank_account wechat_pay zip"
)
CHECKOUT_PARAMS = frozenset(
    {
        "mode",
        "line_items",
        "success_url",
        "cancel_url",
        "client_reference_id",
        "metadata",
        "payment_intent_data",
        "payment_method_types",
        "locale",
        "expires_at",
        "customer_email",
    }
)
REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "metadata", "reason"})
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
HostedOutcome = Literal["succeeded", "declined", "expired", "processing"]


def _id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def stripe_json(value: Any, level: int = 0) -> str:
    """JSON as Stripe writes its webhook bodies and API answers: two-space indentation, no trailing
    newline, an empty array as ``[`` + blank line + ``]`` and an empty object as ``{`` + newline +
    ``}``, the closing bracket at the parent's indent. Seen in a raw ``checkout.session.completed``
    body that a Django integration printed from ``request.body`` (``"custom_fields": [\\n\\n      ]``,
    ``"payment_method_options": {\\n      }``), so a body Python re-serialises (``json.dumps(indent=2)``)
    is not the body Stripe signed. Non-ASCII text is written unescaped ([UNVERIFIED]: that body has
    none)."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{\n" + pad + "}"
        items = (
            f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {stripe_json(v, level + 1)}" for k, v in value.items()
        )
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[\n\n" + pad + "]"
        return "[\n" + ",\n".join(inner + stripe_json(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def stripe_amount(amount_minor: int, currency: str) -> int:
    """Our ISO minor units as Stripe's unit (written from docs.stripe.com/currencies, not the adapter)."""
    major = to_major(amount_minor, currency.upper())
    lower = currency.lower()
    exponent = 0 if lower in ZERO_DECIMAL else 3 if lower in THREE_DECIMAL else 2
    scaled = major * (Decimal(10) ** exponent)
    assert scaled == scaled.to_integral_value(), (amount_minor, currency)
    return int(scaled)


class StripeApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", **extra: str) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"message": message, "type": type_, **extra}}


def _nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation (``a[b][0][c]=v``) as nested dicts (list indices stay string keys)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + ([p for p in rest.rstrip("]").split("][")] if rest else [])
        node = root
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StripeApiError(400, f"Invalid hash: {key}", code="parameter_invalid_hash", param=key)
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise StripeApiError(400, f"Invalid value for {key}", code="parameter_invalid_string", param=key)
        node[path[-1]] = value
    return root


def _int_param(params: Mapping[str, Any], name: str, where: str, minimum: int = 0) -> int:
    value = params.get(name)
    if not isinstance(value, str) or not value.isdigit() or int(value) < minimum:
        raise StripeApiError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=f"{where}{name}")
    return int(value)


def _metadata(value: Any, param: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 50:
        raise StripeApiError(400, "Invalid metadata", param=param)
    for key, item in value.items():
        if len(key) > 40 or not isinstance(item, str) or len(item) > 500:
            raise StripeApiError(400, f"Invalid metadata[{key}]", param=f"{param}[{key}]")
    return dict(value)


@dataclass
class SimPaymentIntent:
    id: str
    amount: int
    currency: str
    metadata: dict[str, str]
    created: int
    status: str = "requires_payment_method"
    latest_charge: str | None = None
    last_payment_error: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_received": self.amount if self.status == "succeeded" else 0,
            "capture_method": "automatic_async",
            "created": self.created,
            "currency": self.currency,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": False,
            "metadata": dict(self.metadata),
            "payment_method_types": ["card"],
            "status": self.status,
        }


@dataclass
class SimSession:
    id: str
    amount: int
    currency: str
    name: str
    client_reference_id: str | None
    metadata: dict[str, str]
    success_url: str
    cancel_url: str | None
    locale: str | None
    payment_method_types: list[str]
    created: int
    expires_at: int
    url: str
    intent: SimPaymentIntent  # reserved at creation, shown once the driver has submitted the page
    intent_shown: bool = False
    status: str = "open"
    payment_status: str = "unpaid"

    def json(self, *, expand_intent: bool = False) -> dict[str, Any]:
        intent: Any = None
        if self.intent_shown:
            intent = self.intent.json() if expand_intent else self.intent.id
        details = None
        if self.status == "complete":
            details = {"address": {"country": "DE"}, "email": "driver@example.com", "name": "Zoë", "tax_ids": []}
        return {
            "id": self.id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": self.amount,
            "amount_total": self.amount,
            "automatic_tax": {"enabled": False, "status": None},
            "cancel_url": self.cancel_url,
            "client_reference_id": self.client_reference_id,
            "created": self.created,
            "currency": self.currency,
            "custom_fields": [],
            "customer": None,
            "customer_details": details,
            "expires_at": self.expires_at,
            "livemode": False,
            "locale": self.locale,
            "metadata": dict(self.metadata),
            "mode": "payment",
            "payment_intent": intent,
            "payment_method_options": {},
            "payment_method_types": self.payment_method_types,
            "payment_status": self.payment_status,
            "shipping_options": [],
            "status": self.status,
            "success_url": self.success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": self.url if self.status == "open" else None,
        }


@dataclass
class SimCharge:
    id: str
    payment_intent: str
    amount: int
    currency: str
    amount_refunded: int = 0
    disputed: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount,
            "amount_refunded": self.amount_refunded,
            "currency": self.currency,
            "disputed": self.disputed,
            "livemode": False,
            "paid": True,
            "payment_intent": self.payment_intent,
            "refunded": self.amount_refunded == self.amount,
            "status": "succeeded",
        }


@dataclass
class SimRefund:
    id: str
    amount: int
    currency: str
    charge: str
    payment_intent: str
    metadata: dict[str, str]
    reason: str | None
    created: int
    status: str = "pending"
    failure_reason: str | None = None
    failure_balance_transaction: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": f"txn_{self.id[3:]}",
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "destination_details": None,
            "failure_balance_transaction": self.failure_balance_transaction,
            "failure_reason": self.failure_reason,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "pending_reason": "processing" if self.status == "pending" else None,
            "reason": self.reason,
            "receipt_number": None,
            "status": self.status,
        }


@dataclass
class SimDispute:
    id: str
    amount: int
    currency: str
    charge: str
    payment_intent: str
    created: int
    status: str
    reason: str = "fraudulent"

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "dispute",
            "amount": self.amount,
            "balance_transactions": [],
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "evidence": {},
            "evidence_details": {"due_by": self.created + 7 * 86400, "has_evidence": False, "submission_count": 0},
            "is_charge_refundable": self.status.startswith("warning_"),
            "livemode": False,
            "metadata": {},
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": self.status,
        }


@dataclass
class _Saved:
    method: str
    path: str
    params: list[tuple[str, str]]
    status: int
    body: dict[str, Any]
    request_id: str


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # without Authorization
    form: list[tuple[str, str]]
    query: dict[str, str]
    status: int = 0


@dataclass
class Delivery:
    event_id: str
    event_type: str
    attempt: int
    status: int | None  # None: unreachable


@dataclass
class _Held:
    event: dict[str, Any]
    body: bytes


@dataclass
class StripeSimulator(OnHost):
    """One Stripe account (test mode) with one webhook endpoint (``webhook_url``)."""

    secret_key: str = field(default_factory=lambda: _id("sk_test_", 32))
    webhook_secret: str = field(default_factory=lambda: _id("whsec_", 32))
    webhook_url: str | None = None
    processor: str = "stripe"
    faults: WebhookFaults = field(default_factory=WebhookFaults)
    # Rolled secrets: each webhook carries one more v1 per secret here (docs.stripe.com/webhooks, roll secret).
    also_sign_with: list[str] = field(default_factory=list)
    retry_backoffs_s: tuple[float, ...] = (0.2, 0.5, 1.0)
    refund_settle_s: float = 0.05
    refunds_succeed_at_once: bool = False
    # Events sent that an integration usually does not act on (noise the adapter must ignore).
    send_noise_events: bool = True

    def __post_init__(self) -> None:
        self.sessions: dict[str, SimSession] = {}
        self.intents: dict[str, SimPaymentIntent] = {}
        self.charges: dict[str, SimCharge] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.disputes: dict[str, SimDispute] = {}
        self.events: list[dict[str, Any]] = []  # every event created, in order
        self.dropped: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.requests: list[RecordedRequest] = []
        self._saved: dict[str, _Saved] = {}
        self._held: list[_Held] = []
        self._create_faults: list[CreateFault] = []
        self._host = SimulatorHost()

    # --- Protocol: lifecycle and configuration ----------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._get_session)
        app.router.add_get("/v1/payment_intents/{id}", self._get_intent)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_get("/v1/refunds/{id}", self._get_refund)
        app.router.add_get("/c/pay/{id}", self._hosted_page)
        app.router.add_post("/c/pay/{id}", self._hosted_submit)
        await self._host.start(app)

    def settings(self) -> dict[str, Any]:
        return {}

    def secrets(self) -> dict[str, str]:
        return {"secret_key": self.secret_key, "webhook_secret": self.webhook_secret}

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_faults.append(fault)

    def created_payments(self) -> int:
        return len(self.sessions)

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until every delivery (with its retries) and delayed state change has finished."""
        async with asyncio.timeout(timeout_s):
            await self._host.tasks.idle()

    # --- the API ----------------------------------------------------------------------------

    def _request_id(self) -> str:
        return _id("req_", 14)

    def _response(
        self, status: int, body: Mapping[str, Any], request_id: str, extra: Mapping[str, str] | None = None
    ) -> web.Response:
        headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION, **(extra or {})}
        return web.Response(
            status=status, text=stripe_json(dict(body)), content_type="application/json", headers=headers
        )

    def _error(self, exc: StripeApiError, request_id: str) -> web.Response:
        extra = {"WWW-Authenticate": 'Basic realm="Stripe"'} if exc.status == 401 else None
        return self._response(exc.status, exc.body, request_id, extra)

    def _authenticate(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        key = ""
        if given.startswith("Bearer "):
            key = given[len("Bearer ") :].strip()
        elif given.startswith("Basic "):
            try:
                key = base64.b64decode(given[len("Basic ") :], validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not key:
            raise StripeApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header,"
                " using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if not hmac.compare_digest(key.encode(), self.secret_key.encode()):
            prefix, _, rest = key.rpartition("_")
            masked = f"{prefix}_{'*' * max(len(rest) - 4, 0)}{rest[-4:]}" if prefix else "*" * len(key)
            raise StripeApiError(401, f"Invalid API Key provided: {masked}")

    async def _record(self, request: web.Request) -> RecordedRequest:
        form: list[tuple[str, str]] = []
        if request.method == "POST":
            if request.content_type != "application/x-www-form-urlencoded":
                raise StripeApiError(400, "Invalid request: the body must be form-encoded")
            form = parse_qsl((await request.read()).decode(), keep_blank_values=True)
        record = RecordedRequest(
            request.method,
            request.path,
            {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            form,
            dict(request.query),
        )
        self.requests.append(record)
        return record

    def _replay(self, request: web.Request, record: RecordedRequest, request_id: str) -> web.Response | None:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        if not key or len(key) > 255:
            raise StripeApiError(400, "Idempotency-Key must be 1 to 255 characters", type_="idempotency_error")
        saved = self._saved.get(key)
        if saved is None:
            return None
        if (saved.method, saved.path) != (record.method, record.path):
            raise StripeApiError(
                400,
                f"Keys for idempotent requests can only be used for the same endpoint they were first used for"
                f" ('{saved.method} {saved.path}'). Try using a key other than '{key}' if you meant to execute a"
                " different request.",
                type_="idempotency_error",
            )
        if sorted(saved.params) != sorted(record.form):
            raise StripeApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first used"
                f" with. Try using a key other than '{key}' if you meant to execute a different request.",
                type_="idempotency_error",
            )
        return self._response(
            saved.status,
            saved.body,
            request_id,
            {"Idempotent-Replayed": "true", "Original-Request": saved.request_id},
        )

    def _save(self, request: web.Request, record: RecordedRequest, body: dict[str, Any], request_id: str) -> None:
        key = request.headers.get("Idempotency-Key")
        if key:
            self._saved[key] = _Saved(record.method, record.path, record.form, 200, body, request_id)

    async def _create_session(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        record: RecordedRequest | None = None
        try:
            self._authenticate(request)
            record = await self._record(request)
            if self._create_faults and self._create_faults[0] == "error_500":
                self._create_faults.pop(0)
                record.status = 500
                # Before the endpoint executes: nothing is created and nothing saved for the key.
                raise StripeApiError(500, "An unknown error occurred", type_="api_error")
            replay = self._replay(request, record, request_id)
            if replay is not None:
                record.status = replay.status
                return replay
            session = self._new_session(_nested(record.form))
            body = session.json()
            self._save(request, record, body, request_id)
            record.status = 200
        except StripeApiError as exc:
            if record is not None:
                record.status = exc.status
            return self._error(exc, request_id)
        if self._create_faults and self._create_faults[0] == "timeout_after_create":
            self._create_faults.pop(0)
            await self._until_client_gone(request)
        return self._response(200, body, request_id)

    async def _until_client_gone(self, request: web.Request, limit_s: float = 30.0) -> None:
        """The session exists, the answer is late: it is written only after the client gave up."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.02)

    def _new_session(self, params: dict[str, Any]) -> SimSession:
        unknown = sorted(set(params) - CHECKOUT_PARAMS)
        if unknown:
            raise StripeApiError(
                400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
            )
        if params.get("mode") != "payment":
            raise StripeApiError(400, "Missing required param: mode.", code="parameter_missing", param="mode")
        items = params.get("line_items")
        if not isinstance(items, dict) or set(items) != {"0"} or not isinstance(items["0"], dict):
            raise StripeApiError(400, "This simulator takes exactly one line item", param="line_items")
        item = items["0"]
        price = item.get("price_data")
        if not isinstance(price, dict):
            raise StripeApiError(400, "Missing required param: line_items[0][price_data].", code="parameter_missing")
        currency = price.get("currency")
        # Stripe: "Three-letter ISO currency code, in lowercase. Must be a supported currency."
        if not isinstance(currency, str) or currency != currency.lower() or len(currency) != 3:
            raise StripeApiError(
                400, f"Invalid currency: {currency}", code="parameter_invalid_string", param="currency"
            )
        try:
            currency_exponent(currency.upper())
        except ValueError:
            raise StripeApiError(400, f"Invalid currency: {currency}", param="currency") from None
        amount = _int_param(price, "unit_amount", "line_items[0][price_data][", minimum=1)
        quantity = _int_param(item, "quantity", "line_items[0][", minimum=1)
        total = amount * quantity
        self._check_amount(total, currency)
        product = price.get("product_data")
        name = product.get("name") if isinstance(product, dict) else None
        if not isinstance(name, str) or not name:
            raise StripeApiError(
                400, "Missing required param: line_items[0][price_data][product_data][name].", code="parameter_missing"
            )
        success_url = params.get("success_url")
        cancel_url = params.get("cancel_url")
        for url_name, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            if url is None and url_name == "cancel_url":
                continue
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
                raise StripeApiError(400, f"Not a valid URL: {url}", code="url_invalid", param=url_name)
        locale = params.get("locale")
        if locale is not None and locale not in LOCALES:
            raise StripeApiError(400, f"Invalid locale: {locale}", param="locale")
        methods_param = params.get("payment_method_types", {})
        methods = [methods_param[k] for k in sorted(methods_param, key=int)] if isinstance(methods_param, dict) else []
        if any(m not in PAYMENT_METHOD_TYPES for m in methods):
            raise StripeApiError(400, f"Invalid payment_method_types: {methods}", param="payment_method_types")
        reference = params.get("client_reference_id")
        if reference is not None and (not isinstance(reference, str) or len(reference) > 200):
            raise StripeApiError(400, "Invalid client_reference_id", param="client_reference_id")
        intent_data = params.get("payment_intent_data", {})
        if not isinstance(intent_data, dict) or set(intent_data) - {"metadata"}:
            raise StripeApiError(400, "Invalid payment_intent_data", param="payment_intent_data")
        now = int(time.time())
        expires_at = now + CHECKOUT_TTL_S
        if params.get("expires_at") is not None:
            expires_at = _int_param(params, "expires_at", "")
            if not now + 1800 <= expires_at <= now + CHECKOUT_TTL_S:
                raise StripeApiError(400, "expires_at must be 30 minutes to 24 hours ahead", param="expires_at")
        session_id = _id("cs_test_", 58)
        intent = SimPaymentIntent(
            _id("pi_"), total, currency, _metadata(intent_data.get("metadata"), "payment_intent_data[metadata]"), now
        )
        session = SimSession(
            id=session_id,
            amount=total,
            currency=currency,
            name=name,
            client_reference_id=reference,
            metadata=_metadata(params.get("metadata"), "metadata"),
            success_url=success_url if isinstance(success_url, str) else "",
            cancel_url=cancel_url if isinstance(cancel_url, str) else None,
            locale=locale,
            payment_method_types=methods or ["card"],
            created=now,
            expires_at=expires_at,
            url=f"{self.base_url}/c/pay/{session_id}",
            intent=intent,
        )
        self.sessions[session_id] = session
        self.intents[intent.id] = intent
        return session

    @staticmethod
    def _check_amount(amount: int, currency: str) -> None:
        if amount > MAX_AMOUNT:
            raise StripeApiError(400, "Amount must be no more than 99999999", code="amount_too_large", param="amount")
        if currency == "isk" and amount % 100:
            raise StripeApiError(
                400,
                "Invalid amount. Currency ISK has become effectively zero-decimal and charged amounts must be evenly"
                " divisible by 100. See https://stripe.com/docs/currencies#special-cases for more information.",
                code="invalid_charge_amount_no_decimal_compatible",
                param="amount",
            )
        if currency in THREE_DECIMAL and amount % 10:
            # The code for this one is not documented where we looked; Stripe's generic one is used.
            raise StripeApiError(
                400, f"Amounts in {currency.upper()} must end in 0", code="invalid_charge_amount", param="amount"
            )

    async def _get_session(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        try:
            self._authenticate(request)
            record = await self._record(request)
            session = self.sessions.get(request.match_info["id"])
            if session is None:
                raise StripeApiError(
                    404,
                    f"No such checkout.session: '{request.match_info['id']}'",
                    code="resource_missing",
                    param="session",
                )
            expand = request.query.getall("expand[]", [])
            unknown = [e for e in expand if e != "payment_intent"]
            if unknown:
                raise StripeApiError(400, f"This property cannot be expanded ({unknown[0]}).", param="expand")
            record.status = 200
            return self._response(200, session.json(expand_intent=bool(expand)), request_id)
        except StripeApiError as exc:
            return self._error(exc, request_id)

    async def _get_intent(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        try:
            self._authenticate(request)
            await self._record(request)
            intent = self.intents.get(request.match_info["id"])
            if intent is None or not any(s.intent is intent and s.intent_shown for s in self.sessions.values()):
                raise StripeApiError(
                    404, f"No such payment_intent: '{request.match_info['id']}'", code="resource_missing"
                )
            return self._response(200, intent.json(), request_id)
        except StripeApiError as exc:
            return self._error(exc, request_id)

    async def _get_refund(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        try:
            self._authenticate(request)
            await self._record(request)
            refund = self.refunds.get(request.match_info["id"])
            if refund is None:
                raise StripeApiError(404, f"No such refund: '{request.match_info['id']}'", code="resource_missing")
            return self._response(200, refund.json(), request_id)
        except StripeApiError as exc:
            return self._error(exc, request_id)

    async def _create_refund(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        record: RecordedRequest | None = None
        try:
            self._authenticate(request)
            record = await self._record(request)
            replay = self._replay(request, record, request_id)
            if replay is not None:
                record.status = replay.status
                return replay
            refund = self._new_refund(_nested(record.form), request_id, request.headers.get("Idempotency-Key"))
            body = refund.json()
            self._save(request, record, body, request_id)
            record.status = 200
            return self._response(200, body, request_id)
        except StripeApiError as exc:
            if record is not None:
                record.status = exc.status
            return self._error(exc, request_id)

    def _new_refund(self, params: dict[str, Any], request_id: str, idempotency_key: str | None) -> SimRefund:
        unknown = sorted(set(params) - REFUND_PARAMS)
        if unknown:
            raise StripeApiError(
                400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
            )
        charge: SimCharge | None = None
        if "payment_intent" in params:
            intent = self.intents.get(params["payment_intent"])
            if intent is None:
                raise StripeApiError(
                    400,
                    f"No such payment_intent: '{params['payment_intent']}'",
                    code="resource_missing",
                    param="payment_intent",
                )
            if intent.status != "succeeded" or intent.latest_charge is None:
                raise StripeApiError(
                    400,
                    f"This PaymentIntent ({intent.id}) does not have a successful charge to refund.",
                    code="payment_intent_unexpected_state",
                    param="payment_intent",
                )
            charge = self.charges[intent.latest_charge]
        elif "charge" in params:
            charge = self.charges.get(params["charge"])
            if charge is None:
                raise StripeApiError(
                    400, f"No such charge: '{params['charge']}'", code="resource_missing", param="charge"
                )
        else:
            raise StripeApiError(
                400,
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
            )
        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeApiError(400, f"Invalid reason: {reason}", param="reason")
        remaining = charge.amount - charge.amount_refunded
        amount = _int_param(params, "amount", "", minimum=1) if "amount" in params else remaining
        if charge.disputed:
            raise StripeApiError(
                400, f"Charge {charge.id} has been charged back; cannot issue a refund.", code="charge_disputed"
            )
        if remaining == 0:
            raise StripeApiError(400, f"Charge {charge.id} has already been refunded.", code="charge_already_refunded")
        if amount > remaining:
            raise StripeApiError(
                400,
                f"Refund amount ({self._money(amount, charge.currency)}) is greater than unrefunded amount on charge"
                f" ({self._money(remaining, charge.currency)})",
                code="amount_too_large",
                param="amount",
            )
        now = int(time.time())
        refund = SimRefund(
            _id("re_"),
            amount,
            charge.currency,
            charge.id,
            charge.payment_intent,
            _metadata(params.get("metadata"), "metadata"),
            reason,
            now,
            status="succeeded" if self.refunds_succeed_at_once else "pending",
        )
        self.refunds[refund.id] = refund
        charge.amount_refunded += amount
        origin = {"id": request_id, "idempotency_key": idempotency_key}
        self._emit("refund.created", refund.json(), request=origin)
        if self.send_noise_events:
            self._emit("charge.refunded", charge.json(), request=origin)
        if refund.status == "pending":
            self._host.tasks.spawn(self._settle_refund(refund.id))
        return refund

    @staticmethod
    def _money(amount: int, currency: str) -> str:
        exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
        return f"{Decimal(amount).scaleb(-exponent)} {currency.upper()}"

    async def _settle_refund(self, refund_id: str) -> None:
        await asyncio.sleep(self.refund_settle_s)
        refund = self.refunds[refund_id]
        if refund.status == "pending":
            refund.status = "succeeded"
            self._emit("refund.updated", refund.json(), previous={"status": "pending", "pending_reason": "processing"})

    # --- the hosted page ----------------------------------------------------------------------

    async def _hosted_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="Something went wrong", content_type="text/html")
        if session.status != "open":
            return web.Response(text="<p>This Checkout Session is no longer active.</p>", content_type="text/html")
        buttons = "".join(
            f'<button name="outcome" value="{o}">{o}</button>' for o in ("succeeded", "declined", "expired")
        )
        html = (
            f"<!doctype html><title>Stripe Checkout (simulated)</title><h1>{session.name}</h1>"
            f"<p>{self._money(session.amount, session.currency)}</p>"
            f'<form method="post">{buttons}</form>'
        )
        return web.Response(text=html, content_type="text/html")

    async def _hosted_submit(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="Something went wrong")
        outcome = (await request.post()).get("outcome")
        if session.status != "open":
            return web.Response(text="This Checkout Session is no longer active.")
        if outcome == "succeeded":
            self._pay(session)
            raise web.HTTPSeeOther(session.success_url)
        if outcome == "declined":
            self._decline(session)
            return web.Response(text="Your card was declined.")
        if outcome == "expired":
            self._expire(session)
            return web.Response(text="This Checkout Session is no longer active.")
        if outcome == "processing":
            self._start_delayed(session)
            raise web.HTTPSeeOther(session.success_url)
        return web.Response(status=400, text="unknown outcome")

    def _charge(self, session: SimSession) -> SimCharge:
        charge = SimCharge(_id("ch_"), session.intent.id, session.amount, session.currency)
        self.charges[charge.id] = charge
        session.intent.latest_charge = charge.id
        return charge

    def _pay(self, session: SimSession) -> None:
        session.intent_shown = True
        session.intent.status = "succeeded"
        session.intent.last_payment_error = None
        self._charge(session)
        session.status, session.payment_status = "complete", "paid"
        if self.send_noise_events:
            self._emit("payment_intent.succeeded", session.intent.json())
        self._emit("checkout.session.completed", session.json())

    def _decline(self, session: SimSession) -> None:
        session.intent_shown = True
        session.intent.status = "requires_payment_method"
        failed = SimCharge(_id("ch_"), session.intent.id, session.amount, session.currency)
        session.intent.latest_charge = failed.id
        session.intent.last_payment_error = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
            "charge": failed.id,
        }
        self._emit("payment_intent.payment_failed", session.intent.json())

    def _expire(self, session: SimSession) -> None:
        session.status = "expired"
        if session.intent_shown and session.intent.status != "succeeded":
            session.intent.status = "canceled"
        self._emit("checkout.session.expired", session.json())

    def _start_delayed(self, session: SimSession) -> None:
        session.intent_shown = True
        session.intent.status = "processing"
        session.status, session.payment_status = "complete", "unpaid"
        self._emit("checkout.session.completed", session.json())

    def finish_delayed(self, session_id: str, succeeded: bool) -> None:
        """A delayed method (bank debit, voucher) started with ``act_delayed`` settles."""
        session = self.sessions[session_id]
        assert session.intent.status == "processing", session.intent.status
        if succeeded:
            session.intent.status = "succeeded"
            self._charge(session)
            session.payment_status = "paid"
            self._emit("checkout.session.async_payment_succeeded", session.json())
        else:
            session.intent.status = "requires_payment_method"
            self._emit("checkout.session.async_payment_failed", session.json())

    # --- Protocol: the driver, disputes, webhooks ---------------------------------------------

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        await self._submit(checkout, outcome)

    async def act_delayed(self, checkout: Checkout) -> None:
        """The driver pays with a delayed method: the session completes unpaid, see ``finish_delayed``."""
        await self._submit(checkout, "processing")

    async def _submit(self, checkout: Checkout, outcome: HostedOutcome) -> None:
        assert isinstance(checkout.next_step, Redirect), checkout.next_step
        assert self._host.http is not None, "start() first"
        async with self._host.http.post(
            checkout.next_step.url, data={"outcome": outcome}, allow_redirects=False
        ) as response:
            assert response.status in (200, 303), (response.status, await response.text())

    def _paid_charge(self, processor_reference: str) -> tuple[SimSession, SimCharge]:
        session = self.sessions[processor_reference]
        assert session.payment_status == "paid" and session.intent.latest_charge, "only a paid session is disputed"
        return session, self.charges[session.intent.latest_charge]

    async def open_dispute(self, processor_reference: str, amount_minor: int, *, inquiry: bool = False) -> str:
        """A chargeback (``needs_response``, funds withdrawn) or, with ``inquiry``, a pre-dispute
        inquiry (``warning_needs_response``: nothing withdrawn until it escalates)."""
        session, charge = self._paid_charge(processor_reference)
        dispute = SimDispute(
            _id("du_"),
            stripe_amount(amount_minor, session.currency),
            session.currency,
            charge.id,
            session.intent.id,
            int(time.time()),
            "warning_needs_response" if inquiry else "needs_response",
        )
        self.disputes[dispute.id] = dispute
        charge.disputed = not inquiry
        self._emit("charge.dispute.created", dispute.json())
        if not inquiry:
            self._emit("charge.dispute.funds_withdrawn", dispute.json())
        return dispute.id

    async def escalate_inquiry(self, dispute_id: str) -> None:
        dispute = self.disputes[dispute_id]
        assert dispute.status.startswith("warning_"), dispute.status
        previous = dispute.status
        dispute.status = "needs_response"
        self.charges[dispute.charge].disputed = True
        self._emit("charge.dispute.updated", dispute.json(), previous={"status": previous})
        self._emit("charge.dispute.funds_withdrawn", dispute.json())

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        dispute = self.disputes[dispute_id]
        if dispute.status.startswith("warning_"):
            dispute.status = "warning_closed"  # an inquiry ends without a chargeback
        else:
            dispute.status = "won" if won else "lost"
        self._emit("charge.dispute.closed", dispute.json())
        if dispute.status == "won":
            self._emit("charge.dispute.funds_reinstated", dispute.json())

    async def fail_refund(self, refund_id: str, failure_reason: str = "expired_or_canceled_card") -> None:
        """A refund that had succeeded fails after all (e.g. the card was closed)."""
        refund = self.refunds[refund_id]
        assert refund.status == "succeeded", refund.status
        refund.status = "failed"
        refund.failure_reason = failure_reason
        refund.failure_balance_transaction = _id("txn_")
        self.charges[refund.charge].amount_refunded -= refund.amount
        previous = {"status": "succeeded", "failure_reason": None, "failure_balance_transaction": None}
        self._emit("refund.updated", refund.json(), previous=previous)
        self._emit("refund.failed", refund.json())

    def _event(
        self,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
        request: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        return {
            "id": _id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": request or {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    @staticmethod
    def _body(event: Mapping[str, Any]) -> bytes:
        return stripe_json(event).encode()

    def signature_header(self, body: bytes, timestamp: int, secret: str | None = None) -> str:
        """``t=…,v1=…`` by the official SDK, one more ``v1`` per rolled secret."""
        header: str = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret or self.webhook_secret, timestamp
        )
        for other in self.also_sign_with:
            extra: str = stripe.WebhookSignature.generate_signature_header(body.decode(), other, timestamp)
            header += "," + extra.split(",", 1)[1]
        return header

    def _emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous: dict[str, Any] | None = None,
        request: dict[str, Any] | None = None,
    ) -> None:
        event = self._event(event_type, obj, previous, request)
        self.events.append(event)
        body = self._body(event)
        if self.faults.drop:
            self.dropped.append(event)
        elif self.faults.hold:
            self._held.append(_Held(event, body))
        else:
            for _ in range(self.faults.copies):
                self._host.tasks.spawn(self._deliver(event, body))

    async def _deliver(self, event: Mapping[str, Any], body: bytes, first_attempt: int = 1) -> None:
        """One delivery, with Stripe's retries (compressed): each attempt signed afresh."""
        if self.webhook_url is None:  # no endpoint registered: Stripe sends nothing
            self.deliveries.append(Delivery(str(event["id"]), str(event["type"]), 0, None))
            return
        # Attempts are numbered from 1 here; given up after the last retry, as Stripe does.
        await with_retries(lambda n: self._attempt(event, body, n + 1), self.retry_backoffs_s, first=first_attempt - 1)

    async def _attempt(self, event: Mapping[str, Any], body: bytes, attempt: int) -> bool:
        status: int | None = None  # None: no answer (or no endpoint to send to)
        accepted = False
        if self._host.http is not None and self.webhook_url is not None:
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": USER_AGENT,
                "Stripe-Signature": self.signature_header(body, int(time.time())),
            }
            answer = await post_webhook(self._host.http, self.webhook_url, body, headers, WEBHOOK_TIMEOUT_S)
            status, accepted = answer.status, answer.accepted
        self.deliveries.append(Delivery(str(event["id"]), str(event["type"]), attempt, status))
        return accepted

    async def _retry_later(self, event: Mapping[str, Any], body: bytes) -> None:
        if self.retry_backoffs_s:
            await asyncio.sleep(self.retry_backoffs_s[0])
            await self._deliver(event, body, first_attempt=2)

    async def release(self) -> None:
        """The held webhooks, newest first: each first attempt in that order; a failed one is retried
        in the background, as its own delivery, without holding up the older ones."""
        held, self._held = self._held, []
        for item in reversed(held):
            for _ in range(self.faults.copies):
                if self.webhook_url is None:
                    await self._deliver(item.event, item.body)
                elif not await self._attempt(item.event, item.body, 1):
                    self._host.tasks.spawn(self._retry_later(item.event, item.body))

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        return self._signed_webhook(processor_reference, outcome, age_s, self.webhook_secret)

    def _signed_webhook(self, processor_reference: str, outcome: str, age_s: int, secret: str) -> WebhookRequest:
        session = self.sessions[processor_reference]
        if outcome == "succeeded":
            view = session.json()
            view.update(status="complete", payment_status="paid", payment_intent=session.intent.id, url=None)
            event = self._event("checkout.session.completed", view)
        else:
            intent = session.intent.json()
            intent.update(
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                },
            )
            event = self._event("payment_intent.payment_failed", intent)
        body = self._body(event)
        now = time.time()
        headers = CIMultiDict(
            {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": USER_AGENT,
                "Stripe-Signature": self.signature_header(body, int(now) - age_s, secret),
            }
        )
        path = urlsplit(self.webhook_url).path if self.webhook_url else "/webhooks/stripe"
        return WebhookRequest("POST", path, {}, CIMultiDictProxy(headers), body, "127.0.0.1", now)

    def with_other_secret(self) -> StripeSimulatorWithOtherSecret:
        return StripeSimulatorWithOtherSecret(self)


class StripeSimulatorWithOtherSecret:
    """This simulator, but its ``signed_webhook`` signs with a secret the adapter does not know."""

    def __init__(self, simulator: StripeSimulator) -> None:
        self._simulator = simulator
        self.other_secret = _id("whsec_", 32)

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        return self._simulator._signed_webhook(processor_reference, outcome, age_s, self.other_secret)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._simulator, name)
