"""PayPal Orders v2, Payments v2 and webhooks on the wire: pure functions, no I/O.

Where each shape comes from (``../shared/reference/processors.md`` §9 plus what settled its
[UNVERIFIED] items):

- Amounts are ``{"currency_code", "value"}`` with ``value`` a decimal string, pattern
  ``^((-?[0-9]+)|(-?([0-9]+)?[.][0-9]+))$``, at most 32 characters (paypal/PayPal-Python-Server-SDK
  ``doc/models/money.md``). HUF, JPY and TWD "do not support decimals. Decimal amounts cause an
  error"; the other currencies take two (PayPal's currency-codes page,
  developer.paypal.com/docs/archive/mass-pay/integration-guide/currency-codes). HUF has two minor
  digits in ISO 4217, so a HUF amount PayPal can take is a whole number of forints.
- Create: ``purchase_units[].{reference_id, custom_id (≤255), description (≤127), amount}``,
  ``payment_source.paypal.experience_context.{return_url, cancel_url, user_action,
  shipping_preference, locale}`` (server SDK ``purchase-unit-request.md``,
  ``paypal-wallet-experience-context.md``, ``paypal-wallet-context-shipping-preference.md``). The
  answer links the payer to ``rel: "payer-action"`` (status ``PAYER_ACTION_REQUIRED``) or
  ``rel: "approve"`` (status ``CREATED``) (``order-status.md``; Orders v2 capture reference: "the
  rel:approve URL that was returned in the HATEOAS links").
- Order statuses ``CREATED SAVED APPROVED VOIDED COMPLETED PAYER_ACTION_REQUIRED``
  (``order-status.md``); capture statuses ``COMPLETED DECLINED PARTIALLY_REFUNDED PENDING REFUNDED
  FAILED`` (``capture-status.md``); refund statuses ``CANCELLED FAILED PENDING COMPLETED``
  (``refund-status.md``). A capture's order is ``supplementary_data.related_ids.order_id``
  (``related-identifiers.md``) or its ``rel: "up"`` link.
- Webhook event names: ``PAYMENT.CAPTURE.COMPLETED|DENIED|PENDING|REFUNDED|REVERSED`` and
  ``CHECKOUT.ORDER.APPROVED`` (developer.paypal.com/api/rest/webhooks/event-names;
  developer.paypal.com/payment-methods/webhooks: "CHECKOUT.ORDER.APPROVED - Listen for this webhook
  and then capture the payment"), ``CHECKOUT.PAYMENT-APPROVAL.REVERSED`` (same page, and
  /payment-methods/uncaptured-payments with its sample: ``resource.order_id``),
  ``CUSTOMER.DISPUTE.CREATED|RESOLVED|UPDATED`` (developer.paypal.com/docs/multiparty/
  disputes-chargebacks/webhooks). The refund resource of ``PAYMENT.CAPTURE.REFUNDED`` and
  ``PAYMENT.CAPTURE.REVERSED`` (``resource_type: "refund"``) carries ``id``, ``amount``,
  ``status`` and links ``self`` and ``up`` (the capture), and no order id or ``custom_id`` (PayPal's
  sample events, as quoted in lat9/paypalr ``Webhooks/Events/PaymentCaptureRefunded.php`` and
  ``PaymentCaptureReversed.php``; the Payments v2 refund response has the same ``up`` link).
- A dispute: ``dispute_id``, ``dispute_amount``, ``disputed_transactions[].seller_transaction_id``
  (our capture id), ``dispute_outcome.outcome_code`` in ``RESOLVED_BUYER_FAVOUR
  RESOLVED_SELLER_FAVOUR RESOLVED_WITH_PAYOUT CANCELED_BY_BUYER ACCEPTED DENIED NONE``
  (developer.paypal.com/api/customer-disputes/v1 ``disputes-get`` and ``definitions/dispute_outcome``).
- The signature (for reference; the adapter verifies through PayPal's API): SHA256withRSA over
  ``transmission_id|transmission_time|webhook_id|crc32(raw body) as unsigned decimal``
  (paypal/PayPal-Python-SDK ``paypalrestsdk/notifications.py`` ``_get_expected_sig``).
- ``POST /v1/notifications/verify-webhook-signature``: ``{auth_algo (≤100), cert_url (≤500),
  transmission_id (≤50), transmission_sig (≤500), transmission_time (≤100), webhook_id (≤50),
  webhook_event}`` → ``{"verification_status": "SUCCESS" | "FAILURE"}`` (PayPal's Webhooks
  Management schema ``verify_webhook_signature``). "The actual JSON string is what is validated
  against" (paypal/PayPal-Python-SDK#196), so ``webhook_event`` is the raw body spliced in as it came.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import urlsplit

from services.payments.processors.base import (
    Checkout,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    ProcessorRefused,
    Redirect,
)
from shared.money import MoneyError, currency_exponent, from_major, to_major


class WireError(ValueError):
    """PayPal sent something we cannot read. Webhook parsing turns it into ``MalformedWebhook``; an
    API answer we cannot read is ``ProcessorUnavailable`` in the adapter."""


# Decimal places PayPal takes, for the currencies both PayPal and ``shared.money`` know. PayPal
# lists BRL, MYR and INR for in-country accounts only: PayPal refuses them elsewhere, not we.
PAYPAL_DECIMALS: Final[dict[str, int]] = {
    "AUD": 2,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HUF": 0,
    "INR": 2,
    "JPY": 0,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "PHP": 2,
    "PLN": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "USD": 2,
}
VALUE_PATTERN = re.compile(r"^((-?[0-9]+)|(-?([0-9]+)?[.][0-9]+))$")
VALUE_MAX_CHARS = 32
CUSTOM_ID_MAX_CHARS = 255
DESCRIPTION_MAX_BYTES = 127
NOTE_TO_PAYER_MAX_CHARS = 255
REQUEST_ID_MAX_CHARS = 108  # PayPal-Request-Id: "1 <= length <= 108" (Orders v2 capture reference)
LOCALE_PATTERN = re.compile(r"^[a-z]{2}(?:-[A-Z][a-z]{3})?(?:-(?:[A-Z]{2}|[0-9]{3}))?$")

AUTH_ALGO = "PAYPAL-AUTH-ALGO"
CERT_URL = "PAYPAL-CERT-URL"
TRANSMISSION_ID = "PAYPAL-TRANSMISSION-ID"
TRANSMISSION_SIG = "PAYPAL-TRANSMISSION-SIG"
TRANSMISSION_TIME = "PAYPAL-TRANSMISSION-TIME"
# (request field, header, PayPal's maximum length for the field)
VERIFICATION_FIELDS: Final = (
    ("auth_algo", AUTH_ALGO, 100),
    ("cert_url", CERT_URL, 500),
    ("transmission_id", TRANSMISSION_ID, 50),
    ("transmission_sig", TRANSMISSION_SIG, 500),
    ("transmission_time", TRANSMISSION_TIME, 100),
)
HEADER_VALUE = re.compile(r"^[\x21-\x7e]+$")

ORDER_PATH = re.compile(r"/v2/checkout/orders/([A-Za-z0-9]+)$")
CAPTURE_PATH = re.compile(r"/v2/payments/captures/([A-Za-z0-9]+)$")

ORDER_KINDS: Final = {
    "CREATED": EventKind.PENDING,
    "SAVED": EventKind.PENDING,
    "PAYER_ACTION_REQUIRED": EventKind.PENDING,
    "APPROVED": EventKind.APPROVED,
    "VOIDED": EventKind.FAILED,
}
CAPTURE_KINDS: Final = {
    "COMPLETED": EventKind.SUCCEEDED,
    # Refunds after the capture are events of their own; the capture itself succeeded.
    "PARTIALLY_REFUNDED": EventKind.SUCCEEDED,
    "REFUNDED": EventKind.SUCCEEDED,
    "PENDING": EventKind.PENDING,
    "DECLINED": EventKind.FAILED,
    "FAILED": EventKind.FAILED,
}
# The outcome names are PayPal's; which side each favours is read from the name where the name
# says it (RESOLVED_*_FAVOUR), and decided here for the rest (see the report):
# CANCELED_BY_BUYER: the buyer withdrew the dispute, the money comes back; ACCEPTED: the merchant
# accepted the claim, the money stays with the buyer; RESOLVED_WITH_PAYOUT: PayPal paid the buyer
# from its own funds, the merchant keeps the money. DENIED and NONE say nothing we can act on: no
# event (the dispute stays open for the operator).
DISPUTE_OUTCOMES: Final = {
    "RESOLVED_SELLER_FAVOUR": EventKind.DISPUTE_WON,
    "CANCELED_BY_BUYER": EventKind.DISPUTE_WON,
    "RESOLVED_WITH_PAYOUT": EventKind.DISPUTE_WON,
    "RESOLVED_BUYER_FAVOUR": EventKind.DISPUTE_LOST,
    "ACCEPTED": EventKind.DISPUTE_LOST,
}


# --------------------------------------------------------------------------------------------------
# Amounts
# --------------------------------------------------------------------------------------------------


def paypal_value(amount_minor: int, currency: str) -> str:
    """The ``value`` string PayPal takes for ``amount_minor`` of ``currency`` (EUR 1234 -> "12.34",
    JPY 1234 -> "1234", HUF 123400 -> "1234"). An amount PayPal cannot take exactly is refused,
    never rounded."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ProcessorRefused("PayPal takes only a positive whole number of minor units")
    decimals = PAYPAL_DECIMALS.get(currency)
    if decimals is None:
        raise ProcessorRefused(f"PayPal does not take {currency!r} here")
    major = to_major(amount_minor, currency)
    try:
        exact = major.quantize(Decimal(1).scaleb(-decimals))
    except InvalidOperation:
        raise ProcessorRefused("amount too large for PayPal") from None
    if exact != major:
        raise ProcessorRefused(f"PayPal takes {currency} with {decimals} decimals; {major} {currency} would be rounded")
    text = format(exact, "f")
    if len(text) > VALUE_MAX_CHARS:
        raise ProcessorRefused("amount too large for PayPal")
    return text


