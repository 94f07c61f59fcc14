"""Stripe's wire format, as pure functions (no I/O): amounts, request forms, the webhook signature,
webhook events and Checkout Session states, parsed once into typed values.

Sources: ``/work/shared/reference/processors.md`` §1; field names and value sets checked against the
official SDK (``stripe`` 16.1.0: ``checkout/_session.py``, ``_payment_intent.py``, ``_refund.py``,
``_dispute.py``, ``_webhook.py``); the rest is cited where it is decided.

Amounts: Stripe counts in its own minor unit, which is ISO 4217's except where Stripe says otherwise
(docs.stripe.com/currencies): its zero-decimal list, its three-decimal currencies (whose last digit
must be 0), and ISK, which stays two-decimal in the API although only whole krónur may be charged
(support.stripe.com "Deprecation of fractional ISK charges": "ISK will remain a two-decimal currency
in the Stripe API", amounts "evenly divisible by 100"): ISO 4217 and ``shared.money`` count ISK in
whole krónur, so 500 ISK is Stripe's 50000, always a multiple of 100. Nothing is ever rounded: an
amount Stripe cannot take, or one we cannot represent, is a :class:`~shared.money.MoneyError`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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
from services.payments.processors.stripe.config import StripeSettings
from shared.money import MoneyError, currency_exponent, from_major, require_minor, to_major

# Requests pin an API version so that the answers' shape does not follow the account's default. The
# fields read here are the same in every version since; 2024-10-28.acacia is the version from which
# ``refund.*`` events cover every refund (docs.stripe.com/changelog/acacia/2024-10-28/refund-webhook-update).
STRIPE_API_VERSION: Final = "2024-10-28.acacia"
SIGNATURE_HEADER: Final = "Stripe-Signature"
# stripe-python ``Webhook.DEFAULT_TOLERANCE``.
SIGNATURE_TOLERANCE_S: Final = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

# docs.stripe.com/currencies#zero-decimal
STRIPE_ZERO_DECIMAL: Final = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
# docs.stripe.com/currencies#three-decimal: "these API calls require the least-significant (last) digit to be 0".
STRIPE_THREE_DECIMAL: Final = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The Checkout locales stripe-python 16.1.0 lists (``SessionCreateParams.locale``).
STRIPE_CHECKOUT_LOCALES: Final = _words(
    "auto bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hi-IN hr hu id it ja ko lt lv ms mt nb nl "
    "pl pt pt-BR ro ru sk sl sv th tr vi zh zh-HK zh-TW"
)
# Checkout's payment method types (processors.md §1.e, from Stripe's OpenAPI). A configured method
# named like one of them restricts the session to it; any other name leaves the choice to the
# payment methods enabled in the Dashboard.
STRIPE_PAYMENT_METHOD_TYPES: Final = frozenset(StripeSettings.payment_methods)
# Stripe's metadata values hold at most 500 characters (docs.stripe.com/api/metadata).
METADATA_VALUE_MAX = 500

# Dispute states of an inquiry (a "pre-dispute": no money is withdrawn; stripe-python ``Dispute.status``).
INQUIRY_STATUSES: Final = frozenset({"warning_needs_response", "warning_under_review", "warning_closed"})


class WireError(ValueError):
    """A Stripe object that is not the shape documented for it."""


class UnsupportedCurrency(WireError):
    """A currency evtopup never charges in: the object is not about one of our payments."""


# --- amounts -----------------------------------------------------------------------------------


def stripe_exponent(currency: str) -> int:
    """The number of decimals of Stripe's amount unit for ``currency`` (upper-case ISO code)."""
    if currency in STRIPE_ZERO_DECIMAL:
        return 0
    if currency in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_stripe_amount(amount_minor: int, currency: str) -> int:
    """Our minor units as Stripe's ``amount``/``unit_amount``; MoneyError if Stripe cannot take it."""
    major = to_major(require_minor(amount_minor, "amount_minor"), currency)
    scaled = major.scaleb(stripe_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{major} {currency} is finer than Stripe's unit")
    amount = int(scaled)
    if currency in STRIPE_THREE_DECIMAL and amount % 10:
        raise MoneyError(f"Stripe takes {currency} amounts only in whole hundredths ({major} {currency})")
    return amount


def from_stripe_amount(amount: object, currency: str) -> int:
    """Stripe's integer ``amount`` in ``currency`` as our minor units; MoneyError if not exact."""
    value = require_minor(amount, "amount")
    if value < 0:
        raise MoneyError("a Stripe amount is never negative")
    return from_major(Decimal(value).scaleb(-stripe_exponent(currency)), currency)


def from_stripe_currency(value: object) -> str:
    """Stripe's lower-case ISO code as ours (upper case), refusing one we do not know."""
    if not isinstance(value, str) or not re.fullmatch(r"[a-z]{3}", value):
        raise WireError(f"currency must be a lower-case ISO code, not {value!r}")
    currency = value.upper()
    try:
        currency_exponent(currency)
    except MoneyError:
        raise UnsupportedCurrency(f"evtopup does not charge in {currency}") from None
    return currency


# --- requests ----------------------------------------------------------------------------------


def stripe_locale(locale: str | None) -> str | None:
    """The Checkout locale for ours (``de``, ``pt-BR``, ``en_GB``…), or None to let the browser decide."""
    if not locale:
        return None
    tag = locale.replace("_", "-")
    for candidate in (tag, tag.split("-", 1)[0]):
        for known in STRIPE_CHECKOUT_LOCALES:
            if candidate.lower() == known.lower():
                return known
    return None


def checkout_session_form(request: CheckoutRequest) -> list[tuple[str, str]]:
    """The form of ``POST /v1/checkout/sessions`` for a top-up. Derived from ``request`` alone, so a
    retry sends the very same parameters (Stripe refuses a reused Idempotency-Key with others): no
    ``expires_at`` (it would depend on the clock), sessions keep Stripe's default of 24 hours."""
    currency = request.currency
    form = [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", currency.lower()),
        ("line_items[0][price_data][unit_amount]", str(to_stripe_amount(request.amount_minor, currency))),
        ("line_items[0][price_data][product_data][name]", request.description.strip() or "Top-up"),
        ("line_items[0][quantity]", "1"),
        ("success_url", request.return_url),
        ("cancel_url", request.return_url),
        ("client_reference_id", request.reference),
        ("metadata[payment_id]", str(request.payment_id)),
        ("metadata[order_id]", str(request.order_id)),
        # Carried to the PaymentIntent, so its events (a declined card) name the payment too.
        ("payment_intent_data[metadata][reference]", request.reference),
        ("payment_intent_data[metadata][payment_id]", str(request.payment_id)),
    ]
    if request.method in STRIPE_PAYMENT_METHOD_TYPES:
        form.append(("payment_method_types[0]", request.method))
    locale = stripe_locale(request.locale)
    if locale is not None:
        form.append(("locale", locale))
    return form


def refund_form(payment_intent: str, request: RefundRequest) -> list[tuple[str, str]]:
    """The form of ``POST /v1/refunds``: by PaymentIntent, with the amount in Stripe's unit; our refund
    key (and the payment's reference) in the metadata, so refund events can be traced."""
    if request.amount_minor <= 0:
        raise MoneyError("a refund amount must be positive")
    form = [
        ("payment_intent", payment_intent),
        ("amount", str(to_stripe_amount(request.amount_minor, request.currency))),
        ("metadata[refund_key]", request.refund_key[:METADATA_VALUE_MAX]),
    ]
    if request.payment.merchant_reference:
        form.append(("metadata[reference]", request.payment.merchant_reference[:METADATA_VALUE_MAX]))
    if request.reason:
        form.append(("metadata[reason]", request.reason[:METADATA_VALUE_MAX]))
    return form


# --- webhook signature -------------------------------------------------------------------------


def compute_stripe_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1``: hex HMAC-SHA256 keyed with the whole ``whsec_…`` secret over ``"<t>.<raw body>"``."""
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def verify_stripe_signature(
    secret: str, header: str | None, body: bytes, now_s: float, tolerance_s: int = SIGNATURE_TOLERANCE_S
) -> int:
    """Checks ``Stripe-Signature: t=…,v1=…[,v1=…][,v0=…]`` over the raw body as stripe-python's
    ``WebhookSignature.verify_header`` does: any ``v1`` may match (a rolled secret signs twice), and a
    timestamp older than the tolerance is refused. Like Stripe's libraries, a timestamp in the future
    is not refused: only the secret's holder can sign one, and refusing would only add clock-skew
    failures. Returns the signed timestamp."""
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(value)
    # Unix seconds, 1-12 ASCII digits (``int()`` would also take "+1", "1_0" or other scripts' digits).
    if not timestamps or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise InvalidSignature("signature header has no valid timestamp")
    if not candidates:
        raise InvalidSignature("signature header has no v1 signature")
    timestamp = int(timestamps[0])
    expected = compute_stripe_signature(secret, timestamp, body).encode()
    # A candidate that is not ASCII cannot match a hex digest; "replace" keeps any header text encodable.
    if not any(hmac.compare_digest(expected, c.encode("ascii", "replace")) for c in candidates):
        raise InvalidSignature("signature does not match")
    if timestamp < now_s - tolerance_s:
        raise InvalidSignature("signature timestamp outside the tolerance")
    return timestamp


# --- typed Stripe objects ----------------------------------------------------------------------

T = TypeVar("T")


def _get(obj: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError(f"{key} must be a {kind.__name__}")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    return None if obj.get(key) is None else _get(obj, key, kind)


def _expandable_id(obj: Mapping[str, Any], key: str) -> str | None:
    """An id field that may also be expanded into the object it names."""
    value = obj.get(key)
    if isinstance(value, dict):
        value = value.get("id")
    if value is not None and not isinstance(value, str):
        raise WireError(f"{key} must be an id")
    return value or None


def _expect_object(obj: Mapping[str, Any], name: str) -> None:
    if obj.get("object") != name:
        raise WireError(f"expected a {name} object, got {obj.get('object')!r}")


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise WireError("metadata must be an object")
    return {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)}


def _ids(**ids: str | None) -> dict[str, str]:
    return {name: value for name, value in ids.items() if value}


@dataclass(frozen=True)
class StripeCheckoutSession:
    id: str
    status: str | None  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    client_reference_id: str | None
    payment_intent: str | None
    payment_intent_status: str | None  # only when the PaymentIntent was expanded
    amount_minor: int
    currency: str
    url: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StripeCheckoutSession:
        _expect_object(obj, "checkout.session")
        currency = from_stripe_currency(obj.get("currency"))
        expanded = obj.get("payment_intent")
        pi_status = _optional(expanded, "status", str) if isinstance(expanded, dict) else None
        return cls(
            id=_get(obj, "id", str),
            status=_optional(obj, "status", str),
            payment_status=_get(obj, "payment_status", str),
            client_reference_id=_optional(obj, "client_reference_id", str),
            payment_intent=_expandable_id(obj, "payment_intent"),
            payment_intent_status=pi_status,
            amount_minor=from_stripe_amount(obj.get("amount_total"), currency),
            currency=currency,
            url=_optional(obj, "url", str),
        )

    @property
    def payment(self) -> PaymentRef:
        return PaymentRef(
            merchant_reference=self.client_reference_id,
            processor_reference=self.id,
            ids=_ids(payment_intent=self.payment_intent),
        )


@dataclass(frozen=True)
class StripePaymentIntent:
    id: str
    status: str
    amount_minor: int
    currency: str
    metadata: Mapping[str, str]
    latest_charge: str | None
    failure: str | None  # from ``last_payment_error``

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StripePaymentIntent:
        _expect_object(obj, "payment_intent")
        currency = from_stripe_currency(obj.get("currency"))
        error = obj.get("last_payment_error")
        failure = None
        if isinstance(error, dict):
            code = error.get("decline_code") or error.get("code")
            message = error.get("message")
            failure = ": ".join(str(part) for part in (code, message) if isinstance(part, str) and part) or None
        return cls(
            id=_get(obj, "id", str),
            status=_get(obj, "status", str),
            amount_minor=from_stripe_amount(obj.get("amount"), currency),
            currency=currency,
            metadata=_metadata(obj),
            latest_charge=_expandable_id(obj, "latest_charge"),
            failure=failure,
        )


@dataclass(frozen=True)
class StripeRefund:
    id: str
    status: str | None  # pending | requires_action | succeeded | failed | canceled
    amount_minor: int
    currency: str
    payment_intent: str | None
    charge: str | None
    metadata: Mapping[str, str]
    failure_reason: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StripeRefund:
        _expect_object(obj, "refund")
        currency = from_stripe_currency(obj.get("currency"))
        return cls(
            id=_get(obj, "id", str),
            status=_optional(obj, "status", str),
            amount_minor=from_stripe_amount(obj.get("amount"), currency),
            currency=currency,
            payment_intent=_expandable_id(obj, "payment_intent"),
            charge=_expandable_id(obj, "charge"),
            metadata=_metadata(obj),
            failure_reason=_optional(obj, "failure_reason", str),
        )


@dataclass(frozen=True)
class StripeDispute:
    id: str
    status: str
    amount_minor: int
    currency: str
    payment_intent: str | None
    charge: str | None
    reason: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StripeDispute:
        _expect_object(obj, "dispute")
        currency = from_stripe_currency(obj.get("currency"))
        return cls(
            id=_get(obj, "id", str),
            status=_get(obj, "status", str),
            amount_minor=from_stripe_amount(obj.get("amount"), currency),
            currency=currency,
            payment_intent=_expandable_id(obj, "payment_intent"),
            charge=_expandable_id(obj, "charge"),
            reason=_optional(obj, "reason", str),
        )


@dataclass(frozen=True)
class StripeEvent:
    """A v1 "snapshot" event: ``{"id": "evt_…", "object": "event", "type", "data": {"object",
    "previous_attributes"?}, …}`` (stripe-python ``_webhook.py``, ``_event.py``)."""

    id: str
    type: str
    data_object: Mapping[str, Any]
    previous_attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> StripeEvent:
        if not isinstance(obj, dict):
            raise WireError("an event must be a JSON object")
        # A thin event (``v2.core.event``) carries no object: stripe-python refuses it here too.
        _expect_object(obj, "event")
        data = _get(obj, "data", dict)
        previous = data.get("previous_attributes")
        return cls(
            id=_get(obj, "id", str),
            type=_get(obj, "type", str),
            data_object=_get(data, "object", dict),
            previous_attributes=previous if isinstance(previous, dict) else {},
        )


@dataclass(frozen=True)
class StripeErrorBody:
    """``{"error": {"type", "code"?, "message"?, "param"?}}``; empty fields when the body is not that."""

    type: str | None = None
    code: str | None = None
    message: str | None = None


def parse_stripe_error(payload: Any) -> StripeErrorBody:
    """Stripe's error object in an (already parsed) JSON answer; empty for anything else."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return StripeErrorBody()

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    return StripeErrorBody(type=text("type"), code=text("code"), message=text("message"))


# --- events ------------------------------------------------------------------------------------

SESSION_EVENTS: Final = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    }
)
# ``charge.refund.updated`` is what endpoints on API versions before 2024-10-28 get for a charge's refund.
REFUND_EVENTS: Final = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
DISPUTE_EVENTS: Final = frozenset({"charge.dispute.created", "charge.dispute.funds_withdrawn", "charge.dispute.closed"})
# The events the webhook endpoint must send (the rest are ignored).
HANDLED_EVENTS: Final = SESSION_EVENTS | REFUND_EVENTS | DISPUTE_EVENTS | {"payment_intent.payment_failed"}


