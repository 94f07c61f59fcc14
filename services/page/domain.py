"""Top-up orders without I/O: driver-typed amounts and phone numbers, fingerprinting a request for
idempotency, what a failed checkout means for the driver, and the order's status, which events move
forward only (in whatever order they arrive). Pricing is ``shared/pricing.py``: payments charges by
the same price list, from its own configuration."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal

from shared.money import currency_exponent
from shared.pricing import InvalidTopup


def parse_major_amount(text: str, currency: str) -> int:
    """A driver-typed amount in major units ("12.50") as minor units; refuses extra decimals."""
    try:
        value = Decimal(text.strip().replace(",", "."))
        if not value.is_finite():
            raise InvalidOperation
        scaled = value.scaleb(currency_exponent(currency))
    except ArithmeticError:  # InvalidOperation, Overflow: "sNaN", "1e999999999"...
        raise InvalidTopup("amount_minor", "the amount is not a number", "amount_invalid") from None
    if scaled != scaled.to_integral_value():
        raise InvalidTopup("amount_minor", "the amount has too many decimals", "amount_too_many_decimals")
    return int(scaled)


# What ``CreateCheckout.phone`` takes: digits, country code first (E.164 without the "+").
PHONE_DIGITS = re.compile(r"[1-9][0-9]{7,14}")
# Longer than any number typed with separators; anything longer is not a phone number.
MAX_PHONE_INPUT_LENGTH = 32
# What a driver may type between the digits: spaces of any kind and dashes (ASCII, Unicode, minus).
PHONE_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]")


class InvalidPhone(InvalidTopup):
    """A phone number the page cannot take; ``message_key`` is the driver's message in the page's
    catalogues (``messages.SOURCE``), ``detail`` the API's (English). Neither repeats the number."""

    def __init__(self, message_key: str, detail: str) -> None:
        super().__init__("phone", detail, message_key)
        self.message_key = message_key


