"""services/payments/processors/paystack/wire.py: amounts (int or digit strings, exact), request
bodies, the webhook signature (fixed vectors computed once with ``openssl dgst -sha512 -hmac``), the
settings, and the mapping of every Paystack event and transaction status we act on (and of those
we do not). No Paystack SDK verifies signatures (processors.md §4.d), so there is no SDK verdict."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    RefundRequest,
)
from services.payments.processors.paystack import wire
from services.payments.processors.paystack.config import PaystackSettings
from services.payments.processors.paystack.wire import (
    PaystackDispute,
    PaystackRefund,
    PaystackTransaction,
    compute_signature,
    event_to_processor_events,
    from_paystack_amount,
    initialize_body,
    parse_answer,
    parse_event,
    refund_body,
    refund_events,
    refund_notice,
    to_paystack_amount,
    transaction_kind,
    verify_signature,
)
from shared.money import MoneyError

# printf '%s' '<body>' > v1.json && openssl dgst -sha512 -hmac '<key>' v1.json
V1_KEY = "sk_test_0123456789abcdef0123456789abcdef"
V1_BODY = b'{"event":"charge.success","data":{"id":302961,"reference":"qTPrJoy9Bx"}}'
V1_SIG = (
    "c94ea0b5115ddedb3e203cab62e0e207ebb0b7b78749f0692600f50fb98bcc66"
    "2e6108514fd1ea7f48d0b486bb09fe28f6f76716db0f4242e61471aca322e179"
)
# Non-ASCII, as UTF-8 bytes: signed as they are, never re-encoded.
V2_KEY = "sk_live_fedcba9876543210fedcba9876543210"
V2_BODY = '{"event":"charge.success","data":{"id":1,"reference":"Zoë"}}'.encode()
V2_SIG = (
    "112291c94ea199ba4bc8975ea7695cbedcc33ecaefc97c7e6a62ba905a9b896d"
    "591438f00fcef9ccd13cafe4a4832e1ec5d654cf67ec7ac904d3c45e323e6f30"
)

REF = "0b9e8c1e-8a2c-4d3b-9b3e-6f1c2d3e4a5b"


# --- signature ---------------------------------------------------------------------------------


def test_signature_matches_the_openssl_vectors() -> None:
    assert compute_signature(V1_KEY, V1_BODY) == V1_SIG
    assert compute_signature(V2_KEY, V2_BODY) == V2_SIG
    verify_signature(V1_KEY, V1_SIG, V1_BODY)
    verify_signature(V2_KEY, V2_SIG, V2_BODY)
    verify_signature(V1_KEY, V1_SIG.upper(), V1_BODY)  # hex case is not significant


@pytest.mark.parametrize(
    ("header", "body", "key"),
    [
        (None, V1_BODY, V1_KEY),
        ("", V1_BODY, V1_KEY),
        (V1_SIG, V1_BODY + b" ", V1_KEY),  # one byte more
        (V1_SIG, V1_BODY.replace(b"302961", b"302962"), V1_KEY),
        (V1_SIG, V1_BODY, V2_KEY),  # another key
        (V1_SIG[:-1], V1_BODY, V1_KEY),
        (V1_SIG + "0", V1_BODY, V1_KEY),
        ("sha512=" + V1_SIG, V1_BODY, V1_KEY),
        (f"t=1700000000,v1=kid1:{V1_SIG}", V1_BODY, V1_KEY),  # the unverified newer scheme
        ("é" * 128, V1_BODY, V1_KEY),
    ],
)
def test_signature_refusals(header: str | None, body: bytes, key: str) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(key, header, body)


def test_a_reserialised_body_does_not_verify() -> None:
    pretty = json.dumps(json.loads(V1_BODY), indent=2).encode()
    with pytest.raises(InvalidSignature):
        verify_signature(V1_KEY, V1_SIG, pretty)


# --- amounts -----------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**15), st.sampled_from(["NGN", "GHS", "ZAR", "KES", "USD", "EGP"]))
def test_amounts_round_trip_exactly(amount: int, currency: str) -> None:
    assert to_paystack_amount(amount, currency) == amount
    assert from_paystack_amount(amount, currency) == amount
    assert from_paystack_amount(str(amount), currency) == amount


@pytest.mark.parametrize("value", ["50.00", "5e3", "-5", "+5", " 5", "\u0665", 5.0, True, None, [5], "", "5_000"])
def test_unexact_amounts_are_refused(value: object) -> None:
    with pytest.raises(MoneyError):
        from_paystack_amount(value, "NGN")


@pytest.mark.parametrize(("amount", "currency"), [(0, "NGN"), (-1, "NGN"), (100, "XOF"), (100, "RWF"), (100, "EUR")])
def test_amounts_paystack_cannot_take_are_refused(amount: int, currency: str) -> None:
    with pytest.raises(MoneyError):
        to_paystack_amount(amount, currency)


# --- requests and settings ---------------------------------------------------------------------


def checkout_request(method: str = "card", **changes: Any) -> CheckoutRequest:
    values: dict[str, Any] = {
        "payment_id": uuid.UUID(REF),
        "order_id": uuid.UUID("11111111-2222-3333-4444-555555555555"),
        "reference": REF,
        "amount_minor": 250000,
        "currency": "NGN",
        "method": method,
        "return_url": "https://page.example/return?o=1",
        "webhook_url": "https://payments.example/webhooks/paystack_main",
        "description": "Balance top-up",
    }
    values.update(changes)
    return CheckoutRequest(**values)


def test_initialize_body() -> None:
    body = initialize_body(checkout_request("bank_transfer"), "topup+{payment}@cpo.example")
    assert body == {
        "email": "topup+0b9e8c1e8a2c4d3b9b3e6f1c2d3e4a5b@cpo.example",
        "amount": 250000,
        "currency": "NGN",
        "reference": REF,
        "callback_url": "https://page.example/return?o=1",
        "metadata": {"payment_id": REF, "order_id": "11111111-2222-3333-4444-555555555555"},
        "channels": ["bank_transfer"],
    }
    assert initialize_body(checkout_request(), "ops@cpo.example")["email"] == "ops@cpo.example"
    with pytest.raises(ValueError, match="reference"):
        initialize_body(checkout_request(reference="a b"), "ops@cpo.example")


def test_every_method_has_a_channel() -> None:
    for method in PaystackSettings.payment_methods:
        assert initialize_body(checkout_request(method), "a@b.example")["channels"] == [method]


def test_refund_body_carries_the_refund_key() -> None:
    request = RefundRequest(PaymentRef(merchant_reference=REF), "rk-1", 1000, "NGN", "driver asked")
    assert refund_body("4099260516", request) == {
        "transaction": "4099260516",
        "amount": 1000,
        "currency": "NGN",
        "merchant_note": "evtopup-refund:rk-1 driver asked",
    }


def settings(**changes: Any) -> PaystackSettings:
    values: dict[str, Any] = {
        "processor": "paystack",
        "methods": ["card"],
        "customer_email": "topup+{payment}@cpo.example",
        "secret_key": "sk_live_" + "x" * 40,
    }
    values.update(changes)
    return PaystackSettings(**values)


def test_settings() -> None:
    assert settings().checkout_expiry_s == 3600
    settings(environment="test", secret_key="sk_test_" + "y" * 40)
    with pytest.raises(ValidationError, match="sk_live_"):
        settings(secret_key="sk_test_" + "y" * 40)  # a test key on a production integration
    with pytest.raises(ValidationError):
        settings(secret_key="pk_live_" + "y" * 40)
    for address in ("not-an-address", "a@{payment}.example", "{payment}{payment}@a.example", "a@b"):
        with pytest.raises(ValidationError):
            settings(customer_email=address)
    with pytest.raises(ValidationError, match="does not take"):
        settings(methods=["mpesa"])


def test_a_bad_key_is_never_echoed() -> None:
    # The message is what the settings loader reports (shared/settings.py keeps loc and msg only).
    with pytest.raises(ValidationError) as info:
        settings(secret_key="pk_live_SECRETSECRETSECRET")
    assert all("SECRETSECRET" not in error["msg"] for error in info.value.errors())


# --- transactions ------------------------------------------------------------------------------


def transaction(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": 4099260516,
        "domain": "live",
        "status": "success",
        "reference": REF,
        "amount": 250000,
        "gateway_response": "Successful",
        "paid_at": "2024-08-22T09:15:02.000Z",
        "created_at": "2024-08-22T09:14:24.000Z",
        "channel": "card",
        "currency": "NGN",
        "metadata": {"payment_id": REF},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("status", "age_s", "kind"),
    [
        ("success", 0, EventKind.SUCCEEDED),
        ("reversed", 0, EventKind.SUCCEEDED),
        ("failed", 0, EventKind.FAILED),
        ("ongoing", 10**6, EventKind.PENDING),
        ("pending", 0, EventKind.PENDING),
        ("processing", 0, EventKind.PENDING),
        ("queued", 0, EventKind.PENDING),
        ("abandoned", 59, EventKind.PENDING),
        ("abandoned", 60, EventKind.EXPIRED),
    ],
)
def test_transaction_kinds(status: str, age_s: int, kind: EventKind) -> None:
    tx = PaystackTransaction.from_json(transaction(status=status))
    assert tx.created_at_s is not None
    assert transaction_kind(tx, tx.created_at_s + age_s, 60) is kind


def test_an_unknown_status_is_not_guessed() -> None:
    tx = PaystackTransaction.from_json(transaction(status="mystery"))
    with pytest.raises(ValueError, match="unknown"):
        transaction_kind(tx, time.time(), 60)


def test_requested_amount_is_the_amount_asked_for() -> None:
    # Verify's sample: fees passed to the customer make ``amount`` larger than what was initialized.
    tx = PaystackTransaction.from_json(transaction(amount=40333, requested_amount=30050))
    assert tx.amount_minor == 30050
    assert tx.payment == PaymentRef(REF, REF, {"transaction": "4099260516"})


def test_a_requested_amount_above_what_was_charged_is_never_credited() -> None:
    # Less taken than asked (a partial debit, a short transfer): the amount taken is stated, so that
    # payments holds the payment for review instead of crediting the whole top-up.
    tx = PaystackTransaction.from_json(transaction(amount=5000, requested_amount=250000))
    assert tx.amount_minor == 5000
    [ev] = events_of(event("charge.success", transaction(amount=5000, requested_amount=250000)))
    assert (ev.kind, ev.amount_minor) == (EventKind.SUCCEEDED, 5000)


def test_stored_bodies_keep_nothing_about_the_driver() -> None:
    data = transaction(
        ip_address="197.210.54.33",
        customer={"id": 1, "email": "topup+x@cpo.example", "phone": "+2348012345678", "first_name": "Ada"},
        authorization={"last4": "4081", "account_name": "ADA OBI", "sender_bank_account_number": "0123456789"},
    )
    body = event("charge.success", data)
    kept = wire.body_without_driver(body)
    for personal in (b"197.210.54.33", b"+2348012345678", b"Ada", b"ADA OBI", b"0123456789", b"4081"):
        assert personal in body and personal not in kept
    stored = json.loads(kept)
    assert stored["event"] == "charge.success" and stored["data"]["reference"] == REF
    assert stored["data"]["customer"] == {"id": 1, "email": "topup+x@cpo.example"}
    assert wire.body_without_driver(b"\xff not json") == b""


# --- events ------------------------------------------------------------------------------------


def event(name: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"event": name, "data": data}).encode()


def events_of(body: bytes) -> list[Any]:
    return event_to_processor_events(parse_event(body))


def test_charge_success() -> None:
    [ev] = events_of(event("charge.success", transaction()))
    assert ev.kind is EventKind.SUCCEEDED
    assert (ev.amount_minor, ev.currency) == (250000, "NGN")
    assert ev.event_id == "charge.success:4099260516:success"
    assert ev.payment == PaymentRef(REF, REF, {"transaction": "4099260516"})
    # The same statement again is the same event.
    assert events_of(event("charge.success", transaction())) == [ev]


def test_charge_success_amount_as_a_string_is_exact() -> None:
    [ev] = events_of(event("charge.success", transaction(amount="250000")))
    assert ev.amount_minor == 250000
    with pytest.raises(MalformedWebhook):
        events_of(event("charge.success", transaction(amount="2500.00")))


@pytest.mark.parametrize(
    "data",
    [
        transaction(reference="T685312322670591"),  # not one of our references
        transaction(currency="XOF"),  # not a currency evtopup takes through Paystack
        transaction(status="failed"),
    ],
)
def test_charges_that_are_not_ours_or_not_paid_are_ignored(data: dict[str, Any]) -> None:
    assert events_of(event("charge.success", data)) == []


@pytest.mark.parametrize(
    "name", ["transfer.success", "subscription.create", "invoice.update", "charge.failed", "paymentrequest.success"]
)
def test_other_events_are_ignored(name: str) -> None:
    assert events_of(event(name, transaction())) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"event": 1, "data": {}}',
        b'{"event": "charge.success"}',
        b'{"event": "charge.success", "data": []}',
        b"\xff\xfe",
        b"[" * 100000,
    ],
)
def test_unreadable_bodies(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        events_of(body)


@pytest.mark.parametrize(
    "data",
    [
        transaction(id="abc"),
        transaction(id=-1),
        transaction(reference=None, id=None),
        transaction(currency=None),
        transaction(created_at="yesterday"),
    ],
)
def test_malformed_charges(data: dict[str, Any]) -> None:
    if data.get("reference") is None:
        assert events_of(event("charge.success", data)) == []  # names no payment of ours
        return
    with pytest.raises(MalformedWebhook):
        events_of(event("charge.success", data))


def dispute(resolution: str | None = None, **changes: Any) -> dict[str, Any]:
    # Shaped as PaystackOSS/doc-code-snippets events.js.
    data: dict[str, Any] = {
        "id": 358950,
        "refund_amount": 5800,
        "currency": "NGN",
        "status": "resolved" if resolution else "awaiting-merchant-feedback",
        "resolution": resolution,
        "domain": "live",
        "transaction": {"id": 896467688, "status": "success", "reference": REF, "amount": 5800, "currency": "NGN"},
        "transaction_reference": None,
        "category": "chargeback",
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("name", "resolution", "kind"),
    [
        ("charge.dispute.create", None, EventKind.DISPUTE_OPENED),
        ("charge.dispute.remind", None, EventKind.DISPUTE_OPENED),
        ("charge.dispute.resolve", "auto-accepted", EventKind.DISPUTE_LOST),
        ("charge.dispute.resolve", "merchant-accepted", EventKind.DISPUTE_LOST),
        ("charge.dispute.resolve", "paystack-accepted", EventKind.DISPUTE_LOST),
        ("charge.dispute.resolve", "declined", EventKind.DISPUTE_WON),
    ],
)
def test_disputes(name: str, resolution: str | None, kind: EventKind) -> None:
    [ev] = events_of(event(name, dispute(resolution)))
    assert ev.kind is kind
    assert (ev.amount_minor, ev.currency, ev.cause_id) == (5800, "NGN", "358950")
    assert ev.event_id == f"dispute:358950:{kind}"
    assert ev.payment == PaymentRef(merchant_reference=REF, ids={"transaction": "896467688"})


def test_create_and_remind_are_one_opening() -> None:
    [created] = events_of(event("charge.dispute.create", dispute()))
    [reminded] = events_of(event("charge.dispute.remind", dispute()))
    assert created.event_id == reminded.event_id


@pytest.mark.parametrize("resolution", ["fraudulent-recovered", "fraudulent-lost", "converted-to-chargeback", None])
def test_resolutions_without_a_known_money_flow_change_nothing(resolution: str | None) -> None:
    assert events_of(event("charge.dispute.resolve", dispute(resolution))) == []


def test_a_dispute_without_an_amount_disputes_the_transaction() -> None:
    [ev] = events_of(event("charge.dispute.create", dispute(refund_amount=None, currency=None)))
    assert (ev.amount_minor, ev.currency) == (5800, "NGN")


def test_a_dispute_that_is_not_ours_is_ignored_and_a_broken_one_refused() -> None:
    other = dispute()
    other["transaction"] = {**other["transaction"], "reference": "v3mjfgbnc19v97x"}
    assert events_of(event("charge.dispute.create", other)) == []
    with pytest.raises(MalformedWebhook):
        events_of(event("charge.dispute.create", dispute(transaction="x")))
    with pytest.raises(MalformedWebhook):
        events_of(event("charge.dispute.create", dispute(id=None)))
    assert PaystackDispute.from_json(dispute()).category == "chargeback"


def refund_data(status: str, amount: Any) -> dict[str, Any]:
    return {
        "status": status,
        "transaction_reference": REF,
        "refund_reference": None,
        "amount": amount,
        "currency": "NGN",
        "processor": "instant-transfer",
        "integration": 412829,
        "domain": "live",
    }


def test_refund_notices_take_int_and_string_amounts() -> None:
    processed = refund_notice(parse_event(event("refund.processed", refund_data("processed", "5000"))))
    failed = refund_notice(parse_event(event("refund.failed", refund_data("failed", 20000))))
    assert processed is not None and failed is not None
    assert (processed.amount_minor, failed.amount_minor) == (5000, 20000)
    assert processed.transaction_reference == REF
    # Not outcomes, not ours, not our currency: nothing to look up.
    assert refund_notice(parse_event(event("refund.pending", refund_data("pending", "10000")))) is None
    assert refund_notice(parse_event(event("refund.processing", refund_data("processing", "10000")))) is None
    other = {**refund_data("processed", "5000"), "transaction_reference": "T2154954_412829_3be32076_6lcg3"}
    assert refund_notice(parse_event(event("refund.processed", other))) is None
    with pytest.raises(MalformedWebhook):
        refund_notice(parse_event(event("refund.processed", refund_data("processed", "50.5"))))
    # Refund events are never mapped without the API (the adapter reads the refunds).
    assert events_of(event("refund.processed", refund_data("processed", "5000"))) == []


def refund(refund_id: int, status: str, amount: int = 1000, note: str | None = "evtopup-refund:rk-1") -> PaystackRefund:
    return PaystackRefund.from_json(
        {"id": refund_id, "transaction": 4099260516, "amount": amount, "currency": "NGN", "status": status,
         "merchant_note": note}
    )  # fmt: skip


def test_refund_events_key_each_refund_by_its_id() -> None:
    tx = PaystackTransaction.from_json(transaction())
    refunds = [refund(1, "processed"), refund(2, "processed"), refund(3, "pending"), refund(4, "failed")]
    evs = refund_events(tx, refunds)
    assert [(e.event_id, e.kind, e.cause_id, e.amount_minor) for e in evs] == [
        ("refund:1:refunded", EventKind.REFUNDED, "1", 1000),
        ("refund:2:refunded", EventKind.REFUNDED, "2", 1000),
        ("refund:4:refund_failed", EventKind.REFUND_FAILED, "4", 1000),
    ]
    assert all(e.payment.merchant_reference == REF for e in evs)


def test_a_refund_is_found_by_its_key_only() -> None:
    assert refund(1, "pending").made_for("rk-1")
    assert refund(1, "pending", note="evtopup-refund:rk-1 driver asked").made_for("rk-1")
    assert not refund(1, "pending", note="evtopup-refund:rk-10").made_for("rk-1")
    assert not refund(1, "pending", note=None).made_for("rk-1")


def test_the_answer_envelope() -> None:
    assert parse_answer({"status": True, "message": "ok", "data": {"a": 1}}).ok
    refused = parse_answer({"status": False, "message": "Duplicate Transaction Reference"})
    assert (refused.ok, refused.message) == (False, "Duplicate Transaction Reference")
    assert not parse_answer(None).ok
    assert not parse_answer({"status": "true"}).ok
