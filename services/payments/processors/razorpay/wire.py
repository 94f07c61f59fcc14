"""Razorpay's wire format, as pure functions (no I/O): amounts, request bodies, the webhook signature,
webhook events and Payment Link states, parsed once into typed values.

Sources (each fact below names its own): ``/work/shared/reference/processors.md`` §5;
razorpay/markdown-docs ``webhooks/payments.md``, ``webhooks/all.md``, ``webhooks/validate-test.md``;
razorpay.com/docs pages (Payment Links entity, create, fetch-all, customise payment methods, UPI
Payment Links, payment-links webhook payloads, normal refunds idempotent, disputes entity); the
official SDK ``razorpay`` 2.0.1 (``utility/utility.py``: the webhook signature) and its test mocks
(razorpay/razorpay-python ``tests/mocks/fake_payment_link.json``, ``fake_refund.json``, ``dispute.json``).

Amounts: "Must be in the smallest unit of the currency" (₹300 → 30000); three-decimal currencies
(KWD, BHD, OMR) are sent in their thousandths with "the last decimal number as 0"; zero-decimal
currencies (JPY) as they are (Payment Links entity page). That is ISO 4217's exponent, which
``shared.money`` keeps; nothing is ever rounded: an amount Razorpay cannot take, or one we cannot
represent, is a :class:`~shared.money.MoneyError`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
)
from shared.money import MoneyError, currency_exponent, require_minor

PAYMENT_LINKS_PATH: Final = "/v1/payment_links"
# The webhook's signature: hex HMAC-SHA256 of the raw body with the webhook secret
# (markdown-docs ``webhooks/validate-test.md``; SDK ``Utility.verify_webhook_signature``).
SIGNATURE_HEADER: Final = "X-Razorpay-Signature"
# "unique for every webhook event" (validate-test.md). Not signed, so not our dedupe key: see
# ``_event_id``.
EVENT_ID_HEADER: Final = "X-Razorpay-Event-Id"
# The refund's idempotency key header: "at least 10 character long and can contain alphabets,
# numbers, hyphens and underscores only" (razorpay.com/docs/api/refunds/normal-refunds-idempotent).
REFUND_IDEMPOTENCY_HEADER: Final = "X-Refund-Idempotency"
REFUND_KEY = re.compile(r"^[A-Za-z0-9_-]{10,}$")

# Our method ids → the key of ``options.checkout.method`` that shows only it ("Customise Payment
# Methods - Options and Method Parameters": card, netbanking, upi, wallet, each true/false). UPI goes
# through a Standard link limited to UPI, not a UPI Payment Link (``upi_link: true``): those "work
# only on Android mobile devices" and "only in Live Mode" (razorpay.com/docs/payments/payment-links/upi).
METHOD_OPTIONS: Final[Mapping[str, str]] = {
    "upi": "upi",
    "card": "card",
    "netbanking": "netbanking",
    "wallet": "wallet",
}

# The events the webhook must send (the rest are acknowledged and ignored); names from
# markdown-docs ``webhooks/all.md``.
LINK_EVENTS: Final = frozenset({"payment_link.paid", "payment_link.expired", "payment_link.cancelled"})
PAYMENT_EVENTS: Final = frozenset({"payment.captured", "payment.failed"})
REFUND_EVENTS: Final = frozenset({"refund.created", "refund.processed", "refund.failed"})
DISPUTE_EVENTS: Final = frozenset(
    {"payment.dispute.created", "payment.dispute.won", "payment.dispute.lost", "payment.dispute.closed"}
)
HANDLED_EVENTS: Final = LINK_EVENTS | PAYMENT_EVENTS | REFUND_EVENTS | DISPUTE_EVENTS
# A dispute in these phases is a chargeback: the amount is at stake. "Retrieval" is "essentially a
# soft chargeback" (a request for information) and "fraud" a bank's suspicion (razorpay.com/docs/
# payments/disputes): they withdraw nothing until lost. [Whether Razorpay deducts at the onset of a
# fraud-phase dispute is not documented; its "lost" still takes the money back here.]
CHARGEBACK_PHASES: Final = frozenset({"chargeback", "pre_arbitration", "arbitration"})


class WireError(ValueError):
    """A Razorpay object that is not the shape documented."""


class UnsupportedCurrency(WireError):
    """A currency evtopup never charges in (so the object is not ours)."""


# --- amounts -------------------------------------------------------------------------------------


def to_razorpay_amount(amount_minor: int, currency: str) -> int:
    """Our minor units as Razorpay's ``amount``: the same count, refused when Razorpay cannot take it."""
    require_minor(amount_minor, "amount_minor")
    if amount_minor <= 0:
        raise MoneyError("amount must be positive")
    if currency_exponent(currency) == 3 and amount_minor % 10:
        raise MoneyError(f"Razorpay takes {currency} only in whole hundredths (the last digit must be 0)")
    return amount_minor


