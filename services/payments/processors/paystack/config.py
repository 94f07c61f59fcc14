"""Paystack's settings: ``[integrations.<id>]`` with ``processor = "paystack"``.

Secret (``EVTOPUP__INTEGRATIONS__<ID>__SECRET_KEY``): ``secret_key``, the integration's secret API
key (Dashboard → Settings → API Keys & Webhooks). It is sent as ``Authorization: Bearer <key>`` and
it is also the key Paystack signs webhooks with (``x-paystack-signature`` = HMAC-SHA512 of the body),
so there is no separate webhook secret. Live keys start ``sk_live_``, test keys ``sk_test_``: a
production integration takes a live key, a test integration a test key.

``customer_email``: Paystack's initialize *requires* a customer e-mail address, and evtopup knows
none (the CSMS gives us only a user id, which must not leave us either). So the operator configures
the address Paystack gets, an address of its own that carries nothing about the driver. It may hold
the placeholder ``{payment}``, replaced by the payment's id (32 hex digits): e.g.
``topup+{payment}@cpo.example`` gives each payment its own address in one mailbox. That is the
recommended form, because Paystack keys its customer records (and its fraud tooling: a customer's
``risk_action`` "deny" blocks every payment of that customer) on the address: with one fixed
address, all drivers would be one Paystack customer, and one blocked driver would block all. Paystack
may e-mail receipts to the address (a Dashboard setting), so use a domain the operator controls.

``checkout_expiry_s``: Paystack documents no expiry for an initialized transaction: verify answers
``abandoned`` both before the driver has done anything and after the driver left, and Paystack sends
no webhook when a driver walks away. A transaction still ``abandoned`` this long after it was
created counts as expired (the order ends without credit). A later payment on the same page still
counts: its ``charge.success`` (or the poller, for ``poll_grace_s``) credits it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

PAYSTACK_API_BASE_URL = "https://api.paystack.co"
KEY_PREFIX: Mapping[str, str] = {"production": "sk_live_", "test": "sk_test_"}
EMAIL_PLACEHOLDER = "{payment}"
# A plain address (no display name, no quoting): what is left once the placeholder is filled in.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+")


class PaystackSettings(IntegrationSettings):
    # Our method id -> the name drivers know it by; wire.CHANNELS maps each to Paystack's channel.
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "card": PaymentMethod("Card", "card"),
        "bank": PaymentMethod("Bank", "bank"),
        "bank_transfer": PaymentMethod("Bank transfer", "bank"),
        "ussd": PaymentMethod("USSD", "phone"),
        "mobile_money": PaymentMethod("Mobile money", "mobile_money"),
        "qr": PaymentMethod("QR", "qr"),
        "eft": PaymentMethod("EFT", "bank"),
        "apple_pay": PaymentMethod("Apple Pay", "wallet"),
    }

    processor: Literal["paystack"]
    api_base_url: str = Field(default=PAYSTACK_API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    customer_email: str = Field(min_length=3, max_length=200)
    checkout_expiry_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    secret_key: PaymentsSecret

    _strong_secrets = field_validator("secret_key")(strong_secret)

    @field_validator("secret_key")
    @classmethod
    def _a_secret_key(cls, value: SecretStr) -> SecretStr:
        # A withheld secret (another service's) is never read; payments checks it.
        prefixes = tuple(KEY_PREFIX.values())
        if not isinstance(value, WithheldSecret) and not value.get_secret_value().startswith(prefixes):
            # Never the value itself: pydantic would show the input in the error.
            raise ValueError("must be a Paystack secret key (sk_live_… or sk_test_…)")
        return value

    @field_validator("customer_email")
    @classmethod
    def _an_address(cls, value: str) -> str:
        if value.count(EMAIL_PLACEHOLDER) > 1 or not _EMAIL.fullmatch(customer_email_for(value, "0" * 32)):
            raise ValueError(f"must be an e-mail address (optionally with {EMAIL_PLACEHOLDER} in its local part)")
        if EMAIL_PLACEHOLDER in value.partition("@")[2]:
            raise ValueError(f"{EMAIL_PLACEHOLDER} goes in the local part (before the @)")
        return value

    @model_validator(mode="after")
    def _key_of_the_environment(self) -> PaystackSettings:
        if isinstance(self.secret_key, WithheldSecret):
            return self
        prefix = KEY_PREFIX[self.environment]
        if not self.secret_key.get_secret_value().startswith(prefix):
            raise ValueError(f"secret_key: a {self.environment} integration takes the {prefix}… key")
        return self


def customer_email_for(template: str, payment_hex: str) -> str:
    """The address Paystack gets for one payment: the template with ``{payment}`` filled in."""
    return template.replace(EMAIL_PLACEHOLDER, payment_hex)
