"""The sandbox's settings: ``[integrations.<id>]`` with ``processor = "sandbox"``."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from shared.settings import IntegrationSettings, PaymentsSecret, strong_secret


class SandboxSettings(IntegrationSettings):
    processor: Literal["sandbox"]
    api_key: PaymentsSecret
    webhook_secret: PaymentsSecret

    _strong_secrets = field_validator("api_key", "webhook_secret")(strong_secret)
