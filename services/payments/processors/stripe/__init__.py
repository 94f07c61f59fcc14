"""Stripe: Checkout Sessions (hosted page) with signed webhooks, refunds and disputes.

Imported as ``services.payments.processors.stripe`` (never a top-level ``stripe``, which is the
official SDK the tests compare against)."""

from services.payments.processors.stripe.adapter import StripeAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = StripeAdapter

__all__ = ["Adapter", "StripeAdapter"]