def _session_kind(event_type: str, session: StripeCheckoutSession) -> EventKind | None:
    if event_type == "checkout.session.completed":
        if session.payment_status == "paid":
            return EventKind.SUCCEEDED
        if session.payment_status == "unpaid":
            return EventKind.PENDING  # a delayed method (bank debit, voucher): the async events follow
        if session.payment_status == "no_payment_required":
            return None  # nothing was charged; never the case for a top-up
        raise WireError(f"unknown payment_status {session.payment_status!r}")
    if event_type == "checkout.session.async_payment_succeeded":
        return EventKind.SUCCEEDED
    if event_type == "checkout.session.async_payment_failed":
        return EventKind.FAILED
    return EventKind.EXPIRED


def _session_events(event: StripeEvent) -> list[ProcessorEvent]:
    if "payment_id" not in _metadata(event.data_object):
        return []  # not one of our sessions (another integration on the same Stripe account)
    session = StripeCheckoutSession.from_json(event.data_object)
    kind = _session_kind(event.type, session)
    if kind is None:
        return []
    return [ProcessorEvent(event.id, session.payment, kind, session.amount_minor, session.currency)]


def _payment_failed_events(event: StripeEvent) -> list[ProcessorEvent]:
    if "reference" not in _metadata(event.data_object):
        return []  # not one of our Checkout Sessions' (another integration on the same account)
    intent = StripePaymentIntent.from_json(event.data_object)
    reference = intent.metadata["reference"]
    payment = PaymentRef(merchant_reference=reference, ids=_ids(payment_intent=intent.id, charge=intent.latest_charge))
    # The Checkout Session stays open after a decline: the driver may pay on it yet, and a later
    # success still counts (payments never lets FAILED block a SUCCEEDED).
    return [ProcessorEvent(event.id, payment, EventKind.FAILED, intent.amount_minor, intent.currency, intent.failure)]


