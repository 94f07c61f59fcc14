"""Adyen: Pay by Link checkouts, standard notifications (HMAC per item), refunds and disputes."""

from services.payments.processors.adyen.adapter import AdyenAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = AdyenAdapter

__all__ = ["Adapter", "AdyenAdapter"]
