"""Template: a hosted checkout page (redirect), webhooks signed over ``"<timestamp>.<raw body>"``,
status lookups, refunds and disputes. Made by ``scripts/new-processor``: each ``# TEMPLATE:`` comment
says what to find out in the processor's documentation, and where a real package does it otherwise."""

from services.payments.processors._template.adapter import TemplateAdapter

# What the registry (``processors/__init__.py``) takes.
Adapter = TemplateAdapter

__all__ = ["Adapter", "TemplateAdapter"]
