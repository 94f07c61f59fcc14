"""Mercado Pago's wire format, as pure functions (no I/O): amounts, the preference and refund bodies,
the webhook signature, notifications, and payment/chargeback objects turned into events.

Sources (``/work/shared/reference/processors.md`` §7 unless said otherwise):

- Preferences: ``POST /checkout/preferences`` with ``items[].{title, quantity, unit_price, currency_id}``,
  ``external_reference``, ``back_urls``, ``auto_return``, ``notification_url``, ``expires``/
  ``expiration_date_to``, ``payment_methods``, ``metadata``; the answer's ``id``, ``init_point`` and
  ``sandbox_init_point`` (SDK ``mercadopago`` 3.6.0 ``resources/preference.py`` docstring). "The
  payment method Cash in account cannot be excluded" and ``excluded_payment_types``
  (mercadopago.com.br/developers/en/docs/checkout-pro/additional-settings/payment-methods).
- ``X-Idempotency-Key``, 1 to 64 characters (SDK ``config/request_options.py``); 409 idempotency
  conflict, 423 locked and 424 failed dependency are retryable (SDK ``errors/exceptions.py``).
- Payments: ``GET /v1/payments/{id}``, ``GET /v1/payments/search`` (``external_reference`` filter),
  ``POST /v1/payments/{id}/refunds`` (SDK ``resources/payment.py``, ``resources/refund.py``). Statuses
  and status details, including ``charged_back`` with ``in_process`` ("the payer disowning it"),
  ``settled`` ("the money was retained after a chargeback process") and ``reimbursed`` ("the money was
  reimbursed"), and ``cancelled``/``expired`` (mercadopago.com.pe/developers/en/docs/checkout-api/
  response-handling/query-results).
- Chargebacks: ``GET /v1/chargebacks/{id}`` → ``{id, payments: [int], currency, amount, reason,
  coverage_applied, …}`` (mercadopago.com.ar/developers/en/docs/checkout-pro/additional-content/
  chargebacks/how-to-manage; reference/chargebacks/resource); their notification is ``type``
  ``topic_chargebacks_wh`` with ``data.id`` the chargeback (checkout-pro/chargebacks/notifications).
- Webhook signature: exactly SDK 3.6.0 ``mercadopago/webhook/validator.py``: ``x-signature:
  ts=<seconds>,v1=<hex>``; manifest ``id:<data.id>;request-id:<x-request-id>;ts:<ts>;`` with a pair
  left out when its value is missing; ``data.id`` from the query string, as received (SDK ≥ 3.3.0:
  "MercadoPago signs the notification using the original casing"); HMAC-SHA256 keyed with the
  secret, hex. Mercado Pago's docs ask for a lower-cased ``data.id``: both are accepted (payment ids
  are digits, where the two agree). No tolerance: the SDK has none by default and Mercado Pago
  documents none, nor whether its retries (every 15 minutes) are signed afresh; a replay is harmless
  anyway, because events are read from the API, never from the body.

Amounts: Mercado Pago takes and states decimal numbers in the currency's unit (``unit_price``,
``transaction_amount``, refund ``amount``). Ours are exact minor units (``shared.money``); a number
finer than the currency's minor unit is refused, never rounded. JSON numbers arrive as Python floats
(``send_request`` parses with ``json``): ``repr`` of a float gives back the shortest decimal text that
parses to it, which is the text Mercado Pago sent for any amount of up to 15 significant digits.

[UNVERIFIED]: whether the preferences endpoint honours ``X-Idempotency-Key`` (the SDK sends one on
every POST; the idempotency docs name payments); whether deliveries to ``notification_url`` carry
``x-signature`` like those to the URL configured under Webhooks; ``source_news`` in their query."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
)
from shared.money import MoneyError, currency_exponent, from_major, require_minor, to_major

PREFERENCES_PATH: Final = "/checkout/preferences"
PAYMENTS_PATH: Final = "/v1/payments"
PAYMENTS_SEARCH_PATH: Final = "/v1/payments/search"
CHARGEBACKS_PATH: Final = "/v1/chargebacks"

SIGNATURE_HEADER: Final = "x-signature"
REQUEST_ID_HEADER: Final = "x-request-id"
IDEMPOTENCY_HEADER: Final = "X-Idempotency-Key"
IDEMPOTENCY_KEY_MAX: Final = 64

# Notification topics we act on (the query's ``type``); every other topic (``merchant_order``, IPN
# ``?topic=…&id=…`` deliveries, claims, …) is acknowledged and ignored.
PAYMENT_TOPIC: Final = "payment"
CHARGEBACK_TOPICS: Final = frozenset({"topic_chargebacks_wh", "chargebacks"})
ACTED_TOPICS: Final = frozenset({PAYMENT_TOPIC}) | CHARGEBACK_TOPICS

# The currencies Mercado Pago's sites charge in (ARS, BRL, CLP, COP, MXN, PEN, UYU); shared.money
# decides their exponents and refuses those it does not know.
MERCADOPAGO_CURRENCIES: Final = frozenset({"ARS", "BRL", "CLP", "COP", "MXN", "PEN", "UYU"})

# Our method ids → the payment types (``payment_type_id``) that carry them. The preference excludes
# every other excludable type; ``account_money`` (the driver's Mercado Pago balance) cannot be
# excluded, so it is always offered too.
METHOD_PAYMENT_TYPES: Final[Mapping[str, frozenset[str]]] = {
    "pix": frozenset({"bank_transfer"}),
    "pse": frozenset({"bank_transfer"}),
    "boleto": frozenset({"ticket"}),
    "oxxo": frozenset({"ticket"}),
    "card": frozenset({"credit_card", "debit_card", "prepaid_card"}),
    "account_money": frozenset(),
}
EXCLUDABLE_PAYMENT_TYPES: Final = ("ticket", "atm", "bank_transfer", "credit_card", "debit_card", "prepaid_card")

# Payment statuses meaning the money was taken (approved once): refunds and chargebacks are of these.
TAKEN_STATUSES: Final = frozenset({"approved", "refunded", "charged_back", "in_mediation"})
PENDING_STATUSES: Final = frozenset({"pending", "in_process", "authorized"})
DISPUTE_KINDS: Final[Mapping[str, EventKind]] = {
    "in_process": EventKind.DISPUTE_OPENED,
    "settled": EventKind.DISPUTE_LOST,
    "reimbursed": EventKind.DISPUTE_WON,
}
TITLE_MAX = 256
_NUMERIC_ID = re.compile(r"[0-9]{1,30}")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class WireError(ValueError):
    """A Mercado Pago object that is not the shape documented for it."""


# --- amounts -----------------------------------------------------------------------------------


def to_mp_amount(amount_minor: int, currency: str) -> Decimal:
    """Our minor units as Mercado Pago's decimal amount (2500 BRL → Decimal("25.00"))."""
    if currency not in MERCADOPAGO_CURRENCIES:
        raise MoneyError(f"Mercado Pago does not charge in {currency}")
    amount = require_minor(amount_minor, "amount_minor")
    if amount <= 0:
        raise MoneyError("an amount must be positive")
    return to_major(amount, currency)


