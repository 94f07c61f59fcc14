"""Paystack's wire format, as pure functions (no I/O): amounts, request bodies, the webhook signature,
the API's answer envelope, transactions, refunds, disputes and webhook events, parsed once into typed
values.

Sources (``/work/shared/reference/processors.md`` §4 and, where it is silent, Paystack's own texts):

- Initialize / verify / refund endpoints and bodies: Paystack's API reference as mirrored in
  alexasomba/paystack-openapi ``Paystack-API/1-Transactions.md`` and ``26-Refunds.md`` (initialize
  body: ``email``, ``amount`` "in the subunit of the supported currency", ``currency``,
  ``reference`` "Only -, ., = and alphanumeric characters allowed", ``callback_url``, ``metadata``,
  ``channels`` from card, bank, apple_pay, ussd, qr, mobile_money, bank_transfer, eft, capitec_pay,
  payattitude; answer ``data.authorization_url``, ``data.access_code``, ``data.reference``; verify
  answer ``data.id``, ``status``, ``reference``, ``amount``, ``requested_amount``, ``currency``,
  ``created_at``; refund body ``transaction`` (reference or id), ``amount``, ``currency``,
  ``customer_note``, ``merchant_note``; refund objects ``id``, ``transaction``, ``amount``,
  ``currency``, ``status``, ``merchant_note``).
- Webhook events and their bodies: PaystackOSS/doc-code-snippets ``dist/doc/payments/webhooks/events.js``
  (``charge.dispute.create|remind|resolve`` with ``data.id``, ``refund_amount``, ``currency``,
  ``status``, ``resolution`` — ``null`` while open, ``auto-accepted`` in the resolve sample —
  and ``transaction.{id, reference, amount, currency}``; ``refund.pending|processing|processed|failed``
  with ``transaction_reference``, ``refund_reference``, ``amount`` as ``"10000"`` (a string) in
  pending/processing/processed and ``20000`` (a number) in failed, ``currency``, ``status``).
- Signature: ``x-paystack-signature`` = hex HMAC-SHA512 keyed with the secret key over the body
  (Paystack's Webhooks page, same mirror ``Docs/02-Webhooks.md``; its PHP snippet hashes
  ``php://input``, the raw bytes, which is what we verify).
- Dispute resolutions: ``merchant-accepted`` and ``declined`` (Resolve Dispute API),
  ``auto-accepted`` (resolve sample); a third-party SDK's enum adds ``paystack-accepted``,
  ``fraudulent-recovered``, ``fraudulent-lost``, ``converted-to-chargeback`` [UNVERIFIED].

Amounts: Paystack counts in a currency's "subunit" (kobo, pesewas, cents). Only currencies whose
subunit is documented as the hundredth and whose ISO 4217 exponent is 2 are taken (NGN, GHS, ZAR,
KES, USD, EGP), so Paystack's subunits are exactly our minor units. XOF and RWF (ISO exponent 0)
are refused: how Paystack counts them is not verified. An amount arrives as a JSON integer or as a
string of digits (both occur in Paystack's own samples); anything else (a fraction, a sign, a
float) is refused, never rounded."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
from services.payments.processors.paystack.config import customer_email_for
from shared.money import MoneyError, currency_exponent, require_minor

SIGNATURE_HEADER: Final = "x-paystack-signature"
# Our method id -> Paystack's channel (``channels`` of initialize).
CHANNELS: Final[Mapping[str, str]] = {
    "card": "card",
    "bank": "bank",
    "bank_transfer": "bank_transfer",
    "ussd": "ussd",
    "mobile_money": "mobile_money",
    "qr": "qr",
    "eft": "eft",
    "apple_pay": "apple_pay",
}
CURRENCIES: Final = frozenset({"NGN", "GHS", "ZAR", "KES", "USD", "EGP"})
REFERENCE: Final = re.compile(r"[A-Za-z0-9.=-]{1,100}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")
# Our refund key in the refund's merchant_note: a retried refund finds the refund it made first.
REFUND_MARK: Final = "evtopup-refund:"
MERCHANT_NOTE_MAX = 250

# Verify's ``data.status``: PaystackOSS docs list success, failed, abandoned, ongoing, pending,
# processing, queued, reversed.
PENDING_STATUSES: Final = frozenset({"ongoing", "pending", "processing", "queued"})
# Paystack says "reversed" for a paid transaction given back in full (a refund, a lost dispute):
# the payment did succeed; the money coming back arrives as refund or dispute events.
PAID_STATUSES: Final = frozenset({"success", "reversed"})
TRANSACTION_STATUSES: Final = PENDING_STATUSES | PAID_STATUSES | {"failed", "abandoned"}

DISPUTE_EVENTS: Final = frozenset({"charge.dispute.create", "charge.dispute.remind", "charge.dispute.resolve"})
REFUND_EVENTS: Final = frozenset({"refund.pending", "refund.processing", "refund.processed", "refund.failed"})
# Refund events whose refunds reached an outcome; pending and processing change nothing.
REFUND_OUTCOME_EVENTS: Final = frozenset({"refund.processed", "refund.failed"})
# The events the Dashboard's webhook sends that we act on (Paystack sends all events to one URL).
HANDLED_EVENTS: Final = frozenset({"charge.success"}) | DISPUTE_EVENTS | REFUND_OUTCOME_EVENTS
# Resolutions by which the money goes back to the driver, and by which the operator keeps it.
DISPUTE_LOST_RESOLUTIONS: Final = frozenset({"merchant-accepted", "auto-accepted", "paystack-accepted"})
DISPUTE_WON_RESOLUTIONS: Final = frozenset({"declined"})


class WireError(ValueError):
    """A Paystack object that is not the shape documented for it."""


class UnsupportedCurrency(WireError):
    """A currency evtopup does not charge in through Paystack: the object is not one of our payments."""


T = TypeVar("T")


# --- amounts -----------------------------------------------------------------------------------


def paystack_currency(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
        raise WireError(f"currency must be an upper-case ISO code, not {value!r}")
    if value not in CURRENCIES:
        raise UnsupportedCurrency(f"evtopup does not take {value} through Paystack")
    return value


def to_paystack_amount(amount_minor: int, currency: str) -> int:
    """Our minor units as Paystack's subunits (the same number, for the currencies taken)."""
    amount = require_minor(amount_minor, "amount_minor")
    if currency not in CURRENCIES:
        raise MoneyError(f"evtopup does not take {currency} through Paystack")
    if currency_exponent(currency) != 2:  # shared.money and CURRENCIES disagree: never guess
        raise MoneyError(f"{currency} is not counted in hundredths")
    if amount <= 0:
        raise MoneyError("a Paystack amount must be positive")
    return amount


