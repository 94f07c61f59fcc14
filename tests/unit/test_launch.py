"""services/page/launch.py: launch tokens (JWT, HS256) and the session cookie that replaces them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest

from services.page.launch import (
    SWITCH_TOKEN_TTL_S,
    InvalidLaunch,
    LaunchClaims,
    Session,
    decode_session,
    decode_switch_token,
    encode_session,
    encode_switch_token,
    issue_launch_token,
    new_session,
    open_launch_claims,
    verify_launch_token,
)

SECRET = "launch-secret-0123456789abcdefghijklmnop"
OTHER_SECRET = "another-secret-0123456789abcdefghijklmn"
NOW = 1_700_000_000
MAX_AGE = 900
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
SESSION_MAX_AGE = 3600


def craft(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def raw_token(header: dict[str, Any], claims: dict[str, Any], secret: str | None = SECRET) -> str:
    """A token built by hand, so claims PyJWT would refuse to encode can still be tested."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return f"{signing_input}."
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "user-42", "locale": "bg", "iat": NOW, "exp": NOW + 600, "jti": "jti-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def verify(
    token: str, now_s: int = NOW, secret: str = SECRET, max_age_s: int = MAX_AGE, **rules: Any
) -> tuple[str, str]:
    verified = verify_launch_token(secret, token, now_s, max_age_s=max_age_s, user_id_pattern=USER_ID_PATTERN, **rules)
    return verified.user_id, verified.locale


def invalid(token: str, now_s: int = NOW, secret: str = SECRET, max_age_s: int = MAX_AGE, **rules: Any) -> str:
    with pytest.raises(InvalidLaunch) as info:
        verify(token, now_s, secret, max_age_s, **rules)
    return str(info.value)


# --- launch tokens ------------------------------------------------------------------------------


def test_round_trip() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    assert verify(token, NOW) == ("user-42", "bg")
    assert verify(token, NOW + 599) == ("user-42", "bg")


def test_issued_token_is_hs256_with_the_expected_claims() -> None:
    token = issue_launch_token(SECRET, "user-42", "en", NOW, 900)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert decoded.pop("jti")
    assert decoded == {"sub": "user-42", "locale": "en", "iat": NOW, "exp": NOW + 900}


def test_each_issued_token_has_its_own_jti() -> None:
    first, second = (
        verify_launch_token(
            SECRET, issue_launch_token(SECRET, "u1", "en", NOW, 60), NOW, max_age_s=60, user_id_pattern=USER_ID_PATTERN
        )
        for _ in range(2)
    )
    assert first.jti != second.jti


def test_issued_token_carries_audience_and_issuer_when_given() -> None:
    token = issue_launch_token(SECRET, "user-42", "en", NOW, 60, audience="evtopup-page", issuer="cpo-app")
    assert verify(token, audience="evtopup-page", issuer="cpo-app") == ("user-42", "en")


def test_verified_claims() -> None:
    token = craft(claims(jti="abc"))
    assert verify_launch_token(SECRET, token, NOW, max_age_s=MAX_AGE, user_id_pattern=USER_ID_PATTERN) == (
        LaunchClaims(user_id="user-42", locale="bg", jti="abc", expires_at=NOW + 600)
    )


def test_handcrafted_token_is_accepted() -> None:
    # Control for the raw_token helper used below.
    assert verify(raw_token({"alg": "HS256", "typ": "JWT"}, claims()), NOW) == (
        "user-42",
        "bg",
    )


def test_missing_locale_is_an_empty_locale() -> None:
    assert verify(craft(claims(locale=...)), NOW) == ("user-42", "")


@pytest.mark.parametrize("now_s", [NOW + 600, NOW + 601, NOW + 10_000])
def test_expired_token(now_s: int) -> None:
    assert "expired" in invalid(issue_launch_token(SECRET, "user-42", "bg", NOW, 600), now_s=now_s)


def test_token_lifetime_longer_than_max_age() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, MAX_AGE + 1)
    assert "expired" in invalid(token)


def test_token_lifetime_equal_to_max_age_is_accepted() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, MAX_AGE)
    assert verify(token, NOW) == ("user-42", "bg")


def test_max_age_is_the_callers() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    invalid(token, max_age_s=300)


