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
    InvalidLaunch,
    Session,
    decode_session,
    encode_session,
    issue_launch_token,
    verify_launch_token,
)

SECRET = "launch-secret-0123456789abcdefghijklmnop"
OTHER_SECRET = "another-secret-0123456789abcdefghijklmn"
NOW = 1_700_000_000
MAX_AGE = 900


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
    base: dict[str, Any] = {"sub": "user-42", "locale": "bg", "iat": NOW, "exp": NOW + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def invalid(token: str, now_s: int = NOW, secret: str = SECRET, max_age_s: int = MAX_AGE) -> str:
    with pytest.raises(InvalidLaunch) as info:
        verify_launch_token(secret, token, now_s, max_age_s)
    return str(info.value)


# --- launch tokens ------------------------------------------------------------------------------


def test_round_trip() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    assert verify_launch_token(SECRET, token, NOW, MAX_AGE) == ("user-42", "bg")
    assert verify_launch_token(SECRET, token, NOW + 599, MAX_AGE) == ("user-42", "bg")


def test_issued_token_is_hs256_with_the_expected_claims() -> None:
    token = issue_launch_token(SECRET, "user-42", "en", NOW, 900)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False}) == {
        "sub": "user-42",
        "locale": "en",
        "iat": NOW,
        "exp": NOW + 900,
    }


def test_handcrafted_token_is_accepted() -> None:
    # Control for the raw_token helper used below.
    assert verify_launch_token(SECRET, raw_token({"alg": "HS256", "typ": "JWT"}, claims()), NOW, MAX_AGE) == (
        "user-42",
        "bg",
    )


def test_missing_locale_is_an_empty_locale() -> None:
    assert verify_launch_token(SECRET, craft(claims(locale=...)), NOW, MAX_AGE) == ("user-42", "")


@pytest.mark.parametrize("now_s", [NOW + 600, NOW + 601, NOW + 10_000])
def test_expired_token(now_s: int) -> None:
    assert "expired" in invalid(issue_launch_token(SECRET, "user-42", "bg", NOW, 600), now_s=now_s)


def test_token_lifetime_longer_than_max_age() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, MAX_AGE + 1)
    assert "expired" in invalid(token)


def test_token_lifetime_equal_to_max_age_is_accepted() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, MAX_AGE)
    assert verify_launch_token(SECRET, token, NOW, MAX_AGE) == ("user-42", "bg")


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
    assert verify_launch_token(SECRET, token, NOW, MAX_AGE) == ("user-42", "bg")


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


@pytest.mark.parametrize("missing", ["sub", "exp", "iat"])
def test_missing_required_claim(missing: str) -> None:
    invalid(craft(claims(**{missing: ...})))


@pytest.mark.parametrize("sub", [123, None, ["user-42"], {"id": "user-42"}, "", "x" * 65])
def test_bad_sub(sub: Any) -> None:
    token = raw_token({"alg": "HS256", "typ": "JWT"}, claims(sub=sub))
    assert "not valid" in invalid(token)


def test_sub_of_64_characters_is_accepted() -> None:
    assert verify_launch_token(SECRET, craft(claims(sub="u" * 64)), NOW, MAX_AGE)[0] == "u" * 64


@pytest.mark.parametrize("locale", [1, ["en"], None])
def test_non_string_locale(locale: Any) -> None:
    invalid(raw_token({"alg": "HS256", "typ": "JWT"}, claims(locale=locale)))


@pytest.mark.parametrize(("iat", "exp"), [(float(NOW), NOW + 600), (NOW, float(NOW + 600)), ("1700000000", NOW + 600)])
def test_non_integer_times(iat: Any, exp: Any) -> None:
    invalid(raw_token({"alg": "HS256", "typ": "JWT"}, claims(iat=iat, exp=exp)))


# --- session cookies ----------------------------------------------------------------------------