def from_paystack_amount(value: object, currency: str) -> int:
    """A Paystack amount (a JSON integer, or a string of digits) as our minor units; exact or refused."""
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise MoneyError(f"a Paystack amount string must be whole subunits, not {value!r}")
        amount = int(value)
    else:
        amount = require_minor(value, "amount")
    if amount < 0:
        raise MoneyError("a Paystack amount is never negative")
    if currency not in CURRENCIES or currency_exponent(currency) != 2:
        raise MoneyError(f"evtopup does not take {currency} through Paystack")
    return amount


# --- requests ----------------------------------------------------------------------------------


def paystack_reference(reference: str) -> str:
    if not REFERENCE.fullmatch(reference):
        raise WireError("a Paystack reference takes only letters, digits and - . =")
    return reference


def initialize_body(request: CheckoutRequest, customer_email: str) -> dict[str, Any]:
    """``POST /transaction/initialize``. ``customer_email`` is the configured template (see
    ``config.py``): it carries nothing about the driver. The reference is ours, so Paystack's events
    and verify name the payment by it."""
    body: dict[str, Any] = {
        "email": customer_email_for(customer_email, request.payment_id.hex),
        "amount": to_paystack_amount(request.amount_minor, request.currency),
        "currency": request.currency,
        "reference": paystack_reference(request.reference),
        "callback_url": request.return_url,
        "metadata": {"payment_id": str(request.payment_id), "order_id": str(request.order_id)},
    }
    channel = CHANNELS.get(request.method)
    if channel is not None:
        body["channels"] = [channel]
    return body


def refund_marker(refund_key: str) -> str:
    return f"{REFUND_MARK}{refund_key}"


def refund_body(transaction_id: str, request: RefundRequest) -> dict[str, Any]:
    """``POST /refund``: by the transaction's id, in subunits, our refund key in the merchant note
    (Paystack takes no idempotency key; the adapter looks for the note before refunding again)."""
    note = refund_marker(request.refund_key)
    if request.reason:
        note = f"{note} {request.reason}"
    return {
        "transaction": transaction_id,
        "amount": to_paystack_amount(request.amount_minor, request.currency),
        "currency": request.currency,
        "merchant_note": note[:MERCHANT_NOTE_MAX],
    }


# --- webhook signature -------------------------------------------------------------------------


