"""Security rules of the page as pure functions: the masked account shown on every step, the switch
token behind "Switch to …?", the Content-Security-Policy, and parsers that meet anything a client can
send with their documented exception only (property-based)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from services.page.launch import (
    SWITCH_TOKEN_TTL_S,
    InvalidLaunch,
    LaunchClaims,
    Session,
    decode_session,
    decode_switch_token,
    encode_session,
    encode_switch_token,
    mask_user_id,
    verify_launch_token,
)
from services.page.pages import content_security_policy
from services.payments.processors.base import InvalidSignature
from services.payments.processors.sandbox.adapter import sign_sandbox_payload, verify_sandbox_signature
from shared.http import malformed_request

SECRET = "launch-secret-0123456789abcdefghijklmnop"
NOW = 1_700_000_000
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
SESSION = Session("driver-0042", "en", "csrf-of-this-browser", NOW - 100)
ATTACKER_LAUNCH = LaunchClaims("attacker-99", "en", "jti-1", NOW + 600)

# Any text a header or query can carry, undecodable bytes included (aiohttp passes them on as surrogates).
ANY_TEXT = st.text(st.characters(codec=None, blacklist_categories=()), max_size=300) | st.binary(max_size=300).map(
    lambda raw: raw.decode("utf-8", "surrogateescape")
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


# --- the account shown on every step --------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "masked"),
    [
        ("user-42", "us••••42"),
        ("driver-0042", "dr••••42"),
        ("driver-10042", "dr••••0042"),
        ("driver-77342", "dr••••7342"),
        ("abcdefg", "ab••••fg"),
        ("abcdef", "a••••f"),
        ("abcde", "a••••e"),
        ("abcd", "a••••"),
        ("a", "a••••"),
    ],
)
def test_masked_user_id(user_id: str, masked: str) -> None:
    assert mask_user_id(user_id) == masked


@given(st.from_regex(USER_ID_PATTERN, fullmatch=True))
def test_mask_never_shows_more_than_half_nor_the_length(user_id: str) -> None:
    masked = mask_user_id(user_id)
    shown = len(masked.replace("••••", ""))
    assert shown <= 6 and (shown <= 4 or shown * 2 <= len(user_id))
    assert masked.count("••••") == 1
    if len(user_id) > 4:
        assert masked != user_id


# --- the switch token --------------------------------------------------------------------------------


def switch_token(session: Session = SESSION, claims: LaunchClaims = ATTACKER_LAUNCH, now_s: int = NOW) -> str:
    return encode_switch_token(SECRET, session, claims, "bg", now_s)


def test_switch_token_round_trip() -> None:
    assert decode_switch_token(SECRET, switch_token(), SESSION, NOW + SWITCH_TOKEN_TTL_S - 1) == ("attacker-99", "bg")


def test_switch_token_works_only_for_the_session_it_was_shown_to() -> None:
    other_browser = Session("driver-0042", "en", "csrf-of-another-browser", NOW - 100)
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_switch_token(SECRET, switch_token(), other_browser, NOW)


@pytest.mark.parametrize("now_s", [NOW + SWITCH_TOKEN_TTL_S, NOW + 10_000])
def test_switch_token_is_short_lived(now_s: int) -> None:
    with pytest.raises(InvalidLaunch, match="expired"):
        decode_switch_token(SECRET, switch_token(), SESSION, now_s)


def test_switch_token_does_not_outlive_its_launch_token() -> None:
    claims = LaunchClaims("attacker-99", "en", "jti-1", NOW + 10)
    with pytest.raises(InvalidLaunch, match="expired"):
        decode_switch_token(SECRET, switch_token(claims=claims), SESSION, NOW + 10)


def test_switch_token_is_not_a_session_and_a_session_is_not_a_switch_token() -> None:
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, switch_token(), NOW, 3600)
    with pytest.raises(InvalidLaunch):
        decode_switch_token(SECRET, encode_session(SECRET, SESSION), SESSION, NOW)


def test_tampered_switch_token() -> None:
    body, _, mac = switch_token().rpartition(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["u"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    with pytest.raises(InvalidLaunch, match="not valid"):
        decode_switch_token(SECRET, f"{forged}.{mac}", SESSION, NOW)


# --- Content-Security-Policy ----------------------------------------------------------------------


def test_content_security_policy() -> None:
    policy = content_security_policy("https://pay.example.com:8443/some/path")
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives == {
        "default-src": ["'none'"],
        "style-src": ["'self'"],
        # The return page's script (a file of the page's own) and its live status.
        "script-src": ["'self'"],
        "connect-src": ["'self'"],
        # The payment methods' icons and the operator's logo, served by the page itself.
        "img-src": ["'self'"],
        "form-action": ["'self'", "https://pay.example.com:8443"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }
    assert "unsafe-inline" not in policy


# --- malformed requests, before any handler ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/topup", {"Authorization": "Bearer \udcff"}),
        ("/topup", {"Cookie": "evtopup_session=\udcfe\udcff"}),
        ("/topup", {"Idempotency-Key": "k\udc80"}),
        ("/topup", {"X-CSRF-Token": "\udcc3"}),
        ("/topup", {"Content-Type": "application/x-www-form-urlencoded; charset=\udcff"}),
        ("/api/v1/users/a%00b/balance", {}),
        ("/topup?token=a%00", {}),
        ("/topup/\udcff/return", {}),  # raw undecodable bytes in the request line
    ],
)
def test_malformed_request(path: str, headers: dict[str, str]) -> None:
    url = URL(path, encoded=True)
    assert malformed_request(CIMultiDict(headers), url.path, url.query) is not None


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/topup?token=abc", {"Authorization": "Bearer abc", "Idempotency-Key": "ключ"}),
        ("/api/v1/users/%D1%8E/balance", {"X-Correlation-Id": "\udcff"}),  # an unsafe correlation id is replaced
        ("/webhooks/x", {"Sandbox-Signature": "t=\udcff"}),  # adapters judge their own headers
    ],
)
def test_well_formed_request(path: str, headers: dict[str, str]) -> None:
    url = URL(path, encoded=True)
    assert malformed_request(CIMultiDict(headers), url.path, url.query) is None


# --- sandbox signature header -----------------------------------------------------------------------

WEBHOOK_SECRET = "whsec-0123456789abcdef"
# int() takes these digits; a timestamp may not contain them.
ARABIC_INDIC_DIGITS = "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660"
BODY = b'{"id": "evt_1"}'


@pytest.mark.parametrize(
    "timestamp",
    ["9" * 4000, "9" * 13, "", "-1", "+1700000000", " 1700000000", "1_700_000_000", ARABIC_INDIC_DIGITS, "1e9"],
)
def test_sandbox_timestamp_must_be_1_to_12_ascii_digits(timestamp: str) -> None:
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    with pytest.raises(InvalidSignature, match="timestamp"):
        verify_sandbox_signature(WEBHOOK_SECRET, f"t={timestamp},v1={mac}", BODY, NOW)


def test_sandbox_signature_control() -> None:
    verify_sandbox_signature(WEBHOOK_SECRET, sign_sandbox_payload(WEBHOOK_SECRET, BODY, NOW), BODY, NOW)


# --- property-based: parsers raise their documented exception and nothing else ---------------------


@settings(max_examples=300, deadline=None)
@given(header=ANY_TEXT | st.builds(lambda t, v: f"t={t},v1={v}", ANY_TEXT, ANY_TEXT), body=st.binary(max_size=64))
def test_sandbox_signature_header_fuzz(header: str, body: bytes) -> None:
    with pytest.raises(InvalidSignature):
        verify_sandbox_signature(WEBHOOK_SECRET, header, body, NOW)


@settings(max_examples=300, deadline=None)
@given(cookie=ANY_TEXT | st.builds(lambda b, m: f"{b}.{m}", ANY_TEXT, ANY_TEXT))
def test_decode_session_fuzz(cookie: str) -> None:
    with pytest.raises(InvalidLaunch):
        decode_session(SECRET, cookie, NOW, 3600)


@settings(max_examples=300, deadline=None)
@given(token=ANY_TEXT)
def test_decode_switch_token_fuzz(token: str) -> None:
    with pytest.raises(InvalidLaunch):
        decode_switch_token(SECRET, token, SESSION, NOW)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signed(header: Any, claims: Any) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


def _verify(token: str, **rules: Any) -> LaunchClaims:
    return verify_launch_token(SECRET, token, NOW, max_age_s=900, user_id_pattern=USER_ID_PATTERN, **rules)


@settings(max_examples=300, deadline=None)
@given(token=ANY_TEXT | st.builds(lambda a, b, c: f"{a}.{b}.{c}", ANY_TEXT, ANY_TEXT, ANY_TEXT))
def test_verify_launch_token_fuzz_unsigned(token: str) -> None:
    with pytest.raises(InvalidLaunch):
        _verify(token)


CLAIM_VALUES = JSON_VALUES | st.integers(NOW - 1000, NOW + 1000) | st.sampled_from(["user-42", "en", "aud", "iss"])


@settings(max_examples=400, deadline=None)
@given(
    header=st.fixed_dictionaries({"alg": st.just("HS256")}, optional={"typ": JSON_VALUES, "kid": JSON_VALUES})
    | JSON_VALUES,
    claims=st.dictionaries(
        st.sampled_from(["sub", "locale", "iat", "exp", "jti", "aud", "iss", "nbf"]) | st.text(max_size=5),
        CLAIM_VALUES,
        max_size=9,
    ),
    audience=st.none() | st.just("aud"),
    issuer=st.none() | st.just("iss"),
)
def test_verify_launch_token_fuzz_correctly_signed(header: Any, claims: Any, audience: Any, issuer: Any) -> None:
    # Signed with the real secret: every claim check is reached with values of every type.
    try:
        verified = _verify(_signed(header, claims), audience=audience, issuer=issuer)
    except InvalidLaunch:
        return
    assert isinstance(verified.user_id, str) and isinstance(verified.jti, str)
    assert verified.expires_at > NOW


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_verify_launch_token_deeply_nested_payload(depth: int) -> None:
    with pytest.raises(InvalidLaunch):
        _verify(_signed({"alg": "HS256"}, {}).split(".")[0] + "." + _b64(b"[" * depth + b"]" * depth) + ".sig")
