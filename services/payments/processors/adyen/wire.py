"""Adyen's wire formats, as pure functions (no I/O): amounts, request bodies, the webhook's basic
authentication and per-item HMAC, and notifications and payment links normalized into events.

Sources: ``/work/shared/reference/processors.md`` §2; the Adyen Python library installed here
(``Adyen/util.py`` for the HMAC, ``Adyen/services/checkout/`` for the paths and the API version);
Adyen's webhooks OpenAPI (``Adyen/adyen-openapi`` ``json/Webhooks-v1.json``: event codes and example
items); docs.adyen.com pages named where they decide something."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from services.payments.processors.base import (
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    WebhookAck,
)
from shared.money import MoneyError, currency_exponent, from_major, require_minor, to_major

# The Checkout API version in paths: the current one of the installed SDK (adyen 16.0.0,
# ``PaymentLinksApi.baseUrl = "https://checkout-test.adyen.com/v72"``).
CHECKOUT_API_VERSION: Final = "v72"
PAYMENT_LINKS_PATH: Final = f"/{CHECKOUT_API_VERSION}/paymentLinks"
# Adyen: "Idempotency-Key:<key> … maximum of 64 characters" (docs.adyen.com/development-resources/api-idempotency).
IDEMPOTENCY_KEY_MAX_LEN: Final = 64
# POST /paymentLinks: "A short description visible on the payment page. Maximum length: 280 characters."
DESCRIPTION_MAX_LEN: Final = 280
# Adyen's minor units follow ISO 4217 except for these (docs.adyen.com/development-resources/currency-codes:
# "For CLP, CVE, IDR, and ISK the standard has a different number of decimals than shown in our currency
# codes table … the decimals in the table on this page are leading": CLP 2, CVE 0, IDR 0, ISK 2).
ADYEN_EXPONENT_OVERRIDES: Final[Mapping[str, int]] = {"CLP": 2, "CVE": 0, "IDR": 0, "ISK": 2}
# The fields of an item that its ``hmacSignature`` covers, in order (Adyen/util.py generate_notification_sig).
HMAC_FIELDS: Final = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "amount.value",
    "amount.currency",
    "eventCode",
    "success",
)
# What Adyen reads back to stop retrying: any 2xx today; "[accepted]" is the body its older spec asked for.
ADYEN_ACK: Final = WebhookAck(status=200, body=b"[accepted]", content_type="text/plain")

# Payment link ``status`` (PaymentLinkResponse.StatusEnum: active, expired, completed (v66 and above),
# paid (v65 and below), paymentPending: "the shopper is in the process of making the payment",
# asynchronous methods).
LINK_STATUS_KINDS: Final[Mapping[str, EventKind]] = {
    "active": EventKind.PENDING,
    "paymentPending": EventKind.PENDING,
    "completed": EventKind.SUCCEEDED,
    "paid": EventKind.SUCCEEDED,
    "expired": EventKind.EXPIRED,
}
# Dispute event codes (successful items only). All items of one dispute share its ``pspReference``
# (docs.adyen.com/risk-management/disputes-api/dispute-notifications: "The PSP reference of the dispute.
# All events related to a dispute have the same PSP reference"); ``originalReference`` is the disputed
# payment's, but the OpenAPI examples of CHARGEBACK_REVERSED and SECOND_CHARGEBACK lack it.
DISPUTE_KINDS: Final[Mapping[str, EventKind]] = {
    "CHARGEBACK": EventKind.DISPUTE_OPENED,  # "the funds were deducted from your account"
    "CHARGEBACK_REVERSED": EventKind.DISPUTE_WON,  # "successfully defended"; a SECOND_CHARGEBACK may follow
    "SECOND_CHARGEBACK": EventKind.DISPUTE_LOST,
    "PREARBITRATION_WON": EventKind.DISPUTE_WON,  # "cardholder's bank accepted pre-arbitration case"
    "PREARBITRATION_LOST": EventKind.DISPUTE_LOST,  # "cardholder's bank declined pre-arbitration case"
}
# Refund codes that say a refund did not (or no longer) go through: REFUND_FAILED ("Refund Failed",
# success "true") and REFUNDED_REVERSED ("the refunded amount was reversed and returned to your bank
# account"). A REFUND item with success "false" says the same of the refund request.
REFUND_UNDONE_CODES: Final = frozenset({"REFUND_FAILED", "REFUNDED_REVERSED"})
ACTED_ON_CODES: Final = frozenset({"AUTHORISATION", "OFFER_CLOSED", "REFUND", *REFUND_UNDONE_CODES, *DISPUTE_KINDS})
# Everything else (CAPTURE, CANCELLATION, EXPIRE of an uncaptured authorisation, NOTIFICATION_OF_CHARGEBACK,
# REQUEST_FOR_INFORMATION, REPORT_AVAILABLE, …) is ignored: no event.


# --- amounts ------------------------------------------------------------------------------------


def adyen_exponent(currency: str) -> int:
    """The decimals Adyen's ``amount.value`` has for ``currency`` (MoneyError if we do not know it)."""
    iso = currency_exponent(currency)
    return ADYEN_EXPONENT_OVERRIDES.get(currency, iso)


