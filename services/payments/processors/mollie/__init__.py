"""Mollie: Payments API v2 (hosted checkout) with classic webhooks confirmed by fetching the payment,
refunds and chargebacks. ``config.py`` (settings), ``wire.py`` (the wire format, pure), ``adapter.py``."""

from services.payments.processors.mollie.adapter import MollieAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = MollieAdapter

__all__ = ["Adapter", "MollieAdapter"]
