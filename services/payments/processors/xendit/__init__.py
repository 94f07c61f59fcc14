"""Xendit Invoices: ``config.py`` (settings), ``wire.py`` (the wire format, pure), ``adapter.py`` (the
adapter)."""

from services.payments.processors.xendit.adapter import XenditAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = XenditAdapter

__all__ = ["Adapter", "XenditAdapter"]
