"""Razorpay's wire format: amounts, request bodies, the webhook signature (fixed vectors computed with
``openssl dgst -sha256 -hmac``, and the official SDK's verdict beside ours), every webhook event's
mapping, link states, malformed input, and the settings."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
import razorpay  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
)
from services.payments.processors.razorpay import wire
from services.payments.processors.razorpay.config import RazorpaySettings
from shared.money import MoneyError

# Vectors: printf '%s' BODY | openssl dgst -sha256 -hmac SECRET
VECTORS = [
    (
        b'{"entity":"event","event":"payment.captured"}',
        "whsec_test_12345678",
        "5daca565998ab850af2663c6f48485896d336a64c145565201d94cbafca6f1c9",
    ),
    (b'{"a":1}', "my_webhook_secret_value", "c0bf36bcd31198b847c21fc9f85031cba3975842d1f026d3f92e539291fb9501"),
]


def sdk_accepts(body: bytes, signature: str, secret: str) -> bool:
    try:
        razorpay.Utility(None).verify_webhook_signature(body.decode(), signature, secret)
    except razorpay.errors.SignatureVerificationError:
        return False
    return True


# --- the signature -------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "secret", "expected"), VECTORS)
def test_signature_matches_the_fixed_vectors_and_the_sdk(body: bytes, secret: str, expected: str) -> None:
    assert wire.signature_of(body, secret) == expected
    wire.verify_razorpay_signature(body, expected, [secret])
    assert sdk_accepts(body, expected, secret)


@pytest.mark.parametrize(("body", "secret", "expected"), VECTORS)
def test_a_changed_byte_or_secret_is_refused_by_us_and_by_the_sdk(body: bytes, secret: str, expected: str) -> None:
    for other_body, other_secret in ((body + b" ", secret), (body, secret + "x"), (body[:2] + body[3:], secret)):
        signature = expected
        with pytest.raises(InvalidSignature):
            wire.verify_razorpay_signature(other_body, signature, [other_secret])
        assert not sdk_accepts(other_body, signature, other_secret)


@given(body=st.binary(min_size=0, max_size=300).filter(lambda b: _utf8(b)), secret=st.text(min_size=1, max_size=40))
def test_we_agree_with_the_sdk_on_any_body(body: bytes, secret: str) -> None:
    signature = wire.signature_of(body, secret)
    wire.verify_razorpay_signature(body, signature, [secret])
    assert sdk_accepts(body, signature, secret)
    assert not sdk_accepts(body, signature[:-1] + ("0" if signature[-1] != "0" else "1"), secret)


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_a_missing_or_garbled_signature_is_refused() -> None:
    body, secret, _ = VECTORS[0]
    for signature in (None, "", "zz", "é" * 64):
        with pytest.raises(InvalidSignature):
            wire.verify_razorpay_signature(body, signature, [secret])


def test_the_previous_secret_is_accepted_beside_the_current_one() -> None:
    body, secret, expected = VECTORS[0]
    wire.verify_razorpay_signature(body, expected, ["a-new-secret-after-rotation", secret])
    with pytest.raises(InvalidSignature):
        wire.verify_razorpay_signature(body, expected, ["a-new-secret-after-rotation"])
    with pytest.raises(InvalidSignature):
        wire.verify_razorpay_signature(body, expected, [""])


# --- amounts -------------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**12))
def test_two_decimal_amounts_go_as_they_are(amount: int) -> None:
    assert wire.to_razorpay_amount(amount, "INR") == amount
    assert wire.from_razorpay_amount(amount, "INR") == amount


def test_three_decimal_amounts_must_end_in_zero_and_zero_decimal_ones_are_whole() -> None:
    assert wire.to_razorpay_amount(295990, "KWD") == 295990
    with pytest.raises(MoneyError):
        wire.to_razorpay_amount(295991, "KWD")
    assert wire.to_razorpay_amount(295, "JPY") == 295


@pytest.mark.parametrize("value", [1.5, Decimal("25.00"), "2500", True, None, -1])
def test_amounts_that_are_not_whole_minor_units_are_refused(value: Any) -> None:
    with pytest.raises(MoneyError):
        wire.from_razorpay_amount(value, "INR")


def test_unknown_currencies_and_non_positive_amounts_are_refused() -> None:
    with pytest.raises(MoneyError):
        wire.to_razorpay_amount(100, "XXX")
    with pytest.raises(MoneyError):
        wire.to_razorpay_amount(0, "INR")


# --- requests ------------------------------------------------------------------------------------


def checkout(method: str = "upi", amount: int = 2500, currency: str = "INR") -> CheckoutRequest:
    payment_id = uuid.uuid4()
    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.UUID(int=7),
        reference=str(payment_id),
        amount_minor=amount,
        currency=currency,
        method=method,
        return_url="https://pay.example/topup/1/return",
        webhook_url="https://pay.example/webhooks/razorpay_main",
        description="EV top-up",
    )


def test_the_link_request_is_exact_and_limited_to_the_method() -> None:
    request = checkout("netbanking")
    body = wire.payment_link_request(request, expire_by=1_900_000_000)
    assert body == {
        "amount": 2500,
        "currency": "INR",
        "accept_partial": False,
        "reference_id": request.reference,
        "description": "EV top-up",
        "expire_by": 1_900_000_000,
        "notify": {"sms": False, "email": False},
        "reminder_enable": False,
        "notes": {"reference": request.reference, "order_id": str(uuid.UUID(int=7))},
        "callback_url": "https://pay.example/topup/1/return",
        "callback_method": "get",
        "options": {"checkout": {"method": {"card": False, "netbanking": True, "upi": False, "wallet": False}}},
    }
    assert len(request.reference) <= 40  # Razorpay's reference_id limit


def test_every_offered_method_maps_to_a_link_option_and_others_are_refused() -> None:
    assert set(RazorpaySettings.payment_methods) == set(wire.METHOD_OPTIONS)
    for method in RazorpaySettings.payment_methods:
        options = wire.payment_link_request(checkout(method), expire_by=1)["options"]["checkout"]["method"]
        assert [k for k, on in options.items() if on] == [wire.METHOD_OPTIONS[method]]
    with pytest.raises(wire.WireError):
        wire.payment_link_request(checkout("emi"), expire_by=1)


def test_the_refund_request_carries_our_keys_and_refuses_a_bad_key() -> None:
    key = str(uuid.UUID(int=1))
    assert wire.refund_request(1000, "INR", "ref-1", key) == {
        "amount": 1000,
        "speed": "normal",
        "receipt": key,
        "notes": {"refund_key": key, "reference": "ref-1"},
    }
    for bad in ("short", "has space here", "semi;colon-key"):
        with pytest.raises(wire.WireError):
            wire.refund_request(1000, "INR", None, bad)


# --- objects -------------------------------------------------------------------------------------


def link_entity(**changes: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "accept_partial": False,
        "amount": 2500,
        "amount_paid": 0,
        "currency": "INR",
        "id": "plink_FOGqq3O6E5bkml",
        "notes": {"reference": "ref-1"},
        "payments": None,
        "reference_id": "ref-1",
        "short_url": "https://rzp.io/i/nxrHnLJ",
        "status": "created",
    }
    entity.update(changes)
    return entity


def test_link_states_map_to_pending_succeeded_and_expired() -> None:
    cases = {
        "created": EventKind.PENDING,
        "partially_paid": EventKind.PENDING,
        "paid": EventKind.SUCCEEDED,
        "expired": EventKind.EXPIRED,
        "cancelled": EventKind.EXPIRED,
    }
    for status, kind in cases.items():
        assert wire.link_status_kind(wire.RazorpayPaymentLink.from_json(link_entity(status=status))) is kind
    with pytest.raises(wire.WireError):
        wire.link_status_kind(wire.RazorpayPaymentLink.from_json(link_entity(status="weird")))


def test_a_paid_link_names_its_order_and_captured_payment_not_a_failed_one() -> None:
    link = wire.RazorpayPaymentLink.from_json(
        link_entity(
            status="paid",
            amount_paid=2500,
            order_id="order_Fo491cL6NGAjkI",
            payments=[
                {"amount": 2500, "method": "upi", "payment_id": "pay_failedAAAAAAAA", "status": "failed"},
                {"amount": 2500, "method": "upi", "payment_id": "pay_Fo49sHbQ78PCMI", "status": "captured"},
            ],
        )
    )
    assert link.payment == PaymentRef(
        merchant_reference="ref-1",
        processor_reference="plink_FOGqq3O6E5bkml",
        ids={"order": "order_Fo491cL6NGAjkI", "payment": "pay_Fo49sHbQ78PCMI"},
    )


def test_links_found_by_reference_are_checked_again() -> None:
    payload = {"payment_links": [link_entity(), link_entity(id="plink_OtherOtherOther", reference_id="someone")]}
    assert [link.id for link in wire.links_with_reference(payload, "ref-1")] == ["plink_FOGqq3O6E5bkml"]
    assert wire.links_with_reference({"payment_links": []}, "ref-1") == []
    with pytest.raises(wire.WireError):
        wire.links_with_reference({"items": []}, "ref-1")


def test_errors_are_read_from_razorpays_error_object() -> None:
    error = wire.parse_error({"error": {"code": "BAD_REQUEST_ERROR", "description": "x", "field": "reference_id"}})
    assert error == wire.RazorpayErrorBody("BAD_REQUEST_ERROR", "x", "reference_id")
    assert wire.parse_error("not json") == wire.RazorpayErrorBody()


# --- webhook events ------------------------------------------------------------------------------


def event(name: str, **payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "entity": "event",
            "account_id": "acc_BFQ7uQEaa7j2z7",
            "event": name,
            "contains": list(payload),
            "payload": {k: {"entity": v} for k, v in payload.items()},
            "created_at": 1567674606,
        }
    ).encode()


def payment_entity(**changes: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": "pay_DESlfW9H8K9uqM",
        "entity": "payment",
        "amount": 2500,
        "currency": "INR",
        "status": "captured",
        "order_id": "order_DESlLckIVRkHWj",
        "method": "upi",
        "notes": [],
        "error_code": None,
        "error_description": None,
    }
    entity.update(changes)
    return entity


def refund_entity(**changes: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": "rfnd_FP8DDKxqJif6ca",
        "entity": "refund",
        "amount": 1000,
        "currency": "INR",
        "payment_id": "pay_DESlfW9H8K9uqM",
        "notes": {"reference": "ref-1", "refund_key": "k" * 12},
        "status": "processed",
    }
    entity.update(changes)
    return entity


def dispute_entity(**changes: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": "disp_AHfqOvkldwsbqt",
        "entity": "dispute",
        "payment_id": "pay_DESlfW9H8K9uqM",
        "amount": 2500,
        "currency": "INR",
        "amount_deducted": 0,
        "reason_code": "chargeback",
        "status": "open",
        "phase": "chargeback",
    }
    entity.update(changes)
    return entity


def test_payment_link_paid_succeeds_with_the_link_order_and_payment() -> None:
    body = event(
        "payment_link.paid",
        payment_link=link_entity(status="paid", amount_paid=2500, order_id="order_DESlLckIVRkHWj"),
        payment=payment_entity(),
        order={"id": "order_DESlLckIVRkHWj", "entity": "order", "amount": 2500, "currency": "INR"},
    )
    [e] = wire.razorpay_event_to_processor_events(body)
    assert e.event_id == "payment_link.paid:plink_FOGqq3O6E5bkml"
    assert (e.kind, e.amount_minor, e.currency) == (EventKind.SUCCEEDED, 2500, "INR")
    assert e.payment == PaymentRef(
        "ref-1", "plink_FOGqq3O6E5bkml", {"order": "order_DESlLckIVRkHWj", "payment": "pay_DESlfW9H8K9uqM"}
    )


def test_the_order_id_comes_from_the_order_entity_when_the_link_lacks_it() -> None:
    body = event(
        "payment_link.paid",
        payment_link=link_entity(status="paid", amount_paid=2500),
        payment=payment_entity(),
        order={"id": "order_DESlLckIVRkHWj"},
    )
    [e] = wire.razorpay_event_to_processor_events(body)
    assert e.payment.ids["order"] == "order_DESlLckIVRkHWj"


@pytest.mark.parametrize(
    ("name", "reason"), [("payment_link.expired", "expired"), ("payment_link.cancelled", "cancelled")]
)
def test_an_expired_or_cancelled_link_expires(name: str, reason: str) -> None:
    [e] = wire.razorpay_event_to_processor_events(event(name, payment_link=link_entity(status=reason)))
    assert (e.kind, e.reason, e.event_id) == (EventKind.EXPIRED, reason, f"{name}:plink_FOGqq3O6E5bkml")
    assert e.payment.merchant_reference == "ref-1"


def test_a_link_without_our_reference_is_not_ours() -> None:
    assert (
        wire.razorpay_event_to_processor_events(
            event("payment_link.expired", payment_link=link_entity(reference_id=""))
        )
        == []
    )


def test_payment_captured_succeeds_by_order_and_payment() -> None:
    [e] = wire.razorpay_event_to_processor_events(event("payment.captured", payment=payment_entity()))
    assert (e.kind, e.amount_minor, e.event_id) == (EventKind.SUCCEEDED, 2500, "payment.captured:pay_DESlfW9H8K9uqM")
    assert e.payment == PaymentRef(ids={"order": "order_DESlLckIVRkHWj", "payment": "pay_DESlfW9H8K9uqM"})


def test_payment_failed_fails_by_order_only_with_the_reason() -> None:
    body = event(
        "payment.failed",
        payment=payment_entity(status="failed", error_code="BAD_REQUEST_ERROR", error_description="Payment failed"),
    )
    [e] = wire.razorpay_event_to_processor_events(body)
    assert (e.kind, e.reason) == (EventKind.FAILED, "BAD_REQUEST_ERROR: Payment failed")
    # The failed payment's id is never remembered as the payment's (refunds need the captured one).
    assert e.payment == PaymentRef(ids={"order": "order_DESlLckIVRkHWj"})


def test_failed_then_captured_are_two_statements_of_the_same_payment() -> None:
    failed = wire.razorpay_event_to_processor_events(event("payment.failed", payment=payment_entity(status="failed")))
    captured = wire.razorpay_event_to_processor_events(event("payment.captured", payment=payment_entity()))
    assert [e.kind for e in failed + captured] == [EventKind.FAILED, EventKind.SUCCEEDED]
    assert failed[0].event_id != captured[0].event_id


def test_payments_without_an_order_and_authorisations_are_ignored() -> None:
    assert (
        wire.razorpay_event_to_processor_events(event("payment.captured", payment=payment_entity(order_id=None))) == []
    )
    assert wire.razorpay_event_to_processor_events(event("payment.authorized", payment=payment_entity())) == []
    assert wire.razorpay_event_to_processor_events(event("order.paid", payment=payment_entity())) == []


def test_refunds_move_money_once_processed_and_back_when_failed() -> None:
    pending = event("refund.created", refund=refund_entity(status="pending"), payment=payment_entity())
    assert wire.razorpay_event_to_processor_events(pending) == []
    created_done = event("refund.created", refund=refund_entity(), payment=payment_entity())
    processed = event("refund.processed", refund=refund_entity(), payment=payment_entity())
    [a] = wire.razorpay_event_to_processor_events(created_done)
    [b] = wire.razorpay_event_to_processor_events(processed)
    assert a == b  # one refund, one outcome: the same key
    assert (b.kind, b.amount_minor, b.cause_id, b.event_id) == (
        EventKind.REFUNDED,
        1000,
        "rfnd_FP8DDKxqJif6ca",
        "rfnd_FP8DDKxqJif6ca:refunded",
    )
    assert b.payment == PaymentRef("ref-1", None, {"payment": "pay_DESlfW9H8K9uqM", "order": "order_DESlLckIVRkHWj"})
    [f] = wire.razorpay_event_to_processor_events(event("refund.failed", refund=refund_entity(status="failed")))
    assert (f.kind, f.cause_id) == (EventKind.REFUND_FAILED, "rfnd_FP8DDKxqJif6ca")


@pytest.mark.parametrize(
    ("name", "status", "phase", "kind"),
    [
        ("payment.dispute.created", "open", "chargeback", EventKind.DISPUTE_OPENED),
        ("payment.dispute.created", "open", "pre_arbitration", EventKind.DISPUTE_OPENED),
        ("payment.dispute.created", "open", "retrieval", None),
        ("payment.dispute.created", "open", "fraud", None),
        ("payment.dispute.won", "won", "chargeback", EventKind.DISPUTE_WON),
        ("payment.dispute.lost", "lost", "chargeback", EventKind.DISPUTE_LOST),
        ("payment.dispute.lost", "lost", "fraud", EventKind.DISPUTE_LOST),
        ("payment.dispute.closed", "closed", "fraud", None),
        ("payment.dispute.under_review", "under_review", "chargeback", None),
    ],
)
def test_disputes(name: str, status: str, phase: str, kind: EventKind | None) -> None:
    body = event(name, payment=payment_entity(), dispute=dispute_entity(status=status, phase=phase))
    events = wire.razorpay_event_to_processor_events(body)
    if kind is None:
        assert events == []
        return
    [e] = events
    assert (e.kind, e.amount_minor, e.cause_id, e.reason) == (kind, 2500, "disp_AHfqOvkldwsbqt", "chargeback")
    assert e.event_id == f"disp_AHfqOvkldwsbqt:{kind}"
    assert e.payment.ids == {"payment": "pay_DESlfW9H8K9uqM", "order": "order_DESlLckIVRkHWj"}


def test_a_currency_we_never_charge_in_is_not_ours() -> None:
    assert (
        wire.razorpay_event_to_processor_events(event("payment.captured", payment=payment_entity(currency="XXX"))) == []
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"entity": "event"}',
        b'{"entity": "payment", "event": "payment.captured", "payload": {}}',
        event("payment.captured"),
        event("payment.captured", payment=payment_entity(amount=25.5)),
        event("payment.captured", payment=payment_entity(amount="2500")),
        event("payment.captured", payment=payment_entity(id=None)),
        event("payment_link.paid", payment_link=link_entity(id="link_1")),
        event("refund.processed", refund=refund_entity(payment_id=None)),
        event("payment.dispute.lost", dispute=dispute_entity(currency="inr")),
        b'{"entity":"event","event":"payment.captured","payload":{"payment":{"entity":[]}}}',
        b"[" * 100_000,
    ],
)
def test_malformed_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        wire.razorpay_event_to_processor_events(body)


# --- settings ------------------------------------------------------------------------------------


def settings(**changes: Any) -> RazorpaySettings:
    values: dict[str, Any] = {
        "processor": "razorpay",
        "methods": ["upi"],
        "key_id": "rzp_live_ABCDEFGHIJKLMN",
        "key_secret": "s" * 24,
        "webhook_secret": "w" * 20,
    }
    values.update(changes)
    return RazorpaySettings(**values)


def test_keys_must_match_the_environment() -> None:
    assert settings().environment == "production"
    settings(environment="test", key_id="rzp_test_ABCDEFGHIJKLMN")
    for changes in (
        {"key_id": "rzp_test_ABCDEFGHIJKLMN"},
        {"environment": "test"},
        {"key_id": "ABCDEFGHIJKLMN"},
        {"webhook_secret": "short"},
        {"previous_webhook_secret": "short"},
        {"methods": ["emi"]},
        {"link_expiry_s": 60},
    ):
        with pytest.raises(ValidationError):
            settings(**changes)