def test_old_token_with_a_far_exp_is_refused() -> None:
    # iat long ago, exp far in the future but lifetime lies: exp - iat > max age.
    assert "expired" in invalid(craft(claims(iat=NOW - 10_000, exp=NOW + 100)))


@pytest.mark.parametrize("skew", [61, 120, 800])
def test_iat_too_far_in_the_future(skew: int) -> None:
    assert "expired" in invalid(craft(claims(iat=NOW + skew, exp=NOW + skew + 60)))


@pytest.mark.parametrize("skew", [0, 30, 60])
def test_small_clock_skew_is_tolerated(skew: int) -> None:
    token = craft(claims(iat=NOW + skew, exp=NOW + skew + 60))
    assert verify(token, NOW) == ("user-42", "bg")


def test_wrong_secret() -> None:
    token = issue_launch_token(OTHER_SECRET, "user-42", "bg", NOW, 600)
    assert "not valid" in invalid(token)


def test_alg_none_is_refused() -> None:
    token = raw_token({"alg": "none", "typ": "JWT"}, claims(), secret=None)
    assert "not valid" in invalid(token)


def test_alg_none_via_pyjwt_is_refused() -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert "not valid" in invalid(token)


def test_other_hmac_algorithm_is_refused() -> None:
    long_secret = SECRET * 2
    assert "not valid" in invalid(craft(claims(), secret=long_secret, algorithm="HS512"), secret=long_secret)


def test_tampered_payload_is_refused() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    header, _, signature = token.split(".")
    forged_payload = b64(json.dumps(claims(sub="admin")).encode())
    assert "not valid" in invalid(f"{header}.{forged_payload}.{signature}")


def test_tampered_signature_is_refused() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    invalid(flipped)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "....."])
def test_garbage_token(token: str) -> None:
    assert "not valid" in invalid(token)


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "jti"])
def test_missing_required_claim(missing: str) -> None:
    invalid(craft(claims(**{missing: ...})))


@pytest.mark.parametrize(
    "sub",
    [
        123,
        None,
        ["user-42"],
        {"id": "user-42"},
        "",
        "x" * 65,
        "user-42\n",
        "-user",
        "us er",
        "user/42",
        "usér",
        "a\x00",
    ],
)
def test_bad_sub(sub: Any) -> None:
    token = raw_token({"alg": "HS256", "typ": "JWT"}, claims(sub=sub))
    assert "not valid" in invalid(token)


def test_sub_must_match_the_configured_pattern() -> None:
    token = craft(claims(sub="12345"))
    assert verify_launch_token(SECRET, token, NOW, max_age_s=MAX_AGE, user_id_pattern=r"[0-9]+").user_id == "12345"
    with pytest.raises(InvalidLaunch):
        verify_launch_token(SECRET, craft(claims(sub="user-42")), NOW, max_age_s=MAX_AGE, user_id_pattern=r"[0-9]+")


@pytest.mark.parametrize("jti", ["", "j" * 129, 7, ["jti"]])
def test_bad_jti(jti: Any) -> None:
    assert "not valid" in invalid(raw_token({"alg": "HS256", "typ": "JWT"}, claims(jti=jti)))


def test_jti_of_128_characters_is_accepted() -> None:
    assert verify(craft(claims(jti="j" * 128))) == ("user-42", "bg")


@pytest.mark.parametrize("token", ["é" + "a" * 40, "eyJ\udcff.a.b"])
def test_non_ascii_token(token: str) -> None:
    assert "not valid" in invalid(token)


# --- audience and issuer: checked only when configured ---------------------------------------------


def test_audience_and_issuer_are_ignored_when_not_configured() -> None:
    assert verify(craft(claims(aud="anything", iss="anyone"))) == ("user-42", "bg")


@pytest.mark.parametrize("aud", ["evtopup-page", ["other", "evtopup-page"]])
def test_configured_audience_accepted(aud: Any) -> None:
    assert verify(craft(claims(aud=aud)), audience="evtopup-page") == ("user-42", "bg")


@pytest.mark.parametrize("aud", [..., "other", ["other"], ""])
def test_configured_audience_required(aud: Any) -> None:
    assert "not valid" in invalid(craft(claims(aud=aud)), audience="evtopup-page")