def from_mp_amount(value: object, currency: str) -> int:
    """Mercado Pago's decimal number (as parsed from JSON) as our minor units; MoneyError if not exact."""
    if isinstance(value, bool):
        raise MoneyError("an amount must be a number")
    try:
        if isinstance(value, int):
            major = Decimal(value)
        elif isinstance(value, float):
            major = Decimal(repr(value))
        elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,15}(\.[0-9]{1,6})?", value):
            major = Decimal(value)
        else:
            raise MoneyError(f"an amount must be a decimal number, not {value!r}")
    except InvalidOperation:
        raise MoneyError(f"not a decimal amount: {value!r}") from None
    if not major.is_finite() or major < 0:
        raise MoneyError(f"not an amount: {value!r}")
    return from_major(major, currency)


def json_bytes(body: Mapping[str, Any]) -> bytes:
    """``body`` as JSON, with each Decimal written as the exact JSON number it is (``json`` has no
    decimal type, and a float could change the digits)."""
    numbers: dict[str, str] = {}

    def encode(value: object) -> str:
        if isinstance(value, Decimal):
            token = f"@@decimal-{uuid.uuid4().hex}@@"
            numbers[token] = format(value, "f")
            return token
        raise TypeError(f"{type(value).__name__} is not JSON")

    text = json.dumps(body, default=encode, ensure_ascii=False, separators=(",", ":"))
    for token, number in numbers.items():
        text = text.replace(f'"{token}"', number)
    return text.encode()


