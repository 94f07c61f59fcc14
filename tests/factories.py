"""Builders for messages the tests need, with fixed defaults any test can override."""

from __future__ import annotations

import uuid
from typing import Any

from shared.messages import PaymentSucceeded

PAYMENT_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
ORDER_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")


def payment_succeeded(**overrides: Any) -> PaymentSucceeded:
    fields: dict[str, Any] = {
        "payment_id": PAYMENT_ID,
        "order_id": ORDER_ID,
        "user_id": "user-42",
        "integration_id": "sandbox_demo",
        "processor": "sandbox",
        "processor_reference": "chk_123",
        "amount_minor": 2500,
        "bonus_minor": 100,
        "fee_minor": 58,
        "currency": "EUR",
    }
    fields.update(overrides)
    return PaymentSucceeded(**fields)
