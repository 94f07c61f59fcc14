"""Launch tokens (the JWT the charging app puts in the page URL) and the session cookie that
replaces them. Pure functions of their inputs and the clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
SESSION_COOKIE = "evtopup_session"


class InvalidLaunch(Exception):
    """A launch token or session that must not be trusted; the message is safe to show."""


@dataclass(frozen=True)
class Session:
    user_id: str
    locale: str
    csrf_token: str
    expires_at: int


def issue_launch_token(secret: str, user_id: str, locale: str, now_s: int, ttl_s: int) -> str:
    return jwt.encode(
        {"sub": user_id, "locale": locale, "iat": now_s, "exp": now_s + ttl_s}, secret, algorithm=ALGORITHM
    )


def verify_launch_token(secret: str, token: str, now_s: int, max_age_s: int) -> tuple[str, str]:
    """The (user id, locale) of a valid token; :class:`InvalidLaunch` otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "iat"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise InvalidLaunch("the launch link is not valid") from None
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise InvalidLaunch("the launch link is not valid")
    if exp <= now_s:
        raise InvalidLaunch("the launch link has expired")
    # A token may not outlive the configured maximum, whatever its own exp says.
    if exp - iat > max_age_s or iat > now_s + 60 or now_s - iat > max_age_s:
        raise InvalidLaunch("the launch link has expired")
    user_id, locale = claims.get("sub"), claims.get("locale", "")
    if not isinstance(user_id, str) or not user_id or len(user_id) > 64 or not isinstance(locale, str):
        raise InvalidLaunch("the launch link is not valid")
    return user_id, locale


def _session_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"evtopup-session-v1", hashlib.sha256).digest()


def encode_session(secret: str, user_id: str, locale: str, now_s: int, max_age_s: int) -> str:
    payload = json.dumps(
        {"u": user_id, "l": locale, "c": secrets.token_urlsafe(24), "e": now_s + max_age_s},
        separators=(",", ":"),
    ).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    mac = hmac.new(_session_key(secret), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def decode_session(secret: str, cookie: str | None, now_s: int) -> Session:
    if not cookie:
        raise InvalidLaunch("no session: open the top-up from the app")
    body, _, mac = cookie.rpartition(".")
    expected = hmac.new(_session_key(secret), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), mac.encode(errors="surrogateescape")):
        raise InvalidLaunch("the session is not valid: open the top-up from the app")
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        session = Session(str(data["u"]), str(data["l"]), str(data["c"]), int(data["e"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidLaunch("the session is not valid: open the top-up from the app") from None
    if session.expires_at <= now_s:
        raise InvalidLaunch("the session has expired: open the top-up from the app")
    return session