def _refund_events(event: StripeEvent) -> list[ProcessorEvent]:
    refund = StripeRefund.from_json(event.data_object)
    if refund.status == "succeeded" and event.type != "refund.failed":
        kind = EventKind.REFUNDED
    elif refund.status in ("failed", "canceled"):
        # Whether money had moved is payments' to know (the refund's recorded state): a refund that
        # failed from pending moved nothing and undoes nothing; one that had succeeded is given back.
        # ``refund.failed`` carries no previous_attributes, so they cannot tell it here.
        kind = EventKind.REFUND_FAILED
    else:
        return []
    payment = PaymentRef(
        merchant_reference=refund.metadata.get("reference"),
        ids=_ids(payment_intent=refund.payment_intent, charge=refund.charge),
    )
    reason = refund.failure_reason if kind is EventKind.REFUND_FAILED else None
    return [_money_back_event(refund.id, payment, kind, refund.amount_minor, refund.currency, reason)]


def _dispute_events(event: StripeEvent) -> list[ProcessorEvent]:
    dispute = StripeDispute.from_json(event.data_object)
    if event.type == "charge.dispute.closed":
        kinds = {"won": EventKind.DISPUTE_WON, "lost": EventKind.DISPUTE_LOST}
        kind = kinds.get(dispute.status)
        if kind is None:
            return []  # an inquiry closed (warning_closed) or a prevented dispute: no money moved
    elif dispute.status in INQUIRY_STATUSES:
        return []  # an inquiry withdraws nothing; if it escalates, funds_withdrawn says so
    else:
        kind = EventKind.DISPUTE_OPENED
    payment = PaymentRef(ids=_ids(payment_intent=dispute.payment_intent, charge=dispute.charge))
    return [_money_back_event(dispute.id, payment, kind, dispute.amount_minor, dispute.currency, dispute.reason)]


