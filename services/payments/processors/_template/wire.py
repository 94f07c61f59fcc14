"""Template's wire format, as pure functions (no I/O): amounts, request bodies, the webhook signature,
webhook events and checkout states, parsed once into typed values.

The fictional processor Template (what each ``# TEMPLATE:`` comment asks to replace with the real
processor's documented facts, each cited where it is used):

- ``POST /v1/checkouts`` (JSON, ``Authorization: Bearer <api key>``, ``Idempotency-Key``):
  ``{amount, currency, reference, method, return_url, description}`` → the checkout
  ``{id: "co_…", status, amount, currency, reference, url, failure_reason}``; the driver pays at ``url``.
- ``GET /v1/checkouts/{id}`` → the checkout; ``status`` open | succeeded | failed | expired.
- ``POST /v1/refunds`` (``Idempotency-Key``): ``{checkout, amount, reference}`` → the refund
  ``{id: "re_…", status: pending | succeeded | failed, checkout, amount, currency}``.
- Webhooks: ``{"id": "evt_…", "type", "created", "data": {<checkout | refund | dispute>}}``, headers
  ``Template-Timestamp: <unix seconds>`` and ``Template-Signature: <hex HMAC-SHA256 of
  "<timestamp>.<raw body>" keyed with the webhook secret>``; older than 300 s is a replay.
- Errors: ``{"error": {"code", "message"}}``.

Amounts are integers in the currency's minor unit (ISO 4217, as ``shared.money`` counts them); nothing
is ever rounded: an amount the processor cannot take, or one we cannot represent, is a
:class:`~shared.money.MoneyError`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeVar

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    RefundRequest,
)
from shared.money import MoneyError, currency_exponent, require_minor

CHECKOUTS_PATH: Final = "/v1/checkouts"
REFUNDS_PATH: Final = "/v1/refunds"
# TEMPLATE: the idempotency header of the create and refund calls, and how long keys are kept (the
# API reference's "Idempotent requests"). Without one: a lookup by our reference after a refused
# duplicate (razorpay), or none at all (mpesa: ``create_is_idempotent=False``, never sent twice).
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
# TEMPLATE: the webhook signature: which headers, which bytes are signed, the algorithm and encoding
# (hex or base64), and how old a signed timestamp may be (the processor's "Verify webhook signatures"
# page, and its official SDK's verify function: the unit tests compare verdicts with it). Signed over
# fields of each item rather than the body: adyen; verified by calling the processor's verification
# API: paypal; nothing signed, every webhook confirmed by a status query: mpesa, mollie. Several
# signatures in one header (a rotated secret): stripe; a previous secret accepted: razorpay.
SIGNATURE_HEADER: Final = "Template-Signature"
TIMESTAMP_HEADER: Final = "Template-Timestamp"
SIGNATURE_TOLERANCE_S: Final = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

# TEMPLATE: our method ids (config ``payment_methods``) → the processor's method codes, which limit
# the hosted page to the driver's choice (the create call's parameter list).
METHOD_CODES: Final[Mapping[str, str]] = {"card": "card"}

# TEMPLATE: the event names, from the processor's list of webhook events; the README section lists
# them for the operator to subscribe to. Names the processor sends but we do not act on are
# acknowledged and ignored (a refusal would be retried and may get the endpoint disabled).
CHECKOUT_EVENTS: Final[Mapping[str, EventKind]] = {
    "checkout.succeeded": EventKind.SUCCEEDED,
    "checkout.failed": EventKind.FAILED,
    "checkout.expired": EventKind.EXPIRED,
}
REFUND_EVENTS: Final[Mapping[str, EventKind]] = {
    "refund.succeeded": EventKind.REFUNDED,
    "refund.failed": EventKind.REFUND_FAILED,
}
DISPUTE_EVENTS: Final[Mapping[str, EventKind]] = {
    "dispute.opened": EventKind.DISPUTE_OPENED,
    "dispute.won": EventKind.DISPUTE_WON,
    "dispute.lost": EventKind.DISPUTE_LOST,
}
HANDLED_EVENTS: Final = frozenset(CHECKOUT_EVENTS) | frozenset(REFUND_EVENTS) | frozenset(DISPUTE_EVENTS)

# TEMPLATE: the checkout's statuses (the checkout object's reference page). A decline that leaves
# the page payable stays PENDING (stripe, razorpay); a status that needs our second call is
# APPROVED (capture after approval: paypal, with ``complete_payment``).
CHECKOUT_STATUS_KINDS: Final[Mapping[str, EventKind]] = {
    "open": EventKind.PENDING,
    "succeeded": EventKind.SUCCEEDED,
    "failed": EventKind.FAILED,
    "expired": EventKind.EXPIRED,
}


class WireError(ValueError):
    """A Template object that is not the shape documented."""


class UnsupportedCurrency(WireError):
    """A currency evtopup never charges in (so the object is not ours)."""


# --- amounts -------------------------------------------------------------------------------------

# TEMPLATE: the amount notation (the create call's ``amount``): integer minor units as here; a decimal
# string in major units (mollie, paypal: ``shared.money.to_major``/``from_major``); the processor's own
# exponents that differ from ISO 4217 (stripe); whole units only (mpesa). Never round: refuse.


def to_template_amount(amount_minor: int, currency: str) -> int:
    """Our minor units as Template's ``amount``: the same count, refused when it cannot be charged."""
    require_minor(amount_minor, "amount_minor")
    currency_exponent(currency)  # an unknown currency is refused, never guessed
    if amount_minor <= 0:
        raise MoneyError("amount must be positive")
    return amount_minor