# --- requests ----------------------------------------------------------------------------------


def payment_methods_of(method: str) -> dict[str, Any]:
    """The preference's ``payment_methods`` restricting Checkout Pro to our method (and the driver's
    balance, which cannot be excluded). An id we do not map leaves Checkout Pro's full choice."""
    types = METHOD_PAYMENT_TYPES.get(method)
    if types is None:
        return {}
    excluded = [{"id": t} for t in EXCLUDABLE_PAYMENT_TYPES if t not in types]
    return {"excluded_payment_types": excluded, "installments": 1}


def preference_body(request: CheckoutRequest, expires_at: datetime) -> dict[str, Any]:
    """The body of ``POST /checkout/preferences`` for a top-up: one item of the whole amount, our
    reference as ``external_reference`` (the payment echoes it), the driver back to our return URL
    whatever the outcome, our webhook URL as ``notification_url``, and an expiry."""
    title = (request.description.strip() or "Top-up")[:TITLE_MAX]
    body: dict[str, Any] = {
        "items": [
            {
                "id": request.reference,
                "title": title,
                "quantity": 1,
                "unit_price": to_mp_amount(request.amount_minor, request.currency),
                "currency_id": request.currency,
            }
        ],
        "external_reference": request.reference,
        "back_urls": {"success": request.return_url, "pending": request.return_url, "failure": request.return_url},
        "auto_return": "approved",
        "notification_url": request.webhook_url,
        "expires": True,
        "expiration_date_to": expires_at.isoformat(timespec="milliseconds"),
        "metadata": {"payment_id": str(request.payment_id), "order_id": str(request.order_id)},
    }
    methods = payment_methods_of(request.method)
    if methods:
        body["payment_methods"] = methods
    return body


def refund_body(amount_minor: int, currency: str) -> dict[str, Any]:
    """``POST /v1/payments/{id}/refunds``: always with the amount (without one, Mercado Pago refunds
    whatever is left)."""
    return {"amount": to_mp_amount(amount_minor, currency)}


def idempotency_key(key: str) -> str:
    """Our key as Mercado Pago takes it (1 to 64 characters): as it is when it fits, else its SHA-256."""
    if 1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable():
        return key
    return hashlib.sha256(key.encode()).hexdigest()


# --- answers -----------------------------------------------------------------------------------


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WireError(f"{key} must be a string")
    return str(value)


def _required(obj: Mapping[str, Any], key: str) -> str:
    value = _text(obj, key)
    if value is None:
        raise WireError(f"{key} is missing")
    return value


@dataclass(frozen=True)
class Preference:
    id: str
    init_point: str | None
    sandbox_init_point: str | None
    external_reference: str | None
    expires: bool
    expiration_date_to: datetime | None
    amount_minor: int | None  # the one item's, when it is one item in one currency
    currency: str | None

    @classmethod
    def from_json(cls, obj: Any) -> Preference:
        if not isinstance(obj, dict):
            raise WireError("a preference must be a JSON object")
        expiry = _text(obj, "expiration_date_to")
        try:
            expiration = datetime.fromisoformat(expiry) if expiry else None
        except ValueError:
            raise WireError("expiration_date_to is not an ISO 8601 time") from None
        if expiration is not None and expiration.tzinfo is None:
            raise WireError("expiration_date_to has no time zone")
        items = obj.get("items")
        amount: int | None = None
        currency: str | None = None
        if isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict):
            item = items[0]
            currency = _text(item, "currency_id")
            quantity = item.get("quantity")
            if currency is not None and quantity == 1:
                amount = from_mp_amount(item.get("unit_price"), currency)
        return cls(
            id=_required(obj, "id"),
            init_point=_text(obj, "init_point"),
            sandbox_init_point=_text(obj, "sandbox_init_point"),
            external_reference=_text(obj, "external_reference"),
            expires=obj.get("expires") is True,
            expiration_date_to=expiration,
            amount_minor=amount,
            currency=currency,
        )

    def expired_at(self, now: datetime) -> bool:
        return self.expires and self.expiration_date_to is not None and self.expiration_date_to <= now


