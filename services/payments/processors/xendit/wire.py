"""Xendit's wire format (Invoices, invoice callbacks, the Refund API), as pure functions: no I/O.

Sources (``reference/processors.md`` §8 and the official SDKs' generated models, read through the
search tools; the SDKs are generated from Xendit's own OpenAPI specs):

- ``POST /v2/invoices`` (HTTP Basic, secret key as user name, empty password), JSON: ``external_id``
  (required), ``amount`` (required, a number in currency units), ``description``, ``invoice_duration``
  (seconds), ``success_redirect_url``, ``failure_redirect_url``, ``payment_methods`` (codes),
  ``currency``, ``locale``, ``metadata`` (≤50 keys, names ≤40, values ≤500 characters) —
  xendit-php ``docs/Invoice/CreateInvoiceRequest.md``, xendit-python ``docs/CreateInvoiceRequest.md``.
  Answer: the invoice (``id``, ``external_id``, ``status``, ``amount``, ``currency``, ``invoice_url``,
  ``expiry_date``, ``created``…) — xendit-python ``docs/Invoice.md``.
- ``GET /v2/invoices/{id}``; ``GET /v2/invoices?external_id=…`` (a JSON array);
  ``POST /invoices/{id}/expire!`` — xendit-python ``xendit/invoice/invoice_api.py``.
- Invoice statuses: ``PENDING``, ``PAID``, ``SETTLED``, ``EXPIRED`` (xendit-python ``docs/InvoiceStatus.md``).
  SETTLED is a PAID invoice whose funds reached the balance: paid either way.
- Invoice currencies: IDR, USD, THB, VND, PHP (xendit-python ``docs/InvoiceCurrency.md``); MYR from
  processors.md §8.a. Decimals: IDR and VND take whole units only (processors.md §8.a: "IDR decimals
  truncated" — so we never send a fraction Xendit would cut); PHP, THB, MYR and USD take cents
  [UNVERIFIED for MYR/USD beyond two decimals being their ISO exponent].
- Invoice ``payment_methods`` codes: xendit-python ``docs/EwalletType.md`` (OVO, DANA, LINKAJA, PAYMAYA,
  SHOPEEPAY, GCASH, GRABPAY…), ``docs/QrCodeType.md`` (QRIS, PROMPTPAY), ``docs/BankCode.md`` (BCA, BNI,
  BRI, MANDIRI, PERMATA, BSI…), CREDIT_CARD (processors.md §8.e, pipedream constants).
- Invoice callback: the invoice's fields (``id, external_id, user_id, status, amount, paid_amount,
  currency, paid_at, payment_method, payment_channel, payment_id…``) with header ``x-callback-token``
  — xendit-python ``xendit/invoice/model/invoice_callback.py``; processors.md §8.b.
- Refunds: ``POST /refunds`` with ``invoice_id``, ``amount``, ``currency``, ``reason`` (FRAUDULENT,
  DUPLICATE, REQUESTED_BY_CUSTOMER, CANCELLATION, OTHERS), ``reference_id``, ``metadata``, header
  ``idempotency-key``; ``GET /refunds/{id}`` — xendit-python ``xendit/refund/refund_api.py``,
  ``model/create_refund.py``. Callback ``{"event": "refund.succeeded"|"refund.failed", "business_id",
  "created", "data": {id, invoice_id, payment_request_id, amount, currency, status, reason,
  failure_code, reference_id, metadata…}}`` — ``model/refund_callback.py``, ``refund_callback_data.py``;
  processors.md §8.b. Refund statuses SUCCEEDED, FAILED, PENDING, CANCELLED [UNVERIFIED: the SDK's
  Refund model omits ``status``; the callback data carries it as a string].
- Errors: ``{"error_code": "...", "message": "..."}`` (xendit-python ``docs/Error.md``).

Nothing a callback says is believed: the adapter confirms it by fetching the invoice (or refund) and
every event is built from the fetched object (see ``adapter.py``)."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, DecimalException
from typing import Any, Final

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    RefundRequest,
)
from shared.money import MoneyError, from_major, require_minor, to_major

INVOICES_PATH: Final = "/v2/invoices"
REFUNDS_PATH: Final = "/refunds"
CALLBACK_TOKEN_HEADER: Final = "x-callback-token"  # noqa: S105 (a header name)
# The Refund API's idempotency header, as the SDKs send it (refund_api.py ``attribute_map``).
REFUND_IDEMPOTENCY_HEADER: Final = "idempotency-key"

# Decimals Xendit takes per invoice currency.
XENDIT_DECIMALS: Final[Mapping[str, int]] = {"IDR": 0, "VND": 0, "PHP": 2, "THB": 2, "MYR": 2, "USD": 2}

# Our method ids -> Xendit's invoice ``payment_methods`` codes.
METHOD_CODES: Final[Mapping[str, tuple[str, ...]]] = {
    "card": ("CREDIT_CARD",),
    # Virtual accounts of the banks Xendit offers on invoices (BankCode); the account must have them on.
    "bank_transfer": ("BCA", "BNI", "BRI", "MANDIRI", "PERMATA", "BSI"),
    "qris": ("QRIS",),
    "ovo": ("OVO",),
    "dana": ("DANA",),
    "shopeepay": ("SHOPEEPAY",),
    "linkaja": ("LINKAJA",),
    "gcash": ("GCASH",),
    "grabpay": ("GRABPAY",),
    "paymaya": ("PAYMAYA",),
    "promptpay": ("PROMPTPAY",),
}
# Invoice page languages sent as ``locale``; others are left to Xendit (its default, English).
# Only English and Indonesian are certain [UNVERIFIED: Xendit also lists Thai and Vietnamese].
XENDIT_LOCALES: Final = frozenset({"en", "id"})

INVOICE_STATUSES: Final = frozenset({"PENDING", "PAID", "SETTLED", "EXPIRED"})
PAID_STATUSES: Final = frozenset({"PAID", "SETTLED"})
REFUND_EVENTS: Final[Mapping[str, EventKind]] = {
    "refund.succeeded": EventKind.REFUNDED,
    "refund.failed": EventKind.REFUND_FAILED,
}
REFUND_REASON: Final = "OTHERS"  # Xendit's reasons are a fixed list; ours is free text (in metadata)
METADATA_VALUE_MAX: Final = 500
DESCRIPTION_MAX: Final = 1000  # [UNVERIFIED] a conservative cap; Xendit documents none for invoices

# Ids are put in URL paths: Xendit's are hex object ids (invoices) and ``rfd-<uuid>`` (refunds).
XENDIT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class WireError(ValueError):
    """A Xendit object that is not the shape documented for it."""


# --- amounts ---------------------------------------------------------------------------------------


def xendit_decimals(currency: str) -> int:
    try:
        return XENDIT_DECIMALS[currency]
    except KeyError:
        raise MoneyError(f"Xendit invoices are not in {currency}") from None


def to_xendit_amount(amount_minor: int, currency: str) -> int | Decimal:
    """Our minor units as Xendit's ``amount`` (currency units): an int where Xendit takes whole units,
    else an exact Decimal; MoneyError for anything Xendit cannot take exactly (never rounded)."""
    minor = require_minor(amount_minor, "amount_minor")
    if minor <= 0:
        raise MoneyError("an amount must be positive")
    decimals = xendit_decimals(currency)
    major = to_major(minor, currency)
    if major != round(major, decimals):
        raise MoneyError(f"Xendit takes {currency} in {'whole units' if decimals == 0 else 'hundredths'}, not {major}")
    if decimals == 0:
        return int(major)
    return major.quantize(Decimal(1).scaleb(-decimals))


def amount_json(amount: int | Decimal) -> int | float:
    """The amount as a JSON number whose text is exactly its decimal value (a float's repr is the
    shortest text that reads back as it: 25.05 stays "25.05")."""
    if isinstance(amount, int):
        return amount
    if amount == amount.to_integral_value():
        return int(amount)
    number = float(amount)
    if Decimal(repr(number)) != amount:
        raise MoneyError(f"{amount} cannot be written exactly as a JSON number")
    return number


def from_xendit_amount(value: object, currency: str) -> int:
    """Xendit's ``amount`` (a JSON number, read as Decimal) as our minor units, exactly."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise MoneyError("an amount must be a number")
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise MoneyError(f"{value} is not an amount")
    xendit_decimals(currency)
    return from_major(amount, currency)


