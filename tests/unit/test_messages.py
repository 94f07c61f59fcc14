"""shared/messages.py: every contract survives envelope_for + decode, and decode refuses anything that
can never be processed with BadMessage (dead-lettered), while ignoring unknown fields."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.logging import accept_correlation_id
from shared.messages import (
    CONTRACTS,
    BadMessage,
    Contract,
    CreditApplied,
    Envelope,
    PaymentFailed,
    decode,
    envelope_for,
)
from tests.factories import ORDER_ID, PAYMENT_ID, payment_succeeded


def payment_failed() -> PaymentFailed:
    return PaymentFailed(
        payment_id=PAYMENT_ID,
        order_id=ORDER_ID,
        user_id="user-42",
        integration_id="sandbox_demo",
        status="expired",
        reason="checkout expired",
    )


def credit_applied() -> CreditApplied:
    return CreditApplied(
        transfer_id=f"topup:{PAYMENT_ID}",
        payment_id=PAYMENT_ID,
        order_id=ORDER_ID,
        user_id="user-42",
        amount_minor=2500,
        bonus_minor=100,
        currency="EUR",
        balance_minor=2600,
    )


ALL_PAYLOADS = [payment_succeeded(), payment_failed(), credit_applied()]


def wire(payload: Contract, **kwargs: Any) -> bytes:
    return envelope_for(payload, producer="test", correlation_id="corr-1", **kwargs).model_dump_json().encode()


def raw_envelope(data: dict[str, Any], type_: str = "payment.succeeded", version: int = 1) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": type_,
        "version": version,
        "occurred_at": "2024-01-01T00:00:00Z",
        "correlation_id": "corr-1",
        "producer": "test",
        "data": data,
    }


def good_data() -> dict[str, Any]:
    data: dict[str, Any] = payment_succeeded().model_dump(mode="json")
    return data


def test_every_contract_is_registered_by_type_and_version() -> None:
    assert set(CONTRACTS) == {
        ("payment.succeeded", 1),
        ("payment.failed", 1),
        ("payment.needs_review", 1),
        ("payment.reversed", 1),
        ("payment.reversal_undone", 1),
        ("credit.applied", 1),
    }
    for (type_, version), contract in CONTRACTS.items():
        assert (type_, version) == (contract.TYPE, contract.VERSION)


@pytest.mark.parametrize("payload", ALL_PAYLOADS, ids=lambda p: p.TYPE)
def test_round_trip(payload: Contract) -> None:
    message_id = uuid.uuid4()
    causation_id = uuid.uuid4()
    before = datetime.now(UTC)
    body = wire(payload, message_id=message_id, causation_id=causation_id)
    envelope, decoded = decode(body)
    assert type(decoded) is type(payload)
    assert decoded == payload
    assert envelope.id == message_id
    assert envelope.type == payload.TYPE
    assert envelope.version == payload.VERSION
    assert envelope.producer == "test"
    assert envelope.correlation_id == "corr-1"
    assert envelope.causation_id == causation_id
    assert before - timedelta(seconds=1) <= envelope.occurred_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert envelope.occurred_at.tzinfo is not None


def test_envelope_ids_are_unique_by_default() -> None:
    payload = payment_succeeded()
    first = envelope_for(payload, producer="test", correlation_id="c")
    second = envelope_for(payload, producer="test", correlation_id="c")
    assert first.id != second.id
    assert first.causation_id is None


def test_envelope_data_is_plain_json() -> None:
    envelope = envelope_for(payment_succeeded(), producer="test", correlation_id="c")
    assert envelope.data["payment_id"] == str(PAYMENT_ID)
    assert envelope.data["amount_minor"] == 2500
    assert type(envelope.data["amount_minor"]) is int
    json.dumps(envelope.data)


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"[]", b"null", b"42", b"\xff\xfe"])
def test_non_json_or_non_object_is_refused(body: bytes) -> None:
    with pytest.raises(BadMessage, match="malformed envelope"):
        decode(body)


@pytest.mark.parametrize("field", ["id", "type", "version", "occurred_at", "correlation_id", "producer", "data"])
def test_missing_envelope_field_is_refused(field: str) -> None:
    envelope = raw_envelope(good_data())
    del envelope[field]
    with pytest.raises(BadMessage, match=f"malformed envelope: {field}"):
        decode(json.dumps(envelope).encode())


def test_bad_envelope_id_is_refused() -> None:
    envelope = raw_envelope(good_data())
    envelope["id"] = "not-a-uuid"
    with pytest.raises(BadMessage, match="malformed envelope: id"):
        decode(json.dumps(envelope).encode())


def test_unknown_type_is_refused() -> None:
    with pytest.raises(BadMessage, match=r"unknown message type/version payment\.teleported/v1"):
        decode(json.dumps(raw_envelope(good_data(), type_="payment.teleported")).encode())


@pytest.mark.parametrize(
    ("type_", "version"), [("payment.succeeded", 2), ("payment.failed", 0), ("credit.applied", 99)]
)
def test_unknown_version_is_refused(type_: str, version: int) -> None:
    with pytest.raises(BadMessage, match=rf"unknown message type/version {type_}/v{version}"):
        decode(json.dumps(raw_envelope(good_data(), type_=type_, version=version)).encode())


def test_valid_raw_envelope_decodes() -> None:
    # Control for the refusals below: the unmodified payload is accepted.
    _, payload = decode(json.dumps(raw_envelope(good_data())).encode())
    assert payload == payment_succeeded()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_minor", 10.0),
        ("amount_minor", 2500.0),
        ("amount_minor", 10.5),
        ("amount_minor", "2500"),
        ("amount_minor", True),
        ("amount_minor", None),
        ("amount_minor", -1),
        ("amount_minor", 0),
        ("bonus_minor", -1),
        ("bonus_minor", 1.0),
        ("fee_minor", -5),
        ("fee_minor", "58"),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("currency", "EU"),
        ("currency", ""),
        ("currency", 978),
        ("payment_id", "not-a-uuid"),
        ("order_id", 12),
        ("user_id", ""),
    ],
)
def test_bad_payment_succeeded_payload_is_refused(field: str, value: Any) -> None:
    data = good_data()
    data[field] = value
    with pytest.raises(BadMessage, match=rf"malformed payment\.succeeded/v1: {field}"):
        decode(json.dumps(raw_envelope(data)).encode())


@pytest.mark.parametrize(
    "field",
    [
        "payment_id",
        "order_id",
        "user_id",
        "integration_id",
        "processor",
        "processor_reference",
        "amount_minor",
        "bonus_minor",
        "fee_minor",
        "currency",
    ],
)
def test_missing_payload_field_is_refused(field: str) -> None:
    data = good_data()
    del data[field]
    with pytest.raises(BadMessage, match=rf"malformed payment\.succeeded/v1: {field}"):
        decode(json.dumps(raw_envelope(data)).encode())


@pytest.mark.parametrize(("field", "value"), [("amount_minor", 10.0), ("balance_minor", 1.5), ("currency", "eur")])
def test_bad_credit_applied_payload_is_refused(field: str, value: Any) -> None:
    data: dict[str, Any] = credit_applied().model_dump(mode="json")
    data[field] = value
    with pytest.raises(BadMessage, match=rf"malformed credit\.applied/v1: {field}"):
        decode(json.dumps(raw_envelope(data, type_="credit.applied")).encode())


def test_payment_failed_status_must_be_known() -> None:
    data: dict[str, Any] = payment_failed().model_dump(mode="json")
    data["status"] = "succeeded"
    with pytest.raises(BadMessage, match=r"malformed payment\.failed/v1: status"):
        decode(json.dumps(raw_envelope(data, type_="payment.failed")).encode())


def test_zero_balance_is_accepted_in_credit_applied() -> None:
    # balance_minor has no sign constraint in the contract; only its type is strict.
    data: dict[str, Any] = credit_applied().model_dump(mode="json")
    data["balance_minor"] = 0
    _, payload = decode(json.dumps(raw_envelope(data, type_="credit.applied")).encode())
    assert isinstance(payload, CreditApplied)
    assert payload.balance_minor == 0


def test_contracts_refuse_floats_when_built_in_code_too() -> None:
    with pytest.raises(ValueError, match="amount_minor"):
        payment_succeeded(amount_minor=10.0)


def test_unknown_fields_are_ignored() -> None:
    data = good_data()
    data["added_in_a_later_minor_release"] = {"anything": [1, 2, 3]}
    envelope = raw_envelope(data)
    envelope["trace_parent"] = "00-abc-def-01"
    decoded_envelope, payload = decode(json.dumps(envelope).encode())
    assert payload == payment_succeeded()
    assert not hasattr(payload, "added_in_a_later_minor_release")
    assert isinstance(decoded_envelope, Envelope)


def test_error_message_names_the_contract_and_the_field() -> None:
    data = good_data()
    data["amount_minor"] = 10.0
    with pytest.raises(BadMessage) as info:
        decode(json.dumps(raw_envelope(data)).encode())
    assert str(info.value).startswith("malformed payment.succeeded/v1: amount_minor:")


# --- correlation ids ------------------------------------------------------------------------------

SAFE_IDS = ["a", "corr-1", "0" * 64, uuid.uuid4().hex, str(uuid.uuid4()), "req.1:2_x-Y", "A" * 63 + "z"]
UNSAFE_IDS: list[object] = [
    "\U0001f600" * 64,  # 64 characters, none of them safe
    "a" * 65,  # one too long
    "caf\u00e9",  # not ASCII
    "\u0430bc",  # a Cyrillic a that looks like a Latin one
    "",
    " ",
    "a b",
    "a\n",  # a trailing newline must not slip past a ``$``
    "a\r\nX-Injected: 1",
    "a/b",
    "a,b",
    "${jndi:x}",
    None,
    123,
    b"corr-1",
    ["corr-1"],
]


def is_fresh_id(value: str) -> bool:
    return len(value) == 32 and value == uuid.UUID(hex=value).hex


@pytest.mark.parametrize("value", SAFE_IDS)
def test_a_safe_correlation_id_is_kept(value: str) -> None:
    assert accept_correlation_id(value) == value


@pytest.mark.parametrize("value", UNSAFE_IDS, ids=repr)
def test_an_unsafe_correlation_id_is_replaced_by_a_fresh_one(value: object) -> None:
    replaced = accept_correlation_id(value)
    assert replaced != value
    assert is_fresh_id(replaced)
    assert accept_correlation_id(replaced) == replaced  # what replaces it is itself safe
    assert accept_correlation_id(value) != replaced  # and new every time


@pytest.mark.parametrize("value", SAFE_IDS)
def test_envelope_accepts_a_safe_correlation_id(value: str) -> None:
    envelope = raw_envelope(good_data())
    envelope["correlation_id"] = value
    decoded, _ = decode(json.dumps(envelope).encode())
    assert decoded.correlation_id == value
    assert envelope_for(payment_succeeded(), producer="test", correlation_id=value).correlation_id == value


@pytest.mark.parametrize("value", [v for v in UNSAFE_IDS if isinstance(v, str)], ids=repr)
def test_envelope_refuses_a_correlation_id_outside_the_pattern(value: str) -> None:
    envelope = raw_envelope(good_data())
    envelope["correlation_id"] = value
    with pytest.raises(BadMessage, match="malformed envelope: correlation_id"):
        decode(json.dumps(envelope).encode())
    with pytest.raises(ValidationError, match="correlation_id"):
        envelope_for(payment_succeeded(), producer="test", correlation_id=value)
