"""The built-in sandbox processor: its adapter, and (``hosted.py``) the pretend processor itself,
served by payments in a demo deployment."""

from services.payments.processors.sandbox.adapter import SandboxAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = SandboxAdapter

__all__ = ["Adapter", "SandboxAdapter"]
