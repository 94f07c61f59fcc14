"""Top-up orders without I/O: driver-typed amounts, fingerprinting a request for idempotency, and
the order's status, which events move forward only (in whatever order they arrive). Pricing is
``shared/pricing.py``: payments charges by the same price list, from its own configuration."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

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
        raise InvalidTopup("amount_minor", "the amount is not a number") from None
    if scaled != scaled.to_integral_value():
        raise InvalidTopup("amount_minor", "the amount has too many decimals")
    return int(scaled)


def request_fingerprint(body: dict[str, Any]) -> str:
    """Same body, same fingerprint, whatever the key order: how a reused Idempotency-Key is judged."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