# --- requests --------------------------------------------------------------------------------------


def _redirect(url: str, outcome: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}xendit={outcome}"


def invoice_body(request: CheckoutRequest, invoice_duration_s: int) -> dict[str, Any]:
    """``POST /v2/invoices`` for a top-up; MoneyError if the amount cannot be charged; ValueError for a
    method Xendit does not take."""
    codes = METHOD_CODES.get(request.method)
    if codes is None:
        raise ValueError(f"Xendit has no payment method {request.method!r}")
    body: dict[str, Any] = {
        "external_id": request.reference,
        "amount": amount_json(to_xendit_amount(request.amount_minor, request.currency)),
        "currency": request.currency,
        "description": request.description[:DESCRIPTION_MAX],
        "invoice_duration": invoice_duration_s,
        # Both lead back to our return page, which shows the payment's state from our own records.
        "success_redirect_url": _redirect(request.return_url, "success"),
        "failure_redirect_url": _redirect(request.return_url, "failure"),
        "payment_methods": list(codes),
        "should_send_email": False,
        "metadata": {"payment_id": str(request.payment_id), "order_id": str(request.order_id)},
    }
    locale = (request.locale or "").replace("_", "-").split("-", 1)[0].lower()
    if locale in XENDIT_LOCALES:
        body["locale"] = locale
    return body


