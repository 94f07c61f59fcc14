"""Mollie's settings: ``[integrations.<id>]`` with ``processor = "mollie"``.

Secret (``EVTOPUP__INTEGRATIONS__<ID>__API_KEY``): ``api_key``, the website profile's API key from the
Mollie Dashboard (Developers → API keys), sent as ``Authorization: Bearer <key>``. Mollie has a live key
(``live_…``) and a test key (``test_…``) per profile, and a key sees only the payments of its own mode
(docs.mollie.com "Authentication"; ``mode`` on the payment object). A Test integration must therefore
take the ``test_`` key and a Production one the ``live_`` key: a mix-up is refused at start, not found
at the first payment. Organization access tokens (``access_…``) and OAuth tokens are not supported:
they need ``profileId``/``testmode`` on every call.

Classic webhooks carry no signature and need no secret: each payment names its own ``webhookUrl``
(payments' ``/webhooks/<integration id>``), and every webhook is confirmed by fetching the payment.

``payment_methods``: our method ids and the names drivers know them by; ``wire.METHOD_CODES`` maps them
to Mollie's ``method`` codes (the list of ``create-payment.rst`` in mollie/api-documentation)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

MOLLIE_API_BASE_URL = "https://api.mollie.com"
# ``live_``/``test_`` and 30 alphanumerics (the keys in Mollie's documentation, e.g.
# ``test_dHar4XY7LxsDOtmnkVtjNVWXLSlXsM``); the length is not documented as fixed, so only a floor is set.
_API_KEY = re.compile(r"(live|test)_[A-Za-z0-9]{20,}")
KEY_PREFIX = {"production": "live_", "test": "test_"}


class MollieSettings(IntegrationSettings):
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "ideal": PaymentMethod("iDEAL", "bank"),
        "bancontact": PaymentMethod("Bancontact", "phone"),
        "card": PaymentMethod("Card", "card"),
        "eps": PaymentMethod("EPS", "bank"),
        "przelewy24": PaymentMethod("Przelewy24", "bank"),
        "kbc": PaymentMethod("KBC/CBC Payment Button", "bank"),
        "belfius": PaymentMethod("Belfius Pay Button", "bank"),
        "paypal": PaymentMethod("PayPal", "wallet"),
        "applepay": PaymentMethod("Apple Pay", "wallet"),
        "mybank": PaymentMethod("MyBank", "bank"),
        "bank_transfer": PaymentMethod("Bank transfer", "bank"),
    }

    processor: Literal["mollie"]
    api_base_url: str = Field(default=MOLLIE_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    api_key: PaymentsSecret

    _strong_secrets = field_validator("api_key")(strong_secret)

    @field_validator("api_key")
    @classmethod
    def _an_api_key(cls, value: SecretStr) -> SecretStr:
        # A withheld secret (another service's) is never read; payments checks it.
        if not isinstance(value, WithheldSecret) and not _API_KEY.fullmatch(value.get_secret_value()):
            # Never the value itself: pydantic would show the input in the error.
            raise ValueError("must be a Mollie API key (live_… or test_…)")
        return value

    @model_validator(mode="after")
    def _key_of_the_environment(self) -> MollieSettings:
        if isinstance(self.api_key, WithheldSecret):
            return self
        prefix = KEY_PREFIX[self.environment]
        if not self.api_key.get_secret_value().startswith(prefix):
            raise ValueError(f"api_key: a {self.environment} integration takes the {prefix}… API key")
        return self
