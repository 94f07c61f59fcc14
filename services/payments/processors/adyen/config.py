"""Adyen's settings: ``[integrations.<id>]`` with ``processor = "adyen"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__<KEY>``): ``api_key`` (Customer Area → Developers → API
credentials; sent as ``X-API-Key``), ``hmac_key`` (the webhook's HMAC key, as the Customer Area shows
it: hex), and optionally ``webhook_username`` / ``webhook_password`` (the basic authentication set on
the same webhook; when set, a notification without them is refused)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

# An Adyen HMAC key is shown as hex (64 digits for its 32 bytes); a shorter one is refused as weak.
HMAC_KEY_MIN_HEX_DIGITS = 32


def _hex_hmac_key(value: SecretStr) -> SecretStr:
    if isinstance(value, WithheldSecret):
        return value
    key = value.get_secret_value()
    if len(key) < HMAC_KEY_MIN_HEX_DIGITS:
        raise ValueError(f"must be at least {HMAC_KEY_MIN_HEX_DIGITS} hex digits")
    try:
        binascii.a2b_hex(key)
    except (binascii.Error, ValueError):
        # Never the value itself: pydantic would show the input in the error.
        raise ValueError("must be the hex HMAC key the Customer Area shows") from None
    return value


ADYEN_TEST_API = "https://checkout-test.adyen.com"


class AdyenSettings(IntegrationSettings):
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "card": PaymentMethod("Card", "card"),
        "ideal": PaymentMethod("iDEAL", "bank"),
        "bancontact": PaymentMethod("Bancontact", "phone"),
        "bancontact_mobile": PaymentMethod("Payconiq by Bancontact", "phone"),
        "blik": PaymentMethod("BLIK", "phone"),
        "eps": PaymentMethod("EPS", "bank"),
        "klarna": PaymentMethod("Klarna", "pay_later"),
        "mbway": PaymentMethod("MB WAY", "phone"),
        "mobilepay": PaymentMethod("MobilePay", "phone"),
        "paypal": PaymentMethod("PayPal", "wallet"),
        "swish": PaymentMethod("Swish", "phone"),
        "twint": PaymentMethod("TWINT", "phone"),
        "vipps": PaymentMethod("Vipps", "phone"),
        "trustly": PaymentMethod("Trustly", "bank"),
        "applepay": PaymentMethod("Apple Pay", "wallet"),
        "googlepay": PaymentMethod("Google Pay", "wallet"),
    }

    processor: Literal["adyen"]
    # Checkout API base, without the version. The default is Adyen's test environment; live uses the
    # company's live URL prefix: https://{PREFIX}-checkout-live.adyenpayments.com/checkout (Customer
    # Area → Developers → API URLs; the Adyen SDK builds the same URL from ``live_endpoint_prefix``).
    api_base_url: str = Field(default=ADYEN_TEST_API, pattern=r"^https?://[^?#@\s]+$")
    merchant_account: str = Field(min_length=1, max_length=200)
    api_key: PaymentsSecret
    hmac_key: PaymentsSecret
    webhook_username: PaymentsSecret | None = None
    webhook_password: PaymentsSecret | None = None

    _strong_api_key = field_validator("api_key")(strong_secret)
    _hex_key = field_validator("hmac_key")(_hex_hmac_key)

    @model_validator(mode="after")
    def _basic_auth_pair(self) -> AdyenSettings:
        if (self.webhook_username is None) != (self.webhook_password is None):
            raise ValueError("webhook_username and webhook_password go together (the webhook's basic authentication)")
        if self.environment == "production" and self.api_base_url == ADYEN_TEST_API:
            # Live money goes through the company's live endpoint, never Adyen's test one.
            raise ValueError("a production integration needs api_base_url: your live Checkout endpoint")
        return self
