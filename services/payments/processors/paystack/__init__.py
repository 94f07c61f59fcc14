"""Paystack: a transaction initialized on Paystack's hosted checkout, signed webhooks, refunds and
disputes: ``config.py`` (settings), ``wire.py`` (the wire format, pure), ``adapter.py`` (the adapter)."""

from services.payments.processors.paystack.adapter import PaystackAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = PaystackAdapter

__all__ = ["Adapter", "PaystackAdapter"]
