"""The driver-facing HTML: launch, the top-up form, and the live return page. Works without
JavaScript (a plain form; the return page reloads itself while its status is about to change), better
with it (the return page follows the order live: ``events.py``), and without inline styles or
scripts, so the Content-Security-Policy can forbid them.

Every page names the account being topped up (masked), so a launch link carrying someone else's
token cannot quietly make a driver pay into another account: a launch for another user while a
session is active asks first, and only a POST of the confirmation switches.

One launch mode at a time (``launch.mode``): ``signed`` takes ``?token=`` (a launch JWT) and refuses
a bare user id; ``open`` takes ``?<user_param>=<id>&<locale_param>=<locale>`` (how AMPECO opens an
external page), refuses ``?token=``, has the CSMS confirm the user, limits the rate of launches,
and never shows a balance. Every launch is logged (user id masked) and counted."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from services.page import assets, domain, events, service, store, topup_form
from services.page.api import RPC_KEY, parse_order_id
from services.page.i18n import Translator, accept_language, choose_first_locale, language_name, negotiate_locale
from services.page.launch import (
    InvalidLaunch,
    LaunchClaims,
    LaunchMode,
    Session,
    decode_switch_token,
    encode_switch_token,
    mask_user_id,
    new_session,
    open_launch_claims,
)
from services.page.metrics import PAGE_LAUNCHES
from services.page.open_launch import (
    LaunchLimits,
    LaunchRefused,
    OpenLaunch,
    Refusal,
    client_key,
    open_launch_locale,
    parse_open_launch,
    requested_locale,
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
from shared.logging import get_logger
from shared.money import currency_exponent
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings

log = get_logger(__name__)

LIMITS_KEY = web.AppKey("launch_limits", LaunchLimits)
# Each refused launch is one page: its status and its message.
REFUSALS: dict[Refusal, tuple[int, str]] = {
    "unauthorized": (401, "unauthorized"),
    "wrong_launch": (400, "wrong_launch"),
    "bad_user_id": (400, "bad_user_id"),
    # Only "not found": nothing else about the user (nor whether the id was ever valid) is told.
    "unknown_user": (404, "user_not_found"),
    "csms_unavailable": (503, "try_again_later"),
    "rate_limited": (429, "too_many_launches"),
}

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("services.page", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
STYLESHEET = (Path(__file__).parent / "static" / "page.css").read_bytes()
# Where the language switch may send the driver back to: the page's own pages only.
RETURN_TO = re.compile(
    r"/topup(/history|/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/(return|receipt))?"
)
# The hint under the phone field: the form the number takes (M-Pesa's, Kenya: 254, then 7 or 1).
PHONE_EXAMPLE = "2547XXXXXXXX"


def content_security_policy(payments_public_url: str) -> str:
    """No inline code, no framing, and forms may post only here or to the payments service: the
    form's 303 to the processor's hosted page counts as a form target in some browsers. Scripts
    only from the page itself, which they alone may connect to (the return page's live status)."""
    parts = urlsplit(payments_public_url)
    return (
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; "
        f"form-action 'self' {parts.scheme}://{parts.netloc}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def page_headers(response: web.StreamResponse, settings: Settings) -> None:
    response.headers.update(
        {
            "Content-Security-Policy": content_security_policy(settings.services.payments_public_url),
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            # Launch URLs carry a token: never let one leak in a Referer.
            "Referrer-Policy": "no-referrer",
        }
    )


def render_page(
    settings: Settings,
    name: str,
    locale: str,
    status: int = 200,
    account: str | None = None,
    session: Session | None = None,
    here: str = "/topup",
    **context: Any,
) -> web.Response:
    """A page in ``locale``; with a ``session``, with the language switch (back to ``here``)."""
    html = TEMPLATES.get_template(name).render(
        t=Translator(locale, settings.operator.translations_dir),
        languages=[(code, language_name(code)) for code in settings.operator.locales],
        language_switch={"csrf_token": session.csrf_token, "next": here} if session is not None else None,
        operator=settings.operator.name,
        demo=settings.deployment == "demo",
        # A test integration's driver sees on every page that no real money moves.
        test_money=account is not None and pays_test_money(settings, account),
        account=mask_user_id(account) if account is not None else None,
        # The operator's logo and colours (read when the page started).
        brand=assets.brand(settings.operator),
        # The driver's top-ups and receipts: signed launches only (an open launch's id anyone can type).
        history_link="/topup/history" if session is not None and settings.launch.mode == "signed" else None,
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    page_headers(response, settings)
    return response


def pays_test_money(settings: Settings, user_id: str) -> bool:
    return settings.integrations[pricing.integration_for_user(settings, user_id)].environment == "test"


def message_page(settings: Settings, status: int, key: str, locale: str | None = None) -> web.Response:
    locale = locale or settings.operator.default_locale
    return render_page(
        settings, "message.html", locale, status, message=Translator(locale, settings.operator.translations_dir)(key)
    )


def _refusal_page(settings: Settings, refusal: Refusal, locale: str, retry_after_s: int | None = None) -> web.Response:
    status, key = REFUSALS[refusal]
    response = message_page(settings, status, key, locale)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def url_locale(settings: Settings, request: web.Request) -> str:
    """The locale a launch URL asks for (``launch.locale_param``), as offered; else the browser's
    (``Accept-Language``); else the default."""
    requested = requested_locale(request.query, settings.launch.locale_param)
    return _locale_of(settings, request, requested)


def _locale_of(settings: Settings, request: web.Request, *preferred: str | None) -> str:
    """The first of ``preferred`` that is offered, else the browser's languages, else the default."""
    candidates = [*preferred, *accept_language(request.headers.get("Accept-Language"))]
    return choose_first_locale(candidates, settings.operator.locales, settings.operator.default_locale)


def _log_launch(mode: LaunchMode, outcome: str, user_id: str | None = None, **details: str) -> None:
    """Every launch, whatever became of it: counted, and logged with the user id masked."""
    PAGE_LAUNCHES.labels(mode, outcome).inc()
    log.info("launch", mode=mode, outcome=outcome, user=mask_user_id(user_id) if user_id else None, **details)


def _redirect(settings: Settings, location: str, session: Session | None = None) -> web.HTTPSeeOther:
    response = web.HTTPSeeOther(location)
    page_headers(response, settings)
    if session is not None:
        set_session_cookie(response, settings, session)
    return response


async def _show_form(
    request: web.Request,
    settings: Settings,
    session: Session,
    status: int = 200,
    error: str | None = None,
    submitted: dict[str, str] | None = None,
    error_field: str | None = None,
) -> web.Response:
    """The form, with the driver's balance before paying where it may be shown (signed launches)
    and crediting tells it in time; without it otherwise."""
    balance = None
    if settings.launch.mode == "signed":
        balance = await service.balance_before(request.app[RPC_KEY], session.user_id, settings.operator.currency)
    return _form_page(settings, session, status, error, submitted, error_field, balance_minor=balance)


def _form_page(
    settings: Settings,
    session: Session,
    status: int = 200,
    error: str | None = None,
    submitted: dict[str, str] | None = None,
    error_field: str | None = None,
    *,
    balance_minor: int | None = None,
) -> web.Response:
    """The form; after a failed submit, with the driver's choices and the same idempotency key, so
    pressing Pay again resumes the order that submit made (if it made one) instead of a second.
    Where the processor prompts the driver's phone, the form asks for the number (and gives back
    what was typed after an error: in the page, never in a URL).

    Each package shows its price and bonus, each method its icon and fee, and the summary the
    amount, bonus, fee and total for the choice the page is rendered with (the first package and
    method, or the driver's); the form's script keeps the summary on the driver's choice, from the
    same numbers, given as data attributes."""
    submitted = submitted or {}
    integration = settings.integrations[pricing.integration_for_user(settings, session.user_id)]
    currency = settings.operator.currency
    t = Translator(session.locale, settings.operator.translations_dir)
    methods = []
    for method in integration.methods:
        fee = integration.fees.get(method)
        fee_text = None
        if fee is not None and (fee.fixed_minor or fee.rate_bp):
            parts = [t.money(fee.fixed_minor, currency)] if fee.fixed_minor else []
            parts += [t.percent(fee.rate_bp)] if fee.rate_bp else []
            fee_text = t("fee", fee=" + ".join(parts))
        declared = integration.payment_methods.get(method)
        methods.append(
            {
                "id": method,
                "label": t.method(method, declared.name if declared else None),
                "fee": fee_text,
                "fee_fixed": fee.fixed_minor if fee is not None else 0,
                "fee_rate": fee.rate_bp if fee is not None else 0,
                "icon": assets.method_icon_url(method, declared.kind if declared else None),
            }
        )
    package_ids = [p.id for p in settings.amounts.packages]
    method_ids = list(integration.methods)
    selected_package = submitted.get("package_id", package_ids[0] if package_ids else "")
    selected_package = selected_package if selected_package in [*package_ids, ""] else ""
    selected_method = submitted.get("method", method_ids[0])
    selected_method = selected_method if selected_method in method_ids else method_ids[0]
    amount = submitted.get("amount", "")
    summary = topup_form.summarise(
        settings.amounts,
        integration,
        currency,
        package_id=selected_package,
        amount_text=amount,
        method=selected_method,
        balance_minor=balance_minor,
    )
    terms = None
    if settings.operator.terms_url is not None:
        before, after = topup_form.terms_sentence(t, settings.operator.terms_version)
        terms = {"url": settings.operator.terms_url, "before": before, "after": after}
    return render_page(
        settings,
        "topup.html",
        session.locale,
        status,
        account=session.user_id,
        session=session,
        error=error,
        error_field=error_field,
        error_target=topup_form.error_target(error_field) if error else None,
        csrf_token=session.csrf_token,
        # A new key per fresh form: a double submit of this form makes one order, one payment.
        idempotency_key=submitted.get("idempotency_key") or str(uuid.uuid4()),
        packages=settings.amounts.packages,
        selected_package=selected_package,
        custom_allowed=settings.amounts.custom_allowed,
        amount=amount,
        min_minor=settings.amounts.min_minor,
        max_minor=settings.amounts.max_minor,
        step_minor=settings.amounts.step_minor,
        step_hint=topup_form.step_hint(t, settings.amounts, currency),
        currency=currency,
        exponent=currency_exponent(currency),
        money_samples=topup_form.money_samples(t, currency),
        methods=methods,
        selected_method=selected_method,
        summary=summary,
        summary_method=next((m["label"] for m in methods if summary and m["id"] == summary.method), ""),
        balance_minor=balance_minor,
        terms=terms,
        form_script=assets.FORM_SCRIPT.url,
        asks_phone=integration.asks_driver_phone,
        phone=submitted.get("phone", ""),
        phone_example=PHONE_EXAMPLE,
    )


async def launch_or_show(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        current: Session | None = session_from_cookie(request)
    except InvalidLaunch:
        current = None
    if settings.launch.mode == "open":
        return await _open_launch(request, settings, current)
    return await _signed_launch(request, settings, current)


async def _signed_launch(request: web.Request, settings: Settings, current: Session | None) -> web.Response:
    token = request.query.get("token")
    if token is None:
        if settings.launch.user_param in request.query:
            # An open launch (a bare user id) on a page that takes signed launches only.
            _log_launch("signed", "wrong_launch")
            return _refusal_page(settings, "wrong_launch", url_locale(settings, request))
        if current is None:
            return message_page(settings, 401, "unauthorized", url_locale(settings, request))
        return await _show_form(request, settings, current)
    try:
        claims = verify_launch(settings, token)
        await spend_launch_token(request.app[POOL_KEY], claims)
    except InvalidLaunch as exc:
        _log_launch("signed", "unauthorized", reason=str(exc))
        return message_page(settings, 401, "unauthorized", url_locale(settings, request))
    offered = settings.operator.locales
    user_locale = None
    if negotiate_locale(claims.locale, offered) is None and settings.csms.kind == "ampeco":
        # The token names no language we offer: the driver's language at the CSMS, if it answers.
        try:
            user_locale = (await service.lookup_user(request.app[RPC_KEY], claims.user_id)).locale
        except LaunchRefused:
            user_locale = None
    locale = _locale_of(settings, request, claims.locale, user_locale)
    return _start_session(settings, current, claims, locale, "signed")


async def _open_launch(request: web.Request, settings: Settings, current: Session | None) -> web.Response:
    """``?<user_param>=<id>&<locale_param>=<locale>``: the user id is only a claim until the CSMS
    confirms it, and each try counts against the client's and the process's launch limits."""
    query = request.query
    launch_locale = url_locale(settings, request)
    if "token" in query:
        # A signed launch on a page that takes open launches only: one mode at a time.
        _log_launch("open", "wrong_launch")
        return _refusal_page(settings, "wrong_launch", launch_locale)
    if settings.launch.user_param not in query:
        if current is None:
            return message_page(settings, 401, "unauthorized", launch_locale)
        return await _show_form(request, settings, current)
    limits = request.app[LIMITS_KEY]
    now = time.monotonic()
    client = client_key(request.remote, request.headers.get("X-Forwarded-For"))
    if not limits.per_client.allow(client, now):
        _log_launch("open", "rate_limited", reason="client", client=client)
        return _refusal_page(settings, "rate_limited", launch_locale, limits.per_client.retry_after_s(client, now))
    launch: OpenLaunch | None = None
    try:
        launch = parse_open_launch(
            query, settings.launch.user_param, settings.launch.locale_param, settings.user_id_pattern
        )
        assert launch is not None  # the parameter is there
        if not limits.per_process.allow("", now):
            raise LaunchRefused("rate_limited", "process")
        user = await service.lookup_user(request.app[RPC_KEY], launch.user_id)
        if not user.exists:
            raise LaunchRefused("unknown_user", "the CSMS does not know this user")
    except LaunchRefused as refused:
        # A malformed id is never logged, not even masked: it may be anything a client typed.
        _log_launch("open", refused.refusal, launch.user_id if launch else None, reason=refused.reason)
        retry_after_s = limits.per_process.retry_after_s("", now) if refused.refusal == "rate_limited" else None
        return _refusal_page(settings, refused.refusal, launch_locale, retry_after_s)
    # The URL's language, the driver's at the CSMS, the browser's, the operator's default.
    locale = open_launch_locale(launch, user, settings.operator.locales, _locale_of(settings, request))
    claims = open_launch_claims(launch.user_id, locale, int(time.time()))
    return _start_session(settings, current, claims, locale, "open")


def _start_session(
    settings: Settings, current: Session | None, claims: LaunchClaims, locale: str, mode: LaunchMode
) -> web.Response:
    if current is not None and current.user_id != claims.user_id:
        # Someone else's link must not silently take over this browser: ask, and switch only on a POST.
        _log_launch(mode, "switch_asked", claims.user_id)
        return render_page(
            settings,
            "switch.html",
            locale,
            current_account=mask_user_id(current.user_id),
            new_account=mask_user_id(claims.user_id),
            switch_token=encode_switch_token(
                settings.launch.secret.get_secret_value(), current, claims, locale, int(time.time()), mode=mode
            ),
        )
    # The same driver again refreshes the session (its language may have changed), never its life.
    session = (
        replace(current, locale=locale)
        if current is not None
        else new_session(claims.user_id, locale, int(time.time()), mode)
    )
    _log_launch(mode, "session", claims.user_id)
    # Swap the launch parameters for a cookie and drop them from the address bar (and from history
    # and referrers).
    raise _redirect(settings, "/topup", session)


async def confirm_switch(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    form = await read_form(request)
    try:
        current = session_from_cookie(request)
        user_id, locale = decode_switch_token(
            settings.launch.secret.get_secret_value(),
            str(form.get("switch_token", "")),
            current,
            int(time.time()),
            mode=settings.launch.mode,
        )
    except InvalidLaunch:
        return message_page(settings, 401, "unauthorized", url_locale(settings, request))
    _log_launch(settings.launch.mode, "switched", user_id)
    raise _redirect(settings, "/topup", new_session(user_id, locale, int(time.time()), settings.launch.mode))


async def submit_form(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = session_from_cookie(request)
    except InvalidLaunch:
        return message_page(settings, 401, "unauthorized", url_locale(settings, request))
    form = await read_form(request)
    fields = ("idempotency_key", "package_id", "amount", "method", "phone")
    submitted = {field: str(form.get(field, "")) for field in fields}
    t = Translator(session.locale, settings.operator.translations_dir)
    try:
        user_id = api_user(request, csrf_token=str(form.get("csrf_token", "")))
        idempotency_key = service.check_idempotency_key(submitted["idempotency_key"])
        body: dict[str, Any] = {"method": submitted["method"]}
        if submitted["package_id"]:
            body["package_id"] = submitted["package_id"]
        else:
            body["amount_minor"] = domain.parse_major_amount(submitted["amount"], settings.operator.currency)
        if settings.integrations[pricing.integration_for_user(settings, user_id)].asks_driver_phone:
            body["phone"] = submitted["phone"]
        order = await service.create_topup(
            settings,
            request.app[POOL_KEY],
            request.app[RPC_KEY],
            user_id,
            idempotency_key,
            body,
            locale=session.locale,
        )
    except pricing.InvalidTopup as exc:
        return await _show_form(
            request,
            settings,
            session,
            422,
            error=_error_text(t, settings, exc.code, exc.params),
            submitted=submitted,
            error_field=exc.field,
        )
    except service.DriverProblem as problem:
        if problem.new_key:
            # This order must not be tried again (refused, uncertain, or other choices than it was
            # made for): pressing the button again starts a new top-up.
            submitted["idempotency_key"] = ""
        field = problem.extra.get("field")
        return await _show_form(
            request,
            settings,
            session,
            problem.status,
            error=t(problem.message_key),
            submitted=submitted,
            error_field=field if isinstance(field, str) else None,
        )
    except Problem as problem:
        if problem.status == 400 or (problem.status == 422 and "field" not in problem.extra):
            # A bad key, or one already used for another choice of amount: this form needs a new key.
            submitted["idempotency_key"] = ""
        code, params = problem.extra.get("code"), problem.extra.get("params")
        # A problem with a code is said in the driver's language (an invalid amount, with its limits).
        error = (
            _error_text(t, settings, code, params if isinstance(params, dict) else {})
            if isinstance(code, str)
            else None
        )
        field = problem.extra.get("field")
        return await _show_form(
            request,
            settings,
            session,
            problem.status,
            error=error or t("error"),
            submitted=submitted,
            error_field=field if isinstance(field, str) else None,
        )
    if order.next_step == "phone_prompt":
        # No processor page: the prompt is on the driver's phone, and the status page follows it.
        raise _redirect(settings, f"/topup/{order.id}/return")
    assert order.redirect_url is not None
    raise _redirect(settings, order.redirect_url)


def _error_text(t: Translator, settings: Settings, code: str, params: Mapping[str, object]) -> str:
    """What was wrong with the form, in the driver's language; a badly typed amount with an example
    of how to type one (the smallest amount, as a plain number in the driver's notation)."""
    if code in ("amount_invalid", "amount_too_many_decimals"):
        params = {"example": t.amount(settings.amounts.min_minor, settings.operator.currency)}
    return t.error(code, params, settings.operator.currency)


async def change_language(request: web.Request) -> web.Response:
    """The language switch (a form on every page of a session): the session takes the chosen
    language, one the operator offers, and the driver goes back to the page it was on."""
    settings = request.app[SETTINGS_KEY]
    try:
        session = session_from_cookie(request)
    except InvalidLaunch:
        return message_page(settings, 401, "unauthorized", url_locale(settings, request))
    form = await read_form(request)
    api_user(request, csrf_token=str(form.get("csrf_token", "")))
    locale = negotiate_locale(str(form.get("locale", "")), settings.operator.locales) or session.locale
    back = str(form.get("next", ""))
    raise _redirect(settings, back if RETURN_TO.fullmatch(back) else "/topup", replace(session, locale=locale))


async def return_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        session = session_from_cookie(request)
    except InvalidLaunch:
        return message_page(settings, 401, "unauthorized", url_locale(settings, request))
    order = await store.get_order(request.app[POOL_KEY], parse_order_id(request), session.user_id)
    if order is None:
        raise Problem(404, "No such top-up")
    return render_page(
        settings,
        "return.html",
        session.locale,
        account=session.user_id,
        session=session,
        here=f"/topup/{order.id}/return",
        order=order,
        deep_link=settings.operator.return_deep_link,
        # The status as the live stream tells it (the balance crediting reported, for signed
        # launches only: an open launch's user id is one anyone can type).
        **events.return_page_context(settings, session, order, request.query.get("refreshes")),
    )


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(
        body=STYLESHEET, content_type="text/css", charset="utf-8", headers={"Cache-Control": "max-age=3600"}
    )


async def no_favicon(_request: web.Request) -> web.Response:
    """Browsers ask for one whatever the page says: an empty answer, cached, rather than a 404 each time."""
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/topup", launch_or_show)
    app.router.add_post("/topup", submit_form)
    app.router.add_post("/topup/switch", confirm_switch)
    app.router.add_post("/topup/language", change_language)
    app.router.add_get("/topup/{order_id}/return", return_page)
    events.add_routes(app)
    assets.add_routes(app)
    app.router.add_get("/static/page.css", stylesheet)
    app.router.add_get("/favicon.ico", no_favicon)
