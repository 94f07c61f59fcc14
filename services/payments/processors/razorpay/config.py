"""Razorpay's settings: ``[integrations.<id>]`` with ``processor = "razorpay"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__<KEY>``):

- ``key_id`` / ``key_secret``: the API key pair (Dashboard → Account & Settings → API Keys), sent as
  HTTP Basic authentication ``key_id:key_secret``. A key id starts with ``rzp_live_`` (live mode) or
  ``rzp_test_`` (test mode); it must match the integration's ``environment``, so that a production
  integration never runs on test keys, nor a test one on live money.
- ``webhook_secret``: the secret typed in when the webhook was set up (Dashboard → Account &
  Settings → Webhooks). It is not the API key secret (razorpay/markdown-docs ``webhooks/validate-test.md``).
- ``previous_webhook_secret`` (optional): the secret before a rotation. Razorpay signs the retries of
  events created before a rotation with the *old* secret (razorpay.com/docs/webhooks/payloads/payment-links,
  "Watch Out!"), and retries for 24 hours; while this is set both are accepted. Remove it a day after
  rotating."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

RAZORPAY_API_BASE_URL: Final = "https://api.razorpay.com"
LIVE_KEY_PREFIX: Final = "rzp_live_"
TEST_KEY_PREFIX: Final = "rzp_test_"
# Razorpay refuses an ``expire_by`` less than 15 minutes ahead ("expire_by: timestamp must be atleast
# 15 minutes in future", the create error as integrators quote it [wording not in Razorpay's own
# pages]); a minute more leaves room for clock skew and a slow request.
MIN_LINK_EXPIRY_S: Final = 16 * 60
# "the expire by date cannot exceed more than six months from the date of creation" (Payment Links
# entity, razorpay.com/docs/api/payments/payment-links/entity).
MAX_LINK_EXPIRY_S: Final = 180 * 86_400


class RazorpaySettings(IntegrationSettings):
    # Our method ids → the names drivers know them by. Each maps to one key of the Payment Link's
    # ``options.checkout.method`` (wire.METHOD_OPTIONS): the only methods a link can be limited to
    # ("Customise Payment Methods - Options and Method Parameters": card, netbanking, upi, wallet).
    # EMI and bank transfer are not offered: a link cannot be limited to them, so the page would
    # promise a method the driver may not find.
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "upi": PaymentMethod("UPI", "qr"),
        "card": PaymentMethod("Card", "card"),
        "netbanking": PaymentMethod("Netbanking", "bank"),
        "wallet": PaymentMethod("Wallet", "wallet"),
    }

    processor: Literal["razorpay"]
    api_base_url: str = Field(default=RAZORPAY_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    key_id: PaymentsSecret
    key_secret: PaymentsSecret
    webhook_secret: PaymentsSecret
    previous_webhook_secret: PaymentsSecret | None = None
    # How long a driver has to pay on the link (its ``expire_by``).
    link_expiry_s: int = Field(default=1800, ge=MIN_LINK_EXPIRY_S, le=MAX_LINK_EXPIRY_S)

    _strong_secrets = field_validator("key_secret", "webhook_secret")(strong_secret)

    @field_validator("previous_webhook_secret")
    @classmethod
    def _strong_previous(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else strong_secret(value)

    @field_validator("key_id")
    @classmethod
    def _a_key_id(cls, value: SecretStr) -> SecretStr:
        # A withheld secret (another service's) is never read; its owner checks it.
        if not isinstance(value, WithheldSecret) and not value.get_secret_value().startswith(
            (LIVE_KEY_PREFIX, TEST_KEY_PREFIX)
        ):
            raise ValueError(f"must be a Razorpay key id ({LIVE_KEY_PREFIX}… or {TEST_KEY_PREFIX}…)")
        return value

    @model_validator(mode="after")
    def _keys_match_the_environment(self) -> RazorpaySettings:
        if isinstance(self.key_id, WithheldSecret):
            return self
        expected = LIVE_KEY_PREFIX if self.environment == "production" else TEST_KEY_PREFIX
        if not self.key_id.get_secret_value().startswith(expected):
            raise ValueError(f"key_id: a {self.environment} integration needs a {expected}… key")
        return self