def test_configured_issuer_accepted() -> None:
    assert verify(craft(claims(iss="cpo-app")), issuer="cpo-app") == ("user-42", "bg")


@pytest.mark.parametrize("iss", [..., "someone-else", ""])
def test_configured_issuer_required(iss: Any) -> None:
    assert "not valid" in invalid(craft(claims(iss=iss)), issuer="cpo-app")


def test_sub_of_64_characters_is_accepted() -> None:
    assert verify(craft(claims(sub="u" * 64)), NOW)[0] == "u" * 64


@pytest.mark.parametrize("locale", [1, ["en"], None])
def test_non_string_locale(locale: Any) -> None:
    invalid(raw_token({"alg": "HS256", "typ": "JWT"}, claims(locale=locale)))


@pytest.mark.parametrize(
    ("iat", "exp"),
    [(float(NOW), NOW + 600), (NOW, float(NOW + 600)), ("1700000000", NOW + 600), (True, NOW + 600), (NOW, True)],
)
def test_non_integer_times(iat: Any, exp: Any) -> None:
    invalid(raw_token({"alg": "HS256", "typ": "JWT"}, claims(iat=iat, exp=exp)))


# --- session cookies ----------------------------------------------------------------------------


def cookie_for(user_id: str = "user-42", locale: str = "bg", started_at: int = NOW, secret: str = SECRET) -> str:
    return encode_session(secret, Session(user_id, locale, "csrf-token", started_at))


def test_session_round_trip() -> None:
    session = new_session("user-42", "bg", NOW)
    decoded = decode_session(SECRET, encode_session(SECRET, session), NOW + 3599, SESSION_MAX_AGE)
    assert decoded == session
    assert decoded.expires_at(SESSION_MAX_AGE) == NOW + 3600
    assert len(session.csrf_token) >= 32


def test_each_session_has_its_own_csrf_token() -> None:
    assert new_session("u", "en", NOW).csrf_token != new_session("u", "en", NOW).csrf_token


@pytest.mark.parametrize("now_s", [NOW + 3600, NOW + 3601, NOW + 10**6])
def test_session_expires_max_age_after_it_started(now_s: int) -> None:
    with pytest.raises(InvalidLaunch, match="expired"):
        decode_session(SECRET, cookie_for(), now_s, SESSION_MAX_AGE)


def test_a_shorter_configured_max_age_ends_older_sessions_at_once() -> None:
    cookie = cookie_for()
    assert decode_session(SECRET, cookie, NOW + 1000, SESSION_MAX_AGE).user_id == "user-42"
    with pytest.raises(InvalidLaunch, match="expired"):
        decode_session(SECRET, cookie, NOW + 1000, 600)


def test_session_with_the_wrong_secret() -> None:
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, cookie_for(secret=OTHER_SECRET), NOW, SESSION_MAX_AGE)


def test_session_with_a_tampered_body() -> None:
    body, _, mac = cookie_for().rpartition(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["u"] = "someone-else"
    data["s"] = NOW + 10**9
    forged = b64(json.dumps(data, separators=(",", ":")).encode())
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, f"{forged}.{mac}", NOW, SESSION_MAX_AGE)


def test_session_with_a_tampered_mac() -> None:
    cookie = cookie_for()
    flipped = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, flipped, NOW, SESSION_MAX_AGE)


def test_session_key_is_not_the_raw_secret() -> None:
    # A cookie MACed with the launch secret itself (not the derived key) is refused.
    body = b64(json.dumps({"u": "user-42", "l": "en", "c": "x", "s": NOW}).encode())
    mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, f"{body}.{mac}", NOW, SESSION_MAX_AGE)


def test_a_launch_token_is_not_a_session() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, token, NOW, SESSION_MAX_AGE)


@pytest.mark.parametrize("cookie", ["garbage", ".", "a.b", "..", "%%%.zzz"])
def test_garbage_session(cookie: str) -> None:
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, cookie, NOW, SESSION_MAX_AGE)


@pytest.mark.parametrize("cookie", ["abc.\u00e9\u00e9", "\u00e9", "caf\u00e9.0123456789abcdef", "abc.\udcff\udcfe"])
def test_non_ascii_session_cookie(cookie: str) -> None:
    # aiohttp hands such cookie values through (undecodable bytes as surrogates); they must be
    # InvalidLaunch (401), not a TypeError or UnicodeEncodeError (500).
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, cookie, NOW, SESSION_MAX_AGE)


