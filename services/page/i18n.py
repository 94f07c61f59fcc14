"""The driver's language: which of the offered locales a driver gets, the page's texts in it (gettext
catalogues compiled from ``locales/``, managed by ``catalogs.py``), its direction (right to left for
Arabic and Hebrew), and money, numbers and dates formatted by CLDR (Babel) for it.

A locale falls back along its chain: ``pt-BR`` → ``pt`` → English, the source every catalogue
translates, so a text is never missing. An operator may override texts or add a language with
catalogues of their own (``operator.translations_dir``: ``<ll_CC>.po`` files), which come first."""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time, get_datetime_format
from babel.numbers import format_currency, format_decimal, format_percent

from services.page.catalogs import (
    DOMAIN,
    LOCALES_DIR,
    SOURCE_LOCALE,
    babel_name,
    compile_catalog,
    read_catalog,
    tag,
)
from services.page.messages import SOURCE
from shared.money import to_major

# A parameter named ``<name>_minor`` is an amount in the order's currency; it fills ``{<name>}``.
MONEY_SUFFIX = "_minor"


def _language(locale: str) -> str:
    return locale.split("-")[0].lower()


def negotiate_locale(requested: str, offered: Iterable[str]) -> str | None:
    """The offered locale closest to ``requested``: the same (``pt-BR``), else its language (``pt``),
    else another region of that language (``pt`` asked, ``pt-BR`` offered); None if none is."""
    requested = requested.replace("_", "-").strip()
    offered = list(offered)
    by_lower = {locale.lower(): locale for locale in offered}
    if not requested:
        return None
    if requested.lower() in by_lower:
        return by_lower[requested.lower()]
    language = _language(requested)
    if language in by_lower:
        return by_lower[language]
    return next((locale for locale in offered if _language(locale) == language), None)


def choose_locale(requested: str, offered: list[str], default: str) -> str:
    """``en-GB`` → ``en`` if only ``en`` is offered; anything unknown → the operator's default."""
    return negotiate_locale(requested, offered) or default


def choose_first_locale(candidates: Iterable[str | None], offered: list[str], default: str) -> str:
    """The first candidate (in order of preference) that matches an offered locale; else the default."""
    for candidate in candidates:
        if candidate:
            chosen = negotiate_locale(candidate, offered)
            if chosen is not None:
                return chosen
    return default


def accept_language(header: str | None) -> list[str]:
    """The languages of an ``Accept-Language`` header, most wanted first (``q=0`` dropped)."""
    weighted = []
    for position, part in enumerate((header or "").split(",")[:20]):
        language, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if language and language != "*" and quality > 0 and len(language) <= 35:
            weighted.append((-quality, position, language))
    return [language for _, _, language in sorted(weighted)]


def fallback_chain(locale: str) -> list[str]:
    """``pt-BR`` → [``pt-BR``, ``pt``]; English is the source, behind every chain."""
    chain = [locale]
    if "-" in locale:
        chain.append(_language(locale))
    return chain


def _overrides(translations_dir: str | None, locale: str) -> gettext.GNUTranslations | None:
    if translations_dir is None:
        return None
    path = Path(translations_dir) / f"{babel_name(locale)}.po"
    if not path.is_file():
        return None
    return gettext.GNUTranslations(io.BytesIO(compile_catalog(read_catalog(path))))


def _shipped(locale: str) -> gettext.GNUTranslations | None:
    path = LOCALES_DIR / babel_name(locale) / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not path.is_file():
        return None
    with path.open("rb") as file:
        return gettext.GNUTranslations(file)


@lru_cache(maxsize=256)
def translations(locale: str, translations_dir: str | None = None) -> gettext.NullTranslations:
    """The catalogues for ``locale``, first to last: the operator's, then the shipped one, for the
    locale and then its language; English behind them all (what ``pgettext`` returns untranslated)."""
    chain: gettext.NullTranslations = gettext.NullTranslations()
    found = [
        catalogue
        for name in fallback_chain(locale)
        for catalogue in (_overrides(translations_dir, name), _shipped(name))
        if catalogue is not None
    ]
    for catalogue in reversed(found):
        catalogue.add_fallback(chain)
        chain = catalogue
    return chain


def uncompiled_locales(offered: Iterable[str], translations_dir: str | None = None) -> list[str]:
    """The offered locales that would speak English for want of a compiled catalogue (``make
    catalogs``): neither shipped compiled nor the operator's own."""
    return [
        locale
        for locale in offered
        if _language(locale) != SOURCE_LOCALE
        and not any(
            _shipped(name) is not None or _overrides(translations_dir, name) is not None
            for name in fallback_chain(locale)
        )
    ]


