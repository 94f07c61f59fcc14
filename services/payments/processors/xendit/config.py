"""Xendit's settings: ``[integrations.<id>]`` with ``processor = "xendit"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__SECRET_KEY`` / ``…__CALLBACK_TOKEN``):

- ``secret_key``: the account's secret API key (Dashboard → Settings → API Keys), sent as HTTP Basic
  user name with an empty password (processors.md §8.a). Production keys start ``xnd_production_``,
  test-mode keys ``xnd_development_``; the key must match the integration's ``environment``, so that a
  Test integration never takes real money and a Production one never silently takes play money. The
  key needs write permission for Money-in (invoices, refunds).
- ``callback_token``: the "Callback verification token" (Dashboard → Settings → Webhooks / Callbacks),
  which Xendit sends as ``x-callback-token`` on every callback (docs.xendit.co/api-integration/callback/setup,
  help.xendit.co 360038072991). It is one static token per account (and per mode), not a signature.

``invoice_duration_s`` is how long an invoice stays payable (Xendit's ``invoice_duration``, seconds;
Xendit's own default is 24 hours). Bank transfers (virtual accounts) are paid from the driver's bank
app, often minutes later, so it should not be too short.

``payment_methods``: our method ids and the names drivers know them by; ``wire.METHOD_CODES`` maps each
to Xendit's invoice ``payment_methods`` codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

XENDIT_API_BASE_URL = "https://api.xendit.co"
KEY_PREFIXES: Mapping[str, str] = {"production": "xnd_production_", "test": "xnd_development_"}


class XenditSettings(IntegrationSettings):
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "card": PaymentMethod("Card", "card"),
        "bank_transfer": PaymentMethod("Bank transfer", "bank"),
        "qris": PaymentMethod("QRIS", "qr"),
        "ovo": PaymentMethod("OVO", "wallet"),
        "dana": PaymentMethod("DANA", "wallet"),
        "shopeepay": PaymentMethod("ShopeePay", "wallet"),
        "linkaja": PaymentMethod("LinkAja", "wallet"),
        "gcash": PaymentMethod("GCash", "wallet"),
        "grabpay": PaymentMethod("GrabPay", "wallet"),
        "paymaya": PaymentMethod("Maya", "wallet"),
        "promptpay": PaymentMethod("PromptPay", "qr"),
    }

    processor: Literal["xendit"]
    api_base_url: str = Field(default=XENDIT_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    # Xendit accepts 1 s to 1 year (31536000 s) [UNVERIFIED upper bound: from Xendit's invoice docs as
    # quoted by third parties]; a checkout shorter than 5 minutes is not payable in practice.
    invoice_duration_s: int = Field(default=86_400, ge=300, le=31_536_000)
    secret_key: PaymentsSecret
    callback_token: PaymentsSecret

    _strong_secrets = field_validator("secret_key", "callback_token")(strong_secret)

    @field_validator("callback_token")
    @classmethod
    def _printable_token(cls, value: SecretStr) -> SecretStr:
        # It travels in a header: a token with spaces or control characters could never match.
        if not isinstance(value, WithheldSecret):
            token = value.get_secret_value()
            if not token.isascii() or not token.isprintable() or token != token.strip():
                raise ValueError("must be printable ASCII without surrounding spaces")
        return value

    @model_validator(mode="after")
    def _key_matches_environment(self) -> XenditSettings:
        if not isinstance(self.secret_key, WithheldSecret):
            prefix = KEY_PREFIXES[self.environment]
            if not self.secret_key.get_secret_value().startswith(prefix):
                raise ValueError(f"secret_key: a {self.environment} integration needs a Xendit key starting {prefix}")
        return self
