"""services/payments/processors/sandbox/adapter.py: webhook signatures (checked against a vector computed
independently with openssl) and the normalization of webhook bodies."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import aiohttp
import pytest
from pydantic import SecretStr

from services.payments.processors.base import (
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    WebhookRequest,
)
from services.payments.processors.sandbox.adapter import (
    SIGNATURE_HEADER,
    SandboxAdapter,
    parse_sandbox_webhook,
    sign_sandbox_payload,
    verify_sandbox_signature,
)
from services.payments.processors.sandbox.config import SandboxSettings
from shared.settings import ServiceSettings
from tests.simulators.sandbox import signature_header, webhook_body

# printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test_0123456789
SECRET = "whsec_test_0123456789"
TIMESTAMP = 1700000000
BODY = b'{"id":"evt_1"}'
V1 = "96a6e4147d41eb58c1480c33f2e6c77496783ed0b5e00ff73e862fbca407ecc6"
HEADER = f"t={TIMESTAMP},v1={V1}"
NOW = 1700000100


# --- signatures --------------------------------------------------------------------------------


def test_known_vector_verifies() -> None:
    verify_sandbox_signature(SECRET, HEADER, BODY, NOW)


def test_adapter_signer_produces_the_known_vector() -> None:
    assert sign_sandbox_payload(SECRET, BODY, TIMESTAMP) == HEADER


def test_independent_simulator_produces_the_known_vector() -> None:
    assert signature_header(SECRET, BODY, TIMESTAMP) == HEADER


def test_tampered_body_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, HEADER, b'{"id":"evt_2"}', NOW)


def test_whitespace_change_in_body_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, HEADER, b'{"id": "evt_1"}', NOW)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature("whsec_test_0123456788", HEADER, BODY, NOW)


def test_timestamp_is_part_of_the_signature() -> None:
    # The same v1 under another (fresh) timestamp must not verify: no replay with a new t.
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP + 1},v1={V1}", BODY, NOW)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header_is_refused(header: str | None) -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        verify_sandbox_signature(SECRET, header, BODY, NOW)


@pytest.mark.parametrize(
    "header",
    [f"v1={V1}", f"ts={TIMESTAMP},v1={V1}", f"t=,v1={V1}", f"t=abc,v1={V1}", f"t=1700000000.0,v1={V1}", "garbage"],
)
def test_header_without_a_valid_timestamp_is_refused(header: str) -> None:
    with pytest.raises(InvalidSignature, match="timestamp"):
        verify_sandbox_signature(SECRET, header, BODY, NOW)


@pytest.mark.parametrize("header", [f"t={TIMESTAMP}", f"t={TIMESTAMP},v1=", f"t={TIMESTAMP},v0={V1}"])
def test_header_without_v1_is_refused(header: str) -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, header, BODY, NOW)


@pytest.mark.parametrize("v1", ["\u00e9", "\u00e9" * 64, V1[:-1] + "\u00e9"], ids=["one-char", "64-chars", "last-char"])
def test_non_ascii_v1_is_refused(v1: str) -> None:
    # Anyone can send this header: it must be InvalidSignature (401), not a TypeError (500).
    with pytest.raises(InvalidSignature):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP},v1={v1}", BODY, NOW)


def test_uppercase_hex_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP},v1={V1.upper()}", BODY, NOW)


def _one_char_changed(hex_digest: str, index: int) -> str:
    replacement = "0" if hex_digest[index] != "0" else "1"
    return hex_digest[:index] + replacement + hex_digest[index + 1 :]


@pytest.mark.parametrize(
    "v1",
    [
        V1[:63],  # one character short
        V1[:32],  # half a signature
        V1[:1],  # a single character
        V1[1:],  # the first character dropped
        V1[32:],  # the second half only
        V1 + "0",  # one character too many
        V1 + V1,  # twice the signature
        V1.upper(),  # the same bytes in uppercase hex
        V1[:10] + V1[10:].upper(),  # partly uppercase
        "",  # empty v1
        " ",  # blank v1
        _one_char_changed(V1, 0),
        _one_char_changed(V1, 31),
        _one_char_changed(V1, 63),
        "0" * 64,
    ],
    ids=[
        "prefix-63",
        "prefix-32",
        "prefix-1",
        "suffix-63",
        "suffix-32",
        "one-longer",
        "doubled",
        "uppercase",
        "part-uppercase",
        "empty",
        "blank",
        "changed-first",
        "changed-middle",
        "changed-last",
        "zeros",
    ],
)
def test_anything_but_the_exact_signature_is_refused(v1: str) -> None:
    # A signature is compared whole: no prefix, no truncation, no case folding, no near miss.
    assert v1 != V1
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP},v1={v1}", BODY, NOW)


@pytest.mark.parametrize("v1", [V1[:63], V1[1:], V1.upper(), "", _one_char_changed(V1, 63)])
def test_a_near_miss_among_several_v1_values_is_refused(v1: str) -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP},v1={'0' * 64},v1={v1},v1={'f' * 64}", BODY, NOW)


@pytest.mark.parametrize("position", [0, 1, 2, 4])
def test_the_valid_signature_is_accepted_wherever_it_is_among_several(position: int) -> None:
    others = [V1[:63], "", V1.upper(), _one_char_changed(V1, 0)]
    values = [*others[:position], V1, *others[position:]]
    verify_sandbox_signature(SECRET, f"t={TIMESTAMP}," + ",".join(f"v1={v}" for v in values), BODY, NOW)


@pytest.mark.parametrize("v1", ["\udcff", V1[:-1] + "\udce9", "\udc80" * 64], ids=["one", "last", "64"])
def test_v1_with_undecodable_bytes_is_refused(v1: str) -> None:
    # A header's undecodable bytes arrive as lone surrogates: a refusal (401), never an encoding error (500).
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP},v1={v1}", BODY, NOW)


@pytest.mark.parametrize(
    ("header", "now_s", "message"),
    [
        (None, NOW, "missing Sandbox-Signature header"),
        (f"v1={V1}", NOW, "signature header has no valid timestamp"),
        (HEADER, TIMESTAMP + 301, "signature timestamp outside the tolerance"),
        (f"t={TIMESTAMP},v1={V1[:-1]}", NOW, "signature does not match"),
    ],
    ids=["missing", "timestamp", "tolerance", "mismatch"],
)
def test_each_refusal_says_exactly_why(header: str | None, now_s: int, message: str) -> None:
    # The reason is logged and counted: each refusal keeps its own words.
    with pytest.raises(InvalidSignature) as info:
        verify_sandbox_signature(SECRET, header, BODY, now_s)
    assert str(info.value) == message


def test_a_signature_of_the_empty_body_does_not_verify_another_body() -> None:
    empty = sign_sandbox_payload(SECRET, b"", TIMESTAMP)
    verify_sandbox_signature(SECRET, empty, b"", NOW)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, empty, BODY, NOW)


@pytest.mark.parametrize("now_s", [TIMESTAMP + 301, TIMESTAMP - 301, TIMESTAMP + 300.5, TIMESTAMP + 10**6])
def test_timestamp_outside_the_tolerance_is_refused(now_s: float) -> None:
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_sandbox_signature(SECRET, HEADER, BODY, now_s)


@pytest.mark.parametrize("now_s", [TIMESTAMP + 300, TIMESTAMP - 300, TIMESTAMP, TIMESTAMP + 299.9])
def test_timestamp_within_the_tolerance_is_accepted(now_s: float) -> None:
    verify_sandbox_signature(SECRET, HEADER, BODY, now_s)


@pytest.mark.parametrize(
    "header",
    [
        f"t={TIMESTAMP},v1={'0' * 64},v1={V1}",
        f"t={TIMESTAMP},v1={V1},v1={'f' * 64}",
        f"v1={'a' * 64}, t={TIMESTAMP}, v1={V1}",
    ],
)
def test_several_v1_values_one_matching_is_accepted(header: str) -> None:
    verify_sandbox_signature(SECRET, header, BODY, NOW)


def test_several_v1_values_none_matching_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox_signature(SECRET, f"t={TIMESTAMP},v1={'0' * 64},v1={'f' * 64}", BODY, NOW)


def test_rotation_with_two_secrets() -> None:
    old = sign_sandbox_payload("whsec_old_secret_value", BODY, TIMESTAMP).split("v1=")[1]
    new = sign_sandbox_payload("whsec_new_secret_value", BODY, TIMESTAMP).split("v1=")[1]
    header = f"t={TIMESTAMP},v1={old},v1={new}"
    verify_sandbox_signature("whsec_old_secret_value", header, BODY, NOW)
    verify_sandbox_signature("whsec_new_secret_value", header, BODY, NOW)
    with pytest.raises(InvalidSignature):
        verify_sandbox_signature("whsec_third_secret_value", header, BODY, NOW)


# --- the adapter ---------------------------------------------------------------------------------


@pytest.fixture
def adapter() -> SandboxAdapter:
    integration = SandboxSettings(
        processor="sandbox",
        methods=["card", "wallet"],
        api_key=SecretStr("sk_test_0123456789abcdef"),
        webhook_secret=SecretStr(SECRET),
    )
    services = ServiceSettings(
        page_public_url="http://127.0.0.1:8080",
        payments_public_url="http://127.0.0.1:8081",
        payments_internal_url="http://127.0.0.1:8081",
    )
    return SandboxAdapter("sandbox_demo", integration, services, http=cast(aiohttp.ClientSession, None))


def webhook(type_: str = "checkout.succeeded", **data_overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"reference": "chk_abc", "status": "succeeded", "amount_minor": 2558, "currency": "EUR"}
    data.update(data_overrides)
    return {"id": "evt_1", "type": type_, "created": TIMESTAMP, "data": data}


def parse(adapter: SandboxAdapter, payload: Any) -> list[ProcessorEvent]:
    return parse_sandbox_webhook(json.dumps(payload).encode())


def verify(adapter: SandboxAdapter, headers: dict[str, str], body: bytes, now_s: float) -> None:
    request = WebhookRequest("POST", "/webhooks/sandbox_demo", {}, headers, body, "127.0.0.1", now_s)
    asyncio.run(adapter.verify_webhook(request))


def test_adapter_verifies_with_its_webhook_secret(adapter: SandboxAdapter) -> None:
    verify(adapter, {SIGNATURE_HEADER: HEADER}, BODY, NOW)
    with pytest.raises(InvalidSignature):
        verify(adapter, {SIGNATURE_HEADER: HEADER}, BODY + b" ", NOW)
    with pytest.raises(InvalidSignature, match="missing"):
        verify(adapter, {}, BODY, NOW)


@pytest.mark.parametrize(
    ("type_", "kind"),
    [
        ("checkout.succeeded", EventKind.SUCCEEDED),
        ("checkout.failed", EventKind.FAILED),
        ("checkout.expired", EventKind.EXPIRED),
    ],
)
def test_parse_normalizes_events(adapter: SandboxAdapter, type_: str, kind: EventKind) -> None:
    events = parse(adapter, webhook(type_))
    assert events == [
        ProcessorEvent(
            event_id="evt_1",
            payment=PaymentRef(processor_reference="chk_abc"),
            kind=kind,
            amount_minor=2558,
            currency="EUR",
            reason=None,
        )
    ]


def test_parse_keeps_a_string_reason(adapter: SandboxAdapter) -> None:
    [event] = parse(adapter, webhook("checkout.failed", reason="card declined"))
    assert event.reason == "card declined"


def test_parse_drops_a_reason_that_is_not_a_string(adapter: SandboxAdapter) -> None:
    [event] = parse(adapter, webhook("checkout.failed", reason={"code": 51}))
    assert event.reason is None


def test_parse_ignores_unknown_fields(adapter: SandboxAdapter) -> None:
    payload = webhook(extra="x")
    payload["livemode"] = False
    [event] = parse(adapter, payload)
    assert event.kind is EventKind.SUCCEEDED
    assert event.amount_minor == 2558


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff"])
def test_parse_refuses_non_json(adapter: SandboxAdapter, body: bytes) -> None:
    with pytest.raises(MalformedWebhook, match="not JSON"):
        parse_sandbox_webhook(body)


@pytest.mark.parametrize("payload", [[webhook()], "checkout.succeeded", 42, None])
def test_parse_refuses_non_object(adapter: SandboxAdapter, payload: Any) -> None:
    with pytest.raises(MalformedWebhook, match="object"):
        parse(adapter, payload)


@pytest.mark.parametrize("type_", ["checkout.refunded", "checkout.pending", "CHECKOUT.SUCCEEDED", "", None, 1])
def test_parse_refuses_unknown_type(adapter: SandboxAdapter, type_: Any) -> None:
    with pytest.raises(MalformedWebhook, match="unknown event type"):
        parse(adapter, webhook(type_))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "body is not JSON"),
        (b"[]", "body must be a JSON object"),
        (json.dumps(webhook("checkout.refunded")).encode(), "unknown event type 'checkout.refunded'"),
        (json.dumps({"id": "evt_1"}).encode(), "unknown event type None"),
    ],
)
def test_malformed_webhook_messages_say_exactly_what_is_wrong(
    adapter: SandboxAdapter, body: bytes, message: str
) -> None:
    with pytest.raises(MalformedWebhook) as info:
        parse_sandbox_webhook(body)
    assert str(info.value) == message


@pytest.mark.parametrize("type_", [["checkout.succeeded"], {"name": "checkout.succeeded"}])
def test_parse_refuses_a_type_that_is_not_a_string(adapter: SandboxAdapter, type_: Any) -> None:
    # A JSON array or object as "type" must be a MalformedWebhook (400), not an unhandled error (500).
    with pytest.raises(MalformedWebhook):
        parse(adapter, webhook(type_))


def test_parse_refuses_missing_type(adapter: SandboxAdapter) -> None:
    payload = webhook()
    del payload["type"]
    with pytest.raises(MalformedWebhook, match="unknown event type"):
        parse(adapter, payload)


@pytest.mark.parametrize("data", ["missing", None, [], "chk_abc", 5])
def test_parse_refuses_missing_or_bad_data(adapter: SandboxAdapter, data: Any) -> None:
    payload = webhook()
    if data == "missing":
        del payload["data"]
    else:
        payload["data"] = data
    with pytest.raises(MalformedWebhook, match="data must be a dict"):
        parse(adapter, payload)


@pytest.mark.parametrize("amount", ["2558", 2558.0, 25.58, True, False, None])
def test_parse_refuses_amount_that_is_not_an_integer(adapter: SandboxAdapter, amount: Any) -> None:
    with pytest.raises(MalformedWebhook, match="amount_minor must be a int"):
        parse(adapter, webhook(amount_minor=amount))


def test_parse_refuses_missing_amount(adapter: SandboxAdapter) -> None:
    payload = webhook()
    del payload["data"]["amount_minor"]
    with pytest.raises(MalformedWebhook, match="amount_minor"):
        parse(adapter, payload)


@pytest.mark.parametrize("event_id", ["missing", None, 1, True, ["evt_1"]])
def test_parse_refuses_missing_or_bad_id(adapter: SandboxAdapter, event_id: Any) -> None:
    payload = webhook()
    if event_id == "missing":
        del payload["id"]
    else:
        payload["id"] = event_id
    with pytest.raises(MalformedWebhook, match="id must be a str"):
        parse(adapter, payload)


@pytest.mark.parametrize(
    ("field", "value"), [("reference", None), ("reference", 7), ("currency", None), ("currency", 978)]
)
def test_parse_refuses_bad_reference_or_currency(adapter: SandboxAdapter, field: str, value: Any) -> None:
    with pytest.raises(MalformedWebhook, match=f"{field} must be a str"):
        parse(adapter, webhook(**{field: value}))


def test_simulator_body_parses_and_verifies(adapter: SandboxAdapter) -> None:
    body = webhook_body("chk_sim", "expired", 1000, "EUR", event_id="evt_sim")
    verify(adapter, {SIGNATURE_HEADER: signature_header(SECRET, body, NOW)}, body, NOW)
    assert parse_sandbox_webhook(body) == [
        ProcessorEvent("evt_sim", PaymentRef(processor_reference="chk_sim"), EventKind.EXPIRED, 1000, "EUR", None)
    ]