def test_session_round_trip() -> None:
    cookie = encode_session(SECRET, "user-42", "bg", NOW, 3600)
    session = decode_session(SECRET, cookie, NOW + 3599)
    assert isinstance(session, Session)
    assert (session.user_id, session.locale, session.expires_at) == ("user-42", "bg", NOW + 3600)
    assert len(session.csrf_token) >= 32


def test_each_session_has_its_own_csrf_token() -> None:
    first = decode_session(SECRET, encode_session(SECRET, "u", "en", NOW, 60), NOW)
    second = decode_session(SECRET, encode_session(SECRET, "u", "en", NOW, 60), NOW)
    assert first.csrf_token != second.csrf_token


@pytest.mark.parametrize("now_s", [NOW + 3600, NOW + 3601, NOW + 10**6])
def test_expired_session(now_s: int) -> None:
    cookie = encode_session(SECRET, "user-42", "bg", NOW, 3600)
    with pytest.raises(InvalidLaunch, match="expired"):
        decode_session(SECRET, cookie, now_s)


def test_session_with_the_wrong_secret() -> None:
    cookie = encode_session(OTHER_SECRET, "user-42", "bg", NOW, 3600)
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, cookie, NOW)


def test_session_with_a_tampered_body() -> None:
    cookie = encode_session(SECRET, "user-42", "bg", NOW, 3600)
    body, _, mac = cookie.rpartition(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["u"] = "someone-else"
    data["e"] = NOW + 10**9
    forged = b64(json.dumps(data, separators=(",", ":")).encode())
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, f"{forged}.{mac}", NOW)


def test_session_with_a_tampered_mac() -> None:
    cookie = encode_session(SECRET, "user-42", "bg", NOW, 3600)
    flipped = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, flipped, NOW)


def test_session_key_is_not_the_raw_secret() -> None:
    # A cookie MACed with the launch secret itself (not the derived key) is refused.
    body = b64(json.dumps({"u": "user-42", "l": "en", "c": "x", "e": NOW + 60}).encode())
    mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, f"{body}.{mac}", NOW)


def test_a_launch_token_is_not_a_session() -> None:
    token = issue_launch_token(SECRET, "user-42", "bg", NOW, 600)
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, token, NOW)


@pytest.mark.parametrize("cookie", ["garbage", ".", "a.b", "..", "%%%.zzz"])
def test_garbage_session(cookie: str) -> None:
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, cookie, NOW)


@pytest.mark.parametrize("cookie", ["abc.\u00e9\u00e9", "\u00e9", "caf\u00e9.0123456789abcdef"])
def test_non_ascii_session_cookie(cookie: str) -> None:
    # aiohttp hands such cookie values through unchanged; they must be InvalidLaunch (401), not a TypeError (500).
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, cookie, NOW)


@pytest.mark.parametrize("cookie", [None, ""])
def test_no_session(cookie: str | None) -> None:
    with pytest.raises(InvalidLaunch, match="no session"):
        decode_session(SECRET, cookie, NOW)


def _signed_cookie(payload: bytes) -> str:
    body = b64(payload)
    key = hmac.new(SECRET.encode(), b"evtopup-session-v1", hashlib.sha256).digest()
    return f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'"string"',
        b"null",
        b'{"u": "user-42", "l": "en", "c": "x"}',
        b'{"u": "user-42", "l": "en", "c": "x", "e": "soon"}',
        b"\xff\xfe",
    ],
)
def test_correctly_signed_but_malformed_session(payload: bytes) -> None:
    # Even with a valid MAC (a secret leak, a future format), a malformed body is InvalidLaunch, not a crash.
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_session(SECRET, _signed_cookie(payload), NOW)


def test_correctly_signed_session_control() -> None:
    payload = json.dumps({"u": "user-42", "l": "en", "c": "csrf", "e": NOW + 60}).encode()
    assert decode_session(SECRET, _signed_cookie(payload), NOW) == Session("user-42", "en", "csrf", NOW + 60)
