"""The driver-facing HTML: launch, the top-up form, and the live return page. Works without
JavaScript (a plain form; the return page refreshes itself until the order is final)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jinja2
from aiohttp import web

from services.page import domain, service, store
from services.page.api import RPC_KEY, parse_order_id
from services.page.i18n import Translator, choose_locale
from services.page.launch import SESSION_COOKIE, InvalidLaunch, Session, encode_session, verify_launch_token
from services.page.sessions import api_user, session_from_cookie
from shared.http import Problem
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("services.page", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
FINAL_STATUSES = frozenset({domain.OrderStatus.CREDITED, domain.OrderStatus.FAILED, domain.OrderStatus.EXPIRED})


def _render(settings: Settings, name: str, locale: str, status: int = 200, **context: Any) -> web.Response:
    html = TEMPLATES.get_template(name).render(t=Translator(locale), operator=settings.operator.name, **context)
    response = web.Response(text=html, status=status, content_type="text/html")
    response.headers.update(
        {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
    )
    return response


def _message(settings: Settings, status: int, key: str) -> web.Response:
    locale = settings.operator.default_locale
    return _render(settings, "message.html", locale, status, message=Translator(locale)(key))


def _form_page(settings: Settings, session: Session, status: int = 200, error: str | None = None) -> web.Response:
    integration = settings.integrations[domain.integration_for_user(settings, session.user_id)]
    t = Translator(session.locale)
    methods = []
    for method in integration.methods:
        fee = integration.fees.get(method)
        fee_text = None
        if fee is not None and (fee.fixed_minor or fee.rate_bp):
            parts = [t.money(fee.fixed_minor, settings.operator.currency)] if fee.fixed_minor else []
            parts += [t.percent(fee.rate_bp)] if fee.rate_bp else []
            fee_text = t("fee", fee=" + ".join(parts))
        methods.append({"id": method, "label": t.method(method), "fee": fee_text})
    return _render(
        settings,
        "topup.html",
        session.locale,
        status,
        error=error,
        csrf_token=session.csrf_token,
        # A fresh key per rendering: a double submit of this form makes one order, one payment.
        idempotency_key=str(uuid.uuid4()),
        packages=settings.amounts.packages,
        custom_allowed=settings.amounts.custom_allowed,
        min_minor=settings.amounts.min_minor,
        max_minor=settings.amounts.max_minor,
        currency=settings.operator.currency,
        methods=methods,
    )


async def launch_or_show(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    now_s = int(time.time())
    token = request.query.get("token")
    if token is None:
        try:
            session = session_from_cookie(request)
        except InvalidLaunch:
            return _message(settings, 401, "unauthorized")
        return _form_page(settings, session)
    try:
        user_id, requested_locale = verify_launch_token(
            settings.launch.secret.get_secret_value(), token, now_s, settings.launch.token_max_age_s
        )
    except InvalidLaunch:
        return _message(settings, 401, "unauthorized")
    locale = choose_locale(requested_locale, settings.operator.locales, settings.operator.default_locale)
    cookie = encode_session(
        settings.launch.secret.get_secret_value(), user_id, locale, now_s, settings.launch.session_max_age_s
    )
    # Swap the token for a cookie and drop it from the address bar (and from history and referrers).
    response = web.HTTPSeeOther("/topup")
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=settings.launch.session_max_age_s,
        httponly=True,
        samesite="Lax",
        secure=settings.services.page_public_url.startswith("https://"),
        path="/",
    )
    raise response


async def submit_form(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = session_from_cookie(request)
    except InvalidLaunch:
        return _message(settings, 401, "unauthorized")
    form = await request.post()
    t = Translator(session.locale)
    try:
        user_id = api_user(request, csrf_token=str(form.get("csrf_token", "")))
        idempotency_key = service.check_idempotency_key(str(form.get("idempotency_key", "")))
        body: dict[str, Any] = {"method": str(form.get("method", ""))}
        if form.get("package_id"):
            body["package_id"] = str(form["package_id"])
        else:
            body["amount_minor"] = domain.parse_major_amount(str(form.get("amount", "")), settings.operator.currency)
        order = await service.create_topup(
            settings, request.app[POOL_KEY], request.app[RPC_KEY], user_id, idempotency_key, body
        )
    except domain.InvalidTopup as exc:
        return _form_page(settings, session, 422, error=exc.detail)
    except Problem as problem:
        return _form_page(settings, session, problem.status, error=problem.detail or t("error"))
    assert order.redirect_url is not None
    raise web.HTTPSeeOther(order.redirect_url)


async def return_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = session_from_cookie(request)
    except InvalidLaunch:
        return _message(settings, 401, "unauthorized")
    order = await store.get_order(request.app[POOL_KEY], parse_order_id(request), session.user_id)
    if order is None:
        raise Problem(404, "No such top-up")
    return _render(
        settings,
        "return.html",
        session.locale,
        order=order,
        final=order.status in FINAL_STATUSES,
        deep_link=settings.operator.return_deep_link,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/topup", launch_or_show)
    app.router.add_post("/topup", submit_form)
    app.router.add_get("/topup/{order_id}/return", return_page)
