"""Which icon the form shows beside a payment method: one simple monochrome drawing per kind of
method (a card, a wallet, a bank…), the page's own (``static/methods/<kind>.svg``), never a brand's
logo (those are trademarks, and each would be one more download). The icon is decorative: the
method's name is beside it as text.

A method id is mapped to its kind by the table below (the ids every processor package names); an id
not in it gets a kind by its shape (``…_debit`` is a bank's), else the generic payment icon."""

from __future__ import annotations

from typing import Final, Literal

IconKind = Literal["card", "wallet", "bank", "mobile_money", "phone", "qr", "voucher", "pay_later", "payment"]
ICON_KINDS: Final[tuple[IconKind, ...]] = (
    "card",
    "wallet",
    "bank",
    "mobile_money",
    "phone",
    "qr",
    "voucher",
    "pay_later",
    "payment",
)
DEFAULT_KIND: Final[IconKind] = "payment"

_BY_KIND: Final[dict[IconKind, tuple[str, ...]]] = {
    # Cards, whoever issues them.
    "card": ("card", "kr_card"),
    # Stored-value and app wallets: paid from a balance or a card kept in an account.
    "wallet": (
        "wallet",
        "account_money",
        "paypal",
        "link",
        "amazon_pay",
        "apple_pay",
        "applepay",
        "googlepay",
        "samsung_pay",
        "cashapp",
        "revolut_pay",
        "kakao_pay",
        "naver_pay",
        "payco",
        "grabpay",
        "gcash",
        "paymaya",
        "shopeepay",
        "linkaja",
        "ovo",
        "dana",
        "alipay",
    ),
    # Bank transfers, online banking and direct debits.
    "bank": (
        "bank",
        "bank_transfer",
        "customer_balance",
        "netbanking",
        "ideal",
        "eps",
        "giropay",
        "sofort",
        "trustly",
        "przelewy24",
        "p24",
        "fpx",
        "pse",
        "kbc",
        "belfius",
        "mybank",
        "pay_by_bank",
        "payto",
        "eft",
        "acss_debit",
        "au_becs_debit",
        "bacs_debit",
        "sepa_debit",
        "us_bank_account",
    ),
    # Money kept with a mobile operator.
    "mobile_money": ("mobile_money", "mpesa"),
    # Approved on the driver's phone: a banking app, a code, a prompt.
    "phone": (
        "ussd",
        "mbway",
        "blik",
        "swish",
        "twint",
        "vipps",
        "mobilepay",
        "bancontact",
        "bancontact_mobile",
        "satispay",
    ),
    # Paid by scanning a code.
    "qr": ("qr", "qris", "pix", "promptpay", "paynow", "upi", "wechat_pay"),
    # A slip paid in cash at a shop, an ATM or a bank.
    "voucher": ("boleto", "oxxo", "konbini", "multibanco"),
    # Buy now, pay later.
    "pay_later": ("klarna", "affirm", "afterpay_clearpay", "alma", "zip", "billie"),
}
METHOD_ICON_KINDS: Final[dict[str, IconKind]] = {
    method: kind for kind, methods in _BY_KIND.items() for method in methods
}


def icon_kind(method: str) -> IconKind:
    """The kind of icon for ``method`` (an integration's method id)."""
    known = METHOD_ICON_KINDS.get(method)
    if known is not None:
        return known
    if method.endswith("_debit") or method.endswith("_bank_transfer"):
        return "bank"
    if method.endswith("_card"):
        return "card"
    if method.endswith("_wallet"):
        return "wallet"
    return DEFAULT_KIND
