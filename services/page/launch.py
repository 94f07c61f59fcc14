"""Launch tokens (the JWT the charging app puts in the page URL), the session cookie that replaces
them, and the switch token that asks before one driver's session is replaced by another's. Pure
functions of their inputs and the clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

import jwt

ALGORITHM = "HS256"
SESSION_COOKIE = "evtopup_session"
# A launch token may claim to be issued this far in the future (clock skew between app and page).
CLOCK_SKEW_S = 60
MAX_JTI_LENGTH = 128
# The confirmation page's Switch button works this long.
SWITCH_TOKEN_TTL_S = 300
MASK = "••••"
# How the session's user was launched: with a signed token, or with a bare user id (``launch.mode =
# "open"``) that anyone can type. A session is only as trusted as its launch.
LaunchMode = Literal["signed", "open"]
LAUNCH_MODES: tuple[LaunchMode, ...] = ("signed", "open")


class InvalidLaunch(Exception):
    """A launch token, session or switch token that must not be trusted; the message is safe to show."""


@dataclass(frozen=True)
class LaunchClaims:
    user_id: str
    locale: str
    # The token's id: a launch link is exchanged for a session once.
    jti: str
    expires_at: int


@dataclass(frozen=True)
class Session:
    user_id: str
    locale: str
    csrf_token: str
    # The first launch: a session ends max_age_s after it, however often it is refreshed.
    started_at: int
    launched: LaunchMode = "signed"

    def expires_at(self, max_age_s: int) -> int:
        return self.started_at + max_age_s


def issue_launch_token(
    secret: str,
    user_id: str,
    locale: str,
    now_s: int,
    ttl_s: int,
    *,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    claims: dict[str, object] = {
        "sub": user_id,
        "locale": locale,
        "iat": now_s,
        "exp": now_s + ttl_s,
        "jti": secrets.token_urlsafe(16),
    }
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_launch_token(
    secret: str,
    token: str,
    now_s: int,
    *,
    max_age_s: int,
    user_id_pattern: str,
    audience: str | None = None,
    issuer: str | None = None,
) -> LaunchClaims:
    """The claims of a valid token; :class:`InvalidLaunch` otherwise. ``aud`` and ``iss`` are checked
    only when configured. Whether the ``jti`` was already used is the caller's question."""
    # A JWT is ASCII; undecodable bytes from a header arrive as surrogates PyJWT cannot even encode.
    if not token.isascii():
        raise InvalidLaunch("the launch link is not valid")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={
                "require": ["sub", "exp", "iat", "jti"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_aud": audience is not None,
                "verify_iss": issuer is not None,
            },
        )
    except (jwt.PyJWTError, RecursionError):  # RecursionError: a deeply nested JSON header or payload
        raise InvalidLaunch("the launch link is not valid") from None
    exp, iat = claims["exp"], claims["iat"]
    if type(exp) is not int or type(iat) is not int:
        raise InvalidLaunch("the launch link is not valid")
    if exp <= now_s:
        raise InvalidLaunch("the launch link has expired")
    # The app may not mint long-lived links: neither a long lifetime nor one that starts in the future
    # (which would let a link stay valid until long after now).
    if exp - iat > max_age_s or iat > now_s + CLOCK_SKEW_S:
        raise InvalidLaunch("the launch link has expired")
    user_id, locale, jti = claims["sub"], claims.get("locale", ""), claims["jti"]
    if not isinstance(user_id, str) or re.fullmatch(user_id_pattern, user_id) is None:
        raise InvalidLaunch("the launch link is not valid")
    if not isinstance(locale, str):
        raise InvalidLaunch("the launch link is not valid")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidLaunch("the launch link is not valid")
    return LaunchClaims(user_id, locale, jti, exp)


def mask_user_id(user_id: str) -> str:
    """Enough of a user id for its owner to recognise it, not enough to learn it: ``us••••0042``.
    A long id shows its last four characters, so that sequential ids (``user-10042``,
    ``user-77342``) do not share a mask; never more than six characters, and never over half of an
    id of ten or more. The mask's length is fixed, so it does not tell the id's length either."""
    if len(user_id) <= 4:
        return user_id[:1] + MASK
    if len(user_id) <= 6:
        return user_id[:1] + MASK + user_id[-1:]
    if len(user_id) < 12:
        return user_id[:2] + MASK + user_id[-2:]
    return user_id[:2] + MASK + user_id[-4:]


def _derived_key(secret: str, purpose: bytes) -> bytes:
    # Sessions and switch tokens are MACed with keys of their own, never with the launch secret.
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


