"""services/page/i18n.py: locale choice, catalogues with English fallback, and local money format."""

from __future__ import annotations

from string import Formatter

import pytest

from services.page.i18n import MESSAGES, Translator, choose_locale

OFFERED = ["en", "bg"]


@pytest.mark.parametrize("default", ["en", "bg"])
@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("en", "en"),
        ("bg", "bg"),
        ("en-GB", "en"),
        ("en-US", "en"),
        ("bg_BG", "bg"),
        ("BG", "bg"),
        ("EN-gb", "en"),
        (" bg ", "bg"),
        ("fr", None),
        ("fr-FR", None),
        ("", None),
        ("e", None),
        ("eng", None),
        ("b", None),
    ],
)
def test_choose_locale(requested: str, expected: str | None, default: str) -> None:
    # None: not offered, so the operator's default, whichever it is.
    assert choose_locale(requested, OFFERED, default) == (expected or default)


def test_exact_regional_locale_is_preferred_when_offered() -> None:
    offered = ["en", "en-GB", "pt-BR"]
    assert choose_locale("en-GB", offered, "en") == "en-GB"
    assert choose_locale("en_gb", offered, "en") == "en-GB"
    assert choose_locale("en-US", offered, "en") == "en"
    assert choose_locale("pt-BR", offered, "en") == "pt-BR"
    # "pt" alone is not offered; only "pt-BR" is.
    assert choose_locale("pt-PT", offered, "en") == "en"


def test_offered_spelling_is_returned() -> None:
    assert choose_locale("bg", ["BG"], "en") == "BG"


def test_catalogues_have_the_same_keys() -> None:
    assert set(MESSAGES["bg"]) == set(MESSAGES["en"])


def test_translator_uses_the_catalogue() -> None:
    assert Translator("en")("title") == "Top up your balance"
    assert Translator("bg")("title") == "Зареди баланса си"
    assert Translator("bg-BG")("title") == "Зареди баланса си"


@pytest.mark.parametrize("locale", ["fr", "de-DE", "en-GB", "xx"])
def test_translator_falls_back_to_english(locale: str) -> None:
    t = Translator(locale)
    assert t("title") == MESSAGES["en"]["title"]
    assert t("back_to_app") == "Back to app"


def test_translator_fills_values() -> None:
    assert Translator("en")("new_balance", balance="€12.00") == "New balance: €12.00"
    assert Translator("bg")("bonus", bonus="1,00 €") == "+1,00 € бонус"


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(KeyError):
        Translator("en")("no_such_key")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1000, "EUR", "€10.00"),
        (1050, "EUR", "€10.50"),
        (123456, "EUR", "€1,234.56"),
        (1, "EUR", "€0.01"),
        (500, "JPY", "¥500"),
    ],
)
def test_money_in_english(amount: int, currency: str, expected: str) -> None:
    assert Translator("en").money(amount, currency) == expected


def test_money_in_bulgarian() -> None:
    t = Translator("bg")
    formatted = t.money(1000, "EUR")
    assert "10,00" in formatted
    assert "€" in formatted
    assert "10.00" not in formatted
    assert "1,05" in t.money(105, "EUR")
    assert "234,56" in t.money(123456, "EUR")


def test_money_uses_the_currency_exponent() -> None:
    t = Translator("en")
    assert "1.234" in t.money(1234, "KWD")
    assert "12.34" not in t.money(1234, "KWD")
    assert t.money(500, "JPY").endswith("500")
    assert "5.00" not in t.money(500, "JPY")


def test_money_with_a_regional_locale() -> None:
    assert Translator("en-GB").money(1000, "EUR") == "€10.00"
    assert "10,00" in Translator("bg-BG").money(1000, "EUR")


def test_catalogues_fill_the_same_values() -> None:
    # A translation naming another placeholder than English would fail only when shown.
    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in Formatter().parse(text) if name}

    for key, english in MESSAGES["en"].items():
        for locale, messages in MESSAGES.items():
            assert fields(messages[key]) == fields(english), f"{locale}.{key}"


def test_the_phone_prompt_texts() -> None:
    assert Translator("en")("phone_hint", example="2547XXXXXXXX").endswith("e.g. 2547XXXXXXXX")
    assert "2547XXXXXXXX" in Translator("bg")("phone_hint", example="2547XXXXXXXX")
    assert Translator("en")("status_pending_phone", amount="€10.20").startswith(
        "Check your phone: approve the payment of €10.20"
    )
    assert "10,20 €" in Translator("bg")("status_pending_phone", amount="10,20 €")


def test_a_method_is_named_by_the_catalogue_then_the_processor_then_its_id() -> None:
    assert Translator("bg").method("card", "Card") == "Карта"  # generic: translated
    assert Translator("de").method("card", "Card") == "Card"  # no German catalogue yet: English
    assert Translator("bg").method("ideal", "iDEAL") == "iDEAL"  # a brand, as the processor names it
    assert Translator("en").method("voucher") == "voucher"  # nothing known: as configured
