"""Mercado Pago: Checkout Pro preferences (hosted page) with signed webhooks, refunds and chargebacks.

Imported as ``services.payments.processors.mercadopago`` (never a top-level ``mercadopago``, which is
the official SDK the tests compare against)."""

from services.payments.processors.mercadopago.adapter import MercadoPagoAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = MercadoPagoAdapter

__all__ = ["Adapter", "MercadoPagoAdapter"]