def normalise_phone(value: object) -> str:
    """The number a driver typed (``+254 712-345-678``) as the digits a processor takes
    (``254712345678``): spaces and dashes dropped, one leading "+" allowed, country code first."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidPhone("phone_required", "a phone number is required")
    if not isinstance(value, str) or len(value) > MAX_PHONE_INPUT_LENGTH:
        raise InvalidPhone("phone_invalid", "phone must be a string of digits, country code first")
    digits = PHONE_SEPARATORS.sub("", value.strip().removeprefix("+"))
    if PHONE_DIGITS.fullmatch(digits) is None:
        raise InvalidPhone(
            "phone_invalid", "phone must be 8 to 15 digits, country code first (e.g. 2547XXXXXXXX), no leading 0"
        )
    return digits


def phone_fingerprint_key(launch_secret: str) -> bytes:
    """The key phone numbers are hashed with in request fingerprints, derived from the page's own
    secret: a phone number has too few possible values for a plain hash to hide it from anyone who
    reads the orders table, and the key is not in the database."""
    return hmac.new(launch_secret.encode(), b"evtopup page: phone in request fingerprints", hashlib.sha256).digest()


def request_fingerprint(body: dict[str, Any], phone: str | None = None, *, phone_key: bytes | None = None) -> str:
    """Same body, same fingerprint, whatever the key order: how a reused Idempotency-Key is judged.
    The fingerprint is stored with the order. A ``phone`` (normalised) counts as part of the request
    (another number is another request) only as its keyed hash: its digits are never stored, nor a
    hash anyone could reverse by trying every number. A body without a phone fingerprints exactly as
    it always has."""
    if phone is not None:
        if not phone_key:
            raise ValueError("a phone is fingerprinted only with a key")
        body = {**body, "phone_hmac": hmac.new(phone_key, phone.encode(), hashlib.sha256).hexdigest()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# What ``CreateCheckout.locale`` takes: a BCP 47 tag.
CHECKOUT_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def checkout_locale(locale: str) -> str | None:
    """The page's locale as the processor is told it (``en_GB`` → ``en-GB``); None for one that is
    not a language tag (the operator's locales are free text): the processor then uses its own."""
    tag = locale.strip().replace("_", "-")
    return tag if CHECKOUT_LOCALE.fullmatch(tag) else None


NextStep = Literal["redirect", "phone_prompt"]


def next_step(payment_id: uuid.UUID | None, redirect_url: str | None) -> NextStep | None:
    """What the driver does after the checkout: go to the processor's page, or approve the payment
    on their phone (the processor prompted it: there is no page to go to). None: no checkout yet."""
    if redirect_url is not None:
        return "redirect"
    return "phone_prompt" if payment_id is not None else None


@dataclass(frozen=True)
class CheckoutFailure:
    """What a failed checkout RPC means for the driver. ``new_key``: the driver must start a new
    top-up (a new order, a new Idempotency-Key); otherwise the same order is retried, same key."""

    status: int
    code: str
    title: str
    detail: str
    message_key: str
    new_key: bool


def checkout_failure(code: str | None, *, asks_driver_phone: bool) -> CheckoutFailure:
    """The problem for a checkout RPC that failed with ``code`` (None: no reply in time)."""
    if code == "processor_refused":
        # Refused for good: this order is not retried (a processor without idempotent creates would
        # answer checkout_uncertain to the same order). Corrected details make a new request.
        return CheckoutFailure(
            422,
            "processor_refused",
            "Payment refused",
            "the payment processor did not accept this payment (check the phone number, amount and method);"
            " correct it and send it with a new Idempotency-Key",
            "processor_refused_phone" if asks_driver_phone else "processor_refused",
            new_key=True,
        )
    if code == "checkout_uncertain":
        # An earlier attempt for this order may have reached the processor (a prompt may be on the
        # driver's phone): retrying this order could charge twice, so only a new top-up may follow.
        return CheckoutFailure(
            409,
            "checkout_uncertain",
            "Checkout uncertain",
            "an earlier attempt for this top-up may have reached the payment processor and cannot be"
            " confirmed: do not retry it; start a new top-up with a new Idempotency-Key",
            "checkout_uncertain",
            new_key=True,
        )
    # processor_unavailable, a timeout, the broker: the same order is tried again (idempotent).
    return CheckoutFailure(
        503,
        "processor_unavailable",
        "Payment provider unavailable",
        "try again with the same Idempotency-Key",
        "provider_unavailable",
        new_key=False,
    )


def redact_numbers(text: str) -> str:
    """``text`` (a processor's words) with every run of 7 or more digits (spaces and dashes between
    them allowed) hidden, so that a phone number a processor echoes never reaches a log."""
    return re.sub(r"\+?[0-9](?:[\s\-]?[0-9]){6,}", "[number]", text)


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    CREDITED = "credited"
    FAILED = "failed"
    EXPIRED = "expired"
    # The processor confirmed other terms than were charged: the money may have been taken, and an
    # operator decides whether the driver is credited or refunded.
    UNDER_REVIEW = "under_review"
    # An operator settled a review by giving the money back: final, never credited.
    REFUNDED = "refunded"


def after_payment_succeeded(status: OrderStatus) -> OrderStatus | None:
    # A late success after a failure or expiry still counts: the money was taken. So does an
    # operator's decision to credit a payment under review.
    moves_from = (OrderStatus.PENDING, OrderStatus.FAILED, OrderStatus.EXPIRED, OrderStatus.UNDER_REVIEW)
    return OrderStatus.PAID if status in moves_from else None


def after_payment_needs_review(status: OrderStatus) -> OrderStatus | None:
    # Also after a failure or expiry: a late success for the wrong amount still took money.
    moves_from = (OrderStatus.PENDING, OrderStatus.FAILED, OrderStatus.EXPIRED)
    return OrderStatus.UNDER_REVIEW if status in moves_from else None


def after_payment_failed(status: OrderStatus, payment_status: str) -> OrderStatus | None:
    if payment_status == "needs_review":  # sent by older payments versions: the same as payment.needs_review
        return after_payment_needs_review(status)
    if payment_status == "rejected":  # an operator refunded a payment held for review
        return OrderStatus.REFUNDED if status in (OrderStatus.PENDING, OrderStatus.UNDER_REVIEW) else None
    if status is not OrderStatus.PENDING:
        return None
    return OrderStatus.EXPIRED if payment_status == "expired" else OrderStatus.FAILED


def after_credit_applied(status: OrderStatus) -> OrderStatus | None:
    # credit.applied may overtake payment.succeeded; either way the order ends credited.
    return None if status is OrderStatus.CREDITED else OrderStatus.CREDITED


def moves_of(transition: Callable[[OrderStatus], OrderStatus | None]) -> list[tuple[OrderStatus, OrderStatus]]:
    """An event's transition as the table of (from, to) it allows, for the database to apply to
    whatever status the order has when the event is applied (store.ORDER_EVENT_SQL)."""
    return [(status, to) for status in OrderStatus if (to := transition(status)) is not None]
