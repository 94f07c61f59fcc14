"""AMPECO's wire format (services/crediting/csms/ampeco/wire.py) without I/O: exact amounts, bodies
the OpenAPI excerpt accepts, what each answer means, and notification signatures checked against an
HMAC written here independently."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.crediting.csms import Delivered, Failed, NotSent, Uncertain
from services.crediting.csms.ampeco import wire

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TYPES = ["api_top_up", "add_to_balance"]


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [(2500, "EUR", "25.00"), (2500, "JPY", "2500"), (2500, "KWD", "2.500"), (1, "EUR", "0.01"), (5, "BHD", "0.005")],
)
def test_amounts_are_exact_decimals_in_major_units(minor: int, currency: str, expected: str) -> None:
    amount = wire.ampeco_amount(minor, currency)
    assert isinstance(amount, Decimal)
    assert format(amount, "f") == expected


@given(st.integers(min_value=1, max_value=10**15), st.sampled_from(["EUR", "JPY", "KWD", "BGN", "KES"]))
def test_every_amount_is_a_multiple_of_a_thousandth_and_round_trips(minor: int, currency: str) -> None:
    amount = wire.ampeco_amount(minor, currency)
    assert (amount / Decimal("0.001")) % 1 == 0
    body = json.loads(wire.change_body("credit", amount, "r", "{}"), parse_float=Decimal)
    assert Decimal(body["amount"]) == amount


def test_amounts_that_cannot_be_sent_are_refused() -> None:
    with pytest.raises(wire.WireError):
        wire.ampeco_amount(0, "EUR")
    with pytest.raises(wire.WireError):
        wire.ampeco_amount(-5, "EUR")
    with pytest.raises(wire.WireError):
        wire.ampeco_amount(5, "CLF")  # 4 decimals: finer than multipleOf 0.001
    with pytest.raises(wire.WireError):
        wire.ampeco_amount(5, "XYZ")


def test_credit_body_has_exactly_the_documented_properties() -> None:
    raw = wire.change_body("credit", Decimal("25.10"), "Balance top-up 1", '{"a":"b"}')
    body = json.loads(raw, parse_float=Decimal)
    assert body == {"amount": Decimal("25.10"), "reason": "Balance top-up 1", "app_info": '{"a":"b"}'}


def test_debit_body_takes_from_the_balance_never_a_card() -> None:
    body = json.loads(wire.change_body("debit", Decimal("3.5"), "Correction", "{}"), parse_float=Decimal)
    assert body == {"amount": Decimal("3.5"), "description": "Correction", "paymentMethodId": None}


def test_reason_with_quotes_and_unicode_stays_valid_json() -> None:
    reason = 'Попълване "1" \\ done'
    body = json.loads(wire.change_body("credit", Decimal("1"), reason, "x"))
    assert body["reason"] == reason


def test_app_info_longer_than_the_spec_allows_is_refused() -> None:
    with pytest.raises(wire.WireError):
        wire.change_body("credit", Decimal("1"), "r", "x" * 2001)


@pytest.mark.parametrize("user_id", ["0", "-1", "01", "1.5", "abc", "", "١٢"])
def test_only_positive_integer_user_ids_reach_a_path(user_id: str) -> None:
    with pytest.raises(wire.WireError):
        wire.change_path("credit", user_id)


def test_paths_follow_the_spec() -> None:
    assert wire.change_path("credit", "42") == "/public-api/actions/users/v1.0/42/add-balance"
    assert wire.change_path("debit", "42") == "/public-api/actions/users/v1.0/42/apply-custom-fee"


def outcome(status: int, body: bytes = b"", headers: dict[str, str] | None = None, refresh: bool = False) -> object:
    return wire.change_outcome(status, body, headers or {}, NOW, can_refresh_token=refresh)


def test_202_is_delivered() -> None:
    assert outcome(202) == Delivered()


@pytest.mark.parametrize("status", [500, 502, 503, 504, 200, 204, 301])
def test_a_5xx_or_unexpected_answer_is_uncertain_never_retried(status: int) -> None:
    assert isinstance(outcome(status), Uncertain)


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_refusals_fail_for_good(status: int) -> None:
    result = outcome(status, b'{"message": "The given data was invalid.", "errors": {"amount": ["bad"]}}')
    assert isinstance(result, Failed)
    assert not result.insufficient_balance
    assert "amount" in result.reason


def test_insufficient_balance_is_flagged() -> None:
    result = outcome(400, b'{"message": "User has insufficient balance"}')
    assert isinstance(result, Failed) and result.insufficient_balance


def test_429_waits_as_long_as_asked() -> None:
    assert outcome(429, headers={"Retry-After": "7"}) == NotSent("rate limited (429)", retry_after_s=7.0)
    reset = str(int((NOW + timedelta(seconds=30)).timestamp()))
    result = outcome(429, headers={"X-RateLimit-Reset": reset})
    assert isinstance(result, NotSent) and result.retry_after_s == pytest.approx(30)
    result = outcome(429, headers={"Retry-After": "Fri, 27 Nov 2026 12:00:12 GMT"})
    assert isinstance(result, NotSent) and result.retry_after_s == pytest.approx(12)
    result = outcome(429, headers={"Retry-After": "soon"})
    assert isinstance(result, NotSent) and result.retry_after_s == wire.DEFAULT_RETRY_AFTER_S


def test_401_is_not_applied_and_says_so() -> None:
    result = outcome(401)
    assert isinstance(result, NotSent) and result.unauthorized and "static" in result.reason
    result = outcome(401, refresh=True)
    assert isinstance(result, NotSent) and result.unauthorized and "static" not in result.reason


def sign(key: str, body: bytes) -> bytes:
    return hmac.new(key.encode(), body, hashlib.sha256).digest()


def test_signatures_in_hex_or_base64_verify_with_the_subscribing_token() -> None:
    body = b'{"notification":"userBalance.changed"}'
    digest = sign("token-1", body)
    assert wire.verify_ampeco_signature(body, digest.hex(), ["other", "token-1"])
    assert wire.verify_ampeco_signature(body, base64.b64encode(digest).decode(), ["token-1"])
    assert not wire.verify_ampeco_signature(body, digest.hex(), ["token-2"])
    assert not wire.verify_ampeco_signature(body + b" ", digest.hex(), ["token-1"])
    assert not wire.verify_ampeco_signature(body, None, ["token-1"])
    assert not wire.verify_ampeco_signature(body, "", ["token-1"])
    assert not wire.verify_ampeco_signature(body, "zz-not-a-signature", ["token-1"])
    assert not wire.verify_ampeco_signature(body, digest.hex(), [])
    assert not wire.verify_ampeco_signature(body, hmac.new(b"", body, hashlib.sha256).hexdigest(), [""])


def notification(**changes: object) -> bytes:
    data: dict[str, object] = {
        "notification": "userBalance.changed",
        "debit": 0,
        "credit": 25.1,
        "updatedBalance": 40.123,
        "userId": 1001,
        "currency": "EUR",
        "type": "api_top_up",
        "transactionId": None,
        "timestamp": "2026-11-27T12:00:00.123456Z",
        "lastUpdatedAt": "2026-11-27T12:00:00.123456Z",
    }
    data.update(changes)
    return json.dumps(data).encode()


def test_a_notification_is_read_without_floats() -> None:
    note = wire.parse_balance_notification(notification())
    assert note is not None
    assert note.credit == Decimal("25.1") and note.updated_balance == Decimal("40.123")
    assert note.user_id == "1001"
    assert note.occurred_at == datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
    assert note.matches("credit", Decimal("25.10"), TYPES)
    assert not note.matches("credit", Decimal("25.11"), TYPES)
    assert not note.matches("debit", Decimal("25.1"), TYPES)
    assert not note.matches("credit", Decimal("25.1"), ["add_to_balance"])


def test_only_api_changes_count_as_evidence_of_our_calls() -> None:
    for kind in ("voucher", "promo_code", "user_top_up", "auto_top_up", "transaction", "top_up"):
        note = wire.parse_balance_notification(notification(type=kind))
        assert note is not None and not note.matches("credit", Decimal("25.1"), TYPES)
    fee = wire.parse_balance_notification(notification(type="custom_fee", credit=0, debit=3))
    assert fee is not None and fee.matches("debit", Decimal(3), TYPES)


def test_a_change_is_the_same_however_it_is_serialised() -> None:
    compact = wire.parse_balance_notification(notification())
    spaced = wire.parse_balance_notification(json.dumps(json.loads(notification()), indent=2).encode())
    other = wire.parse_balance_notification(notification(updatedBalance=50))
    assert compact is not None and spaced is not None and other is not None
    assert compact.identity == spaced.identity != other.identity


def test_other_notifications_are_ignored_and_broken_ones_refused() -> None:
    assert wire.parse_balance_notification(b'{"notification": "session.start.stop.notification"}') is None
    for broken in (
        notification(userId="1001"),
        notification(userId=0),
        notification(credit="25"),
        notification(currency="EURO"),
        notification(timestamp="yesterday"),
        notification(transactionId="x"),
        b"[]",
        b"not json",
    ):
        with pytest.raises(wire.WireError):
            wire.parse_balance_notification(broken)


def test_timestamps_and_their_window() -> None:
    sent = wire.parse_timestamp("2026-11-27T11:57:00.000001Z")
    assert wire.timestamp_is_fresh(sent, NOW, 300)
    assert not wire.timestamp_is_fresh(sent, NOW + timedelta(minutes=3), 300)
    assert not wire.timestamp_is_fresh(NOW + timedelta(minutes=6), NOW, 300)
    for bad in (None, "", "2026-11-27T12:00:00", "noon"):
        with pytest.raises(wire.WireError):
            wire.parse_timestamp(bad)


def test_user_answers() -> None:
    assert wire.user_locale_and_balance(b'{"data": {"id": "1", "locale": "bg-BG", "balance": 12.345}}') == (
        "bg-BG",
        Decimal("12.345"),
    )
    assert wire.user_locale_and_balance(b'{"data": {"id": "1", "locale": null}}') == (None, None)
    with pytest.raises(wire.WireError):
        wire.user_locale_and_balance(b'{"id": "1"}')
