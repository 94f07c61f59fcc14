"""Template's wire format (``services/payments/processors/_template/wire.py``): the webhook signature on
fixed vectors computed by hand with openssl, amounts, request bodies, objects and statuses, every
webhook event's mapping, malformed input, and the settings."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.payments.processors._template import wire
from services.payments.processors._template.config import TemplateSettings
from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    RefundRequest,
)
from shared.money import MoneyError

# TEMPLATE: vectors computed by hand from the processor's documented recipe, never with wire.py:
#   printf '%s' '<timestamp>.<body>' | openssl dgst -sha256 -hmac '<secret>'
# (base64 instead of hex: add `-binary | base64`; a hex key: `-mac HMAC -macopt hexkey:<key>`). Add the
# processor's own documented example, if its documentation has one, as the first vector.
VECTORS = [
    (
        1700000000,
        b'{"id":"evt_1","type":"checkout.succeeded"}',
        "whsec_test_12345678",
        "7e9811d513569a1d960e53db0d847d6a5ccd49da63bd918ca58f0dda46f82071",
    ),
    (
        1712345678,
        b'{"a":1}',
        "another-webhook-secret-value",
        "41ce5ffc1c332577646aea065ec9d4441ef314904e2a97c95299cfd046fd16e6",
    ),
]

# TEMPLATE: where the processor has an official SDK that verifies webhook signatures, add it to the
# dev dependencies and put its verdict beside ours on every vector and on random bodies (a
# hypothesis test), as tests/unit/test_razorpay_wire.py (``sdk_accepts``) and test_stripe_wire.py do:
#
#   def sdk_accepts(timestamp: int, body: bytes, signature: str, secret: str) -> bool:
#       try:
#           the_sdk.verify(body, headers={...}, secret=secret)
#       except the_sdk.SignatureError:
#           return False
#       return True


# --- the signature -------------------------------------------------------------------------------


@pytest.mark.parametrize(("timestamp", "body", "secret", "expected"), VECTORS)
def test_signature_matches_the_fixed_vectors(timestamp: int, body: bytes, secret: str, expected: str) -> None:
    assert wire.signature_of(secret, timestamp, body) == expected
    assert wire.verify_signature(secret, str(timestamp), expected, body, now_s=timestamp + 1) == timestamp


@pytest.mark.parametrize(("timestamp", "body", "secret", "expected"), VECTORS)
def test_a_changed_byte_timestamp_or_secret_is_refused(timestamp: int, body: bytes, secret: str, expected: str) -> None:
    for other_body, other_ts, other_secret in (
        (body + b" ", timestamp, secret),
        (body[:2] + body[3:], timestamp, secret),
        (body, timestamp + 1, secret),
        (body, timestamp, secret + "x"),
    ):
        with pytest.raises(InvalidSignature):
            wire.verify_signature(other_secret, str(other_ts), expected, other_body, now_s=timestamp)


def test_a_replay_older_than_the_tolerance_is_refused_and_a_future_one_is_not() -> None:
    timestamp, body, secret, expected = VECTORS[0]
    limit = timestamp + wire.SIGNATURE_TOLERANCE_S
    wire.verify_signature(secret, str(timestamp), expected, body, now_s=limit)
    with pytest.raises(InvalidSignature, match="older"):
        wire.verify_signature(secret, str(timestamp), expected, body, now_s=limit + 1)
    wire.verify_signature(secret, str(timestamp), expected, body, now_s=timestamp - 3600)


def test_missing_or_garbled_headers_and_an_empty_secret_are_refused() -> None:
    timestamp, body, secret, expected = VECTORS[0]
    for ts, signature in ((None, expected), ("", expected), ("+1700000000", expected), ("1e9", expected)):
        with pytest.raises(InvalidSignature):
            wire.verify_signature(secret, ts, signature, body, now_s=timestamp)
    for signature in (None, "", "zz", "é" * 64, expected.upper()):
        with pytest.raises(InvalidSignature):
            wire.verify_signature(secret, str(timestamp), signature, body, now_s=timestamp)
    with pytest.raises(InvalidSignature):
        wire.verify_signature("", str(timestamp), expected, body, now_s=timestamp)


# --- amounts -------------------------------------------------------------------------------------


def test_amounts_are_minor_units_as_they_are() -> None:
    # TEMPLATE: the processor's notation for each kind of currency (two-, zero-, three-decimal).
    assert wire.to_template_amount(2500, "EUR") == 2500
    assert wire.to_template_amount(295, "JPY") == 295
    assert wire.from_template_amount(295990, "KWD") == 295990


@pytest.mark.parametrize("value", [1.5, Decimal("25.00"), "2500", True, None, -1])
def test_amounts_that_are_not_whole_minor_units_are_refused(value: Any) -> None:
    with pytest.raises(MoneyError):
        wire.from_template_amount(value, "EUR")


def test_unknown_currencies_and_non_positive_amounts_are_refused() -> None:
    with pytest.raises(MoneyError):
        wire.to_template_amount(100, "XXX")
    with pytest.raises(MoneyError):
        wire.to_template_amount(0, "EUR")


# --- requests ------------------------------------------------------------------------------------


def checkout(method: str = "card", amount: int = 2500, currency: str = "EUR") -> CheckoutRequest:
    payment_id = uuid.UUID(int=1)
    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.UUID(int=7),
        reference=str(payment_id),
        amount_minor=amount,
        currency=currency,
        method=method,
        return_url="https://pay.example/topup/1/return",
        webhook_url="https://pay.example/webhooks/main",
        description="EV top-up",
    )


def test_the_checkout_request_is_exact() -> None:
    assert wire.checkout_request(checkout()) == {
        "amount": 2500,
        "currency": "EUR",
        "reference": str(uuid.UUID(int=1)),
        "method": "card",
        "return_url": "https://pay.example/topup/1/return",
        "description": "EV top-up",
    }


def test_every_offered_method_maps_to_a_code_and_others_are_refused() -> None:
    assert set(TemplateSettings.payment_methods) == set(wire.METHOD_CODES)
    with pytest.raises(wire.WireError):
        wire.checkout_request(checkout("not-a-method"))
    with pytest.raises(MoneyError):
        wire.checkout_request(checkout(amount=0))


def test_the_refund_request_names_the_checkout_and_our_key() -> None:
    request = RefundRequest(PaymentRef(processor_reference="co_1"), "refund-key-1", 1000, "EUR", "driver asked")
    assert wire.refund_request(request, "co_1") == {"checkout": "co_1", "amount": 1000, "reference": "refund-key-1"}


# --- objects and statuses ------------------------------------------------------------------------


def checkout_object(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "co_AAAAAAAAAAAAAAAA",
        "object": "checkout",
        "status": "open",
        "amount": 2500,
        "currency": "EUR",
        "reference": "ref-1",
        "url": "https://pay.example/co_AAAAAAAAAAAAAAAA",
        "failure_reason": None,
    }
    obj.update(changes)
    return obj


def test_checkout_states_map_to_kinds_and_an_unknown_one_is_refused() -> None:
    for status, kind in wire.CHECKOUT_STATUS_KINDS.items():
        assert wire.checkout_status_kind(wire.TemplateCheckout.from_json(checkout_object(status=status))) is kind
    assert set(wire.CHECKOUT_STATUS_KINDS.values()) == {
        EventKind.PENDING,
        EventKind.SUCCEEDED,
        EventKind.FAILED,
        EventKind.EXPIRED,
    }
    with pytest.raises(wire.WireError):
        wire.checkout_status_kind(wire.TemplateCheckout.from_json(checkout_object(status="weird")))


def test_a_checkout_names_its_payment_by_our_reference_and_its_id() -> None:
    parsed = wire.TemplateCheckout.from_json(checkout_object())
    assert parsed.payment == PaymentRef(merchant_reference="ref-1", processor_reference="co_AAAAAAAAAAAAAAAA")


def test_errors_are_read_from_the_error_object() -> None:
    assert wire.parse_error({"error": {"code": "c", "message": "m"}}) == wire.TemplateErrorBody("c", "m")
    assert wire.parse_error("not json") == wire.TemplateErrorBody()
    assert wire.parse_error({"error": {"code": 1}}) == wire.TemplateErrorBody()


# --- webhook events ------------------------------------------------------------------------------


def event(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"id": "evt_1", "object": "event", "type": event_type, "created": 1, "data": data}).encode()


def refund_object(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "re_1",
        "status": "succeeded",
        "checkout": "co_AAAAAAAAAAAAAAAA",
        "amount": 1000,
        "currency": "EUR",
    }
    obj.update(changes)
    return obj


def dispute_object(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "dp_1",
        "status": "open",
        "checkout": "co_AAAAAAAAAAAAAAAA",
        "amount": 2500,
        "currency": "EUR",
        "reason": "fraudulent",
    }
    obj.update(changes)
    return obj


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("checkout.succeeded", EventKind.SUCCEEDED),
        ("checkout.failed", EventKind.FAILED),
        ("checkout.expired", EventKind.EXPIRED),
    ],
)
def test_checkout_events(event_type: str, kind: EventKind) -> None:
    data = checkout_object(status=event_type.split(".")[1], failure_reason="card_declined")
    [parsed] = wire.event_to_processor_events(event(event_type, data))
    assert (parsed.kind, parsed.amount_minor, parsed.currency) == (kind, 2500, "EUR")
    assert parsed.event_id == f"co_AAAAAAAAAAAAAAAA:{kind}"
    assert parsed.payment == PaymentRef(merchant_reference="ref-1", processor_reference="co_AAAAAAAAAAAAAAAA")
    assert parsed.reason == ("card_declined" if kind is EventKind.FAILED else None)


@pytest.mark.parametrize(
    ("event_type", "kind", "data"),
    [
        ("refund.succeeded", EventKind.REFUNDED, refund_object()),
        ("refund.failed", EventKind.REFUND_FAILED, refund_object(status="failed")),
        ("dispute.opened", EventKind.DISPUTE_OPENED, dispute_object()),
        ("dispute.won", EventKind.DISPUTE_WON, dispute_object(status="won")),
        ("dispute.lost", EventKind.DISPUTE_LOST, dispute_object(status="lost")),
    ],
)
def test_refund_and_dispute_events_name_their_cause(event_type: str, kind: EventKind, data: dict[str, Any]) -> None:
    [parsed] = wire.event_to_processor_events(event(event_type, data))
    assert (parsed.kind, parsed.amount_minor, parsed.cause_id) == (kind, data["amount"], data["id"])
    assert parsed.event_id == f"{data['id']}:{kind}"  # the same outcome twice is one event
    assert parsed.payment == PaymentRef(processor_reference="co_AAAAAAAAAAAAAAAA")


def test_events_we_do_not_act_on_and_objects_not_ours_are_ignored() -> None:
    assert wire.event_to_processor_events(event("checkout.created", checkout_object())) == []
    assert wire.event_to_processor_events(event("checkout.succeeded", checkout_object(reference=None))) == []
    assert wire.event_to_processor_events(event("checkout.succeeded", checkout_object(currency="XXX"))) == []
    assert {
        "checkout.succeeded",
        "checkout.failed",
        "checkout.expired",
        "refund.succeeded",
        "refund.failed",
        "dispute.opened",
        "dispute.won",
        "dispute.lost",
    } == wire.HANDLED_EVENTS


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type": "checkout.succeeded", "data": {}}',
        event("checkout.succeeded", checkout_object(amount=25.0)),
        event("checkout.succeeded", checkout_object(amount="2500")),
        event("refund.succeeded", refund_object(checkout=None)),
        event("dispute.opened", dispute_object(amount=-1)),
        b"\xff\xfe",
    ],
)
def test_malformed_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        wire.event_to_processor_events(body)


# --- settings ------------------------------------------------------------------------------------


def settings(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "processor": "template",
        "methods": ["card"],
        "api_key": "sk_" + "k" * 24,
        "webhook_secret": "s" * 24,
    }
    values.update(changes)
    return values


def test_settings_take_the_secrets_and_default_to_the_real_api() -> None:
    parsed = TemplateSettings(**settings())
    assert parsed.api_base_url.startswith("https://")
    assert parsed.api_key.get_secret_value() == "sk_" + "k" * 24


@pytest.mark.parametrize(
    "changes",
    [{"api_key": "short"}, {"webhook_secret": "short"}, {"methods": ["bitcoin"]}, {"api_base_url": "ftp://x"}],
)
def test_bad_settings_are_refused_without_showing_secrets(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        TemplateSettings(**settings(**changes))
    assert "k" * 24 not in str(refused.value)
