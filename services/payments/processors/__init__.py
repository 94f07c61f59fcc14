"""Processor adapters, one per file, registered here by the ``processor`` name used in the config."""

from __future__ import annotations

import aiohttp

from services.payments.processors.base import ProcessorAdapter
from services.payments.processors.sandbox import SandboxAdapter
from shared.settings import Settings

ADAPTERS: dict[str, type[ProcessorAdapter]] = {SandboxAdapter.name: SandboxAdapter}


def build_adapters(settings: Settings, http: aiohttp.ClientSession) -> dict[str, ProcessorAdapter]:
    """One adapter per configured integration, keyed by integration id."""
    return {
        integration_id: ADAPTERS[integration.processor](integration_id, integration, settings.services, http)
        for integration_id, integration in settings.integrations.items()
    }
