"""Safaricom M-Pesa Daraja, STK push: ``config.py`` (settings), ``wire.py`` (the wire format, pure),
``adapter.py`` (the adapter)."""

from services.payments.processors.mpesa.adapter import MpesaAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = MpesaAdapter

__all__ = ["Adapter", "MpesaAdapter"]