def compute_signature(secret_key: str, body: bytes) -> str:
    """``x-paystack-signature``: hex HMAC-SHA512 keyed with the secret key over the raw body."""
    return hmac.new(secret_key.encode(), body, hashlib.sha512).hexdigest()


def verify_signature(secret_key: str, header: str | None, body: bytes) -> None:
    """The signature over the bytes as they arrived (never a re-serialised body). Hex case is not
    significant. A ``t=…,v1=…`` header (a timestamped scheme seen in Paystack's snippet repository,
    not in its documentation) is refused rather than guessed at."""
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    given = header.strip()
    if given.startswith("t=") or "v1=" in given:
        raise InvalidSignature("timestamped Paystack signatures (t=…,v1=…) are not supported")
    if not _HEX_SIGNATURE.fullmatch(given):
        raise InvalidSignature("signature is not a hex HMAC-SHA512")
    expected = compute_signature(secret_key, body)
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise InvalidSignature("signature does not match")


# --- typed Paystack objects --------------------------------------------------------------------


def _get(obj: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError(f"{key} must be a {kind.__name__}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WireError(f"{key} must be a string")
    return value


def _object_id(value: object, what: str) -> str:
    """Paystack's numeric ids ("an unsigned 64-bit integer"), as text; some answers quote them."""
    if isinstance(value, bool):
        raise WireError(f"{what} must be a numeric id")
    if isinstance(value, int) and 0 <= value < 2**64:
        return str(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return value
    raise WireError(f"{what} must be a numeric id")


def _timestamp(obj: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise WireError(f"{key} must be an ISO 8601 time") from None
    return None


def _ids(**ids: str | None) -> dict[str, str]:
    return {name: value for name, value in ids.items() if value}


@dataclass(frozen=True)
class PaystackTransaction:
    """A transaction as verify returns it (and as ``charge.success`` carries it)."""

    id: str
    reference: str
    status: str
    amount_minor: int  # what we asked for: ``requested_amount`` when stated (see ``from_json``)
    currency: str
    created_at_s: float | None
    gateway_response: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PaystackTransaction:
        currency = paystack_currency(obj.get("currency"))
        # With fees passed to the customer, ``amount`` is the request plus Paystack's fee and
        # ``requested_amount`` the amount initialized (verify sample: 40333 charged, 30050 asked).
        # Never more than was charged: a ``requested_amount`` above ``amount`` (less was taken than
        # asked) states the amount taken, which payments then refuses to credit as the top-up.
        charged = from_paystack_amount(obj.get("amount"), currency)
        stated = obj.get("requested_amount")
        requested = from_paystack_amount(stated, currency) if stated is not None else charged
        return cls(
            id=_object_id(obj.get("id"), "id"),
            reference=_get(obj, "reference", str),
            status=_get(obj, "status", str),
            amount_minor=min(requested, charged),
            currency=currency,
            created_at_s=_timestamp(obj, "created_at", "createdAt"),
            gateway_response=_optional_str(obj, "gateway_response"),
        )

    @property
    def payment(self) -> PaymentRef:
        return PaymentRef(
            merchant_reference=self.reference, processor_reference=self.reference, ids=_ids(transaction=self.id)
        )


@dataclass(frozen=True)
class PaystackRefund:
    """A refund as ``POST /refund`` and ``GET /refund`` return it."""

    id: str
    transaction_id: str | None
    amount_minor: int
    currency: str
    status: str
    merchant_note: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PaystackRefund:
        currency = paystack_currency(obj.get("currency"))
        transaction = obj.get("transaction")
        if isinstance(transaction, dict):  # the create answer embeds the transaction
            transaction = transaction.get("id")
        return cls(
            id=_object_id(obj.get("id"), "id"),
            transaction_id=None if transaction is None else _object_id(transaction, "transaction"),
            amount_minor=from_paystack_amount(obj.get("amount"), currency),
            currency=currency,
            status=_get(obj, "status", str),
            merchant_note=_optional_str(obj, "merchant_note"),
        )

    def made_for(self, refund_key: str) -> bool:
        note = self.merchant_note or ""
        marker = refund_marker(refund_key)
        return note == marker or note.startswith(marker + " ")


@dataclass(frozen=True)
class PaystackDispute:
    id: str
    status: str | None
    resolution: str | None
    amount_minor: int
    currency: str
    transaction_id: str | None
    transaction_reference: str
    category: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PaystackDispute:
        transaction = _get(obj, "transaction", dict)
        # ``currency`` is null on some disputes (List Disputes sample): the transaction's then.
        currency = paystack_currency(obj.get("currency") or transaction.get("currency"))
        refund_amount = obj.get("refund_amount")
        amount = from_paystack_amount(refund_amount, currency) if refund_amount is not None else 0
        if amount <= 0:  # not stated (yet): the whole transaction is disputed
            amount = from_paystack_amount(transaction.get("amount"), currency)
        tx_id = transaction.get("id")
        return cls(
            id=_object_id(obj.get("id"), "id"),
            status=_optional_str(obj, "status"),
            resolution=_optional_str(obj, "resolution"),
            amount_minor=amount,
            currency=currency,
            transaction_id=None if tx_id is None else _object_id(tx_id, "transaction.id"),
            transaction_reference=_get(transaction, "reference", str),
            category=_optional_str(obj, "category"),
        )


@dataclass(frozen=True)
class RefundNotice:
    """A ``refund.*`` webhook's data. It names the transaction but not the refund (no refund id in
    Paystack's samples), so the adapter reads the transaction's refunds to tell which one it was."""

    status: str
    transaction_reference: str
    amount_minor: int
    currency: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RefundNotice:
        currency = paystack_currency(obj.get("currency"))
        return cls(
            status=_get(obj, "status", str),
            transaction_reference=_get(obj, "transaction_reference", str),
            amount_minor=from_paystack_amount(obj.get("amount"), currency),
            currency=currency,
        )


@dataclass(frozen=True)
class PaystackEvent:
    """``{"event": "<name>", "data": {…}}``: Paystack's events carry no id of their own."""

    event: str
    data: Mapping[str, Any]

    @classmethod
    def from_json(cls, obj: Any) -> PaystackEvent:
        if not isinstance(obj, dict):
            raise WireError("an event must be a JSON object")
        return cls(event=_get(obj, "event", str), data=_get(obj, "data", dict))


@dataclass(frozen=True)
class PaystackAnswer:
    """The API's envelope: ``{"status": true|false, "message": "…", "data": …}``."""

    ok: bool
    message: str | None
    data: Any


def parse_answer(body: Any) -> PaystackAnswer:
    if not isinstance(body, dict):
        return PaystackAnswer(False, None, None)
    message = body.get("message")
    return PaystackAnswer(body.get("status") is True, message if isinstance(message, str) else None, body.get("data"))


# --- what is kept -------------------------------------------------------------------------------

# What Paystack's events say about the driver (charge.success and dispute samples: the customer's
# names and phone, the IP address the checkout was paid from, the card or bank account and its holder
# in ``authorization``): never kept in the stored webhook body (``processor_events.body``).
DRIVER_DETAILS: Final = frozenset(
    {"first_name", "last_name", "phone", "international_format_phone", "ip_address", "authorization"}
)


def _without_driver(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_driver(v) for k, v in value.items() if k not in DRIVER_DETAILS}
    if isinstance(value, list):
        return [_without_driver(item) for item in value]
    return value


def body_without_driver(body: bytes) -> bytes:
    """The webhook body as kept for audit, ``DRIVER_DETAILS`` left out; a body that cannot be read is
    not kept at all rather than kept whole."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return b""
    return json.dumps(_without_driver(data), separators=(",", ":"), ensure_ascii=False).encode()


# --- events ------------------------------------------------------------------------------------


def is_our_reference(reference: str) -> bool:
    """Our references are payment ids (UUIDs); a transaction with another reference was made by
    something else on the same Paystack account, and is not ours to act on."""
    try:
        return str(uuid.UUID(reference)) == reference
    except ValueError:
        return False


def _charge_events(event: PaystackEvent) -> list[ProcessorEvent]:
    reference = event.data.get("reference")
    if not isinstance(reference, str) or not is_our_reference(reference):
        return []
    tx = PaystackTransaction.from_json(event.data)
    if tx.status != "success":
        return []  # only ever "success" in Paystack's samples; anything else states no payment
    # Paystack's events have no id: the event, the transaction and its status name this statement.
    event_id = f"{event.event}:{tx.id}:{tx.status}"
    return [ProcessorEvent(event_id, tx.payment, EventKind.SUCCEEDED, tx.amount_minor, tx.currency)]


def dispute_kind(event_name: str, dispute: PaystackDispute) -> EventKind | None:
    """A Paystack dispute takes nothing at once: the amount leaves the operator's settlement when the
    dispute is accepted (by the operator, or automatically when not answered in time). evtopup takes
    the amount back from the driver's balance while it is disputed all the same (DISPUTE_OPENED),
    so a driver cannot spend money a bank may hand back to them; the outcome then gives it back
    (declined: the operator kept the money) or leaves it taken. Resolutions whose money flow is not
    documented (fraud claims, a conversion to a chargeback) change nothing: the amount stays taken
    and the operator sees the dispute on Paystack's Dashboard."""
    if event_name != "charge.dispute.resolve":
        return EventKind.DISPUTE_OPENED  # create, and remind (the same dispute, still open)
    if dispute.resolution in DISPUTE_LOST_RESOLUTIONS:
        return EventKind.DISPUTE_LOST
    if dispute.resolution in DISPUTE_WON_RESOLUTIONS:
        return EventKind.DISPUTE_WON
    return None


def _dispute_events(event: PaystackEvent) -> list[ProcessorEvent]:
    dispute = PaystackDispute.from_json(event.data)
    if not is_our_reference(dispute.transaction_reference):
        return []
    kind = dispute_kind(event.event, dispute)
    if kind is None:
        return []
    payment = PaymentRef(merchant_reference=dispute.transaction_reference, ids=_ids(transaction=dispute.transaction_id))
    # Keyed by the dispute and its outcome: create and remind state the same opening.
    return [
        ProcessorEvent(
            f"dispute:{dispute.id}:{kind}",
            payment,
            kind,
            dispute.amount_minor,
            dispute.currency,
            dispute.resolution or dispute.category,
            dispute.id,
        )
    ]


def parse_event(body: bytes) -> PaystackEvent:
    try:
        return PaystackEvent.from_json(json.loads(body))
    except (ValueError, RecursionError) as exc:  # WireError, JSONDecodeError, UnicodeDecodeError
        raise MalformedWebhook(f"not a Paystack event: {exc}") from None


def event_to_processor_events(event: PaystackEvent) -> list[ProcessorEvent]:
    """The normalized events of a (verified) charge or dispute event; none for events we do not act
    on. Refund events need the API (``refund_notice`` and ``refund_events``)."""
    try:
        if event.event == "charge.success":
            return _charge_events(event)
        if event.event in DISPUTE_EVENTS:
            return _dispute_events(event)
    except UnsupportedCurrency:
        # Not a currency evtopup charges in: not ours. Not refused: a 400 is retried for 72 hours.
        return []
    except ValueError as exc:  # WireError, MoneyError
        raise MalformedWebhook(f"unreadable {event.event} event: {exc}") from None
    return []


def refund_notice(event: PaystackEvent) -> RefundNotice | None:
    """The refund event's data when it reports an outcome for one of our payments; None otherwise."""
    if event.event not in REFUND_OUTCOME_EVENTS:
        return None
    try:
        notice = RefundNotice.from_json(event.data)
    except UnsupportedCurrency:
        return None
    except ValueError as exc:
        raise MalformedWebhook(f"unreadable {event.event} event: {exc}") from None
    return notice if is_our_reference(notice.transaction_reference) else None


def refund_kind(status: str) -> EventKind | None:
    """A refund's outcome from its status (``processed``: the money went back; ``failed``: it
    could not, and Paystack credits the operator's balance again); pending, processing and
    needs-attention are not outcomes yet."""
    if status == "processed":
        return EventKind.REFUNDED
    if status == "failed":
        return EventKind.REFUND_FAILED
    return None


def refund_events(transaction: PaystackTransaction, refunds: Sequence[PaystackRefund]) -> list[ProcessorEvent]:
    """The outcomes of a transaction's refunds as Paystack lists them, each keyed by the refund's
    id and outcome (the refund id is what ``refund()`` returned, so the request it answers is
    confirmed)."""
    events = []
    for refund in refunds:
        kind = refund_kind(refund.status)
        if kind is None or refund.transaction_id not in (None, transaction.id):
            continue
        events.append(
            ProcessorEvent(
                f"refund:{refund.id}:{kind}",
                transaction.payment,
                kind,
                refund.amount_minor,
                refund.currency,
                None,
                refund.id,
            )
        )
    return events


def transaction_kind(tx: PaystackTransaction, now_s: float, checkout_expiry_s: float) -> EventKind:
    """Where a transaction stands (verify). ``abandoned`` is what verify says of a transaction nobody
    has paid yet, however young, so it is pending until ``checkout_expiry_s`` after its creation."""
    if tx.status in PAID_STATUSES:
        return EventKind.SUCCEEDED
    if tx.status == "failed":
        return EventKind.FAILED
    if tx.status in PENDING_STATUSES:
        return EventKind.PENDING
    if tx.status == "abandoned":
        if tx.created_at_s is not None and now_s - tx.created_at_s >= checkout_expiry_s:
            return EventKind.EXPIRED
        return EventKind.PENDING
    raise WireError(f"unknown transaction status {tx.status!r}")