def from_template_amount(value: object, currency: str) -> int:
    """Template's ``amount`` (an integer in the currency's minor unit) as our minor units."""
    currency_exponent(currency)
    amount = require_minor(value, "amount")
    if amount < 0:
        raise MoneyError("amount must not be negative")
    return amount


def _currency(value: object) -> str:
    # TEMPLATE: the currency's notation (ISO 4217 upper case here; lower case: stripe).
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
        raise WireError("currency must be an ISO 4217 code")
    try:
        currency_exponent(value)
    except MoneyError:
        raise UnsupportedCurrency(f"unsupported currency {value!r}") from None
    return value


# --- requests ------------------------------------------------------------------------------------


def checkout_request(request: CheckoutRequest) -> dict[str, Any]:
    """``POST /v1/checkouts``: the exact amount, our reference (echoed back in every object), the page
    limited to the driver's method, the driver sent back to the return URL. Derived from ``request``
    alone, so a retry under the same idempotency key sends the very same body."""
    # TEMPLATE: the create call's body (the API reference of the hosted page / payment link / session):
    # where our reference goes (it must come back in webhooks and lookups), the return URL, the method
    # restriction, an expiry. A processor that takes the webhook URL per request gets
    # ``request.webhook_url`` (mpesa). A phone prompt instead of a page: ``request.phone`` and a
    # ``PhonePrompt`` next step (mpesa).
    code = METHOD_CODES.get(request.method)
    if code is None:
        raise WireError(f"the checkout cannot be limited to method {request.method!r}")
    return {
        "amount": to_template_amount(request.amount_minor, request.currency),
        "currency": request.currency,
        "reference": request.reference,
        "method": code,
        "return_url": request.return_url,
        "description": request.description.strip()[:200] or "Top-up",
    }


def refund_request(request: RefundRequest, checkout_id: str) -> dict[str, Any]:
    """``POST /v1/refunds``: of the checkout, the amount, our refund key as its reference (the same
    body for a retry: a processor refuses a reused key with another body)."""
    # TEMPLATE: what a refund names (the checkout, or a payment id learnt later: stripe's payment
    # intent, razorpay's payment, kept in ``PaymentRef.ids``), and where our refund key may go.
    return {
        "checkout": checkout_id,
        "amount": to_template_amount(request.amount_minor, request.currency),
        "reference": request.refund_key,
    }


