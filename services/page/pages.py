"""The driver-facing HTML: launch, the top-up form, and the live return page. Works without
JavaScript (a plain form; the return page refreshes itself until the order is final), and without
inline styles or scripts, so the Content-Security-Policy can forbid them.

Every page names the account being topped up (masked), so a launch link carrying someone else's
token cannot quietly make a driver pay into another account: a launch for another user while a
session is active asks first, and only a POST of the confirmation switches."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from services.page import domain, service, store
from services.page.api import RPC_KEY, parse_order_id
from services.page.i18n import Translator, choose_locale
from services.page.launch import (
    InvalidLaunch,
    Session,
    decode_switch_token,
    encode_switch_token,
    mask_user_id,
    new_session,
)
from services.page.sessions import (
    api_user,
    session_from_cookie,
    set_session_cookie,
    spend_launch_token,
    verify_launch,
)
from shared import pricing
from shared.http import Problem, read_form
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("services.page", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
FINAL_STATUSES = frozenset(
    {domain.OrderStatus.CREDITED, domain.OrderStatus.FAILED, domain.OrderStatus.EXPIRED, domain.OrderStatus.REFUNDED}
)
STYLESHEET = (Path(__file__).parent / "static" / "page.css").read_bytes()


def content_security_policy(payments_public_url: str) -> str:
    """No inline code, no framing, and forms may post only here or to the payments service: the
    form's 303 to the processor's hosted page counts as a form target in some browsers."""
    parts = urlsplit(payments_public_url)
    return (
        "default-src 'none'; style-src 'self'; "
        f"form-action 'self' {parts.scheme}://{parts.netloc}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _page_headers(response: web.StreamResponse, settings: Settings) -> None:
    response.headers.update(
        {
            "Content-Security-Policy": content_security_policy(settings.services.payments_public_url),
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            # Launch URLs carry a token: never let one leak in a Referer.
            "Referrer-Policy": "no-referrer",
        }
    )


def _render(
    settings: Settings,
    name: str,
    locale: str,
    status: int = 200,
    account: str | None = None,
    **context: Any,
) -> web.Response:
    html = TEMPLATES.get_template(name).render(
        t=Translator(locale),
        operator=settings.operator.name,
        demo=settings.deployment == "demo",
        account=mask_user_id(account) if account is not None else None,
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    _page_headers(response, settings)
    return response


def _message(settings: Settings, status: int, key: str) -> web.Response:
    locale = settings.operator.default_locale
    return _render(settings, "message.html", locale, status, message=Translator(locale)(key))


def _redirect(settings: Settings, location: str, session: Session | None = None) -> web.HTTPSeeOther:
    response = web.HTTPSeeOther(location)
    _page_headers(response, settings)
    if session is not None:
        set_session_cookie(response, settings, session)
    return response


def _form_page(
    settings: Settings,
    session: Session,
    status: int = 200,
    error: str | None = None,
    submitted: dict[str, str] | None = None,
) -> web.Response:
    """The form; after a failed submit, with the driver's choices and the same idempotency key, so
    pressing Pay again resumes the order that submit made (if it made one) instead of a second."""
    submitted = submitted or {}
    integration = settings.integrations[pricing.integration_for_user(settings, session.user_id)]
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
    package_ids = [p.id for p in settings.amounts.packages]
    method_ids = [m["id"] for m in methods]
    selected_package = submitted.get("package_id", package_ids[0] if package_ids else "")
    selected_method = submitted.get("method", method_ids[0])
    return _render(
        settings,
        "topup.html",
        session.locale,
        status,
        account=session.user_id,
        error=error,
        csrf_token=session.csrf_token,
        # A new key per fresh form: a double submit of this form makes one order, one payment.
        idempotency_key=submitted.get("idempotency_key") or str(uuid.uuid4()),
        packages=settings.amounts.packages,
        selected_package=selected_package if selected_package in [*package_ids, ""] else "",
        custom_allowed=settings.amounts.custom_allowed,
        amount=submitted.get("amount", ""),
        min_minor=settings.amounts.min_minor,
        max_minor=settings.amounts.max_minor,
        currency=settings.operator.currency,
        methods=methods,
        selected_method=selected_method if selected_method in method_ids else method_ids[0],
    )


async def launch_or_show(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    token = request.query.get("token")
    try:
        current: Session | None = session_from_cookie(request)
    except InvalidLaunch:
        current = None
    if token is None:
        if current is None:
            return _message(settings, 401, "unauthorized")
        return _form_page(settings, current)
    try:
        claims = verify_launch(settings, token)
        await spend_launch_token(request.app[POOL_KEY], claims)
    except InvalidLaunch:
        return _message(settings, 401, "unauthorized")
    locale = choose_locale(claims.locale, settings.operator.locales, settings.operator.default_locale)
    if current is not None and current.user_id != claims.user_id:
        # Someone else's link must not silently take over this browser: ask, and switch only on a POST.
        return _render(
            settings,
            "switch.html",
            locale,
            current_account=mask_user_id(current.user_id),
            new_account=mask_user_id(claims.user_id),
            switch_token=encode_switch_token(
                settings.launch.secret.get_secret_value(), current, claims, locale, int(time.time())
            ),
        )
    # The same driver again refreshes the session (its language may have changed), never its life.
    session = (
        replace(current, locale=locale)
        if current is not None
        else new_session(claims.user_id, locale, int(time.time()))
    )
    # Swap the token for a cookie and drop it from the address bar (and from history and referrers).
    raise _redirect(settings, "/topup", session)


async def confirm_switch(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    form = await read_form(request)
    try:
        current = session_from_cookie(request)
        user_id, locale = decode_switch_token(
            settings.launch.secret.get_secret_value(), str(form.get("switch_token", "")), current, int(time.time())
        )
    except InvalidLaunch:
        return _message(settings, 401, "unauthorized")
    raise _redirect(settings, "/topup", new_session(user_id, locale, int(time.time())))


async def submit_form(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = session_from_cookie(request)
    except InvalidLaunch:
        return _message(settings, 401, "unauthorized")
    form = await read_form(request)
    submitted = {field: str(form.get(field, "")) for field in ("idempotency_key", "package_id", "amount", "method")}
    t = Translator(session.locale)
    try:
        user_id = api_user(request, csrf_token=str(form.get("csrf_token", "")))
        idempotency_key = service.check_idempotency_key(submitted["idempotency_key"])
        body: dict[str, Any] = {"method": submitted["method"]}
        if submitted["package_id"]:
            body["package_id"] = submitted["package_id"]
        else:
            body["amount_minor"] = domain.parse_major_amount(submitted["amount"], settings.operator.currency)
        order = await service.create_topup(
            settings, request.app[POOL_KEY], request.app[RPC_KEY], user_id, idempotency_key, body
        )
    except pricing.InvalidTopup as exc:
        return _form_page(settings, session, 422, error=exc.detail, submitted=submitted)
    except Problem as problem:
        if problem.status == 400 or (problem.status == 422 and "field" not in problem.extra):
            # A bad key, or one already used for another choice of amount: this form needs a new key.
            submitted["idempotency_key"] = ""
        return _form_page(settings, session, problem.status, error=problem.detail or t("error"), submitted=submitted)
    assert order.redirect_url is not None
    raise _redirect(settings, order.redirect_url)


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
        account=session.user_id,
        order=order,
        final=order.status in FINAL_STATUSES,
        deep_link=settings.operator.return_deep_link,
    )


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(
        body=STYLESHEET, content_type="text/css", charset="utf-8", headers={"Cache-Control": "max-age=3600"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/topup", launch_or_show)
    app.router.add_post("/topup", submit_form)
    app.router.add_post("/topup/switch", confirm_switch)
    app.router.add_get("/topup/{order_id}/return", return_page)
    app.router.add_get("/static/page.css", stylesheet)
