"""Mollie's wire format (Payments API v2, classic webhooks), as pure functions: no I/O.

Sources (mollie/api-documentation ``source/``, as stored; docs.mollie.com where newer):

- ``reference/v2/payments-api/create-payment.rst``: ``POST /v2/payments`` with ``amount {currency,
  value}`` where ``value`` is a string with the currency's exact decimals ("Non-string values are not
  accepted"), ``description`` (required; Mollie truncates at 255), ``redirectUrl`` (required),
  ``webhookUrl``, ``metadata`` ("up to approximately 1kB"), ``method`` (``applepay bancontact
  banktransfer belfius creditcard directdebit eps giftcard giropay ideal kbc mybank paypal paysafecard
  przelewy24 sofort``) and ``locale`` (``en_US … lt_LT``, the list in ``MOLLIE_LOCALES``). The driver is
  sent to ``_links.checkout.href``.
- ``reference/v2/payments-api/get-payment.rst``: ``GET /v2/payments/{id}``, ``embed=refunds,chargebacks``
  puts the payment's refunds and chargebacks in ``_embedded``; fields ``resource`` ("payment"), ``id``
  (``tr_…``), ``mode`` (live | test), ``status``, ``amount``, ``metadata`` (as given), ``method``.
- ``payments/status-changes.rst``: statuses ``open`` (no webhook), ``pending`` (no webhook),
  ``canceled``, ``expired``, ``failed``, ``paid`` (webhooks), and ``authorized`` (docs.mollie.com
  "Payment status changes": only for pay-later methods and manual capture, which a top-up never asks for).
- docs.mollie.com/payments/refunds: refund statuses ``queued`` and ``pending`` (may still be canceled; no
  webhook), ``canceled`` (no webhook), ``processing`` ("Cancelation is no longer possible"; webhook),
  ``refunded`` (webhook), ``failed`` ("after processing … The funds will be returned to your account";
  webhook). ``reference/v2/refunds-api/create-payment-refund.rst``: ``POST /v2/payments/{id}/refunds``
  with ``amount``, ``description``, ``metadata``.
- ``reference/v2/chargebacks-api/get-payment-chargeback.rst``: a chargeback (``chb_…``) has ``amount``,
  ``createdAt``, ``reason`` (direct debit only), ``reversedAt`` ("the date and time the chargeback was
  reversed if applicable") and ``paymentId``. It has no status: a chargeback exists (the amount is
  withdrawn) or is reversed (returned); Mollie never states that a chargeback was lost for good.
- docs.mollie.com/reference/webhooks: the webhook is ``POST``, ``Content-Type:
  application/x-www-form-urlencoded``, body ``id=tr_…``, no status ("fake calls to your webhook will never
  result in orders being processed without being actually paid"); the receiver fetches the payment.
- ``overview/api-idempotency.rst``: ``Idempotency-Key`` on any POST; the first answer is replayed for
  24 hours (``Idempotent-Replayed: true``); other parameters with the same key: 400; the same request
  still running: 409.
- Errors (mollie/mollie-api-node ``MollieApiError``): ``{"status", "title", "detail", "field"?,
  "_links"?}``.

Amounts: Mollie's ``value`` has the currency's ISO 4217 decimals ("Make sure to send the right amount of
decimals"), which are ``shared.money``'s exponents; nothing is ever rounded. [UNVERIFIED] whether Mollie
writes zero-decimal currencies (JPY, ISK) without a point: accepted either way when reading.

Events: Mollie has no event ids. A payment's state is keyed ``<tr_…>:<status>``, so every webhook
(and every copy) that finds the same status is one event; a refund's or chargeback's outcome
``<re_…|chb_…>:<kind>``, so the same outcome seen in many fetches (every later webhook of the payment
lists all of its refunds again) moves money once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import parse_qs

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    RefundRequest,
)
from shared.money import MoneyError, currency_exponent, from_major, require_minor, to_major

PAYMENTS_PATH: Final = "/v2/payments"
EMBED: Final = "refunds,chargebacks"
PAYMENT_ID: Final = re.compile(r"tr_[A-Za-z0-9]{1,64}")
REFUND_ID: Final = re.compile(r"re_[A-Za-z0-9]{1,64}")
CHARGEBACK_ID: Final = re.compile(r"chb_[A-Za-z0-9]{1,64}")
_VALUE: Final = re.compile(r"[0-9]{1,15}(\.[0-9]{1,6})?")  # never negative where we read it

# Our method id -> Mollie's ``method`` code (create-payment.rst's list; "creditcard" is Mollie's card).
METHOD_CODES: Final[Mapping[str, str]] = {
    "ideal": "ideal",
    "bancontact": "bancontact",
    "card": "creditcard",
    "eps": "eps",
    "przelewy24": "przelewy24",
    "kbc": "kbc",
    "belfius": "belfius",
    "paypal": "paypal",
    "applepay": "applepay",
    "mybank": "mybank",
    "bank_transfer": "banktransfer",
}
# create-payment.rst, ``locale``: what the hosted pages speak.
MOLLIE_LOCALES: Final = (
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
)
DESCRIPTION_MAX = 255
# "You can use up to approximately 1kB" of metadata: ours is three short strings.
METADATA_KEYS: Final = ("reference", "payment_id", "order_id")

PENDING_STATUSES: Final = frozenset({"open", "pending", "authorized"})
PAYMENT_KINDS: Final[Mapping[str, EventKind]] = {
    "open": EventKind.PENDING,
    "pending": EventKind.PENDING,
    # Only for manual capture (never asked for here): not money held until captured.
    "authorized": EventKind.PENDING,
    "paid": EventKind.SUCCEEDED,
    "failed": EventKind.FAILED,
    "canceled": EventKind.FAILED,  # the driver canceled at Mollie
    "expired": EventKind.EXPIRED,
}
# A refund in ``processing`` can no longer be canceled: the money is on its way back, so the balance
# is debited then (and given back by REFUND_FAILED should it fail). ``queued``/``pending`` may still be
# canceled: nothing yet.
REFUND_SENT: Final = frozenset({"processing", "refunded"})
REFUND_UNDONE: Final = frozenset({"failed", "canceled"})
REFUND_WAITING: Final = frozenset({"queued", "pending"})


class WireError(ValueError):
    """A Mollie object that is not the shape documented for it."""


class UnsupportedCurrency(WireError):
    """A currency evtopup never charges in: the object is not one of our payments."""


# --- amounts -----------------------------------------------------------------------------------


def to_mollie_amount(amount_minor: int, currency: str) -> dict[str, str]:
    """``{"currency", "value"}`` with the currency's exact decimals (2500 EUR -> "25.00")."""
    minor = require_minor(amount_minor, "amount_minor")
    if minor <= 0:
        raise MoneyError("a Mollie amount must be positive")
    major = to_major(minor, currency)
    return {"currency": currency, "value": f"{major:.{currency_exponent(currency)}f}"}