def override_problems(translations_dir: str | None) -> list[str]:
    """What is wrong in the operator's own catalogues (a text may be missing, never wrong)."""
    from services.page.catalogs import catalog_problems

    if translations_dir is None:
        return []
    return [
        problem
        for path in sorted(Path(translations_dir).glob("*.po"))
        for problem in catalog_problems(read_catalog(path), tag(path.stem), complete=False)
        if not problem.endswith(": empty")  # an empty text falls back to the shipped one
    ]


def available_locales(translations_dir: str | None = None) -> list[str]:
    """The locales the page can speak: English, every shipped catalogue, the operator's own."""
    from services.page.catalogs import shipped_locales

    own = [tag(path.stem) for path in Path(translations_dir).glob("*.po")] if translations_dir else []
    return sorted({*shipped_locales(), *own})


class Translator:
    """The page's texts and formats in one locale."""

    def __init__(self, locale: str, translations_dir: str | None = None) -> None:
        self.locale = locale
        self._translations = translations(locale, translations_dir)
        try:
            self._babel = Locale.parse(babel_name(locale))
        except (UnknownLocaleError, ValueError):
            self._babel = Locale.parse("en")

    def __call__(self, key: str, **values: str) -> str:
        text: str = self._translations.pgettext(key, SOURCE[key])
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):
            # A translation with other placeholders (CI refuses them in the shipped catalogues): English.
            return SOURCE[key].format(**values)

    def has(self, key: str) -> bool:
        return key in SOURCE

    @property
    def direction(self) -> str:
        """``rtl`` or ``ltr``: the ``dir`` of the page."""
        return "rtl" if self._babel.text_direction == "rtl" else "ltr"

    @property
    def language_name(self) -> str:
        """This locale's name in itself (``Deutsch``, ``العربية``), for the language switch."""
        return language_name(self.locale)

    def method(self, method: str, processor_name: str | None = None) -> str:
        """A payment method's name: translated where the catalogue has it (generic names), else as the
        processor names it (brands: "iDEAL"), else as configured."""
        key = f"method_{method}"
        if key in SOURCE:
            return self(key)
        return processor_name or method

    def error(self, code: str, params: Mapping[str, object], currency: str) -> str:
        """A coded error in this language: ``error_<code>``, else the text keyed ``code``; parameters
        named ``<x>_minor`` are amounts, shown as money in ``{x}``."""
        key = f"error_{code}" if f"error_{code}" in SOURCE else code if code in SOURCE else "error"
        values: dict[str, str] = {}
        for name, value in params.items():
            if name.endswith(MONEY_SUFFIX) and isinstance(value, int) and not isinstance(value, bool):
                values[name.removesuffix(MONEY_SUFFIX)] = self.money(value, currency)
            else:
                values[name] = str(value)
        try:
            return self(key, **values)
        except (KeyError, IndexError):  # a code whose parameters did not come: its generic text
            return self("error")

    def percent(self, rate_bp: int) -> str:
        formatted: str = format_percent(Decimal(rate_bp) / 10_000, "#,##0.##%", locale=self._babel)
        return formatted

    def money(self, amount_minor: int, currency: str) -> str:
        formatted: str = format_currency(to_major(amount_minor, currency), currency, locale=self._babel)
        return formatted

    def amount(self, amount_minor: int, currency: str) -> str:
        """An amount as a number in this locale, without the currency (what a driver types: ``12,50``)."""
        formatted: str = format_decimal(to_major(amount_minor, currency), locale=self._babel)
        return formatted

    def datetime(self, moment: datetime, timezone: str = "UTC", *, detailed: bool = False) -> str:
        """``moment`` in ``timezone`` (IANA) for this locale: its date and minute (a list of top-ups),
        or ``detailed``, with seconds and the offset from UTC (a receipt)."""
        zone = ZoneInfo(timezone)
        if detailed:
            long: str = format_datetime(moment, format="long", tzinfo=zone, locale=self._babel)
            return long
        # As Babel joins a date and a time, with the date's "medium" and the time's "short" form.
        pattern = str(get_datetime_format("medium", locale=self._babel))
        date = format_date(moment.astimezone(zone), format="medium", locale=self._babel)
        time = format_time(moment, format="short", tzinfo=zone, locale=self._babel)
        return pattern.replace("'", "").replace("{1}", date).replace("{0}", time)


@lru_cache(maxsize=128)
def language_name(locale: str) -> str:
    try:
        name = Locale.parse(babel_name(locale)).get_display_name(Locale.parse(babel_name(locale)))
    except (UnknownLocaleError, ValueError):
        return locale
    return str(name[:1].upper() + name[1:]) if name else locale