@pytest.mark.parametrize("cookie", [None, ""])
def test_no_session(cookie: str | None) -> None:
    with pytest.raises(InvalidLaunch, match="no session"):
        decode_session(SECRET, cookie, NOW, SESSION_MAX_AGE)


def _signed_cookie(payload: bytes) -> str:
    body = b64(payload)
    key = hmac.new(SECRET.encode(), b"evtopup-session-v2", hashlib.sha256).digest()
    return f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'"string"',
        b"null",
        b'{"u": "user-42", "l": "en", "c": "x"}',
        b'{"u": "user-42", "l": "en", "c": "x", "s": "soon"}',
        b'{"u": "user-42", "l": "en", "c": "x", "s": 1.5}',
        b'{"u": "user-42", "l": "en", "c": "x", "e": 1700000060}',
        b"\xff\xfe",
    ],
)
def test_correctly_signed_but_malformed_session(payload: bytes) -> None:
    # Even with a valid MAC (a secret leak, a future or past format), a malformed body is InvalidLaunch, not a crash.
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, _signed_cookie(payload), NOW, SESSION_MAX_AGE)


def test_correctly_signed_session_control() -> None:
    payload = json.dumps({"u": "user-42", "l": "en", "c": "csrf", "s": NOW}).encode()
    assert decode_session(SECRET, _signed_cookie(payload), NOW, SESSION_MAX_AGE) == Session(
        "user-42", "en", "csrf", NOW
    )


# --- how a session was launched (launch.mode) --------------------------------------------------------


def test_an_open_session_round_trips_as_open() -> None:
    session = new_session("1042", "bg", NOW, "open")
    decoded = decode_session(SECRET, encode_session(SECRET, session), NOW, SESSION_MAX_AGE)
    assert decoded == session and decoded.launched == "open"


def test_a_session_is_signed_unless_it_says_otherwise() -> None:
    assert new_session("user-42", "en", NOW).launched == "signed"
    # A cookie from before open launches existed carries no mode: it was a signed launch.
    payload = json.dumps({"u": "user-42", "l": "en", "c": "csrf", "s": NOW}).encode()
    assert decode_session(SECRET, _signed_cookie(payload), NOW, SESSION_MAX_AGE).launched == "signed"


@pytest.mark.parametrize("mode", ['"bare"', '""', "null", "1", '["open"]', '"OPEN"'])
def test_a_session_of_an_unknown_launch_mode_is_not_valid(mode: str) -> None:
    payload = f'{{"u": "user-42", "l": "en", "c": "x", "s": {NOW}, "m": {mode}}}'.encode()
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, _signed_cookie(payload), NOW, SESSION_MAX_AGE)


def test_the_launch_mode_cannot_be_changed_without_the_key() -> None:
    body, _, mac = encode_session(SECRET, new_session("1042", "en", NOW, "open")).rpartition(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["m"] = "signed"
    forged = b64(json.dumps(data, separators=(",", ":")).encode())
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, f"{forged}.{mac}", NOW, SESSION_MAX_AGE)


def test_a_switch_token_works_only_in_the_launch_mode_it_was_made_in() -> None:
    current = new_session("1042", "en", NOW, "open")
    claims = open_launch_claims("2077", "bg", NOW)
    assert claims.expires_at == NOW + SWITCH_TOKEN_TTL_S
    opened = encode_switch_token(SECRET, current, claims, "bg", NOW, mode="open")
    assert decode_switch_token(SECRET, opened, current, NOW, mode="open") == ("2077", "bg")
    # An open launch never becomes a signed session, even if the page changed modes meanwhile,
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_switch_token(SECRET, opened, current, NOW)
    # and the other way round.
    signed = encode_switch_token(SECRET, current, claims, "bg", NOW)
    assert decode_switch_token(SECRET, signed, current, NOW) == ("2077", "bg")
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_switch_token(SECRET, signed, current, NOW, mode="open")
    with pytest.raises(InvalidLaunch, match="expired"):
        decode_switch_token(SECRET, opened, current, NOW + SWITCH_TOKEN_TTL_S, mode="open")
