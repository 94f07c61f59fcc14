"""Razorpay: Payment Links (hosted page), webhooks signed over the raw body, refunds and disputes.

Imported as ``services.payments.processors.razorpay`` (never a top-level ``razorpay``, which is the
official SDK the tests compare against)."""

from services.payments.processors.razorpay.adapter import RazorpayAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = RazorpayAdapter

__all__ = ["Adapter", "RazorpayAdapter"]
