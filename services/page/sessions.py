"""Who is asking: a launch JWT as a bearer token, or the session cookie (plus its CSRF token for
anything that changes state)."""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from services.page.launch import SESSION_COOKIE, InvalidLaunch, Session, decode_session, verify_launch_token
from shared.http import Problem
from shared.runtime import SETTINGS_KEY

CSRF_HEADER = "X-CSRF-Token"


def session_from_cookie(request: web.Request) -> Session:
    """The cookie's session; :class:`InvalidLaunch` if there is none or it is not valid."""
    settings = request.app[SETTINGS_KEY]
    return decode_session(
        settings.launch.secret.get_secret_value(), request.cookies.get(SESSION_COOKIE), int(time.time())
    )


def api_user(request: web.Request, *, csrf_token: str | None = None) -> str:
    """The user id behind an API request, or a 401 problem. With a cookie, state-changing requests
    must also carry the session's CSRF token (header, or ``csrf_token`` for a form)."""
    settings = request.app[SETTINGS_KEY]
    authorization = request.headers.get("Authorization", "")
    try:
        if authorization.startswith("Bearer "):
            user_id, _locale = verify_launch_token(
                settings.launch.secret.get_secret_value(),
                authorization.removeprefix("Bearer ").strip(),
                int(time.time()),
                settings.launch.token_max_age_s,
            )
            return user_id
        session = session_from_cookie(request)
    except InvalidLaunch as exc:
        raise Problem(401, "Unauthorized", str(exc)) from None
    if request.method not in ("GET", "HEAD"):
        given = csrf_token if csrf_token is not None else request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
            raise Problem(403, "Forbidden", "missing or wrong CSRF token")
    return session.user_id