def paypal_money(amount_minor: int, currency: str) -> dict[str, str]:
    return {"currency_code": currency, "value": paypal_value(amount_minor, currency)}


def minor_from_money(money: object) -> tuple[int, str]:
    """``(amount_minor, currency)`` of a PayPal money object; ``WireError`` if it is not one or not a
    whole number of the currency's minor units."""
    if not isinstance(money, Mapping):
        raise WireError("amount must be an object")
    currency = money.get("currency_code")
    value = money.get("value")
    if not isinstance(currency, str) or not isinstance(value, str):
        raise WireError("amount needs currency_code and value strings")
    if len(value) > VALUE_MAX_CHARS or not VALUE_PATTERN.fullmatch(value) or value.startswith("-"):
        raise WireError("amount value is not a positive decimal string")
    try:
        currency_exponent(currency)
        return from_major(Decimal(value), currency), currency
    except (MoneyError, InvalidOperation) as exc:
        raise WireError(f"amount: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


def check_request_id(value: str) -> str:
    """A ``PayPal-Request-Id`` PayPal accepts (1-108 printable characters), or ProcessorRefused."""
    if not 1 <= len(value) <= REQUEST_ID_MAX_CHARS or not HEADER_VALUE.fullmatch(value):
        raise ProcessorRefused("PayPal-Request-Id must be 1-108 printable characters")
    return value


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def create_order_body(request: CheckoutRequest) -> dict[str, Any]:
    """``POST /v2/checkout/orders``: one purchase unit, captured at once, paid through PayPal's page.

    ``custom_id`` is our reference (echoed in captures and in ``CHECKOUT.ORDER.APPROVED``). The
    checkout request carries one return URL, which serves as the cancel URL too: the page follows
    the payment's status either way. Nothing is shipped (``NO_SHIPPING``)."""
    if not 1 <= len(request.reference) <= CUSTOM_ID_MAX_CHARS:
        raise ProcessorRefused("the reference does not fit PayPal's custom_id")
    unit: dict[str, Any] = {
        "reference_id": str(request.order_id),
        "custom_id": request.reference,
        "amount": paypal_money(request.amount_minor, request.currency),
    }
    description = _truncate_utf8(request.description, DESCRIPTION_MAX_BYTES)
    if description:
        unit["description"] = description
    context: dict[str, str] = {
        "return_url": request.return_url,
        "cancel_url": request.return_url,
        "user_action": "PAY_NOW",
        "shipping_preference": "NO_SHIPPING",
    }
    if request.locale and LOCALE_PATTERN.fullmatch(request.locale):
        context["locale"] = request.locale
    return {
        "intent": "CAPTURE",
        "purchase_units": [unit],
        "payment_source": {"paypal": {"experience_context": context}},
    }


def refund_body(amount_minor: int, currency: str, reason: str) -> dict[str, Any]:
    """``POST /v2/payments/captures/{id}/refund`` for ``amount_minor`` (always stated: a partial
    refund names its amount, and so does ours for a full one)."""
    body: dict[str, Any] = {"amount": paypal_money(amount_minor, currency)}
    note = reason.strip()[:NOTE_TO_PAYER_MAX_CHARS]
    if note:
        body["note_to_payer"] = note
    return body


# --------------------------------------------------------------------------------------------------
# Webhook signatures
# --------------------------------------------------------------------------------------------------


def paypal_transmission_message(transmission_id: str, transmission_time: str, webhook_id: str, body: bytes) -> bytes:
    """The bytes PayPal signs (SHA256withRSA) for one transmission of ``body``."""
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()


def verification_request_body(headers: Mapping[str, str], webhook_id: str, raw_body: bytes) -> bytes:
    """The ``verify-webhook-signature`` request for a received webhook, as bytes: the header values,
    our ``webhook_id`` and, as ``webhook_event``, the raw body spliced in verbatim (PayPal checks
    its CRC32 against the signature, so a re-serialised event would fail).

    ``InvalidSignature`` when a PAYPAL-* header is missing or garbled or the body is not a JSON
    object: no request PayPal would sign, so no call is made."""
    fields: dict[str, str] = {}
    for field, header, max_chars in VERIFICATION_FIELDS:
        value = headers.get(header)
        if not value:
            raise InvalidSignature(f"missing {header} header")
        if len(value) > max_chars or not HEADER_VALUE.fullmatch(value):
            raise InvalidSignature(f"garbled {header} header")
        fields[field] = value
    fields["webhook_id"] = webhook_id
    try:
        event = json.loads(raw_body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InvalidSignature("the body is not JSON") from None
    if not isinstance(event, dict):
        raise InvalidSignature("the body is not a JSON object")
    head = json.dumps(fields, separators=(",", ":")).encode()
    assert head.endswith(b"}")
    return head[:-1] + b',"webhook_event":' + raw_body + b"}"


def verification_verdict(answer: object) -> None:
    """Nothing if PayPal's answer says SUCCESS; ``InvalidSignature`` for FAILURE; ``WireError``
    for anything else."""
    status = answer.get("verification_status") if isinstance(answer, Mapping) else None
    if status == "SUCCESS":
        return
    if status == "FAILURE":
        raise InvalidSignature("PayPal says the webhook signature does not verify")
    raise WireError("the verification answer has no verification_status")


# --------------------------------------------------------------------------------------------------
# Reading PayPal's objects
# --------------------------------------------------------------------------------------------------


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise WireError(f"{key} must be a non-empty string")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise WireError(f"{key} must be an object")
    return value


def _first(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    items = data.get(key)
    if not isinstance(items, list) or not items or not isinstance(items[0], Mapping):
        raise WireError(f"{key} must be a non-empty list of objects")
    first: Mapping[str, Any] = items[0]
    return first


def _linked_id(data: Mapping[str, Any], rel: str, path: re.Pattern[str]) -> str | None:
    """The id at the end of the ``rel`` HATEOAS link's path, if it matches ``path``."""
    links = data.get("links")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, Mapping) and link.get("rel") == rel and isinstance(link.get("href"), str):
            match = path.search(urlsplit(link["href"]).path)
            if match:
                return match.group(1)
    return None


def _related_id(data: Mapping[str, Any], key: str) -> str | None:
    supplementary = data.get("supplementary_data")
    related = supplementary.get("related_ids") if isinstance(supplementary, Mapping) else None
    return _optional_str(related, key) if isinstance(related, Mapping) else None


def _status_reason(data: Mapping[str, Any]) -> str | None:
    details = data.get("status_details")
    return _optional_str(details, "reason") if isinstance(details, Mapping) else None


def checkout_from_order(order: object) -> Checkout:
    """The checkout of a created order: its id, and the link where the payer approves."""
    if not isinstance(order, Mapping):
        raise WireError("the order must be an object")
    order_id = _str(order, "id")
    links = order.get("links")
    for rel in ("payer-action", "approve"):
        for link in links if isinstance(links, list) else ():
            if isinstance(link, Mapping) and link.get("rel") == rel:
                href = link.get("href")
                if isinstance(href, str) and href.startswith(("https://", "http://")):
                    return Checkout(processor_reference=order_id, next_step=Redirect(href))
    raise WireError("the order has no payer-action or approve link")


def order_status_event(order: object) -> ProcessorEvent:
    """Where an order (``GET /v2/checkout/orders/{id}``) stands, as a poll event."""
    if not isinstance(order, Mapping):
        raise WireError("the order must be an object")
    order_id = _str(order, "id")
    status = _str(order, "status")
    unit = _first(order, "purchase_units")
    custom_id = _optional_str(unit, "custom_id")
    if status == "COMPLETED":
        capture = _first(_obj(unit, "payments"), "captures")
        kind = _capture_kind(capture)
        capture_id = _str(capture, "id")
        amount_minor, currency = minor_from_money(capture.get("amount"))
        return ProcessorEvent(
            event_id=f"poll:{order_id}:{kind}",
            payment=PaymentRef(custom_id, order_id, {"capture": capture_id}),
            kind=kind,
            amount_minor=amount_minor,
            currency=currency,
            reason=_status_reason(capture),
        )
    order_kind = ORDER_KINDS.get(status)
    if order_kind is None:
        raise WireError(f"unknown order status {status!r}")
    amount_minor, currency = minor_from_money(unit.get("amount"))
    return ProcessorEvent(
        event_id=f"poll:{order_id}:{order_kind}",
        payment=PaymentRef(custom_id, order_id),
        kind=order_kind,
        amount_minor=amount_minor,
        currency=currency,
    )


def captured_order_event(order: object) -> ProcessorEvent:
    """The capture of an order (``POST /v2/checkout/orders/{id}/capture``, or the order fetched after
    ``ORDER_ALREADY_CAPTURED``): ``capture:<capture id>:<kind>``."""
    if not isinstance(order, Mapping):
        raise WireError("the order must be an object")
    order_id = _str(order, "id")
    unit = _first(order, "purchase_units")
    capture = _first(_obj(unit, "payments"), "captures")
    capture_id = _str(capture, "id")
    kind = _capture_kind(capture)
    amount_minor, currency = minor_from_money(capture.get("amount"))
    custom_id = _optional_str(capture, "custom_id") or _optional_str(unit, "custom_id")
    return ProcessorEvent(
        event_id=f"capture:{capture_id}:{kind}",
        payment=PaymentRef(custom_id, order_id, {"capture": capture_id}),
        kind=kind,
        amount_minor=amount_minor,
        currency=currency,
        reason=_status_reason(capture),
    )


def _capture_kind(capture: Mapping[str, Any]) -> EventKind:
    status = _str(capture, "status")
    kind = CAPTURE_KINDS.get(status)
    if kind is None:
        raise WireError(f"unknown capture status {status!r}")
    return kind


def access_token(answer: object) -> tuple[str, int]:
    """``(access_token, expires_in seconds)`` of ``POST /v1/oauth2/token``."""
    if not isinstance(answer, Mapping):
        raise WireError("the token answer must be an object")
    token = _str(answer, "access_token")
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise WireError("expires_in must be a positive integer")
    return token, expires_in


def refund_answer(answer: object) -> tuple[str, str]:
    """``(refund id, status)`` of ``POST /v2/payments/captures/{id}/refund``."""
    if not isinstance(answer, Mapping):
        raise WireError("the refund answer must be an object")
    return _str(answer, "id"), _str(answer, "status")


def paypal_error_reason(answer: object) -> str:
    """A short reason from a PayPal error body (``details[0].issue``, else ``name``, else the OAuth
    ``error``), for logs and the payment row: only an upper-case code, never free text."""
    candidates: list[object] = []
    if isinstance(answer, Mapping):
        details = answer.get("details")
        if isinstance(details, list) and details and isinstance(details[0], Mapping):
            candidates.append(details[0].get("issue"))
        candidates += [answer.get("name"), answer.get("error")]
    for candidate in candidates:
        if isinstance(candidate, str) and re.fullmatch(r"[A-Za-z0-9_]{1,64}", candidate):
            return candidate
    return "UNKNOWN_ERROR"


# --------------------------------------------------------------------------------------------------
# Webhook events
# --------------------------------------------------------------------------------------------------


def parse_paypal_webhook(body: bytes) -> list[ProcessorEvent]:
    """The events of a (verified) PayPal webhook: ``MalformedWebhook`` if unreadable, no event for an
    event type we do not act on. Every event's id is the webhook event's ``WH-…`` id."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedWebhook("body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedWebhook("body must be a JSON object")
    try:
        event_id = _str(payload, "id")
        event_type = _str(payload, "event_type")
        handler = WEBHOOK_HANDLERS.get(event_type)
        if handler is None:
            return []
        return handler(event_id, _obj(payload, "resource"))
    except WireError as exc:
        raise MalformedWebhook(str(exc)) from None


def _order_approved(event_id: str, order: Mapping[str, Any]) -> list[ProcessorEvent]:
    unit = _first(order, "purchase_units")
    amount_minor, currency = minor_from_money(unit.get("amount"))
    payment = PaymentRef(_optional_str(unit, "custom_id"), _str(order, "id"))
    return [ProcessorEvent(event_id, payment, EventKind.APPROVED, amount_minor, currency)]


def _approval_reversed(event_id: str, resource: Mapping[str, Any]) -> list[ProcessorEvent]:
    # "a problem occurred after the buyer approved the transaction and before you captured the
    # payment": PayPal cancels the order, so the payment failed.
    order_id = _str(resource, "order_id")
    units = resource.get("purchase_units")
    custom_id = None
    amount: tuple[int | None, str | None] = (None, None)
    if isinstance(units, list) and units and isinstance(units[0], Mapping):
        custom_id = _optional_str(units[0], "custom_id")
        if "amount" in units[0]:
            amount = minor_from_money(units[0]["amount"])
    payment = PaymentRef(custom_id, order_id)
    return [ProcessorEvent(event_id, payment, EventKind.FAILED, *amount, reason="payment approval reversed by PayPal")]


def _capture(kind: EventKind) -> Callable[[str, Mapping[str, Any]], list[ProcessorEvent]]:
    def events(event_id: str, capture: Mapping[str, Any]) -> list[ProcessorEvent]:
        capture_id = _str(capture, "id")
        order_id = _related_id(capture, "order_id") or _linked_id(capture, "up", ORDER_PATH)
        custom_id = _optional_str(capture, "custom_id")
        if order_id is None and custom_id is None:
            raise WireError("the capture names neither its order nor our reference")
        amount_minor, currency = minor_from_money(capture.get("amount"))
        payment = PaymentRef(custom_id, order_id, {"capture": capture_id})
        return [ProcessorEvent(event_id, payment, kind, amount_minor, currency, reason=_status_reason(capture))]

    return events


def _refund(reversal: bool) -> Callable[[str, Mapping[str, Any]], list[ProcessorEvent]]:
    def events(event_id: str, refund: Mapping[str, Any]) -> list[ProcessorEvent]:
        refund_id = _str(refund, "id")
        status = refund.get("status", "COMPLETED")
        if status == "PENDING":
            return []  # not money back yet; PayPal says so again when it completes
        if status == "COMPLETED":
            kind = EventKind.REFUNDED
        elif status in ("FAILED", "CANCELLED"):
            kind = EventKind.REFUND_FAILED
        else:
            raise WireError(f"unknown refund status {status!r}")
        capture_id = _linked_id(refund, "up", CAPTURE_PATH) or _related_id(refund, "capture_id")
        if capture_id is None:
            raise WireError("the refund names no capture")
        amount_minor, currency = minor_from_money(refund.get("amount"))
        reason = "reversed by PayPal" if reversal else _optional_str(refund, "note_to_payer")
        payment = PaymentRef(ids={"capture": capture_id})
        return [ProcessorEvent(event_id, payment, kind, amount_minor, currency, reason=reason, cause_id=refund_id)]

    return events


def _dispute(resolved: bool) -> Callable[[str, Mapping[str, Any]], list[ProcessorEvent]]:
    def events(event_id: str, dispute: Mapping[str, Any]) -> list[ProcessorEvent]:
        dispute_id = _str(dispute, "dispute_id")
        # One PayPal dispute can name several transactions; ours are one capture per payment.
        capture_id = _str(_first(dispute, "disputed_transactions"), "seller_transaction_id")
        amount_minor, currency = minor_from_money(dispute.get("dispute_amount"))
        if resolved:
            outcome = _str(_obj(dispute, "dispute_outcome"), "outcome_code")
            kind = DISPUTE_OUTCOMES.get(outcome)
            if kind is None:
                return []
        else:
            kind = EventKind.DISPUTE_OPENED
        payment = PaymentRef(ids={"capture": capture_id})
        reason = _optional_str(dispute, "reason")
        return [ProcessorEvent(event_id, payment, kind, amount_minor, currency, reason=reason, cause_id=dispute_id)]

    return events


WEBHOOK_HANDLERS: Final[dict[str, Callable[[str, Mapping[str, Any]], list[ProcessorEvent]]]] = {
    "CHECKOUT.ORDER.APPROVED": _order_approved,
    "CHECKOUT.PAYMENT-APPROVAL.REVERSED": _approval_reversed,
    "PAYMENT.CAPTURE.COMPLETED": _capture(EventKind.SUCCEEDED),
    "PAYMENT.CAPTURE.PENDING": _capture(EventKind.PENDING),
    "PAYMENT.CAPTURE.DENIED": _capture(EventKind.FAILED),
    "PAYMENT.CAPTURE.REFUNDED": _refund(reversal=False),
    # PayPal takes a capture back itself (resource_type "refund"): the money went back to the payer
    # as with a refund, so it is one (cause: the reversal's id). See the report on disputes.
    "PAYMENT.CAPTURE.REVERSED": _refund(reversal=True),
    "CUSTOMER.DISPUTE.CREATED": _dispute(resolved=False),
    "CUSTOMER.DISPUTE.RESOLVED": _dispute(resolved=True),
}