def _seal(key: bytes, payload: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"


def _unseal(key: bytes, sealed: str) -> dict[str, object]:
    """The payload of a value :func:`_seal` made with ``key``; ``ValueError`` for anything else."""
    # MACs and base64 are ASCII: anything else (e.g. undecodable bytes from a header) is forged.
    if not sealed.isascii():
        raise ValueError("not ASCII")
    body, _, mac = sealed.rpartition(".")
    expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise ValueError("bad MAC")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


def encode_session(secret: str, session: Session) -> str:
    return _seal(
        _derived_key(secret, b"evtopup-session-v2"),
        {
            "u": session.user_id,
            "l": session.locale,
            "c": session.csrf_token,
            "s": session.started_at,
            "m": session.launched,
        },
    )


def new_session(user_id: str, locale: str, now_s: int, launched: LaunchMode = "signed") -> Session:
    return Session(user_id, locale, secrets.token_urlsafe(24), now_s, launched)


def _launch_mode(value: object) -> LaunchMode:
    # Cookies and switch tokens made before open launches existed carry no mode: they were signed.
    for mode in LAUNCH_MODES:
        if value == mode:
            return mode
    raise ValueError("unknown launch mode")


def decode_session(secret: str, cookie: str | None, now_s: int, max_age_s: int) -> Session:
    """The cookie's session if it is ours and younger than ``max_age_s``; :class:`InvalidLaunch` otherwise."""
    if not cookie:
        raise InvalidLaunch("no session: open the top-up from the app")
    try:
        data = _unseal(_derived_key(secret, b"evtopup-session-v2"), cookie)
        started_at = data["s"]
        if type(started_at) is not int:
            raise TypeError("started_at")
        launched = _launch_mode(data.get("m", "signed"))
        session = Session(str(data["u"]), str(data["l"]), str(data["c"]), started_at, launched)
    except (ValueError, KeyError, TypeError):
        raise InvalidLaunch("the session is not valid: open the top-up from the app") from None
    if session.expires_at(max_age_s) <= now_s:
        raise InvalidLaunch("the session has expired: open the top-up from the app")
    return session


def _session_binding(session: Session) -> str:
    return hashlib.sha256(session.csrf_token.encode()).hexdigest()


def encode_switch_token(
    secret: str, session: Session, claims: LaunchClaims, locale: str, now_s: int, *, mode: LaunchMode = "signed"
) -> str:
    """What the confirmation page's Switch button posts: the verified launch, bound to the session
    it would replace (so it is useless in any other browser), short-lived, and marked with how the
    launch was made (an open launch never becomes a signed session)."""
    return _seal(
        _derived_key(secret, b"evtopup-switch-v1"),
        {
            "u": claims.user_id,
            "l": locale,
            "b": _session_binding(session),
            "x": min(now_s + SWITCH_TOKEN_TTL_S, claims.expires_at),
            "m": mode,
        },
    )


def open_launch_claims(user_id: str, locale: str, now_s: int) -> LaunchClaims:
    """An open launch (a user id the CSMS confirmed) as claims a switch token can carry: no token id,
    and good for the switch token's own life."""
    return LaunchClaims(user_id, locale, jti="", expires_at=now_s + SWITCH_TOKEN_TTL_S)


def decode_switch_token(
    secret: str, token: str, session: Session, now_s: int, *, mode: LaunchMode = "signed"
) -> tuple[str, str]:
    """The (user id, locale) to switch ``session`` to; :class:`InvalidLaunch` if the token is not ours,
    not for this session, expired, or made by a launch of another ``mode`` than the page runs now."""
    try:
        data = _unseal(_derived_key(secret, b"evtopup-switch-v1"), token)
        user_id, locale, binding, expires_at = data["u"], data["l"], data["b"], data["x"]
        made_by = _launch_mode(data.get("m", "signed"))
    except (ValueError, KeyError):
        raise InvalidLaunch("the switch request is not valid: open the top-up from the app") from None
    if made_by != mode:
        raise InvalidLaunch("the switch request is not valid: open the top-up from the app")
    if not isinstance(binding, str) or not hmac.compare_digest(binding, _session_binding(session)):
        raise InvalidLaunch("the switch request is not valid: open the top-up from the app")
    if type(expires_at) is not int or expires_at <= now_s:
        raise InvalidLaunch("the switch request has expired: open the top-up from the app")
    if not isinstance(user_id, str) or not isinstance(locale, str):
        raise InvalidLaunch("the switch request is not valid: open the top-up from the app")
    return user_id, locale