# --- the signature -------------------------------------------------------------------------------


def signature_of(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 keyed with the webhook secret (UTF-8) over ``"<timestamp>.<raw body>"``."""
    return hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now_s: float,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> int:
    """Accept the exact bytes received only if ``signature`` is their HMAC with ``timestamp`` and the
    timestamp is at most ``tolerance_s`` old (a replay). Compared in constant time. A timestamp in the
    future is not refused: only the secret's holder can sign one. Returns the signed timestamp."""
    if not secret:
        raise InvalidSignature("no webhook secret")
    if not timestamp or not _TIMESTAMP.fullmatch(timestamp):
        raise InvalidSignature(f"no valid {TIMESTAMP_HEADER} header")
    if not signature:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    signed_at = int(timestamp)
    expected = signature_of(secret, signed_at, body).encode("ascii")
    # A header that is not ASCII cannot match a hex digest; "replace" keeps any text encodable.
    if not hmac.compare_digest(expected, signature.strip().encode("ascii", "replace")):
        raise InvalidSignature("the signature does not match the body")
    if signed_at < now_s - tolerance_s:
        raise InvalidSignature("the signed timestamp is older than the tolerance")
    return signed_at


# --- objects -------------------------------------------------------------------------------------

T = TypeVar("T")


def _field(obj: Mapping[str, Any], key: str, kind: type[T]) -> T:
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


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"a {what} must be an object")
    return value


# TEMPLATE: each object's fields as the API reference (and the official SDK's models or test
# fixtures) show them; a field the processor may omit is optional here.


@dataclass(frozen=True)
class TemplateCheckout:
    id: str
    status: str
    reference: str | None
    amount_minor: int
    currency: str
    url: str | None
    failure_reason: str | None

    @classmethod
    def from_json(cls, value: Any) -> TemplateCheckout:
        obj = _object(value, "checkout")
        currency = _currency(obj.get("currency"))
        return cls(
            id=_field(obj, "id", str),
            status=_field(obj, "status", str),
            reference=_optional_str(obj, "reference"),
            amount_minor=from_template_amount(obj.get("amount"), currency),
            currency=currency,
            url=_optional_str(obj, "url"),
            failure_reason=_optional_str(obj, "failure_reason"),
        )

    @property
    def payment(self) -> PaymentRef:
        return PaymentRef(merchant_reference=self.reference, processor_reference=self.id)


@dataclass(frozen=True)
class TemplateRefund:
    id: str
    status: str
    checkout: str
    amount_minor: int
    currency: str

    @classmethod
    def from_json(cls, value: Any) -> TemplateRefund:
        obj = _object(value, "refund")
        currency = _currency(obj.get("currency"))
        return cls(
            id=_field(obj, "id", str),
            status=_field(obj, "status", str),
            checkout=_field(obj, "checkout", str),
            amount_minor=from_template_amount(obj.get("amount"), currency),
            currency=currency,
        )


@dataclass(frozen=True)
class TemplateDispute:
    id: str
    status: str
    checkout: str
    amount_minor: int
    currency: str
    reason: str | None

    @classmethod
    def from_json(cls, value: Any) -> TemplateDispute:
        obj = _object(value, "dispute")
        currency = _currency(obj.get("currency"))
        return cls(
            id=_field(obj, "id", str),
            status=_field(obj, "status", str),
            checkout=_field(obj, "checkout", str),
            amount_minor=from_template_amount(obj.get("amount"), currency),
            currency=currency,
            reason=_optional_str(obj, "reason"),
        )


@dataclass(frozen=True)
class TemplateErrorBody:
    """``{"error": {"code", "message"}}``; empty fields when the body is not that."""

    code: str | None = None
    message: str | None = None


def parse_error(payload: Any) -> TemplateErrorBody:
    # TEMPLATE: the error body's shape (the API reference's "Errors" page).
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return TemplateErrorBody()
    code, message = error.get("code"), error.get("message")
    return TemplateErrorBody(
        code=code if isinstance(code, str) else None, message=message if isinstance(message, str) else None
    )