def to_adyen_value(amount_minor: int, currency: str) -> int:
    """Our minor units (ISO 4217) as Adyen's ``amount.value``; MoneyError if Adyen's unit is coarser
    and the amount does not fit it (IDR 100.50 cannot be sent: Adyen takes whole rupiahs)."""
    major = to_major(require_minor(amount_minor, "amount_minor"), currency)
    value = major.scaleb(adyen_exponent(currency))
    if value != value.to_integral_value():
        raise MoneyError(f"{major} {currency} is not a whole number of Adyen's {currency} units")
    return int(value)


def from_adyen_value(value: object, currency: str) -> int:
    """Adyen's ``amount.value`` as our minor units; MoneyError if it is no integer or finer than ours."""
    adyen_units = require_minor(value, "amount.value")
    return from_major(Decimal(adyen_units).scaleb(-adyen_exponent(currency)), currency)


# --- requests -----------------------------------------------------------------------------------


# Our method ids → Adyen's payment method types (docs.adyen.com/payment-methods: each method's "type"
# in API requests), for ``allowedPaymentMethods``: the link offers only the driver's choice.
ADYEN_PAYMENT_METHOD_TYPES: Final[Mapping[str, str]] = {
    "card": "scheme",
    "ideal": "ideal",
    "bancontact": "bcmc",
    "bancontact_mobile": "bcmc_mobile",
    "blik": "blik",
    "eps": "eps",
    "klarna": "klarna",
    "mbway": "mbway",
    "mobilepay": "mobilepay",
    "paypal": "paypal",
    "swish": "swish",
    "twint": "twint",
    "vipps": "vipps",
    "trustly": "trustly",
    "applepay": "applepay",
    "googlepay": "googlepay",
}


