"""The page's catalogues (services/page/catalogs.py): every language translates every text, with
the source's placeholders; the template is the English source; the check finds each kind of
problem; and the page ships the languages the product promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.page import catalogs
from services.page.i18n import Translator
from services.page.messages import SOURCE

# The EU's languages and the others the product promises (issue 9).
PROMISED = set(
    [
        "bg",
        "cs",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "fi",
        "fr",
        "ga",
        "hr",
        "hu",
        "it",
        "lt",
        "lv",
        "mt",
        "nl",
        "pl",
        "pt",
        "ro",
        "sk",
        "sl",
        "sv",
        "tr",
        "uk",
        "sr",
        "ar",
        "he",
        "hi",
        "id",
        "th",
        "vi",
        "sw",
        "pt-BR",
        "es-MX",
    ]
)


def test_the_page_speaks_every_promised_language() -> None:
    assert set(catalogs.shipped_locales()) >= PROMISED
    assert len(catalogs.shipped_locales()) >= 30


def test_every_catalogue_translates_every_text_with_its_placeholders() -> None:
    assert catalogs.check() == []


def test_the_template_is_the_english_source() -> None:
    """``make catalogs-update`` was run after the last change of messages.py."""
    shipped = catalogs.read_catalog(catalogs.TEMPLATE)
    assert {(m.context, m.id) for m in shipped if m.id} == {(key, text) for key, text in SOURCE.items()}


def _catalogue(tmp_path: Path, texts: dict[str, str], *, fuzzy: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    catalog = catalogs.template_catalog()
    for message in catalog:
        if message.id and message.context in texts:
            message.string = texts[message.context]
            if message.context in fuzzy:
                message.flags.add("fuzzy")
    path = catalogs.po_path("de", tmp_path)
    catalogs.write_catalog(catalog, path)
    return catalogs.check(tmp_path, ["de"])


def test_the_check_finds_each_kind_of_problem(tmp_path: Path) -> None:
    complete = {key: f"übersetzt {text}" for key, text in SOURCE.items()}
    assert _catalogue(tmp_path, complete) == []
    assert _catalogue(tmp_path, {k: v for k, v in complete.items() if k != "title"}) == ["de: title: empty"]
    assert _catalogue(tmp_path, {**complete, "title": "  "}) == ["de: title: empty"]
    assert _catalogue(tmp_path, complete, fuzzy={"pay"}) == [
        "de: pay: fuzzy (the English changed: check the translation)"
    ]
    assert _catalogue(tmp_path, {**complete, "new_balance": "Neues Guthaben: {saldo}"}) == [
        "de: new_balance: placeholders ['saldo'] instead of ['balance']"
    ]
    assert _catalogue(tmp_path, {**complete, "bonus": "Bonus"}) == ["de: bonus: placeholders [] instead of ['bonus']"]


def test_an_english_text_changed_since_the_translation_is_a_problem(tmp_path: Path) -> None:
    catalog = catalogs.template_catalog()
    for message in catalog:
        if message.id:
            message.string = f"x {message.id}"
    [title] = [m for m in catalog if m.context == "title"]
    catalog.delete(title.id, context="title")
    catalog.add("Top up (an older text)", "Aufladen", context="title")
    catalogs.write_catalog(catalog, catalogs.po_path("de", tmp_path))
    assert catalogs.check(tmp_path, ["de"]) == [
        "de: title: translates an older English text (run `make catalogs-update`)"
    ]


def test_an_unknown_locale_is_a_problem(tmp_path: Path) -> None:
    catalog = catalogs.template_catalog()
    for message in catalog:
        if message.id:
            message.string = message.id
    catalogs.write_catalog(catalog, catalogs.po_path("xx-QQ", tmp_path))
    assert catalogs.check(tmp_path, ["xx-QQ"]) == ["xx-QQ: not a locale CLDR knows"]


@pytest.mark.parametrize("locale", sorted(PROMISED - {"en"}))
def test_each_language_is_its_own(locale: str) -> None:
    """A catalogue that copied the English would pass the check: most texts must differ from it."""
    t = Translator(locale)
    same = [
        key
        for key, text in SOURCE.items()
        if t(key, **dict.fromkeys(catalogs.placeholders(text), "X"))
        == text.format(**dict.fromkeys(catalogs.placeholders(text), "X"))
    ]
    assert len(same) <= len(SOURCE) // 5, same
