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

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, WithheldSecret, strong_secret

STRIPE_API_BASE_URL = "https://api.stripe.com"


def _prefixed(value: SecretStr, prefixes: tuple[str, ...], what: str) -> SecretStr:
    # A withheld secret (another service's) is never read; the owner checks it.
    if not isinstance(value, WithheldSecret) and not value.get_secret_value().startswith(prefixes):
        raise ValueError(f"must be a Stripe {what} (starting with {' or '.join(prefixes)})")
    return value


class StripeSettings(IntegrationSettings):
    # Checkout's ``payment_method_types`` (docs.stripe.com/api/checkout/sessions/create), our method id
    # being Stripe's own, each with the name Stripe's Checkout shows.
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "acss_debit": PaymentMethod("Pre-authorized debit", "bank"),
        "affirm": PaymentMethod("Affirm", "pay_later"),
        "afterpay_clearpay": PaymentMethod("Afterpay / Clearpay", "pay_later"),
        "alipay": PaymentMethod("Alipay", "wallet"),
        "alma": PaymentMethod("Alma", "pay_later"),
        "amazon_pay": PaymentMethod("Amazon Pay", "wallet"),
        "au_becs_debit": PaymentMethod("BECS Direct Debit", "bank"),
        "bacs_debit": PaymentMethod("Bacs Direct Debit", "bank"),
        "bancontact": PaymentMethod("Bancontact", "phone"),
        "billie": PaymentMethod("Billie", "pay_later"),
        "blik": PaymentMethod("BLIK", "phone"),
        "boleto": PaymentMethod("Boleto", "voucher"),
        "card": PaymentMethod("Card", "card"),
        "cashapp": PaymentMethod("Cash App Pay", "wallet"),
        "customer_balance": PaymentMethod("Bank transfer", "bank"),
        "eps": PaymentMethod("EPS", "bank"),
        "fpx": PaymentMethod("FPX", "bank"),
        "giropay": PaymentMethod("giropay", "bank"),
        "grabpay": PaymentMethod("GrabPay", "wallet"),
        "ideal": PaymentMethod("iDEAL", "bank"),
        "kakao_pay": PaymentMethod("Kakao Pay", "wallet"),
        "klarna": PaymentMethod("Klarna", "pay_later"),
        "konbini": PaymentMethod("Konbini", "voucher"),
        "kr_card": PaymentMethod("Korean card", "card"),
        "link": PaymentMethod("Link", "wallet"),
        "mobilepay": PaymentMethod("MobilePay", "phone"),
        "multibanco": PaymentMethod("Multibanco", "voucher"),
        "naver_pay": PaymentMethod("Naver Pay", "wallet"),
        "oxxo": PaymentMethod("OXXO", "voucher"),
        "p24": PaymentMethod("Przelewy24", "bank"),
        "pay_by_bank": PaymentMethod("Pay by Bank", "bank"),
        "payco": PaymentMethod("PAYCO", "wallet"),
        "paynow": PaymentMethod("PayNow", "qr"),
        "paypal": PaymentMethod("PayPal", "wallet"),
        "payto": PaymentMethod("PayTo", "bank"),
        "pix": PaymentMethod("Pix", "qr"),
        "promptpay": PaymentMethod("PromptPay", "qr"),
        "revolut_pay": PaymentMethod("Revolut Pay", "wallet"),
        "samsung_pay": PaymentMethod("Samsung Pay", "wallet"),
        "satispay": PaymentMethod("Satispay", "phone"),
        "sepa_debit": PaymentMethod("SEPA Direct Debit", "bank"),
        "sofort": PaymentMethod("Sofort", "bank"),
        "swish": PaymentMethod("Swish", "phone"),
        "twint": PaymentMethod("TWINT", "phone"),
        "us_bank_account": PaymentMethod("ACH Direct Debit", "bank"),
        "wechat_pay": PaymentMethod("WeChat Pay", "qr"),
        "zip": PaymentMethod("Zip", "pay_later"),
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
