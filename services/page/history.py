"""The driver's history and receipts: ``GET /topup/history`` (their top-ups, newest first, a page at a
time), ``GET /topup/{id}/receipt`` (one receipt, printable) and ``GET /topup/{id}/receipt.pdf`` (the
same as a PDF, in the driver's language). The driver's own only: another driver's top-up is not
found, as is one that never reached the processor.

Signed launches only: with ``launch.mode = "open"`` anyone can type a user id, so these pages say
that the history is in the app (404) and show nothing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from aiohttp import web

from services.page import receipts, store
from services.page.i18n import Translator
from services.page.launch import InvalidLaunch, Session
from services.page.pages import TEMPLATES, message_page, page_headers, pays_test_money, render_page, url_locale
from services.page.pdf import PdfBusy, PdfRenderer, PdfUnavailable
from services.page.sessions import session_from_cookie
from shared.logging import get_logger
from shared.runtime import POOL_KEY, SETTINGS_KEY, Runtime
from shared.settings import Settings

log = get_logger(__name__)

PDF_KEY = web.AppKey("receipt_pdf", PdfRenderer)
STATIC = Path(__file__).parent / "static"
RECEIPT_CSS = (STATIC / "receipt.css").read_bytes()
RECEIPT_JS = (STATIC / "receipt.js").read_bytes()


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _session(request: web.Request) -> Session:
    settings = request.app[SETTINGS_KEY]
    try:
        return session_from_cookie(request)
    except InvalidLaunch:
        raise _Refused(message_page(settings, 401, "unauthorized", url_locale(settings, request))) from None


async def _own_order(request: web.Request, session: Session) -> store.Order:
    """The session's driver's top-up named in the path, if it reached the processor; else 404."""
    settings = request.app[SETTINGS_KEY]
    try:
        order_id = uuid.UUID(request.match_info["order_id"])
    except ValueError:
        order_id = None
    order = await store.get_order(request.app[POOL_KEY], order_id, session.user_id) if order_id else None
    if order is None or order.payment_id is None:
        raise _Refused(message_page(settings, 404, "receipt_not_found", session.locale))
    return order


async def history_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = _session(request)
        before = request.query.get("before")
        try:
            cursor = receipts.decode_cursor(before) if before is not None else None
        except receipts.BadCursor:
            return message_page(settings, 400, "error", session.locale)
        rows = await store.list_orders(request.app[POOL_KEY], session.user_id, receipts.PAGE_SIZE + 1, cursor)
    except _Refused as refused:
        return refused.response
    shown, next_cursor = receipts.page_of(rows)
    t = Translator(session.locale, settings.operator.translations_dir)
    return render_page(
        settings,
        "history.html",
        session.locale,
        account=session.user_id,
        session=session,
        here="/topup/history",
        entries=[receipts.history_entry(order, t, settings.operator.timezone) for order in shown],
        more_url=f"/topup/history?before={next_cursor}" if next_cursor else None,
        first_page=cursor is None,
    )


async def receipt_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = _session(request)
        order = await _own_order(request, session)
    except _Refused as refused:
        return refused.response
    t = Translator(session.locale, settings.operator.translations_dir)
    return render_page(
        settings,
        "receipt.html",
        session.locale,
        account=session.user_id,
        session=session,
        here=f"/topup/{order.id}/receipt",
        receipt=receipts.receipt(order, settings, t),
        pdf_available=request.app[PDF_KEY].available,
    )


def receipt_document(settings: Settings, order: store.Order, locale: str) -> str:
    """The receipt of ``order`` as a whole HTML document in ``locale``, for the PDF."""
    t = Translator(locale, settings.operator.translations_dir)
    return TEMPLATES.get_template("receipt_pdf.html").render(
        t=t,
        operator=settings.operator.name,
        demo=settings.deployment == "demo",
        test_money=pays_test_money(settings, order.user_id),
        receipt=receipts.receipt(order, settings, t),
    )


async def receipt_pdf(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = _session(request)
        order = await _own_order(request, session)
    except _Refused as refused:
        return refused.response
    renderer = request.app[PDF_KEY]
    if not renderer.available:
        return message_page(settings, 404, "receipt_pdf_unavailable", session.locale)
    started = time.monotonic()
    try:
        pdf = await renderer.render(receipt_document(settings, order, session.locale))
    except PdfUnavailable:
        return message_page(settings, 503, "receipt_pdf_unavailable", session.locale)
    except PdfBusy:
        response = message_page(settings, 503, "try_again_later", session.locale)
        response.headers["Retry-After"] = "5"
        return response
    log.info(
        "receipt_pdf_made",
        order_id=str(order.id),
        locale=session.locale,
        bytes=len(pdf),
        ms=round((time.monotonic() - started) * 1000),
    )
    response = web.Response(body=pdf, content_type="application/pdf")
    page_headers(response, settings)
    response.headers["Content-Disposition"] = f'attachment; filename="{receipts.pdf_filename(order)}"'
    return response


async def signed_launches_only(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        locale = session_from_cookie(request).locale
    except InvalidLaunch:
        locale = url_locale(settings, request)
    return message_page(settings, 404, "history_unavailable", locale)


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(
        body=RECEIPT_CSS, content_type="text/css", charset="utf-8", headers={"Cache-Control": "max-age=3600"}
    )


async def script(_request: web.Request) -> web.Response:
    return web.Response(
        body=RECEIPT_JS,
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": "max-age=3600"},
    )


def attach(runtime: Runtime) -> None:
    """The history's routes; in signed mode, with the PDF maker (whether it can work is logged now)."""
    app = runtime.app
    app.router.add_get("/static/receipt.css", stylesheet)
    app.router.add_get("/static/receipt.js", script)
    if runtime.settings.launch.mode != "signed":
        for path in ("/topup/history", "/topup/{order_id}/receipt", "/topup/{order_id}/receipt.pdf"):
            app.router.add_get(path, signed_launches_only)
        return
    app[PDF_KEY] = PdfRenderer(runtime.settings.operator.locales)
    app.router.add_get("/topup/history", history_page)
    app.router.add_get("/topup/{order_id}/receipt", receipt_page)
    app.router.add_get("/topup/{order_id}/receipt.pdf", receipt_pdf)
