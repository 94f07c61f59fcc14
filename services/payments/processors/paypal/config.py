"""PayPal's settings: ``[integrations.<id>]`` with ``processor = "paypal"``.

- ``webhook_id``: the id of our webhook subscription in PayPal's dashboard. It is part of every
  signature PayPal makes (``transmission_id|transmission_time|webhook_id|crc32``) and is sent with
  each verification request. PayPal's schema for it: ``^[a-zA-Z0-9]+$``, at most 50 characters
  (verify-webhook-signature request, PayPal Webhooks Management API 1.11).
- ``api_base_url``: ``https://api-m.paypal.com`` (live) or ``https://api-m.sandbox.paypal.com``.
- ``client_id`` / ``client_secret``: the REST app's OAuth2 client credentials. PayPal calls both
  credentials, so both are secrets here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, strong_secret

LIVE_API_BASE_URL = "https://api-m.paypal.com"
SANDBOX_API_BASE_URL = "https://api-m.sandbox.paypal.com"


class PayPalSettings(IntegrationSettings):
    # Orders v2 with ``payment_source.paypal``: the PayPal wallet (and what PayPal offers inside it).
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {"paypal": PaymentMethod("PayPal", "wallet")}

    processor: Literal["paypal"]
    api_base_url: str = Field(default=LIVE_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    webhook_id: str = Field(pattern=r"^[A-Za-z0-9]{1,50}$")
    client_id: PaymentsSecret
    client_secret: PaymentsSecret

    _strong_secrets = field_validator("client_id", "client_secret")(strong_secret)