@dataclass(frozen=True)
class Refund:
    id: str
    status: str | None  # approved | in_process | rejected | cancelled | authorized
    amount: object  # Mercado Pago's number, converted with the payment's currency

    @classmethod
    def from_json(cls, obj: Any) -> Refund:
        if not isinstance(obj, dict):
            raise WireError("a refund must be a JSON object")
        return cls(id=_required(obj, "id"), status=_text(obj, "status"), amount=obj.get("amount"))


@dataclass(frozen=True)
class Payment:
    id: str
    status: str
    status_detail: str | None
    external_reference: str | None
    currency: str | None  # None: a currency evtopup never charges in (not ours)
    amount_minor: int | None
    refunds: Sequence[Refund] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, obj: Any) -> Payment:
        if not isinstance(obj, dict):
            raise WireError("a payment must be a JSON object")
        payment_id = _required(obj, "id")
        currency = _text(obj, "currency_id")
        amount: int | None = None
        if currency is not None:
            try:
                currency_exponent(currency)
            except MoneyError:
                currency = None
        if currency is not None:
            amount = from_mp_amount(obj.get("transaction_amount"), currency)
        refunds = obj.get("refunds")
        refunds = [] if refunds is None else refunds
        if not isinstance(refunds, list):
            raise WireError("refunds must be a list")
        return cls(
            id=payment_id,
            status=_required(obj, "status"),
            status_detail=_text(obj, "status_detail"),
            external_reference=_text(obj, "external_reference"),
            currency=currency,
            amount_minor=amount,
            refunds=tuple(Refund.from_json(r) for r in refunds),
        )

    @property
    def taken(self) -> bool:
        return self.status in TAKEN_STATUSES

    @property
    def ref(self) -> PaymentRef:
        # Only a payment that took the money names itself: refunds go to it. A declined attempt on
        # the same preference is found by our reference alone.
        ids = {"payment": self.id} if self.taken else {}
        return PaymentRef(merchant_reference=self.external_reference, ids=ids)


@dataclass(frozen=True)
class Chargeback:
    id: str
    payments: Sequence[str]

    @classmethod
    def from_json(cls, obj: Any) -> Chargeback:
        if not isinstance(obj, dict):
            raise WireError("a chargeback must be a JSON object")
        payments = obj.get("payments")
        if not isinstance(payments, list) or not payments:
            raise WireError("a chargeback names its payments")
        ids = []
        for payment in payments:
            if isinstance(payment, bool) or not isinstance(payment, int | str) or not str(payment).isdigit():
                raise WireError("payment ids are numbers")
            ids.append(str(payment))
        return cls(id=_required(obj, "id"), payments=tuple(ids))


