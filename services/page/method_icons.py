"""Which icon the form shows beside a payment method: one simple monochrome drawing per kind of
method (a card, a wallet, a bank…), the page's own (``static/methods/<kind>.svg``), never a brand's
logo (those are trademarks, and each would be one more download). The icon is decorative: the
method's name is beside it as text.

Each processor's package says what kind each of its methods is (``PaymentMethod.kind``); a generic
id without one (the sandbox's ``card``) has its kind from the table below, else by its shape
(``…_debit`` is a bank's), else the generic payment icon."""

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

# Generic method ids (the sandbox's, and any a processor leaves without a kind). Every real
# processor says the kind of each of its methods itself (``PaymentMethod.kind``, in its package).
_BY_KIND: Final[dict[IconKind, tuple[str, ...]]] = {
    "card": ("card",),
    "wallet": ("wallet",),
    "bank": ("bank", "bank_transfer", "netbanking"),
    "mobile_money": ("mobile_money",),
    "qr": ("qr",),
    "voucher": ("voucher", "cash"),
}
METHOD_ICON_KINDS: Final[dict[str, IconKind]] = {
    method: kind for kind, methods in _BY_KIND.items() for method in methods
}


def icon_kind(method: str, declared: str | None = None) -> IconKind:
    """The kind of icon for ``method`` (an integration's method id): the kind its processor declares,
    else a generic id's, else one by the id's shape, else the default."""
    for kind in ICON_KINDS:
        if kind == declared:
            return kind
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
