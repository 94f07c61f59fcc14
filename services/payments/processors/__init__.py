"""Processor adapters, one package each (``services/payments/processors/<name>/``), registered here by
the one line that names the package. Each package exports its adapter class as ``Adapter``; the
adapter's ``name`` is the ``processor`` value of ``[integrations.<id>]``."""

from __future__ import annotations

import importlib

import aiohttp

from services.payments.processors.base import AnyAdapter
from shared.settings import Settings

PROCESSOR_PACKAGES = (
    "sandbox",
    "adyen",
    "mercadopago",
    "mollie",
    "mpesa",
    "paypal",
    "paystack",
    "razorpay",
    "stripe",
    "xendit",
)


def _adapter_of(package: str) -> type[AnyAdapter]:
    adapter: type[AnyAdapter] = importlib.import_module(f"{__name__}.{package}").Adapter
    return adapter


ADAPTERS: dict[str, type[AnyAdapter]] = {
    adapter.name: adapter for adapter in (_adapter_of(package) for package in PROCESSOR_PACKAGES)
}


def build_adapter(integration_id: str, settings: Settings, http: aiohttp.ClientSession) -> AnyAdapter:
    integration = settings.integrations[integration_id]
    return ADAPTERS[integration.processor](integration_id, integration, settings.services, http)


def build_adapters(settings: Settings, http: aiohttp.ClientSession) -> dict[str, AnyAdapter]:
    """One adapter per configured integration, keyed by integration id."""
    return {integration_id: build_adapter(integration_id, settings, http) for integration_id in settings.integrations}