def refund_body(invoice_id: str, request: RefundRequest) -> dict[str, Any]:
    """``POST /refunds`` for part or all of an invoice's payment; MoneyError if not representable."""
    metadata = {"refund_key": request.refund_key[:METADATA_VALUE_MAX]}
    if request.payment.merchant_reference:
        metadata["external_id"] = request.payment.merchant_reference[:METADATA_VALUE_MAX]
    if request.reason:
        metadata["reason"] = request.reason[:METADATA_VALUE_MAX]
    return {
        "invoice_id": invoice_id,
        "reference_id": request.refund_key,
        "amount": amount_json(to_xendit_amount(request.amount_minor, request.currency)),
        "currency": request.currency,
        "reason": REFUND_REASON,
        "metadata": metadata,
    }


# --- objects ---------------------------------------------------------------------------------------


def load_json(body: bytes) -> Any:
    """JSON with numbers as Decimal (amounts stay exact); ValueError for anything else."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError, DecimalException) as exc:
        raise ValueError(f"not JSON: {type(exc).__name__}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise WireError(f"{key} must be a non-empty string")
    return value


def _id(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = _text(obj, key, required=required)
    if value is not None and not XENDIT_ID.fullmatch(value):
        raise WireError(f"{key} is not a Xendit id")
    return value


def _currency(obj: Mapping[str, Any]) -> str:
    currency = obj.get("currency")
    if not isinstance(currency, str) or currency not in XENDIT_DECIMALS:
        raise WireError(f"currency {currency!r} is not one Xendit invoices in")
    return currency


def _amount(obj: Mapping[str, Any], key: str, currency: str) -> int:
    try:
        return from_xendit_amount(obj.get(key), currency)
    except MoneyError as exc:
        raise WireError(f"{key}: {exc}") from None


def _created(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WireError(f"created {value!r} is not an ISO 8601 time") from None


@dataclass(frozen=True)
class XenditInvoice:
    id: str
    external_id: str
    status: str  # PENDING | PAID | SETTLED | EXPIRED
    amount_minor: int
    paid_minor: int | None  # paid_amount, once paid
    currency: str
    invoice_url: str | None
    created: datetime | None
    expiry_date: datetime | None = None
    updated: datetime | None = None
    payment_id: str | None = None

    @classmethod
    def from_json(cls, obj: object) -> XenditInvoice:
        if not isinstance(obj, Mapping):
            raise WireError("an invoice must be a JSON object")
        status = _text(obj, "status")
        if status not in INVOICE_STATUSES:
            raise WireError(f"unknown invoice status {status!r}")
        currency = _currency(obj)
        paid = obj.get("paid_amount")
        url = obj.get("invoice_url")
        payment_id = obj.get("payment_id")
        return cls(
            id=str(_id(obj, "id")),
            external_id=str(_text(obj, "external_id")),
            status=status,
            amount_minor=_amount(obj, "amount", currency),
            paid_minor=None if paid is None else _amount(obj, "paid_amount", currency),
            currency=currency,
            invoice_url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
            created=_created(_text(obj, "created", required=False)),
            expiry_date=_created(_text(obj, "expiry_date", required=False)),
            updated=_created(_text(obj, "updated", required=False)),
            payment_id=payment_id if isinstance(payment_id, str) and payment_id else None,
        )

    @property
    def live(self) -> bool:
        """Payable or paid: not expired."""
        return self.status != "EXPIRED"

    @property
    def ended_early(self) -> bool:
        """Expired before its ``expiry_date``: ended by the merchant (``expire!``, the dashboard) or
        by Xendit, not by the clock. Without both times it counts as run out."""
        if self.status != "EXPIRED" or self.updated is None or self.expiry_date is None:
            return False
        return (self.expiry_date - self.updated).total_seconds() > EARLY_END_MARGIN_S


# An invoice Xendit expired more than this before its expiry_date was ended, not run out (Xendit's
# expiry job runs at or after the time; a minute absorbs clock differences).
EARLY_END_MARGIN_S: Final = 60


def status_class(status: str) -> str:
    """paid | expired | pending: what a callback and the fetched invoice must agree on."""
    if status in PAID_STATUSES:
        return "paid"
    if status in ("EXPIRED", "PENDING"):
        return status.lower()
    raise WireError(f"unknown invoice status {status!r}")


def invoice_kind(invoice: XenditInvoice) -> EventKind:
    """PENDING pending; PAID and SETTLED succeeded. An EXPIRED invoice is what Xendit calls the
    "Expired/Failure" callback (docs-staging.xendit.co/xeninvoice/notification-and-callback): Xendit's
    invoices have no failed status, a declined attempt leaves them payable. One that ran out of time
    expired; one ended before its time failed (it can no longer be paid, and not for lack of time)."""
    cls = status_class(invoice.status)
    if cls == "paid":
        return EventKind.SUCCEEDED
    if cls == "pending":
        return EventKind.PENDING
    return EventKind.FAILED if invoice.ended_early else EventKind.EXPIRED


def invoice_event(invoice: XenditInvoice, *, poll: bool) -> ProcessorEvent:
    """The event of an invoice as Xendit's API states it. A paid invoice states what was paid
    (``paid_amount``, else ``amount``). Keyed by invoice and outcome (Xendit's callbacks carry no
    event id): PAID and SETTLED are one outcome.

    Only a payment names the payment by our reference (money taken under it must reach it); every
    other outcome names the invoice alone: a duplicate invoice the adapter expired (see
    ``adapter.py``) carries our reference too, and its ending must not end the payment."""
    kind = invoice_kind(invoice)
    paid = kind is EventKind.SUCCEEDED
    reasons = {EventKind.EXPIRED: "the invoice expired unpaid", EventKind.FAILED: "the invoice was ended unpaid"}
    return ProcessorEvent(
        event_id=f"{'poll:' if poll else ''}{invoice.id}:{kind}",
        payment=PaymentRef(merchant_reference=invoice.external_id if paid else None, processor_reference=invoice.id),
        kind=kind,
        amount_minor=invoice.paid_minor if paid and invoice.paid_minor is not None else invoice.amount_minor,
        currency=invoice.currency,
        reason=reasons.get(kind),
    )


def invoice_list(body: object) -> list[XenditInvoice]:
    """``GET /v2/invoices?external_id=…``: a JSON array of invoices."""
    if not isinstance(body, list):
        raise WireError("the invoice list must be a JSON array")
    return [XenditInvoice.from_json(item) for item in body]


def _oldest_first(invoice: XenditInvoice) -> tuple[int, datetime, str]:
    # Undated invoices last; the id breaks ties so every caller picks the same one.
    created = invoice.created or datetime.max
    return (0 if invoice.created else 1, created.replace(tzinfo=None), invoice.id)


def keep_one(invoices: Sequence[XenditInvoice]) -> tuple[XenditInvoice | None, list[XenditInvoice]]:
    """Of the invoices Xendit holds for one reference: the one to keep (a paid one if any, else the
    oldest payable one), and the payable others to expire so that no second one can be paid."""
    live = sorted((invoice for invoice in invoices if invoice.live), key=_oldest_first)
    if not live:
        return None, []
    paid = [invoice for invoice in live if invoice.status in PAID_STATUSES]
    keeper = paid[0] if paid else live[0]
    return keeper, [invoice for invoice in live if invoice is not keeper and invoice.status == "PENDING"]


@dataclass(frozen=True)
class XenditRefund:
    id: str
    status: str
    amount_minor: int
    currency: str
    invoice_id: str | None
    reference_id: str | None = None
    failure_code: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: object) -> XenditRefund:
        if not isinstance(obj, Mapping):
            raise WireError("a refund must be a JSON object")
        currency = _currency(obj)
        metadata = obj.get("metadata")
        failure = obj.get("failure_code")
        reference = obj.get("reference_id")
        return cls(
            id=str(_id(obj, "id")),
            status=str(_text(obj, "status")),
            amount_minor=_amount(obj, "amount", currency),
            currency=currency,
            invoice_id=_id(obj, "invoice_id", required=False),
            reference_id=reference if isinstance(reference, str) else None,
            failure_code=failure if isinstance(failure, str) else None,
            metadata=(
                {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)}
                if isinstance(metadata, Mapping)
                else {}
            ),
        )


def refund_kind(status: str) -> EventKind | None:
    if status == "SUCCEEDED":
        return EventKind.REFUNDED
    if status in ("FAILED", "CANCELLED"):
        return EventKind.REFUND_FAILED
    return None  # PENDING: nothing moved yet


def refund_events(refund: XenditRefund) -> list[ProcessorEvent]:
    """The event of a refund as Xendit's API states it; none while pending, and none for a refund
    of something that is not an invoice (a Payments API charge on the same account: not ours)."""
    kind = refund_kind(refund.status)
    if kind is None or refund.invoice_id is None:
        return []
    payment = PaymentRef(merchant_reference=refund.metadata.get("external_id"), processor_reference=refund.invoice_id)
    reason = (refund.failure_code or refund.status) if kind is EventKind.REFUND_FAILED else None
    return [
        ProcessorEvent(
            event_id=f"{refund.id}:{kind}",
            payment=payment,
            kind=kind,
            amount_minor=refund.amount_minor,
            currency=refund.currency,
            reason=reason,
            cause_id=refund.id,
        )
    ]


# --- callbacks -------------------------------------------------------------------------------------


def token_valid(expected: str, presented: str | None) -> bool:
    """The ``x-callback-token`` header against the dashboard's token, in constant time over bytes."""
    if presented is None:
        return False
    try:
        given = presented.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, expected.encode("ascii"))