def from_razorpay_amount(value: object, currency: str) -> int:
    """Razorpay's ``amount`` (an integer in the currency's smallest unit) as our minor units."""
    currency_exponent(currency)  # an unknown currency is refused, never guessed
    amount = require_minor(value, "amount")
    if amount < 0:
        raise MoneyError("amount must not be negative")
    return amount


def _currency(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
        raise WireError("currency must be an ISO 4217 code")
    try:
        currency_exponent(value)
    except MoneyError:
        raise UnsupportedCurrency(f"unsupported currency {value!r}") from None
    return value


# --- requests ------------------------------------------------------------------------------------


def payment_link_request(request: CheckoutRequest, *, expire_by: int) -> dict[str, Any]:
    """``POST /v1/payment_links``: a Standard link for the exact amount, our reference as its
    ``reference_id`` (which Razorpay keeps unique: how a retried create finds the first link), the
    driver sent back to the return URL by GET, limited to the driver's chosen method."""
    option = METHOD_OPTIONS.get(request.method)
    if option is None:
        raise WireError(f"Razorpay links cannot be limited to method {request.method!r}")
    return {
        "amount": to_razorpay_amount(request.amount_minor, request.currency),
        "currency": request.currency,
        "accept_partial": False,
        "reference_id": request.reference,
        "description": request.description[:2048],
        "expire_by": expire_by,
        # No customer details: Razorpay would send its own SMS/e-mail with the link, and drivers'
        # contact data is not ours to pass on.
        "notify": {"sms": False, "email": False},
        "reminder_enable": False,
        "notes": {"reference": request.reference, "order_id": str(request.order_id)},
        "callback_url": request.return_url,
        "callback_method": "get",
        "options": {"checkout": {"method": {key: key == option for key in sorted(set(METHOD_OPTIONS.values()))}}},
    }


def refund_request(amount_minor: int, currency: str, reference: str | None, refund_key: str) -> dict[str, Any]:
    """``POST /v1/payments/{id}/refund``: the amount, our keys in ``notes`` (the refund's events carry
    them back) and the refund key as ``receipt``. The same body for a retry: Razorpay refuses a
    different body under the same idempotency key."""
    if not REFUND_KEY.fullmatch(refund_key):
        raise WireError("the refund key is not a valid X-Refund-Idempotency key")
    notes = {"refund_key": refund_key}
    if reference:
        notes["reference"] = reference
    return {
        "amount": to_razorpay_amount(amount_minor, currency),
        "speed": "normal",
        "receipt": refund_key[:40],
        "notes": notes,
    }


# --- the signature -------------------------------------------------------------------------------


def signature_of(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of the raw body, keyed with the webhook secret (UTF-8), as the SDK computes it."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_razorpay_signature(body: bytes, signature: str | None, secrets: Sequence[str]) -> None:
    """Accept the body only if ``signature`` is its HMAC under one of ``secrets`` (the current one and,
    during a rotation, the previous one). Compared in constant time over the exact bytes received."""
    if not signature:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    given = signature.strip().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        if secret and hmac.compare_digest(signature_of(body, secret).encode("ascii"), given):
            matched = True  # no early exit: every secret is tried, whichever matched
    if not matched:
        raise InvalidSignature("the signature does not match the body")


# --- objects -------------------------------------------------------------------------------------


def _get(obj: Mapping[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise WireError(f"{key} must be a {kind.__name__}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WireError(f"{key} must be a string")
    return value


def _notes(obj: Mapping[str, Any]) -> dict[str, str]:
    # Razorpay sends empty notes as ``[]`` (webhooks/payments.md samples).
    notes = obj.get("notes")
    if not isinstance(notes, dict):
        return {}
    return {k: v for k, v in notes.items() if isinstance(k, str) and isinstance(v, str)}


def _ids(**ids: str | None) -> dict[str, str]:
    return {name: value for name, value in ids.items() if value}


@dataclass(frozen=True)
class LinkPayment:
    """One entry of a link's ``payments`` (``{payment_id, amount, method, status, created_at}``,
    SDK mock ``fake_payment_link.json``)."""

    payment_id: str
    status: str


@dataclass(frozen=True)
class RazorpayPaymentLink:
    """The Payment Link entity (``plink_…``): status created | partially_paid | expired | cancelled | paid."""

    id: str
    status: str
    reference_id: str | None
    amount_minor: int
    amount_paid_minor: int
    currency: str
    short_url: str | None
    order_id: str | None
    payments: tuple[LinkPayment, ...]

    @classmethod
    def from_json(cls, obj: Any) -> RazorpayPaymentLink:
        if not isinstance(obj, dict):
            raise WireError("a payment link must be an object")
        link_id = _get(obj, "id", str)
        if not link_id.startswith("plink_"):
            raise WireError("a payment link id starts with plink_")
        currency = _currency(obj.get("currency"))
        raw_payments = obj.get("payments")
        payments: list[LinkPayment] = []
        if isinstance(raw_payments, list):  # null before any payment (the entity samples)
            for entry in raw_payments:
                if isinstance(entry, dict) and isinstance(entry.get("payment_id"), str):
                    status = entry.get("status")
                    payments.append(LinkPayment(entry["payment_id"], status if isinstance(status, str) else ""))
        paid = obj.get("amount_paid", 0)
        return cls(
            id=link_id,
            status=_get(obj, "status", str),
            reference_id=_optional_str(obj, "reference_id"),
            amount_minor=from_razorpay_amount(obj.get("amount"), currency),
            amount_paid_minor=from_razorpay_amount(paid, currency),
            currency=currency,
            short_url=_optional_str(obj, "short_url"),
            order_id=_optional_str(obj, "order_id"),
            payments=tuple(payments),
        )

    @property
    def captured_payment(self) -> str | None:
        return next((p.payment_id for p in self.payments if p.status == "captured"), None)

    @property
    def payment(self) -> PaymentRef:
        return PaymentRef(
            merchant_reference=self.reference_id,
            processor_reference=self.id,
            ids=_ids(order=self.order_id, payment=self.captured_payment),
        )


@dataclass(frozen=True)
class RazorpayPayment:
    """The Payment entity (``pay_…``), as webhooks/payments.md shows it."""

    id: str
    status: str  # created | authorized | captured | refunded | failed
    amount_minor: int
    currency: str
    order_id: str | None
    error: str | None

    @classmethod
    def from_json(cls, obj: Any) -> RazorpayPayment:
        if not isinstance(obj, dict):
            raise WireError("a payment must be an object")
        currency = _currency(obj.get("currency"))
        code, description = _optional_str(obj, "error_code"), _optional_str(obj, "error_description")
        error = ": ".join(part for part in (code, description) if part) or None
        return cls(
            id=_get(obj, "id", str),
            status=_get(obj, "status", str),
            amount_minor=from_razorpay_amount(obj.get("amount"), currency),
            currency=currency,
            order_id=_optional_str(obj, "order_id"),
            error=error,
        )


@dataclass(frozen=True)
class RazorpayRefund:
    """The Refund entity (``rfnd_…``; SDK mock ``fake_refund.json``): status pending | processed | failed."""

    id: str
    status: str
    amount_minor: int
    currency: str
    payment_id: str
    notes: Mapping[str, str]

    @classmethod
    def from_json(cls, obj: Any) -> RazorpayRefund:
        if not isinstance(obj, dict):
            raise WireError("a refund must be an object")
        currency = _currency(obj.get("currency"))
        return cls(
            id=_get(obj, "id", str),
            status=_get(obj, "status", str),
            amount_minor=from_razorpay_amount(obj.get("amount"), currency),
            currency=currency,
            payment_id=_get(obj, "payment_id", str),
            notes=_notes(obj),
        )


@dataclass(frozen=True)
class RazorpayDispute:
    """The Dispute entity (``disp_…``; razorpay.com/docs/api/disputes/entity): status open |
    under_review | won | lost | closed; phase fraud | retrieval | chargeback | pre_arbitration | arbitration."""

    id: str
    status: str
    phase: str | None
    amount_minor: int
    currency: str
    payment_id: str
    reason: str | None

    @classmethod
    def from_json(cls, obj: Any) -> RazorpayDispute:
        if not isinstance(obj, dict):
            raise WireError("a dispute must be an object")
        currency = _currency(obj.get("currency"))
        return cls(
            id=_get(obj, "id", str),
            status=_get(obj, "status", str),
            phase=_optional_str(obj, "phase"),
            amount_minor=from_razorpay_amount(obj.get("amount"), currency),
            currency=currency,
            payment_id=_get(obj, "payment_id", str),
            reason=_optional_str(obj, "reason_code"),
        )


@dataclass(frozen=True)
class RazorpayErrorBody:
    """``{"error": {"code", "description", "field"?, "source", "step", "reason", "metadata"}}``
    (markdown-docs ``errors.md``); empty fields when the body is not that."""

    code: str | None = None
    description: str | None = None
    field: str | None = None


def parse_error(payload: Any) -> RazorpayErrorBody:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return RazorpayErrorBody()

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    return RazorpayErrorBody(code=text("code"), description=text("description"), field=text("field"))


def links_with_reference(payload: Any, reference: str) -> list[RazorpayPaymentLink]:
    """The links of ``GET /v1/payment_links?reference_id=…`` (``{"payment_links": […]}``, fetch-all
    page) whose ``reference_id`` is ours; the filter is checked again here, never assumed."""
    if not isinstance(payload, dict) or not isinstance(payload.get("payment_links"), list):
        raise WireError("expected {payment_links: [...]}")
    links = [RazorpayPaymentLink.from_json(obj) for obj in payload["payment_links"]]
    return [link for link in links if link.reference_id == reference]


# --- statuses ------------------------------------------------------------------------------------


def link_status_kind(link: RazorpayPaymentLink) -> EventKind:
    """Where a link stands (``GET /v1/payment_links/{id}``). A declined payment leaves the link
    ``created``: the driver may pay on it again until it expires, so it stays pending (the
    ``payment.failed`` webhook says the decline)."""
    if link.status == "paid":
        return EventKind.SUCCEEDED
    if link.status in ("expired", "cancelled"):
        return EventKind.EXPIRED
    if link.status in ("created", "partially_paid"):
        return EventKind.PENDING
    raise WireError(f"unknown payment link status {link.status!r}")


# --- webhook events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RazorpayEvent:
    """``{"entity": "event", "account_id", "event", "contains": [...], "payload": {<name>: {"entity":
    {...}}}, "created_at"}`` (webhooks/payments.md samples)."""

    event: str
    payload: Mapping[str, Any]
    created_at: int | None

    @classmethod
    def from_json(cls, obj: Any) -> RazorpayEvent:
        if not isinstance(obj, dict) or obj.get("entity") != "event":
            raise WireError("not a Razorpay event")
        created = obj.get("created_at")
        return cls(
            event=_get(obj, "event", str),
            payload=_get(obj, "payload", dict),
            created_at=created if isinstance(created, int) and not isinstance(created, bool) else None,
        )

    def entity(self, name: str) -> dict[str, Any] | None:
        wrapper = self.payload.get(name)
        if wrapper is None:
            return None
        if not isinstance(wrapper, dict) or not isinstance(wrapper.get("entity"), dict):
            raise WireError(f"payload.{name} must be {{entity: {{...}}}}")
        entity: dict[str, Any] = wrapper["entity"]
        return entity

    def required(self, name: str) -> dict[str, Any]:
        entity = self.entity(name)
        if entity is None:
            raise WireError(f"{self.event} without payload.{name}")
        return entity


def _event_id(event_name: str, object_id: str) -> str:
    # Keyed by what the signed body says (the event and its object), not by X-Razorpay-Event-Id: that
    # header is outside the signature, so anyone replaying a genuine body could give it a fresh id.
    # A retry carries the same body, hence the same key; so does the same statement sent twice.
    return f"{event_name}:{object_id}"


def _link_events(event: RazorpayEvent) -> list[ProcessorEvent]:
    link = RazorpayPaymentLink.from_json(event.required("payment_link"))
    if link.reference_id is None:
        return []  # not one of ours: every link we make has our reference
    if event.event == "payment_link.paid":
        payment_obj = event.entity("payment")
        payment = RazorpayPayment.from_json(payment_obj) if payment_obj is not None else None
        order_obj = event.entity("order")
        order_id = link.order_id or (order_obj.get("id") if isinstance(order_obj, dict) else None)
        if payment is not None and payment.currency != link.currency:
            raise WireError("the payment's currency is not the link's")
        ref = PaymentRef(
            merchant_reference=link.reference_id,
            processor_reference=link.id,
            ids=_ids(
                order=order_id if isinstance(order_id, str) else None,
                payment=payment.id if payment is not None else link.captured_payment,
            ),
        )
        return [
            ProcessorEvent(
                _event_id(event.event, link.id), ref, EventKind.SUCCEEDED, link.amount_paid_minor, link.currency
            )
        ]
    # Expired, or cancelled (never by us; by someone on the Dashboard): the link can no longer be paid.
    reason = "cancelled" if event.event == "payment_link.cancelled" else "expired"
    return [
        ProcessorEvent(
            _event_id(event.event, link.id), link.payment, EventKind.EXPIRED, link.amount_minor, link.currency, reason
        )
    ]


def _payment_events(event: RazorpayEvent) -> list[ProcessorEvent]:
    payment = RazorpayPayment.from_json(event.required("payment"))
    if payment.order_id is None:
        return []  # a payment without an order is not a Payment Link's (each link pays through its order)
    if event.event == "payment.captured":
        ref = PaymentRef(ids=_ids(order=payment.order_id, payment=payment.id))
        return [
            ProcessorEvent(
                _event_id(event.event, payment.id), ref, EventKind.SUCCEEDED, payment.amount_minor, payment.currency
            )
        ]
    # payment.failed is not final: the same payment may be captured later (late authorisation, a UPI
    # retry in the app; webhooks/payments.md "Watch Out!"), and the driver may pay again on the link.
    # Payments never lets FAILED hold back a later SUCCEEDED. The failed payment's id is not named:
    # the id kept for refunds must be the captured payment's.
    ref = PaymentRef(ids=_ids(order=payment.order_id))
    return [
        ProcessorEvent(
            _event_id(event.event, payment.id),
            ref,
            EventKind.FAILED,
            payment.amount_minor,
            payment.currency,
            payment.error,
        )
    ]


def _order_of(event: RazorpayEvent) -> str | None:
    payment_obj = event.entity("payment")
    if isinstance(payment_obj, dict):
        order_id = payment_obj.get("order_id")
        return order_id if isinstance(order_id, str) and order_id else None
    return None


def _refund_events(event: RazorpayEvent) -> list[ProcessorEvent]:
    refund = RazorpayRefund.from_json(event.required("refund"))
    if event.event == "refund.failed" or refund.status == "failed":
        kind = EventKind.REFUND_FAILED
    elif refund.status == "processed":
        kind = EventKind.REFUNDED  # refund.processed, or a refund.created already processed
    else:
        return []  # pending: the money has not gone back yet
    ref = PaymentRef(
        merchant_reference=refund.notes.get("reference"),
        ids=_ids(payment=refund.payment_id, order=_order_of(event)),
    )
    # Keyed by the refund and its outcome: refund.created and refund.processed may both say "processed".
    return [
        ProcessorEvent(
            f"{refund.id}:{kind}",
            ref,
            kind,
            refund.amount_minor,
            refund.currency,
            "refund failed" if kind is EventKind.REFUND_FAILED else None,
            refund.id,
        )
    ]


def _dispute_events(event: RazorpayEvent) -> list[ProcessorEvent]:
    dispute = RazorpayDispute.from_json(event.required("dispute"))
    if event.event == "payment.dispute.created":
        if dispute.phase not in CHARGEBACK_PHASES:
            return []  # a retrieval request or a fraud alert: nothing withdrawn (yet)
        kind = EventKind.DISPUTE_OPENED
    elif event.event == "payment.dispute.won":
        kind = EventKind.DISPUTE_WON
    elif event.event == "payment.dispute.lost":
        kind = EventKind.DISPUTE_LOST
    else:
        # closed: "the fraudulent transaction was closed after you provided either the transaction
        # details or refund" (disputes entity): no chargeback money moves (a refund says so itself).
        return []
    ref = PaymentRef(ids=_ids(payment=dispute.payment_id, order=_order_of(event)))
    return [
        ProcessorEvent(
            f"{dispute.id}:{kind}", ref, kind, dispute.amount_minor, dispute.currency, dispute.reason, dispute.id
        )
    ]


# What Razorpay's checkout asks the driver and its webhooks repeat (webhooks/payments.md samples: the
# payment's ``email``, ``contact``, ``vpa``, ``card``, ``bank_account``, ``upi``; a link's ``customer``):
# never kept in the stored webhook body (``processor_events.body``).
DRIVER_DETAILS: Final = frozenset(
    {"email", "contact", "vpa", "phone", "customer", "customer_details", "card", "bank_account", "upi"}
)


def _without_driver(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_driver(v) for k, v in value.items() if k not in DRIVER_DETAILS}
    if isinstance(value, list):
        return [_without_driver(item) for item in value]
    return value


def body_without_driver(body: bytes) -> bytes:
    """The webhook body as kept for audit: the driver's contact and payment details left out (see
    ``DRIVER_DETAILS``). A body that cannot be read is not kept at all rather than kept whole."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError):
        return b""
    return json.dumps(_without_driver(data), default=str, separators=(",", ":"), ensure_ascii=False).encode()


def parse_razorpay_event(body: bytes) -> RazorpayEvent:
    try:
        # A float amount is refused, not rounded: numbers with a fraction stay Decimal and fail the checks.
        return RazorpayEvent.from_json(json.loads(body, parse_float=Decimal))
    except (ValueError, RecursionError) as exc:  # WireError, JSONDecodeError, UnicodeDecodeError
        raise MalformedWebhook(f"not a Razorpay event: {exc}") from None


def razorpay_event_to_processor_events(body: bytes) -> list[ProcessorEvent]:
    """The normalized events of a (verified) Razorpay webhook body; none for events we do not act on."""
    event = parse_razorpay_event(body)
    try:
        if event.event in LINK_EVENTS:
            return _link_events(event)
        if event.event in PAYMENT_EVENTS:
            return _payment_events(event)
        if event.event in REFUND_EVENTS:
            return _refund_events(event)
        if event.event in DISPUTE_EVENTS:
            return _dispute_events(event)
    except UnsupportedCurrency:
        # A payment in a currency evtopup never charges in is not ours: acknowledged, not refused
        # (a 4xx would be retried for 24 hours and then disable the webhook).
        return []
    except ValueError as exc:  # WireError, MoneyError
        raise MalformedWebhook(f"unreadable {event.event} event: {exc}") from None
    return []
