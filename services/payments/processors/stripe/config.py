"""Stripe's settings: ``[integrations.<id>]`` with ``processor = "stripe"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__SECRET_KEY`` / ``…__WEBHOOK_SECRET``):

- ``secret_key``: the account's secret API key (``sk_live_…``/``sk_test_…``, or a restricted key
  ``rk_…`` allowed to write Checkout Sessions and Refunds and read Checkout Sessions), sent as
  ``Authorization: Bearer <key>``.
- ``webhook_secret``: the signing secret of the webhook endpoint (``whsec_…``). The endpoint must send
  the events listed in ``adapter.py`` and use API version 2024-10-28.acacia or later (before it,
  Stripe sent ``refund.*`` events only for refunds without a charge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from shared.settings import IntegrationSettings, PaymentsSecret, WithheldSecret, strong_secret

STRIPE_API_BASE_URL = "https://api.stripe.com"


def _prefixed(value: SecretStr, prefixes: tuple[str, ...], what: str) -> SecretStr:
    # A withheld secret (another service's) is never read; the owner checks it.
    if not isinstance(value, WithheldSecret) and not value.get_secret_value().startswith(prefixes):
        raise ValueError(f"must be a Stripe {what} (starting with {' or '.join(prefixes)})")
    return value


class StripeSettings(IntegrationSettings):
    # Checkout's ``payment_method_types`` (docs.stripe.com/api/checkout/sessions/create), our method id
    # being Stripe's own, each with the name Stripe's Checkout shows.
    payment_methods: ClassVar[Mapping[str, str]] = {
        "acss_debit": "Pre-authorized debit",
        "affirm": "Affirm",
        "afterpay_clearpay": "Afterpay / Clearpay",
        "alipay": "Alipay",
        "alma": "Alma",
        "amazon_pay": "Amazon Pay",
        "au_becs_debit": "BECS Direct Debit",
        "bacs_debit": "Bacs Direct Debit",
        "bancontact": "Bancontact",
        "billie": "Billie",
        "blik": "BLIK",
        "boleto": "Boleto",
        "card": "Card",
        "cashapp": "Cash App Pay",
        "customer_balance": "Bank transfer",
        "eps": "EPS",
        "fpx": "FPX",
        "giropay": "giropay",
        "grabpay": "GrabPay",
        "ideal": "iDEAL",
        "kakao_pay": "Kakao Pay",
        "klarna": "Klarna",
        "konbini": "Konbini",
        "kr_card": "Korean card",
        "link": "Link",
        "mobilepay": "MobilePay",
        "multibanco": "Multibanco",
        "naver_pay": "Naver Pay",
        "oxxo": "OXXO",
        "p24": "Przelewy24",
        "pay_by_bank": "Pay by Bank",
        "payco": "PAYCO",
        "paynow": "PayNow",
        "paypal": "PayPal",
        "payto": "PayTo",
        "pix": "Pix",
        "promptpay": "PromptPay",
        "revolut_pay": "Revolut Pay",
        "samsung_pay": "Samsung Pay",
        "satispay": "Satispay",
        "sepa_debit": "SEPA Direct Debit",
        "sofort": "Sofort",
        "swish": "Swish",
        "twint": "TWINT",
        "us_bank_account": "ACH Direct Debit",
        "wechat_pay": "WeChat Pay",
        "zip": "Zip",
    }

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
