"""services/page/i18n.py: locale choice along the fallback chain, Accept-Language, gettext catalogues
with English behind them, an operator's own catalogues, direction, and CLDR money formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.page import catalogs
from services.page.i18n import Translator, accept_language, choose_first_locale, choose_locale, translations
from services.page.messages import SOURCE

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
    # Neither "pt-PT" nor "pt" is offered: another Portuguese, rather than English.
    assert choose_locale("pt-PT", offered, "en") == "pt-BR"
    assert choose_locale("pt", offered, "en") == "pt-BR"


def test_the_chain_goes_from_the_region_to_the_language() -> None:
    offered = ["en", "pt", "pt-BR", "es", "es-MX"]
    assert choose_locale("pt-BR", offered, "en") == "pt-BR"
    assert choose_locale("pt-AO", offered, "en") == "pt"
    assert choose_locale("es-AR", offered, "en") == "es"
    assert choose_locale("es-MX", offered, "en") == "es-MX"


def test_offered_spelling_is_returned() -> None:
    assert choose_locale("bg", ["BG"], "en") == "BG"


def test_translator_uses_the_catalogue() -> None:
    assert Translator("en")("title") == "Top up your balance"
    assert Translator("bg")("title") == "Заредете баланса си"
    assert Translator("bg-BG")("title") == "Заредете баланса си"


@pytest.mark.parametrize("locale", ["en-GB", "xx", "zz-ZZ"])
def test_translator_falls_back_to_english(locale: str) -> None:
    t = Translator(locale)
    assert t("title") == SOURCE["title"]
    assert t("back_to_app") == "Back to app"


def test_a_regional_locale_falls_back_to_its_language(tmp_path: Path) -> None:
    # Only the operator's "pt" catalogue has this text: pt-BR's chain reaches it.
    own = tmp_path / "own"
    own.mkdir()
    _write_catalogue(own / "pt.po", "pt", {"title": "Carregue o seu saldo (operador)"})
    assert Translator("pt-AO", str(own))("title") == "Carregue o seu saldo (operador)"


def _write_catalogue(path: Path, locale: str, texts: dict[str, str]) -> None:
    catalog = catalogs.template_catalog()
    for message in catalog:
        if message.id and message.context in texts:
            message.string = texts[message.context]
    catalogs.write_catalog(catalog, path)


def test_an_operators_catalogue_overrides_a_text_and_keeps_the_rest(tmp_path: Path) -> None:
    _write_catalogue(tmp_path / "bg.po", "bg", {"title": "Заредете сметката си в Ток ООД"})
    t = Translator("bg", str(tmp_path))
    assert t("title") == "Заредете сметката си в Ток ООД"
    assert t("back_to_app") == Translator("bg")("back_to_app") != SOURCE["back_to_app"]  # the shipped one


def test_an_operator_adds_a_language_the_page_does_not_ship(tmp_path: Path) -> None:
    _write_catalogue(tmp_path / "is.po", "is", {"title": "Fylltu á inneignina"})
    assert Translator("is", str(tmp_path))("title") == "Fylltu á inneignina"
    assert Translator("is", str(tmp_path))("back_to_app") == SOURCE["back_to_app"]  # not translated: English
    assert translations("is") is not translations("is", str(tmp_path))


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


def test_the_phone_prompt_texts() -> None:
    assert Translator("en")("phone_hint", example="2547XXXXXXXX").endswith("e.g. 2547XXXXXXXX")
    assert "2547XXXXXXXX" in Translator("bg")("phone_hint", example="2547XXXXXXXX")
    assert Translator("en")("status_pending_phone", amount="€10.20").startswith(
        "Check your phone: approve the payment of €10.20"
    )
    assert "10,20 €" in Translator("bg")("status_pending_phone", amount="10,20 €")


def test_a_method_is_named_by_the_catalogue_then_the_processor_then_its_id() -> None:
    assert Translator("bg").method("card", "Card") == "Карта"  # generic: translated
    assert Translator("xx").method("card", "Card") == "Card"  # a language without a catalogue: English
    assert Translator("bg").method("ideal", "iDEAL") == "iDEAL"  # a brand, as the processor names it
    assert Translator("en").method("voucher") == "voucher"  # nothing known: as configured


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", ["de-DE", "de", "en"]),
        ("en;q=0.5, ar", ["ar", "en"]),
        ("*, sw;q=0.1", ["sw"]),
        ("fr;q=0, it", ["it"]),
        ("fr;q=abc, it", ["it"]),
        ("", []),
        (None, []),
    ],
)
def test_accept_language_most_wanted_first(header: str | None, expected: list[str]) -> None:
    assert accept_language(header) == expected


def test_the_launch_then_the_csms_then_the_browser_then_the_default() -> None:
    offered = ["en", "de", "sw", "ar"]
    assert choose_first_locale(["sw-KE", "de", "ar"], offered, "en") == "sw"
    assert choose_first_locale([None, "de-AT", "ar"], offered, "en") == "de"
    assert choose_first_locale(["fr", None, *accept_language("ar-EG,en;q=0.3")], offered, "en") == "ar"
    assert choose_first_locale(["fr", None], offered, "en") == "en"


@pytest.mark.parametrize(
    ("locale", "direction"), [("ar", "rtl"), ("he", "rtl"), ("en", "ltr"), ("sw", "ltr"), ("xx", "ltr")]
)
def test_arabic_and_hebrew_read_right_to_left(locale: str, direction: str) -> None:
    assert Translator(locale).direction == direction


def test_errors_carry_a_code_and_parameters_rendered_in_the_drivers_language() -> None:
    en, bg = Translator("en"), Translator("bg")
    params = {"min_minor": 500, "max_minor": 50_000}
    assert en.error("amount_out_of_range", params, "EUR") == "Please enter an amount between €5.00 and €500.00."
    assert "5,00" in bg.error("amount_out_of_range", params, "EUR") and "500,00" in bg.error(
        "amount_out_of_range", params, "EUR"
    )
    assert en.error("phone_invalid", {}, "EUR") == SOURCE["phone_invalid"]  # a code that is a text's key
    assert en.error("no_such_code", {}, "EUR") == SOURCE["error"]
    assert en.error("amount_out_of_range", {}, "EUR") == SOURCE["error"]  # its parameters did not come


def test_language_names_are_in_the_language_itself() -> None:
    assert Translator("de").language_name == "Deutsch"
    assert Translator("pt-BR").language_name == "Português (Brasil)"
    assert Translator("ar").language_name == "العربية"


def test_an_operators_catalogue_with_other_placeholders_is_refused_and_never_breaks_a_page(tmp_path: Path) -> None:
    from services.page.i18n import override_problems

    _write_catalogue(tmp_path / "bg.po", "bg", {"new_balance": "Нов баланс: {saldo}", "title": "Зареди"})
    assert override_problems(str(tmp_path)) == ["bg: new_balance: placeholders ['saldo'] instead of ['balance']"]
    t = Translator("bg", str(tmp_path))
    assert t("new_balance", balance="10,00 €") == "New balance: 10,00 €"  # English rather than a crash
    assert t("title") == "Зареди"
    assert override_problems(None) == []
