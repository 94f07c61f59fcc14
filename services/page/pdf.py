"""Receipts as PDF, made on the server by WeasyPrint from the same receipt the page shows (HTML and a
print stylesheet). WeasyPrint lays text out with Pango and HarfBuzz, so every script the page speaks
is shaped as a browser would: Arabic joined and, like Hebrew, right to left; Devanagari's conjuncts
and vowel signs; Thai's marks. The glyphs come from the system's fonts (fontconfig): Debian's
``fonts-noto-core`` covers every script the page speaks, DejaVu only some.

WeasyPrint is an optional extra (``pip install 'evtopup[pdf]'``) and needs Pango (Debian:
``libpango-1.0-0``, ``libpangoft2-1.0-0``). Without them the receipt page offers no PDF and the PDF
URL says it is not available; the page says why in its log once. The document loads nothing: no
URL in it is fetched (its stylesheet is read from the package), whatever a receipt contains.

Making a PDF is CPU work of tens of milliseconds: one at a time per process, in a thread, so the
event loop keeps serving; past ``MAX_WAITING`` waiting, a request is told to try again."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.logging import get_logger

log = get_logger(__name__)

STYLESHEET = Path(__file__).parent / "static" / "receipt-pdf.css"
MAX_WAITING = 8


class PdfUnavailable(Exception):
    """No PDF can be made here (WeasyPrint or Pango missing); the message says what to install."""


class PdfBusy(Exception):
    """Too many PDFs are waiting to be made: try again in a moment."""


def missing_library() -> str | None:
    """Why WeasyPrint cannot be used here, as far as can be told without importing it; None if it is
    installed (whether Pango loads is known at the first PDF)."""
    if importlib.util.find_spec("weasyprint") is None:
        return "WeasyPrint is not installed: pip install 'evtopup[pdf]'"
    return None


def languages_without_fonts(locales: Iterable[str]) -> list[str]:
    """The languages among ``locales`` no installed font covers (fontconfig's ``fc-list :lang=``);
    their receipts would show empty boxes. Empty when fontconfig's tools are not there to ask."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return []
    missing = []
    for language in sorted({locale.split("-")[0].lower() for locale in locales}):
        if not language.isalpha():
            continue
        found = subprocess.run(
            [fc_list, f":lang={language}", "family"], capture_output=True, text=True, timeout=10, check=False
        )
        if not found.stdout.strip():
            missing.append(language)
    return missing


def _weasyprint() -> Any:
    try:
        import weasyprint  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise PdfUnavailable(f"WeasyPrint is not installed: pip install 'evtopup[pdf]' ({exc})") from None
    except OSError as exc:  # its libraries (Pango) are missing
        raise PdfUnavailable(f"WeasyPrint cannot load Pango: install libpango-1.0-0 ({exc})") from None
    return weasyprint


def render_pdf(html: str) -> bytes:
    """``html`` (a whole document) as a tagged PDF, fetching nothing."""
    weasyprint = _weasyprint()

    class NoFetching(weasyprint.URLFetcher):  # type: ignore[misc,name-defined,unused-ignore]
        def fetch(self, url: str, headers: Any = None) -> Any:
            raise ValueError(f"a receipt loads nothing ({url[:40]})")

    document = weasyprint.HTML(string=html, url_fetcher=NoFetching(fail_on_errors=True))
    try:
        pdf: bytes = document.write_pdf(stylesheets=[weasyprint.CSS(filename=str(STYLESHEET))], pdf_tags=True)
    except weasyprint.urls.FatalURLFetchingError as exc:  # a BaseException: made an ordinary one here
        raise ValueError(f"the receipt asked to load something: {exc}") from exc.__cause__
    return pdf


class PdfRenderer:
    """The page's PDF maker: one PDF at a time, in a thread; tells once what is missing."""

    def __init__(self, locales: Iterable[str]) -> None:
        self.locales = list(locales)
        self.unavailable: str | None = missing_library()
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._fonts_checked = threading.Event()
        if self.unavailable is not None:
            log.warning("receipt_pdf_unavailable", reason=self.unavailable)

    @property
    def available(self) -> bool:
        return self.unavailable is None

    def _check_fonts(self) -> None:
        if self._fonts_checked.is_set():
            return
        self._fonts_checked.set()
        missing = languages_without_fonts(self.locales)
        if missing:
            log.warning(
                "receipt_pdf_fonts_missing",
                languages=missing,
                fix="install fonts covering them (Debian: fonts-noto-core)",
            )

    def _render(self, html: str) -> bytes:
        self._check_fonts()
        return render_pdf(html)

    async def render(self, html: str) -> bytes:
        if self.unavailable is not None:
            raise PdfUnavailable(self.unavailable)
        if self._waiting >= MAX_WAITING:
            raise PdfBusy("too many receipts being made")
        self._waiting += 1
        try:
            async with self._lock:
                return await asyncio.to_thread(self._render, html)
        except PdfUnavailable as exc:
            self.unavailable = str(exc)
            log.error("receipt_pdf_unavailable", reason=self.unavailable)
            raise
        finally:
            self._waiting -= 1