def _money_back_event(
    cause_id: str, payment: PaymentRef, kind: EventKind, amount_minor: int, currency: str, reason: str | None
) -> ProcessorEvent:
    # Keyed by the refund or dispute and its outcome, not by the ``evt_`` id: Stripe states one outcome
    # in more than one event (a refund already succeeded at ``refund.created`` is ``succeeded`` again
    # in each ``refund.updated``; a chargeback is both ``charge.dispute.created`` and
    # ``…funds_withdrawn``), and each must move money once.
    return ProcessorEvent(f"{cause_id}:{kind}", payment, kind, amount_minor, currency, reason, cause_id)


def parse_stripe_event(body: bytes) -> StripeEvent:
    try:
        return StripeEvent.from_json(json.loads(body))
    except (ValueError, RecursionError) as exc:  # WireError, JSONDecodeError, UnicodeDecodeError
        raise MalformedWebhook(f"not a Stripe event: {exc}") from None


def stripe_event_to_processor_events(body: bytes) -> list[ProcessorEvent]:
    """The normalized events of a (verified) Stripe webhook body; none for events we do not act on."""
    event = parse_stripe_event(body)
    try:
        if event.type in SESSION_EVENTS:
            return _session_events(event)
        if event.type == "payment_intent.payment_failed":
            return _payment_failed_events(event)
        if event.type in REFUND_EVENTS:
            return _refund_events(event)
        if event.type in DISPUTE_EVENTS:
            return _dispute_events(event)
    except UnsupportedCurrency:
        # A refund or dispute of a payment in a currency evtopup never charges in is not ours. Not
        # refused: a 400 would make Stripe retry it for days and then disable the endpoint.
        return []
    except ValueError as exc:  # WireError, MoneyError
        raise MalformedWebhook(f"unreadable {event.type} event {event.id}: {exc}") from None
    return []


def session_status_kind(session: StripeCheckoutSession) -> EventKind:
    """Where a Checkout Session stands (``GET /v1/checkout/sessions/{id}?expand[]=payment_intent``)."""
    if session.status == "expired":
        return EventKind.EXPIRED
    if session.status == "open":
        return EventKind.PENDING  # even after a decline: the driver may still pay on it
    if session.status == "complete":
        if session.payment_status == "paid":
            return EventKind.SUCCEEDED
        if session.payment_status == "unpaid":
            # A delayed method: its PaymentIntent tells whether it is still processing (stripe-python
            # ``PaymentIntent.status``); a failed one goes back to requires_payment_method, and a
            # complete session cannot be paid again.
            if session.payment_intent_status == "succeeded":
                return EventKind.SUCCEEDED
            if session.payment_intent_status in ("requires_payment_method", "canceled"):
                return EventKind.FAILED
            return EventKind.PENDING
    raise WireError(f"unexpected session state {session.status!r}/{session.payment_status!r}")