# --- statuses ------------------------------------------------------------------------------------


def checkout_status_kind(checkout: TemplateCheckout) -> EventKind:
    """Where a checkout stands (``GET /v1/checkouts/{id}``)."""
    kind = CHECKOUT_STATUS_KINDS.get(checkout.status)
    if kind is None:
        raise WireError(f"unknown checkout status {checkout.status!r}")
    return kind


# --- webhook events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateEvent:
    id: str
    type: str
    data: Mapping[str, Any]

    @classmethod
    def from_json(cls, value: Any) -> TemplateEvent:
        obj = _object(value, "event")
        return cls(id=_field(obj, "id", str), type=_field(obj, "type", str), data=_field(obj, "data", dict))


# TEMPLATE: the event id (``ProcessorEvent.event_id``, the deduplication key): the same statement
# must always get the same id, a different statement a different one. Keyed here by the object and
# its outcome, all inside the signed body: a retry, a copy, or one outcome stated by two events
# (stripe's refund.created/refund.updated) are one event. An event id in an unsigned header must not
# be the key (razorpay explains why).


def _checkout_events(event: TemplateEvent) -> list[ProcessorEvent]:
    checkout = TemplateCheckout.from_json(event.data)
    if checkout.reference is None:
        return []  # not one of ours: every checkout we create carries our reference
    kind = CHECKOUT_EVENTS[event.type]
    reason = checkout.failure_reason if kind is EventKind.FAILED else None
    return [
        ProcessorEvent(
            f"{checkout.id}:{kind}", checkout.payment, kind, checkout.amount_minor, checkout.currency, reason
        )
    ]


def _refund_events(event: TemplateEvent) -> list[ProcessorEvent]:
    refund = TemplateRefund.from_json(event.data)
    kind = REFUND_EVENTS[event.type]
    reason = "refund failed" if kind is EventKind.REFUND_FAILED else None
    payment = PaymentRef(processor_reference=refund.checkout)
    return [
        ProcessorEvent(f"{refund.id}:{kind}", payment, kind, refund.amount_minor, refund.currency, reason, refund.id)
    ]


def _dispute_events(event: TemplateEvent) -> list[ProcessorEvent]:
    # TEMPLATE: when the money is withdrawn (at the opening, or only once lost) and which dispute
    # stages are mere inquiries that withdraw nothing (stripe's warning_*, razorpay's retrieval phase).
    dispute = TemplateDispute.from_json(event.data)
    kind = DISPUTE_EVENTS[event.type]
    payment = PaymentRef(processor_reference=dispute.checkout)
    return [
        ProcessorEvent(
            f"{dispute.id}:{kind}", payment, kind, dispute.amount_minor, dispute.currency, dispute.reason, dispute.id
        )
    ]


def parse_event(body: bytes) -> TemplateEvent:
    try:
        # A float amount is refused, not rounded: numbers with a fraction stay Decimal and fail the checks.
        return TemplateEvent.from_json(json.loads(body, parse_float=Decimal))
    except (ValueError, RecursionError) as exc:  # WireError, JSONDecodeError, UnicodeDecodeError
        raise MalformedWebhook(f"not a Template event: {exc}") from None


def event_to_processor_events(body: bytes) -> list[ProcessorEvent]:
    """The normalized events of a (verified) webhook body; none for events we do not act on."""
    event = parse_event(body)
    try:
        if event.type in CHECKOUT_EVENTS:
            return _checkout_events(event)
        if event.type in REFUND_EVENTS:
            return _refund_events(event)
        if event.type in DISPUTE_EVENTS:
            return _dispute_events(event)
    except UnsupportedCurrency:
        # A payment in a currency evtopup never charges in is not ours: acknowledged, not refused.
        return []
    except ValueError as exc:  # WireError, MoneyError
        raise MalformedWebhook(f"unreadable {event.type} event {event.id}: {exc}") from None
    return []