@dataclass(frozen=True)
class InvoiceCallback:
    invoice_id: str
    external_id: str
    status: str


@dataclass(frozen=True)
class RefundCallback:
    event: str  # refund.succeeded | refund.failed
    refund_id: str


@dataclass(frozen=True)
class OtherCallback:
    """A callback of another Xendit product on the same URL (not one we act on)."""

    what: str


Callback = InvoiceCallback | RefundCallback | OtherCallback


def parse_callback(body: bytes) -> Callback:
    """What a callback claims, enough to confirm it; MalformedWebhook if it cannot be read."""
    try:
        data = load_json(body)
    except ValueError as exc:
        raise MalformedWebhook(f"not a Xendit callback: {exc}") from None
    if not isinstance(data, Mapping):
        raise MalformedWebhook("not a Xendit callback: not a JSON object")
    event = data.get("event")
    try:
        if isinstance(event, str):
            if event not in REFUND_EVENTS:
                return OtherCallback(event)
            inner = data.get("data")
            if not isinstance(inner, Mapping):
                raise WireError("a refund callback needs data")
            return RefundCallback(event, str(_id(inner, "id")))
        if "external_id" in data and "status" in data and "id" in data:
            status = _text(data, "status")
            if status not in INVOICE_STATUSES or status == "PENDING":
                raise WireError(f"unknown invoice status {status!r}")
            return InvoiceCallback(str(_id(data, "id")), str(_text(data, "external_id")), status)
    except WireError as exc:
        raise MalformedWebhook(f"unreadable Xendit callback: {exc}") from None
    return OtherCallback("unknown")


def invoice_callback_confirmed(callback: InvoiceCallback, invoice: XenditInvoice) -> bool:
    """Whether the fetched invoice says what the callback says: same invoice, same reference, same
    outcome (PAID and SETTLED are one)."""
    return (
        callback.invoice_id == invoice.id
        and callback.external_id == invoice.external_id
        and status_class(callback.status) == status_class(invoice.status)
    )


def refund_callback_confirmed(callback: RefundCallback, refund: XenditRefund) -> bool:
    return callback.refund_id == refund.id and REFUND_EVENTS[callback.event] is refund_kind(refund.status)


# --- errors ----------------------------------------------------------------------------------------


def error_of(body: object) -> tuple[str | None, str | None]:
    """``(error_code, message)`` of a Xendit error answer; Nones for anything else."""
    if not isinstance(body, Mapping):
        return None, None
    code, message = body.get("error_code"), body.get("message")
    return (code if isinstance(code, str) else None, message if isinstance(message, str) else None)