def parse_search(body: Any) -> list[Payment]:
    """``GET /v1/payments/search`` → ``{"paging": {…}, "results": [payment, …]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise WireError("a search answer has results")
    return [Payment.from_json(result) for result in body["results"]]


@dataclass(frozen=True)
class ErrorBody:
    """``{"message", "error", "status", "cause": [{"code", "description"}]}``; empty when not that."""

    error: str | None = None
    message: str | None = None


def parse_error(body: Any) -> ErrorBody:
    if not isinstance(body, dict):
        return ErrorBody()
    error, message = body.get("error"), body.get("message")
    return ErrorBody(error if isinstance(error, str) else None, message if isinstance(message, str) else None)


# --- events ------------------------------------------------------------------------------------


def payment_events(payment: Payment) -> list[ProcessorEvent]:
    """Everything a payment's current state says, as events whose ids name the statement (not the
    notification), so the same state fetched again is the same events: ``payment:<id>:<kind>`` for its
    outcome, ``refund:<id>:<kind>`` per refund, ``chargeback:<payment>:<kind>`` for a chargeback
    (keyed by payment: the payment object does not name its chargeback case, and a case is per payment).
    A payment that is not ours (no reference, a currency evtopup never charges in) says nothing."""
    if payment.external_reference is None or payment.currency is None or payment.amount_minor is None:
        return []
    ref, currency, amount = payment.ref, payment.currency, payment.amount_minor
    reason = payment.status_detail

    def event(key: str, kind: EventKind, amount_minor: int, why: str | None = None) -> ProcessorEvent:
        return ProcessorEvent(f"payment:{key}:{kind}", ref, kind, amount_minor, currency, why)

    status = payment.status
    if status in PENDING_STATUSES:
        return [event(payment.id, EventKind.PENDING, amount)]
    if status == "rejected":
        return [event(payment.id, EventKind.FAILED, amount, reason)]
    if status in ("cancelled", "canceled"):
        kind = EventKind.EXPIRED if payment.status_detail == "expired" else EventKind.FAILED
        return [event(payment.id, kind, amount, reason)]
    if status not in TAKEN_STATUSES:
        raise WireError(f"unknown payment status {status!r}")
    # Paid once, whatever happened since: a lost approval heals from any later state.
    events = [event(payment.id, EventKind.SUCCEEDED, amount)]
    for refund in payment.refunds:
        if refund.status == "approved":
            kind = EventKind.REFUNDED
        elif refund.status in ("rejected", "cancelled"):
            kind = EventKind.REFUND_FAILED
        else:
            continue
        refunded = from_mp_amount(refund.amount, currency)
        events.append(ProcessorEvent(f"refund:{refund.id}:{kind}", ref, kind, refunded, currency, None, refund.id))
    if status == "charged_back":
        kind = DISPUTE_KINDS.get(payment.status_detail or "", EventKind.DISPUTE_OPENED)
        cause = f"chargeback:{payment.id}"
        events.append(ProcessorEvent(f"{cause}:{kind}", ref, kind, amount, currency, reason, cause))
    return events


def status_event(reference: str, payments: Sequence[Payment], preference_expired: bool) -> ProcessorEvent:
    """Where our payment stands, from every Mercado Pago payment made on its preference (newest
    first, as the search sorts them): paid if one took the money, pending while one is under way,
    expired once the preference has lapsed with none, else failed when the newest attempt failed."""
    ours = [p for p in payments if p.external_reference == reference and p.currency and p.amount_minor is not None]
    chosen: Payment | None = next((p for p in ours if p.taken), None)
    kind = EventKind.SUCCEEDED
    if chosen is None:
        chosen = next((p for p in ours if p.status in PENDING_STATUSES), None)
        kind = EventKind.PENDING
    if chosen is None:
        if preference_expired or not ours:
            # Nothing paid or tried: the preference alone says whether it may still be.
            bare = EventKind.EXPIRED if preference_expired else EventKind.PENDING
            return ProcessorEvent(f"poll:{reference}:{bare}", PaymentRef(reference), bare, None, None)
        chosen = ours[0]
        kind = EventKind.EXPIRED if chosen.status_detail == "expired" else EventKind.FAILED
    return ProcessorEvent(
        f"poll:{reference}:{kind}",
        chosen.ref,
        kind,
        chosen.amount_minor,
        chosen.currency,
        chosen.status_detail if kind in (EventKind.FAILED, EventKind.EXPIRED) else None,
    )


# --- webhook signature -------------------------------------------------------------------------


def signature_manifest(data_id: str | None, request_id: str | None, ts: str) -> str:
    """``id:<data.id>;request-id:<x-request-id>;ts:<ts>;``, each missing value's pair left out."""
    parts = []
    if data_id:
        parts.append(f"id:{data_id}")
    if request_id:
        parts.append(f"request-id:{request_id}")
    parts.append(f"ts:{ts}")
    return ";".join(parts) + ";"


