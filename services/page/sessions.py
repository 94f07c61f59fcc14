"""Who is asking: a launch JWT as a bearer token, or the session cookie (plus its CSRF token for
anything that changes state); and the record of launch tokens already exchanged for a session.

A launch token is single use in the browser: ``GET /topup?token=`` spends its ``jti``, and the same
link again is refused. As an API bearer token (``Authorization: Bearer``) it may be sent any number of
times within its life (at most ``launch.token_max_age_s``): the charging app calls the API with it
several times, and the short life bounds what a leaked token is good for.

With ``launch.mode = "open"`` there are no launch tokens: a session starts from a user id the CSMS
confirmed (``pages.py``), and is marked as such. A page running signed launches refuses such a
session (after the operator switches modes), and every session's user id must be one the CSMS
could have (``Settings.user_id_pattern``)."""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from services.page.i18n import choose_locale
from services.page.launch import (
    SESSION_COOKIE,
    InvalidLaunch,
    LaunchClaims,
    Session,
    decode_session,
    encode_session,
    verify_launch_token,
)
from shared.http import Problem
from shared.runtime import SETTINGS_KEY
from shared.settings import Settings

CSRF_HEADER = "X-CSRF-Token"
# Rows of spent tokens are kept this long after the token expired: longer than any clock skew
# between the page and the database, so a pruned token is one the page refuses as expired anyway.
PRUNE_GRACE_S = 300


def verify_launch(settings: Settings, token: str) -> LaunchClaims:
    launch = settings.launch
    return verify_launch_token(
        launch.secret.get_secret_value(),
        token,
        int(time.time()),
        max_age_s=launch.token_max_age_s,
        user_id_pattern=settings.user_id_pattern,
        audience=launch.audience,
        issuer=launch.issuer,
    )


async def spend_launch_token(pool: asyncpg.Pool, claims: LaunchClaims) -> None:
    """Record the token as used; :class:`InvalidLaunch` if it already was. Prunes expired records."""
    spent = await pool.fetchval(
        "WITH pruned AS (DELETE FROM used_launch_tokens WHERE expires_at < now() - make_interval(secs => $3))"
        " INSERT INTO used_launch_tokens (jti, user_id, expires_at) VALUES ($1, $2, to_timestamp($4))"
        " ON CONFLICT (jti) DO NOTHING RETURNING true",
        claims.jti,
        claims.user_id,
        PRUNE_GRACE_S,
        claims.expires_at,
    )
    if not spent:
        raise InvalidLaunch("this launch link was already used: open the top-up from the app again")


def session_from_cookie(request: web.Request) -> Session:
    """The cookie's session; :class:`InvalidLaunch` if there is none or it is not valid."""
    settings = request.app[SETTINGS_KEY]
    session = decode_session(
        settings.launch.secret.get_secret_value(),
        request.cookies.get(SESSION_COOKIE),
        int(time.time()),
        settings.launch.session_max_age_s,
    )
    if settings.launch.mode == "signed" and session.launched != "signed":
        raise InvalidLaunch("the session is not valid: open the top-up from the app")
    if re.fullmatch(settings.user_id_pattern, session.user_id) is None:
        raise InvalidLaunch("the session is not valid: open the top-up from the app")
    return session


def set_session_cookie(response: web.StreamResponse, settings: Settings, session: Session) -> None:
    # The cookie goes when the session ends: the absolute expiry, not max_age from now.
    remaining_s = max(0, session.expires_at(settings.launch.session_max_age_s) - int(time.time()))
    response.set_cookie(
        SESSION_COOKIE,
        encode_session(settings.launch.secret.get_secret_value(), session),
        max_age=remaining_s,
        httponly=True,
        samesite="Lax",
        secure=settings.services.page_public_url.startswith("https://"),
        path="/",
    )


@dataclass(frozen=True)
class Caller:
    """Who sent an API request, and the page's locale for them (one the operator offers)."""

    user_id: str
    locale: str


def api_caller(request: web.Request, *, csrf_token: str | None = None) -> Caller:
    """The user behind an API request, or a 401 problem. With a cookie, state-changing requests
    must also carry the session's CSRF token (header, or ``csrf_token`` for a form)."""
    settings = request.app[SETTINGS_KEY]
    authorization = request.headers.get("Authorization", "")
    try:
        if authorization.startswith("Bearer "):
            if settings.launch.mode != "signed":
                raise InvalidLaunch('bearer launch tokens are accepted only with launch.mode = "signed"')
            claims = verify_launch(settings, authorization.removeprefix("Bearer ").strip())
            locale = choose_locale(claims.locale, settings.operator.locales, settings.operator.default_locale)
            return Caller(claims.user_id, locale)
        session = session_from_cookie(request)
    except InvalidLaunch as exc:
        raise Problem(401, "Unauthorized", str(exc)) from None
    if request.method not in ("GET", "HEAD"):
        given = csrf_token if csrf_token is not None else request.headers.get(CSRF_HEADER, "")
        # The CSRF token is ASCII; anything else (undecodable header bytes included) is simply wrong.
        if not given.isascii() or not hmac.compare_digest(given, session.csrf_token):
            raise Problem(403, "Forbidden", "missing or wrong CSRF token")
    return Caller(session.user_id, session.locale)


def api_user(request: web.Request, *, csrf_token: str | None = None) -> str:
    """The user id behind an API request (:func:`api_caller`)."""
    return api_caller(request, csrf_token=csrf_token).user_id