def from_mollie_amount(obj: object, what: str = "amount") -> tuple[int, str]:
    """Minor units and currency of a Mollie amount object; the value must be a decimal string whose
    every digit our minor unit can hold (``"25.00"`` and ``"25.0"`` are 2500, ``"25.001"`` is refused)."""
    if not isinstance(obj, Mapping):
        raise WireError(f"{what} must be an amount object")
    currency, value = obj.get("currency"), obj.get("value")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise WireError(f"{what}.currency must be an ISO 4217 code")
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        raise WireError(f"{what}.value must be a decimal string")
    try:
        currency_exponent(currency)
    except MoneyError:
        raise UnsupportedCurrency(f"evtopup does not charge in {currency}") from None
    try:
        return from_major(Decimal(value), currency), currency
    except (InvalidOperation, MoneyError) as exc:
        raise WireError(f"{what}.value: {exc}") from None


# --- requests ----------------------------------------------------------------------------------


def mollie_locale(locale: str | None) -> str | None:
    """Mollie's ``xx_XX`` for ours (``de``, ``pt-BR``, ``nl_BE``…), or None to let the browser decide."""
    if not locale:
        return None
    tag = locale.replace("-", "_")
    for known in MOLLIE_LOCALES:
        if known.lower() == tag.lower():
            return known
    language = tag.split("_", 1)[0].lower()
    return next((known for known in MOLLIE_LOCALES if known.split("_")[0] == language), None)


def create_payment_body(request: CheckoutRequest) -> dict[str, Any]:
    """The JSON of ``POST /v2/payments`` for a top-up, derived from ``request`` alone: a retry with the
    same Idempotency-Key sends the very same parameters (Mollie answers other ones with 400)."""
    body: dict[str, Any] = {
        "amount": to_mollie_amount(request.amount_minor, request.currency),
        "description": (request.description.strip() or "Top-up")[:DESCRIPTION_MAX],
        "redirectUrl": request.return_url,
        "webhookUrl": request.webhook_url,
        "metadata": {
            "reference": request.reference,
            "payment_id": str(request.payment_id),
            "order_id": str(request.order_id),
        },
    }
    code = METHOD_CODES.get(request.method)
    if code is not None:
        body["method"] = code
    locale = mollie_locale(request.locale)
    if locale is not None:
        body["locale"] = locale
    return body


