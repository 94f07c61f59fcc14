"""Mercado Pago's settings: ``[integrations.<id>]`` with ``processor = "mercadopago"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__ACCESS_TOKEN`` / ``…__WEBHOOK_SECRET``):

- ``access_token``: the application's private key (Your integrations → the application → Production
  credentials: ``APP_USR-…``; Test credentials: ``TEST-…``), sent as ``Authorization: Bearer <token>``.
  A ``TEST-`` token in a production integration is refused at start. A test integration takes either:
  Mercado Pago's test users carry ``APP_USR-`` credentials too.
- ``webhook_secret``: the secret signature of the application's Webhooks (Your integrations → the
  application → Webhooks → Configure notifications; generated on saving, renewed with "Reset")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

MERCADOPAGO_API_BASE_URL = "https://api.mercadopago.com"
PRODUCTION_TOKEN_PREFIX = "APP_USR-"  # noqa: S105 (a prefix, not a secret)
TEST_TOKEN_PREFIX = "TEST-"  # noqa: S105


class MercadoPagoSettings(IntegrationSettings):
    # A refused value is never repeated in the error: it may be a credential.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Our method ids, each with the name drivers know it by. ``wire.METHOD_PAYMENT_TYPES`` maps them to
    # Mercado Pago's payment types.
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "pix": PaymentMethod("Pix", "qr"),
        "boleto": PaymentMethod("Boleto", "voucher"),
        "oxxo": PaymentMethod("OXXO", "voucher"),
        "pse": PaymentMethod("PSE", "bank"),
        "card": PaymentMethod("Card", "card"),
        "account_money": PaymentMethod("Mercado Pago balance", "wallet"),
    }

    processor: Literal["mercadopago"]
    api_base_url: str = Field(default=MERCADOPAGO_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    # How long a preference takes payments (``expires``/``expiration_date_to``); a Pix or voucher
    # payment started before then may still be paid after it.
    checkout_ttl_minutes: int = Field(default=60, ge=5, le=60 * 24 * 30)
    access_token: PaymentsSecret
    webhook_secret: PaymentsSecret

    _strong_secrets = field_validator("access_token", "webhook_secret")(strong_secret)

    @field_validator("access_token")
    @classmethod
    def _an_access_token(cls, value: SecretStr) -> SecretStr:
        # A withheld secret (another service's) is never read; the owner checks it.
        if isinstance(value, WithheldSecret):
            return value
        if not value.get_secret_value().startswith((PRODUCTION_TOKEN_PREFIX, TEST_TOKEN_PREFIX)):
            # Never the value itself: pydantic would show the input in the error.
            raise ValueError("must be a Mercado Pago access token (APP_USR-… or TEST-…), not the public key")
        return value

    @model_validator(mode="after")
    def _token_matches_environment(self) -> MercadoPagoSettings:
        token = self.access_token
        if (
            self.environment == "production"
            and not isinstance(token, WithheldSecret)
            and token.get_secret_value().startswith(TEST_TOKEN_PREFIX)
        ):
            raise ValueError("a production integration needs the production access token (APP_USR-…), not TEST-…")
        return self