def compute_signature(secret: str, data_id: str | None, request_id: str | None, ts: str) -> str:
    manifest = signature_manifest(data_id, request_id, ts)
    return hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()


def parse_signature_header(header: str) -> tuple[str | None, list[str]]:
    """``ts=…,v1=…`` → (ts, the v1 hashes), parts split as the SDK does (keys case-insensitive)."""
    ts: str | None = None
    hashes: list[str] = []
    for part in header.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            continue
        if key == "ts":
            ts = value
        elif key == "v1":
            hashes.append(value)
    return ts, hashes


def _clean(value: str | None) -> str | None:
    value = value.strip() if value is not None else None
    return value or None


def verify_signature(secret: str, header: str | None, request_id: str | None, data_id: str | None) -> str:
    """Checks ``x-signature`` over the signed fields; returns the signed ``ts``. ``data_id`` is the
    query's ``data.id`` as received; its lower-cased form (Mercado Pago's docs) is accepted too."""
    header = _clean(header)
    if header is None:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    ts, hashes = parse_signature_header(header)
    # Unix seconds as ASCII digits (``isdigit`` would take other scripts' digits too).
    if ts is None or not re.fullmatch(r"[0-9]{1,13}", ts):
        raise InvalidSignature("signature header has no valid ts")
    if not hashes:
        raise InvalidSignature("signature header has no v1 signature")
    request_id, data_id = _clean(request_id), _clean(data_id)
    ids = [data_id] if data_id is None or data_id == data_id.lower() else [data_id, data_id.lower()]
    expected = [compute_signature(secret, i, request_id, ts).encode() for i in ids]
    # A candidate that is not ASCII cannot match a hex digest; "replace" keeps any header text encodable.
    given = [h.encode("ascii", "replace") for h in hashes]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise InvalidSignature("signature does not match")
    return ts


# --- notifications -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """What a notification names: the topic and resource id from the query (the signed part)."""

    topic: str
    resource_id: str


def acted_notification(query: Mapping[str, str], body: bytes) -> Notification | None:
    """The notification we act on, or None for one we acknowledge and ignore: other topics, and IPN
    deliveries (``?topic=…&id=…``), whose id the signature does not cover. A body naming a topic we
    act on without ``type``/``data.id`` in the query cannot be trusted: refused."""
    topic, data_id = query.get("type"), query.get("data.id")
    if topic is None:
        if query.get("topic") is not None:
            return None  # IPN: the same payment comes as a Webhooks notification too
        body_topic = _body(body).get("type") if body else None
        if body_topic in ACTED_TOPICS:
            raise InvalidSignature("the notification's type and data.id are not in the query: nothing signed names it")
        return None
    if topic not in ACTED_TOPICS:
        return None
    if data_id is None or not _RESOURCE_ID.fullmatch(data_id):
        raise InvalidSignature("a notification without a readable data.id in its query")
    if topic == PAYMENT_TOPIC and not _NUMERIC_ID.fullmatch(data_id):
        raise InvalidSignature("a payment id is a number")
    return Notification(topic, data_id)


def _body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def check_body_agrees(notification: Notification, body: bytes) -> None:
    """The body is not signed: one naming another resource or topic than the signed query is refused."""
    data = _body(body)
    if not data:
        return  # unreadable: parse_notification_body says so (400)
    if "type" in data and data["type"] != notification.topic:
        raise InvalidSignature("the body's type is not the signed query's")
    inner = data.get("data")
    if isinstance(inner, dict) and "id" in inner and str(inner["id"]) != notification.resource_id:
        raise InvalidSignature("the body's data.id is not the signed query's")


def parse_notification_body(body: bytes) -> dict[str, Any]:
    """A Webhooks body: ``{id, live_mode, type, date_created, user_id, api_version, action, data:{id}}``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedWebhook(f"not a Mercado Pago notification: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise MalformedWebhook("not a Mercado Pago notification: no data object")
    return data
