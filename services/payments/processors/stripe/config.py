"""Stripe's settings: ``[integrations.<id>]`` with ``processor = "stripe"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__SECRET_KEY`` / ``…__WEBHOOK_SECRET``):

- ``secret_key``: the account's secret API key (``sk_live_…``/``sk_test_…``, or a restricted key
  ``rk_…`` allowed to write Checkout Sessions and Refunds and read Checkout Sessions), sent as
  ``Authorization: Bearer <key>``.
- ``webhook_secret``: the signing secret of the webhook endpoint (``whsec_…``). The endpoint must send
  the events listed in ``adapter.py`` and use API version 2024-10-28.acacia or later (before it,
  Stripe sent ``refund.*`` events only for refunds without a charge)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from shared.settings import IntegrationSettings, PaymentsSecret, WithheldSecret, strong_secret

STRIPE_API_BASE_URL = "https://api.stripe.com"


def _prefixed(value: SecretStr, prefixes: tuple[str, ...], what: str) -> SecretStr:
    # A withheld secret (another service's) is never read; the owner checks it.
    if not isinstance(value, WithheldSecret) and not value.get_secret_value().startswith(prefixes):
        raise ValueError(f"must be a Stripe {what} (starting with {' or '.join(prefixes)})")
    return value


class StripeSettings(IntegrationSettings):
    processor: Literal["stripe"]
    api_base_url: str = Field(default=STRIPE_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    secret_key: PaymentsSecret
    webhook_secret: PaymentsSecret

    _strong_secrets = field_validator("secret_key", "webhook_secret")(strong_secret)

    @field_validator("secret_key")
    @classmethod
    def _a_secret_key(cls, value: SecretStr) -> SecretStr:
        # A publishable key (pk_…) would be refused by the API at the first payment: say so at start.
        return _prefixed(value, ("sk_", "rk_"), "secret or restricted API key")

    @field_validator("webhook_secret")
    @classmethod
    def _a_signing_secret(cls, value: SecretStr) -> SecretStr:
        return _prefixed(value, ("whsec_",), "webhook signing secret")