def create_refund_body(request: RefundRequest) -> dict[str, Any]:
    """The JSON of ``POST /v2/payments/{id}/refunds``: the amount, the reason as its description (which
    Mollie passes to the driver's bank where it can), our refund key in the metadata."""
    metadata = {"refund_key": request.refund_key}
    if request.payment.merchant_reference:
        metadata["reference"] = request.payment.merchant_reference
    body: dict[str, Any] = {"amount": to_mollie_amount(request.amount_minor, request.currency), "metadata": metadata}
    if request.reason.strip():
        body["description"] = request.reason.strip()[:DESCRIPTION_MAX]
    return body


# --- objects -----------------------------------------------------------------------------------


def _text(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise WireError(f"{key} must be a string")
    return value


def _id(obj: Mapping[str, Any], pattern: re.Pattern[str], what: str) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WireError(f"{what} id must match {pattern.pattern}")
    return value


def _embedded(obj: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    embedded = obj.get("_embedded")
    if embedded is None:
        return []
    if not isinstance(embedded, Mapping):
        raise WireError("_embedded must be an object")
    items = embedded.get(name, [])
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise WireError(f"_embedded.{name} must be a list of objects")
    return items


@dataclass(frozen=True)
class MollieRefund:
    id: str
    status: str
    amount_minor: int
    currency: str
    refund_key: str | None = None  # ours, from ``metadata.refund_key`` (``create_refund_body``)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MollieRefund:
        if obj.get("resource", "refund") != "refund":
            raise WireError(f"expected a refund, got {obj.get('resource')!r}")
        amount_minor, currency = from_mollie_amount(obj.get("amount"), "refund amount")
        metadata = obj.get("metadata")
        key = metadata.get("refund_key") if isinstance(metadata, Mapping) else None
        return cls(
            _id(obj, REFUND_ID, "refund"),
            str(_text(obj, "status")),
            amount_minor,
            currency,
            key if isinstance(key, str) and key else None,
        )


@dataclass(frozen=True)
class MollieChargeback:
    id: str
    amount_minor: int
    currency: str
    reversed: bool
    reason: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MollieChargeback:
        if obj.get("resource", "chargeback") != "chargeback":
            raise WireError(f"expected a chargeback, got {obj.get('resource')!r}")
        amount_minor, currency = from_mollie_amount(obj.get("amount"), "chargeback amount")
        reversed_at = obj.get("reversedAt")
        if reversed_at is not None and not isinstance(reversed_at, str):
            raise WireError("reversedAt must be a date-time or null")
        reason = obj.get("reason")
        words = None
        if isinstance(reason, Mapping):  # direct debit only: {code, description}
            parts = [reason.get("code"), reason.get("description")]
            words = ": ".join(p for p in parts if isinstance(p, str) and p)[:200] or None
        return cls(_id(obj, CHARGEBACK_ID, "chargeback"), amount_minor, currency, bool(reversed_at), words)


@dataclass(frozen=True)
class MolliePayment:
    id: str
    status: str
    mode: str | None
    amount_minor: int
    currency: str
    reference: str | None  # ours, from ``metadata.reference``; None: not a payment we created
    checkout_url: str | None
    failure: str | None
    refunds: tuple[MollieRefund, ...] = field(default_factory=tuple)
    chargebacks: tuple[MollieChargeback, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, obj: object) -> MolliePayment:
        if not isinstance(obj, Mapping):
            raise WireError("a payment must be a JSON object")
        if obj.get("resource") != "payment":
            raise WireError(f"expected a payment, got {obj.get('resource')!r}")
        status = str(_text(obj, "status"))
        if status not in PAYMENT_KINDS:
            raise WireError(f"unknown payment status {status!r}")
        amount_minor, currency = from_mollie_amount(obj.get("amount"))
        metadata = obj.get("metadata")
        reference = metadata.get("reference") if isinstance(metadata, Mapping) else None
        links = obj.get("_links")
        checkout = links.get("checkout") if isinstance(links, Mapping) else None
        href = checkout.get("href") if isinstance(checkout, Mapping) else None
        details = obj.get("details")
        failure = details.get("failureReason") if isinstance(details, Mapping) else None
        mode = obj.get("mode")
        return cls(
            id=_id(obj, PAYMENT_ID, "payment"),
            status=status,
            mode=mode if isinstance(mode, str) else None,
            amount_minor=amount_minor,
            currency=currency,
            reference=reference if isinstance(reference, str) and reference else None,
            checkout_url=href if isinstance(href, str) and href.startswith(("https://", "http://")) else None,
            failure=failure if isinstance(failure, str) and failure else None,
            refunds=tuple(MollieRefund.from_json(item) for item in _embedded(obj, "refunds")),
            chargebacks=tuple(MollieChargeback.from_json(item) for item in _embedded(obj, "chargebacks")),
        )

    @property
    def payment(self) -> PaymentRef:
        return PaymentRef(merchant_reference=self.reference, processor_reference=self.id)

    @property
    def kind(self) -> EventKind:
        return PAYMENT_KINDS[self.status]

    @property
    def reason(self) -> str | None:
        if self.kind in (EventKind.PENDING, EventKind.SUCCEEDED):
            return None
        return f"{self.status}: {self.failure}" if self.failure else self.status


# --- webhooks ----------------------------------------------------------------------------------


def webhook_payment_id(body: bytes) -> str:
    """The payment id of a classic webhook, ``id=tr_…`` form-encoded; :class:`MalformedWebhook` for
    anything else (another object's id included: evtopup sets ``webhookUrl`` on payments only)."""
    try:
        text = body.decode("ascii")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise MalformedWebhook("not a form-encoded Mollie webhook") from None
    ids = fields.get("id", [])
    if len(ids) != 1:
        raise MalformedWebhook("a Mollie webhook names exactly one id")
    if not PAYMENT_ID.fullmatch(ids[0]):
        raise MalformedWebhook("the webhook's id is not a payment id (tr_…)")
    return ids[0]


def _money_back(
    cause_id: str, payment: PaymentRef, kind: EventKind, amount: int, currency: str, reason: str | None
) -> ProcessorEvent:
    return ProcessorEvent(f"{cause_id}:{kind}", payment, kind, amount, currency, reason, cause_id)


def refund_events(payment: MolliePayment) -> list[ProcessorEvent]:
    events = []
    for refund in payment.refunds:
        if refund.status in REFUND_SENT:
            kind = EventKind.REFUNDED
        elif refund.status in REFUND_UNDONE:
            # Whether money had moved is payments' to know: a refund canceled while pending moved none.
            kind = EventKind.REFUND_FAILED
        else:
            continue  # queued, pending, or a status not documented: nothing has moved yet
        reason = f"refund {refund.status}" if kind is EventKind.REFUND_FAILED else None
        events.append(_money_back(refund.id, payment.payment, kind, refund.amount_minor, refund.currency, reason))
    return events


def chargeback_events(payment: MolliePayment) -> list[ProcessorEvent]:
    events = []
    for chargeback in payment.chargebacks:
        ref, amount, currency = payment.payment, chargeback.amount_minor, chargeback.currency
        events.append(_money_back(chargeback.id, ref, EventKind.DISPUTE_OPENED, amount, currency, chargeback.reason))
        if chargeback.reversed:
            events.append(_money_back(chargeback.id, ref, EventKind.DISPUTE_WON, amount, currency, "reversed"))
    return events


def payment_events(payment: MolliePayment) -> list[ProcessorEvent]:
    """Everything a fetched payment states: its status, then each refund's and chargeback's outcome.
    A payment without our reference in its metadata is not ours (another integration on the same
    Mollie profile): nothing."""
    if payment.reference is None:
        return []
    state = ProcessorEvent(
        f"{payment.id}:{payment.status}",
        payment.payment,
        payment.kind,
        payment.amount_minor,
        payment.currency,
        payment.reason,
    )
    return [state, *refund_events(payment), *chargeback_events(payment)]


def poll_event(payment: MolliePayment) -> ProcessorEvent:
    """``fetch_status``'s answer: where the payment stands, keyed ``poll:<tr_…>:<kind>``."""
    return ProcessorEvent(
        f"poll:{payment.id}:{payment.kind}",
        payment.payment,
        payment.kind,
        payment.amount_minor,
        payment.currency,
        payment.reason,
    )


# --- errors ------------------------------------------------------------------------------------

# Anything shaped like a Mollie credential is cut from error texts.
CREDENTIAL: Final = re.compile(r"\b(?:live|test|access)_[A-Za-z0-9]+")


@dataclass(frozen=True)
class MollieError:
    """``{"status", "title", "detail", "field"?}``; empty fields when the body is not that."""

    title: str = ""
    detail: str = ""
    field: str = ""

    def words(self, limit: int = 200) -> str:
        text = " ".join(part for part in (self.title, f"({self.field})" if self.field else "", self.detail) if part)
        clean = "".join(c for c in CREDENTIAL.sub("[redacted]", text) if c.isprintable())
        return clean[:limit]


def parse_error(body: object) -> MollieError:
    if not isinstance(body, Mapping):
        return MollieError()

    def text(key: str) -> str:
        value = body.get(key)
        return value if isinstance(value, str) else ""

    return MollieError(text("title"), text("detail"), text("field"))
