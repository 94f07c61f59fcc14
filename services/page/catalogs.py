"""The page's message catalogues, managed with Babel: ``python -m services.page.catalogs COMMAND``.

- ``extract``: the template ``locales/page.pot`` from the English source (``messages.SOURCE``).
- ``update``: every language's ``locales/<ll_CC>/LC_MESSAGES/page.po`` brought up to the template: new
  texts added untranslated, changed ones marked fuzzy (with the old translation as a hint), removed
  ones dropped.
- ``compile``: each ``page.po`` to the ``page.mo`` the page reads (the build does it: ``make catalogs``).
- ``check``: every problem of every catalogue (CI fails on any): a text missing or left empty, a
  fuzzy one, placeholders other than the source's, a catalogue for no locale Babel knows.
- ``init LOCALE``: a new language's catalogue, every text untranslated.

Each entry's context (``msgctxt``) is the text's key, its ``msgid`` the English source, so a
translator sees the English and a changed English text asks for a new translation."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from services.page.messages import SOURCE

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "page"
SOURCE_LOCALE = "en"
TEMPLATE = LOCALES_DIR / f"{DOMAIN}.pot"
PLACEHOLDER = re.compile(r"\{(\w*)\}")


def babel_name(locale: str) -> str:
    """``pt-BR`` → ``pt_BR``: how catalogues' folders (and Babel) name a locale."""
    return locale.replace("-", "_")


def tag(babel_locale: str) -> str:
    """``pt_BR`` → ``pt-BR``: how the page, its settings and browsers name a locale."""
    return babel_locale.replace("_", "-")


def po_path(locale: str, root: Path = LOCALES_DIR) -> Path:
    return root / babel_name(locale) / "LC_MESSAGES" / f"{DOMAIN}.po"


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def template_catalog() -> Catalog:
    catalog = Catalog(project="evtopup", domain=DOMAIN, fuzzy=False)
    for key, text in SOURCE.items():
        catalog.add(text, context=key, auto_comments=[f"key: {key}"])
    return catalog


def translated_locales(root: Path = LOCALES_DIR) -> list[str]:
    """The locales with a catalogue under ``root`` (``pt-BR`` style), sorted."""
    return sorted(tag(path.parent.parent.name) for path in root.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def shipped_locales() -> list[str]:
    """Every language the page speaks: English (the source) and each catalogue shipped with it."""
    return sorted({SOURCE_LOCALE, *translated_locales()})


def read_catalog(path: Path) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, domain=DOMAIN)


def write_catalog(catalog: Catalog, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=0, omit_header=False, sort_output=False)
    path.write_bytes(buffer.getvalue())


def extract() -> None:
    write_catalog(template_catalog(), TEMPLATE)


def update() -> None:
    template = template_catalog()
    for locale in translated_locales():
        path = po_path(locale)
        catalog = read_catalog(path)
        catalog.update(template, no_fuzzy_matching=False, update_header_comment=False)
        catalog.obsolete.clear()
        write_catalog(catalog, path)


def init(locale: str) -> Path:
    Locale.parse(babel_name(locale))  # UnknownLocaleError for a locale CLDR does not know
    path = po_path(locale)
    if path.exists():
        raise SystemExit(f"{path} exists already")
    catalog = template_catalog()
    catalog.locale = Locale.parse(babel_name(locale))
    write_catalog(catalog, path)
    return path


def compile_catalog(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


def compile_all(root: Path = LOCALES_DIR) -> list[Path]:
    written = []
    for locale in translated_locales(root):
        path = po_path(locale, root)
        mo = path.with_suffix(".mo")
        mo.write_bytes(compile_catalog(read_catalog(path)))
        written.append(mo)
    return written


def catalog_problems(catalog: Catalog, locale: str, *, complete: bool = True) -> list[str]:
    """What is wrong with one language's catalogue against the English source. ``complete=False``
    (an operator's overrides) allows texts to be missing, never to be wrong."""
    problems = []
    try:
        Locale.parse(babel_name(locale))
    except (UnknownLocaleError, ValueError):
        problems.append(f"{locale}: not a locale CLDR knows")
    translated: dict[str, Message] = {}
    for entry in catalog:
        if entry.id and isinstance(entry.context, str):
            translated[entry.context] = entry
    for key, text in SOURCE.items():
        if key not in translated:
            if complete:
                problems.append(f"{locale}: {key}: missing")
            continue
        message = translated[key]
        if message.id != text:
            problems.append(f"{locale}: {key}: translates an older English text (run `make catalogs-update`)")
        if message.fuzzy:
            problems.append(f"{locale}: {key}: fuzzy (the English changed: check the translation)")
        if not isinstance(message.string, str) or not message.string.strip():
            problems.append(f"{locale}: {key}: empty")
        elif placeholders(message.string) != placeholders(text):
            problems.append(
                f"{locale}: {key}: placeholders {sorted(placeholders(message.string))}"
                f" instead of {sorted(placeholders(text))}"
            )
    for key in sorted(set(translated) - set(SOURCE)):
        problems.append(f"{locale}: {key}: no such text (run `make catalogs-update`)")
    return problems


def check(root: Path = LOCALES_DIR, locales: Iterable[str] | None = None) -> list[str]:
    problems = []
    for locale in locales if locales is not None else translated_locales(root):
        problems += catalog_problems(read_catalog(po_path(locale, root)), locale)
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "extract":
        extract()
    elif command == "update":
        extract()
        update()
    elif command == "compile":
        print(f"compiled {len(compile_all())} catalogues")
    elif command == "check":
        problems = check()
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    elif command == "init" and len(argv) == 2:
        print(f"created {init(argv[1])}")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
