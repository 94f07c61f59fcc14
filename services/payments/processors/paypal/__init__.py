"""PayPal Orders v2: hosted approval, capture, refunds and disputes, webhooks verified by PayPal's API."""

from services.payments.processors.paypal.adapter import PayPalAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = PayPalAdapter

__all__ = ["Adapter", "PayPalAdapter"]
