"""Behaviour of services/page/launch.py and services/page/domain.py that `make mutation` found no
unit test pinning: the clock-skew tolerance against the real clock, type checks inside a sealed
switch token, the idempotency fingerprint's exact bytes (stored, so it must not change across a
deploy), and the messages drivers are shown."""

from __future__ import annotations

import hashlib
import time
from typing import Any, cast

import jwt
import pytest

from services.page.domain import parse_major_amount, request_fingerprint
from services.page.launch import (
    CLOCK_SKEW_S,
    InvalidLaunch,
    LaunchClaims,
    Session,
    decode_session,
    decode_switch_token,
    encode_session,
    encode_switch_token,
    new_session,
    verify_launch_token,
)
from shared.pricing import InvalidTopup

SECRET = "launch-secret-0123456789abcdefghijklmnop"
PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"


def token(**claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "user-42", "locale": "en", "iat": now, "exp": now + 600, "jti": "j1"}
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def verify(value: str, now_s: int | None = None) -> LaunchClaims:
    now = int(time.time()) if now_s is None else now_s
    return verify_launch_token(SECRET, value, now, max_age_s=900, user_id_pattern=PATTERN)


# --- launch tokens against the real clock ---------------------------------------------------------


@pytest.mark.parametrize("skew", [1, 30, CLOCK_SKEW_S])
def test_a_token_issued_slightly_in_the_future_by_the_real_clock_is_accepted(skew: int) -> None:
    # The app's clock may run ahead of ours: the tolerance is ours, not PyJWT's (which has none).
    now = int(time.time())
    claims = verify(token(iat=now + skew, exp=now + skew + 300), now)
    assert claims.user_id == "user-42"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": 1}, "the launch link has expired"),
        ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 3700}, "the launch link has expired"),
        ({"exp": float(int(time.time()) + 600)}, "the launch link is not valid"),
        ({"sub": "bad user id"}, "the launch link is not valid"),
        ({"locale": 5}, "the launch link is not valid"),
        ({"jti": ""}, "the launch link is not valid"),
    ],
)
def test_a_refused_launch_says_why_in_words_fit_for_a_driver(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidLaunch) as info:
        verify(token(**claims))
    assert str(info.value) == message


@pytest.mark.parametrize("jti", ["j", "j" * 128])
def test_a_jti_of_one_to_128_characters_is_accepted(jti: str) -> None:
    assert verify(token(jti=jti)).jti == jti


def test_a_jti_of_129_characters_is_refused() -> None:
    with pytest.raises(InvalidLaunch):
        verify(token(jti="j" * 129))


@pytest.mark.parametrize("value", ["not.a.jwt", token() + "x", "\u00e9" + token()])
def test_a_forged_or_garbled_launch_is_not_valid(value: str) -> None:
    with pytest.raises(InvalidLaunch) as info:
        verify(value)
    assert str(info.value) == "the launch link is not valid"


# --- sessions and switch tokens ---------------------------------------------------------------------


def test_session_messages() -> None:
    now = int(time.time())
    session = new_session("user-42", "en", now)
    cookie = encode_session(SECRET, session)
    assert decode_session(SECRET, cookie, now, 3600) == session
    for cookie_value, message in [
        (None, "no session: open the top-up from the app"),
        ("", "no session: open the top-up from the app"),
        (cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), "the session is not valid: open the top-up from the app"),
    ]:
        with pytest.raises(InvalidLaunch) as info:
            decode_session(SECRET, cookie_value, now, 3600)
        assert str(info.value) == message
    with pytest.raises(InvalidLaunch) as info:
        decode_session(SECRET, cookie, now + 3600, 3600)
    assert str(info.value) == "the session has expired: open the top-up from the app"


def test_csrf_tokens_are_long_and_unguessable() -> None:
    tokens = {new_session("user-42", "en", 0).csrf_token for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) >= 32 for t in tokens)


@pytest.fixture
def session() -> Session:
    return new_session("user-42", "en", int(time.time()))


def switch_claims(user_id: object = "user-7") -> LaunchClaims:
    return LaunchClaims(cast(str, user_id), "bg", "jti-7", int(time.time()) + 600)


def test_a_switch_token_round_trips(session: Session) -> None:
    now = int(time.time())
    switch = encode_switch_token(SECRET, session, switch_claims(), "bg", now)
    assert decode_switch_token(SECRET, switch, session, now) == ("user-7", "bg")


@pytest.mark.parametrize(("user_id", "locale"), [(42, "bg"), ("user-7", 7), (None, None), (["user-7"], "bg")])
def test_a_switch_token_with_a_user_or_locale_that_is_not_a_string_is_refused(
    session: Session, user_id: object, locale: object
) -> None:
    # Even sealed with our own key: whatever is not a string never becomes a session.
    now = int(time.time())
    switch = encode_switch_token(SECRET, session, switch_claims(user_id), cast(str, locale), now)
    with pytest.raises(InvalidLaunch) as info:
        decode_switch_token(SECRET, switch, session, now)
    assert str(info.value) == "the switch request is not valid: open the top-up from the app"


def test_switch_messages(session: Session) -> None:
    now = int(time.time())
    switch = encode_switch_token(SECRET, session, switch_claims(), "bg", now)
    other_session = new_session("user-42", "en", now)
    for value, sess, at, message in [
        (switch + "0", session, now, "the switch request is not valid: open the top-up from the app"),
        (switch, other_session, now, "the switch request is not valid: open the top-up from the app"),
        (switch, session, now + 3600, "the switch request has expired: open the top-up from the app"),
    ]:
        with pytest.raises(InvalidLaunch) as info:
            decode_switch_token(SECRET, value, sess, at)
        assert str(info.value) == message


# --- orders -------------------------------------------------------------------------------------------


def test_the_request_fingerprint_is_the_sha256_of_compact_sorted_json() -> None:
    # Fingerprints are stored with orders: a deploy that changed their bytes would turn every retry
    # of an earlier request into "same key, other body" (422).
    body = {"method": "card", "amount_minor": 1500, "package_id": None}
    compact = b'{"amount_minor":1500,"method":"card","package_id":null}'
    assert request_fingerprint(body) == hashlib.sha256(compact).hexdigest()


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("twelve", "the amount is not a number"),
        ("NaN", "the amount is not a number"),
        ("1e999999999", "the amount is not a number"),
        ("12.345", "the amount has too many decimals"),
        ("0.001", "the amount has too many decimals"),
    ],
)
def test_an_unreadable_amount_names_the_field_and_says_why(text: str, detail: str) -> None:
    with pytest.raises(InvalidTopup) as info:
        parse_major_amount(text, "EUR")
    assert (info.value.field, info.value.detail, str(info.value)) == ("amount_minor", detail, detail)