def payment_link_request(
    *,
    merchant_account: str,
    reference: str,
    amount_minor: int,
    currency: str,
    return_url: str,
    description: str,
    locale: str | None,
    method: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /paymentLinks``. ``reference`` is also the Idempotency-Key, so it must fit one."""
    if not reference or len(reference) > IDEMPOTENCY_KEY_MAX_LEN:
        raise ValueError(f"the reference must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} characters (Adyen's Idempotency-Key)")
    if amount_minor <= 0:
        raise ValueError("the amount must be positive")
    body: dict[str, Any] = {
        "amount": {"value": to_adyen_value(amount_minor, currency), "currency": currency},
        "merchantAccount": merchant_account,
        "reference": reference,
        "returnUrl": return_url,
        "description": description[:DESCRIPTION_MAX_LEN],
    }
    if locale:
        body["shopperLocale"] = locale
    method_type = ADYEN_PAYMENT_METHOD_TYPES.get(method or "")
    if method_type is not None:
        body["allowedPaymentMethods"] = [method_type]
    return body


def refund_path(payment_psp_reference: str) -> str:
    return f"/{CHECKOUT_API_VERSION}/payments/{payment_psp_reference}/refunds"


def refund_request(*, merchant_account: str, amount_minor: int, currency: str, refund_key: str) -> dict[str, Any]:
    """The body of ``POST /payments/{paymentPspReference}/refunds``."""
    if not refund_key or len(refund_key) > IDEMPOTENCY_KEY_MAX_LEN:
        raise ValueError(f"the refund key must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} characters (Adyen's Idempotency-Key)")
    if amount_minor <= 0:
        raise ValueError("the refund amount must be positive")
    return {
        "merchantAccount": merchant_account,
        "amount": {"value": to_adyen_value(amount_minor, currency), "currency": currency},
        "reference": refund_key,
    }


def error_summary(body: object) -> str:
    """A short, printable reason from Adyen's error body ``{status, errorCode, message, errorType}``."""
    if not isinstance(body, Mapping):
        return "no error body"
    code = body.get("errorCode")
    message = body.get("message")
    text = " ".join(str(part) for part in (code, message) if isinstance(part, str | int) and not isinstance(part, bool))
    return "".join(c for c in text if c.isprintable())[:200] or "no error message"


# --- webhook authentication -----------------------------------------------------------------------


def verify_basic_auth(header: str | None, username: str, password: str) -> None:
    """The ``Authorization: Basic …`` Adyen sends when the webhook has a username and password."""
    if not header:
        raise InvalidSignature("missing basic authentication")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidSignature("not basic authentication")
    try:
        given = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("garbled basic authentication") from None
    expected = f"{username}:{password}".encode()
    if not hmac.compare_digest(given, expected):
        raise InvalidSignature("wrong basic authentication")


def _signed_field(item: Mapping[str, Any], name: str) -> str:
    if name.startswith("amount."):
        amount = item.get("amount")
        value = amount.get(name.removeprefix("amount."), "") if isinstance(amount, Mapping) else ""
    else:
        value = item.get(name, "")
    # Absent (or null) fields sign as empty. No escaping of ':' or '\': the Python and PHP libraries
    # dropped it because Adyen does not escape (adyen-python-api-library issue 117 / PR 118).
    return "" if value is None else str(value)


def hmac_signing_string(item: Mapping[str, Any]) -> str:
    """What an item's ``hmacSignature`` signs: eight fields joined with ':'."""
    return ":".join(_signed_field(item, name) for name in HMAC_FIELDS)


def adyen_item_signature(item: Mapping[str, Any], hmac_key: bytes) -> str:
    """Base64 HMAC-SHA256 of the item's signing string, keyed with the hex-decoded HMAC key."""
    digest = hmac.new(hmac_key, hmac_signing_string(item).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def hmac_key_bytes(hex_key: str) -> bytes:
    try:
        return binascii.a2b_hex(hex_key)
    except (binascii.Error, ValueError):
        raise InvalidSignature("the configured HMAC key is not hex") from None


def _load_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _items(payload: Mapping[str, Any]) -> list[Any] | None:
    items = payload.get("notificationItems")
    return items if isinstance(items, list) else None


def _request_item(wrapper: object) -> dict[str, Any] | None:
    if not isinstance(wrapper, dict):
        return None
    item = wrapper.get("NotificationRequestItem")
    return item if isinstance(item, dict) else None


def verify_adyen_notification(body: bytes, hmac_key: bytes, *, live: bool) -> None:
    """Every item of the batch carries a valid ``additionalData.hmacSignature`` (one bad item refuses
    the whole batch: Adyen resends it as a whole), and the batch comes from the environment this
    integration is in (``live`` is the string "true" or "false").

    The signature covers fields, not the body, so the body is parsed here; an unreadable one proves
    nothing and is refused likewise."""
    payload = _load_object(body)
    if payload is None:
        raise InvalidSignature("the body is not a JSON object")
    items = _items(payload)
    if not items:
        raise InvalidSignature("no notification items: nothing is signed")
    for index, wrapper in enumerate(items):
        item = _request_item(wrapper)
        if item is None:
            raise InvalidSignature(f"item {index} is not a NotificationRequestItem")
        additional = item.get("additionalData")
        given = additional.get("hmacSignature") if isinstance(additional, Mapping) else None
        if not isinstance(given, str) or not given:
            raise InvalidSignature(f"item {index} has no hmacSignature")
        expected = adyen_item_signature(item, hmac_key)
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", errors="surrogateescape")):
            raise InvalidSignature(f"item {index}: the signature does not match")
    # After the signatures: only an authentic batch is worth telling apart by environment. The HMAC
    # keys differ between test and live anyway (a new key is made for live), so this is a second lock
    # against a test notification reaching a production integration (or the reverse).
    expected_live = "true" if live else "false"
    if payload.get("live") != expected_live:
        raise InvalidSignature(f"the notification is not from Adyen's {'live' if live else 'test'} environment")


# --- notifications into events -------------------------------------------------------------------


def _text(item: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise MalformedWebhook(f"{key} must be a non-empty string")
    return value


def _amount(item: Mapping[str, Any]) -> tuple[int, str]:
    amount = item.get("amount")
    if not isinstance(amount, Mapping):
        raise MalformedWebhook("amount must be an object")
    currency = amount.get("currency")
    if not isinstance(currency, str):
        raise MalformedWebhook("amount.currency must be a string")
    try:
        return from_adyen_value(amount.get("value"), currency), currency
    except MoneyError as exc:
        raise MalformedWebhook(f"amount: {exc}") from None


def _item_event(item: Mapping[str, Any], merchant_account: str) -> ProcessorEvent | None:
    code = _text(item, "eventCode")
    if code not in ACTED_ON_CODES:
        return None  # read no further: an item we ignore is never what makes a batch unreadable
    success = item.get("success")
    if success not in ("true", "false"):
        raise MalformedWebhook('success must be "true" or "false"')
    ok = success == "true"
    if not ok and code not in ("AUTHORISATION", "REFUND"):
        return None  # an unsuccessful dispute, offer or refund-failure item states nothing about money
    psp_reference = _text(item, "pspReference")
    assert psp_reference is not None
    if _text(item, "merchantAccountCode") != merchant_account:
        # Authentic (the batch verified with this webhook's key) but for another merchant account of
        # the company (a company-level webhook): not ours to act on, and refusing it would make Adyen
        # retry the whole batch for 30 days, holding up the rest of its queue.
        return None
    event_id = f"{psp_reference}:{code}:{success}"  # the reference's dedupe advice (§10)
    merchant_reference = _text(item, "merchantReference", required=False) or None
    original_reference = _text(item, "originalReference", required=False) or None
    raw_reason = item.get("reason")
    reason = raw_reason[:500] if isinstance(raw_reason, str) and raw_reason and raw_reason != "null" else None

    if code == "AUTHORISATION":
        amount_minor, currency = _amount(item)
        # merchantReference (our reference) is signed; additionalData.paymentLinkId is not, so it
        # never chooses the payment.
        if merchant_reference is None:
            raise MalformedWebhook("an AUTHORISATION names no merchantReference")
        return ProcessorEvent(
            event_id=event_id,
            payment=PaymentRef(
                merchant_reference=merchant_reference,
                # Only a successful authorisation's pspReference is the payment's (refunds go to it);
                # a refused attempt's is not, and a later attempt on the same link gets another.
                ids={"psp_reference": psp_reference} if ok else {},
            ),
            kind=EventKind.SUCCEEDED if ok else EventKind.FAILED,
            amount_minor=amount_minor,
            currency=currency,
            reason=None if ok else reason or "refused",
        )
    if code == "OFFER_CLOSED":
        # "The offer expired, for example, because the shopper abandoned the session" (webhooks OpenAPI).
        amount_minor, currency = _amount(item)
        if merchant_reference is None:
            raise MalformedWebhook("an OFFER_CLOSED names no merchantReference")
        return ProcessorEvent(
            event_id=event_id,
            payment=PaymentRef(merchant_reference=merchant_reference),
            kind=EventKind.EXPIRED,
            amount_minor=amount_minor,
            currency=currency,
            reason=reason,
        )
    if code == "REFUND" or code in REFUND_UNDONE_CODES:
        if original_reference is None:
            raise MalformedWebhook(f"a {code} item has no originalReference (the payment's pspReference)")
        amount_minor, currency = _amount(item)
        refunded = code == "REFUND" and ok
        return ProcessorEvent(
            event_id=event_id,
            # Found by the payment's pspReference. merchantReference is left out: for a modification
            # it may be the refund request's own reference rather than the payment's (the OpenAPI's
            # REFUND_WITH_DATA example shows "YOUR_MODIFICATION_REFERENCE").
            payment=PaymentRef(ids={"psp_reference": original_reference}),
            kind=EventKind.REFUNDED if refunded else EventKind.REFUND_FAILED,
            amount_minor=amount_minor,
            currency=currency,
            reason=None if refunded else reason or code.lower(),
            cause_id=psp_reference,  # the refund's pspReference (what the refund call answered)
        )
    if code in DISPUTE_KINDS:
        amount_minor, currency = _amount(item)
        if merchant_reference is None and original_reference is None:
            raise MalformedWebhook(f"a {code} item names neither merchantReference nor originalReference")
        return ProcessorEvent(
            event_id=event_id,
            payment=PaymentRef(
                merchant_reference=merchant_reference,
                ids={"psp_reference": original_reference} if original_reference else {},
            ),
            kind=DISPUTE_KINDS[code],
            amount_minor=amount_minor,
            currency=currency,
            reason=reason,
            cause_id=psp_reference,  # the dispute's: the same on every item of one dispute
        )
    return None


def adyen_notification_to_events(body: bytes, merchant_account: str) -> list[ProcessorEvent]:
    """The events of a (verified) standard notification, in the batch's order: one per item we act
    on, none for the others. MalformedWebhook if the body or any item cannot be read."""
    payload = _load_object(body)
    if payload is None:
        raise MalformedWebhook("the body is not a JSON object")
    items = _items(payload)
    if items is None:
        raise MalformedWebhook("notificationItems must be a list")
    events = []
    for index, wrapper in enumerate(items):
        item = _request_item(wrapper)
        if item is None:
            raise MalformedWebhook(f"item {index} is not a NotificationRequestItem")
        try:
            event = _item_event(item, merchant_account)
        except MalformedWebhook as exc:
            raise MalformedWebhook(f"item {index}: {exc}") from None
        if event is not None:
            events.append(event)
    return events


# --- payment links ------------------------------------------------------------------------------


def payment_link_status_event(body: object, link_id: str) -> ProcessorEvent:
    """A ``GET /paymentLinks/{linkId}`` answer as a poll event (ValueError if unreadable)."""
    if not isinstance(body, Mapping):
        raise ValueError("the payment link is not a JSON object")
    status = body.get("status")
    kind = LINK_STATUS_KINDS.get(status) if isinstance(status, str) else None
    if kind is None:
        raise ValueError(f"unknown payment link status {str(status)[:40]!r}")
    amount = body.get("amount")
    if not isinstance(amount, Mapping) or not isinstance(amount.get("currency"), str):
        raise ValueError("the payment link has no amount")
    currency = amount["currency"]
    amount_minor = from_adyen_value(amount.get("value"), currency)
    reference = body.get("reference")
    return ProcessorEvent(
        event_id=f"poll:{link_id}:{kind}",
        payment=PaymentRef(
            merchant_reference=reference if isinstance(reference, str) and reference else None,
            processor_reference=link_id,
        ),
        kind=kind,
        amount_minor=amount_minor,
        currency=currency,
    )


def created_link(body: object) -> tuple[str, str]:
    """``(id, url)`` of a ``POST /paymentLinks`` answer (ValueError if missing)."""
    if not isinstance(body, Mapping):
        raise ValueError("the answer is not a JSON object")
    link_id, url = body.get("id"), body.get("url")
    if not isinstance(link_id, str) or not link_id or not isinstance(url, str) or not url.startswith("http"):
        raise ValueError("the answer has no link id and URL")
    return link_id, url
