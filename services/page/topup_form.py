"""The top-up form without I/O: what its summary says for the driver's current choice (the amount,
the bonus, the method's fee and the total charged, priced by ``shared.pricing`` exactly as the order
will be), the custom amount's step, the terms sentence, where an error points, and the balance
before paying as crediting's user lookup tells it (signed launches only).

The form's script (``static/form.js``) recomputes the same summary in the browser as the driver
changes the choice, from the same numbers (data attributes: amounts, ``fixed_minor``, ``rate_bp``) and
with the same rounding (``shared.money.basis_points``: half up, in integers); the server prices
again on submit, and payments prices again from its own configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.page.domain import parse_major_amount
from services.page.i18n import Translator
from shared import pricing
from shared.money import currency_exponent
from shared.settings import AmountSettings, IntegrationSettings

# Where the terms' link goes in the translated sentence: a character no text contains.
LINK_MARK = "\ue000"
# The amounts the form's script learns the server's money format from (every digit in a known
# place: what lies between them is the grouping and the decimal sign); static/form.js formatLike.
SAMPLE_UNITS = 1_234_567
SAMPLE_FRACTION = "891"
SHORT_SAMPLE_UNITS = 1_234


@dataclass(frozen=True)
class Summary:
    """The form's summary for one choice: what is credited, what the processor charges."""

    amount_minor: int
    bonus_minor: int
    fee_minor: int
    total_minor: int
    method: str
    # The balance the driver will have once credited (signed launches, when crediting told it).
    balance_after_minor: int | None = None


def summarise(
    amounts: AmountSettings,
    integration: IntegrationSettings,
    currency: str,
    *,
    package_id: str,
    amount_text: str,
    method: str,
    balance_minor: int | None = None,
) -> Summary | None:
    """The summary for the form's current choice: ``package_id`` (empty: the typed ``amount_text``)
    and ``method``; None when that choice cannot be priced (no amount yet, or one refused)."""
    body: dict[str, Any] = {"method": method}
    try:
        if package_id:
            body["package_id"] = package_id
        else:
            if not amount_text.strip():
                return None
            body["amount_minor"] = parse_major_amount(amount_text, currency)
        priced = pricing.price_topup(body, amounts, integration, currency)
    except pricing.InvalidTopup:
        return None
    balance_after = None if balance_minor is None else balance_minor + priced.amount_minor + priced.bonus_minor
    return Summary(
        amount_minor=priced.amount_minor,
        bonus_minor=priced.bonus_minor,
        fee_minor=priced.fee_minor,
        total_minor=priced.charge_minor,
        method=priced.method,
        balance_after_minor=balance_after,
    )


def money_samples(t: Translator, currency: str) -> tuple[str, str]:
    """1234567.891… and 1234 (as many decimals as the currency has) formatted in the driver's
    language: the examples the form's script formats every other amount like."""
    exponent = currency_exponent(currency)
    fraction = int(SAMPLE_FRACTION[:exponent] or "0")
    return (
        t.money(SAMPLE_UNITS * 10**exponent + fraction, currency),
        t.money(SHORT_SAMPLE_UNITS * 10**exponent, currency),
    )


def step_hint(t: Translator, amounts: AmountSettings, currency: str) -> str | None:
    """The custom amount's step in the driver's language ("In steps of 5,00 €"); None when any amount
    in the currency's smallest unit is taken (the limits are in the custom amount's own label)."""
    if amounts.step_minor == 1:
        return None
    return t("amount_step_hint", step=t.money(amounts.step_minor, currency))


def terms_sentence(t: Translator, version: str | None) -> tuple[str, str]:
    """The terms sentence around its link, in the driver's language: (before, after) the link,
    whose text is ``t("terms_link")``. The link is markup, so it is never part of a translated text."""
    sentence = (
        t("terms_accept_version", terms=LINK_MARK, version=version)
        if version is not None
        else t("terms_accept", terms=LINK_MARK)
    )
    before, mark, after = sentence.partition(LINK_MARK)
    return (before, after) if mark else (sentence + " ", "")


def error_target(field: str | None) -> str | None:
    """The id of what an error is about (the control, or the group of choices), which the error
    links to and which names the error as its description; None for an error about the whole form."""
    return {"amount_minor": "amount", "package_id": "packages", "method": "methods", "phone": "phone"}.get(field or "")


def balance_from_lookup(user_id: str, reply: Mapping[str, Any], currency: str) -> int | None:
    """The balance before paying from crediting's user lookup (asked with ``"balance": true``):
    None unless the reply is about this user, in the operator's currency, with a whole balance."""
    balance = reply.get("balance_minor")
    if (
        reply.get("user_id") != user_id
        or reply.get("exists") is not True
        or reply.get("currency") != currency
        or isinstance(balance, bool)
        or not isinstance(balance, int)
    ):
        return None
    return balance
