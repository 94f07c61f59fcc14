"""Xendit's wire format: amounts, request bodies, the callback token, callbacks, invoices, refunds and
their events. Fixed vectors are Xendit's own samples (the captured PAID callback quoted by Xendit
integrators, the SDK docs' ids) or written by hand, never produced by the code under test."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    RefundRequest,
    WebhookAuth,
)
from services.payments.processors.xendit import XenditAdapter, wire
from services.payments.processors.xendit.config import XenditSettings
from shared.money import MoneyError

# A PAID invoice callback as Xendit sent it (captured sample published by an integrator,
# edrus.gitbook.io "notification for your payments"), written as Xendit writes it.
CAPTURED_PAID = b"""{
    "id": "62f00ac409accd62c85673c4",
    "amount": 8500000,
    "status": "PAID",
    "created": "2022-08-07T18:56:04.761Z",
    "is_high": false,
    "paid_at": "2022-08-07T18:58:35.534Z",
    "updated": "2022-08-07T18:58:35.843Z",
    "user_id": "6279ce4495d10c9afc3171b8",
    "currency": "IDR",
    "bank_code": "MANDIRI",
    "description": "Invoice Demo #INV0048",
    "external_id": "INV0048/VIII/2022",
    "paid_amount": 8500000,
    "merchant_name": "aplikasi keuangan",
    "initial_amount": 8500000,
    "payment_method": "BANK_TRANSFER",
    "payment_channel": "MANDIRI",
    "payment_destination": "8860861087714",
    "failure_redirect_url": "https://projeq.id/?status=failure&external_id=INV0035/VIII/2022",
    "success_redirect_url": "https://projeq.id/?status=success&external_id=INV0035/VIII/2022"
}"""
INVOICE_ID = "5f4708b7bd394b0400b96276"  # the SDK docs' example invoice id
REFUND_ID = "rfd-1fdaf346-dd2e-4b6c-b938-124c7167a822"  # the SDK docs' example refund id
REFERENCE = "3f0c8f6e-8d5a-4bb4-9c57-0a3c1d2e4f50"


def invoice_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": INVOICE_ID,
        "external_id": REFERENCE,
        "user_id": "6279ce4495d10c9afc3171b8",
        "status": "PENDING",
        "merchant_name": "EV Charging Co",
        "amount": Decimal("25.05"),
        "currency": "PHP",
        "invoice_url": f"https://checkout.xendit.co/web/{INVOICE_ID}",
        "created": "2026-11-02T10:00:00.000Z",
        "updated": "2026-11-02T10:00:00.000Z",
        "expiry_date": "2026-11-03T10:00:00.000Z",
    }
    return body | overrides


def refund_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": REFUND_ID,
        "invoice_id": INVOICE_ID,
        "payment_request_id": None,
        "amount": 10,
        "currency": "PHP",
        "status": "SUCCEEDED",
        "reason": "OTHERS",
        "reference_id": "refund-key-1",
        "metadata": {"external_id": REFERENCE},
        "created": "2026-11-02T11:00:00.000Z",
        "updated": "2026-11-02T11:00:05.000Z",
    }
    return body | overrides


def checkout_request(**overrides: Any) -> CheckoutRequest:
    payment_id = uuid.UUID(REFERENCE)
    values: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.UUID("11111111-2222-4333-8444-555555555555"),
        "reference": str(payment_id),
        "amount_minor": 2505,
        "currency": "PHP",
        "method": "gcash",
        "return_url": "https://pay.example.com/topup/abc/return",
        "webhook_url": "https://pay.example.com/webhooks/xendit_main",
        "description": "Balance top-up",
        "locale": "id-ID",
    }
    return CheckoutRequest(**(values | overrides))


# --- amounts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "wire_amount", "text"),
    [
        (2_500_000, "IDR", 25000, "25000"),  # ISO counts IDR in sen; Xendit in whole rupiah
        (25_000, "VND", 25000, "25000"),  # no minor unit at all
        (2505, "PHP", Decimal("25.05"), "25.05"),
        (2500, "PHP", Decimal("25.00"), "25"),
        (1, "THB", Decimal("0.01"), "0.01"),
        (123456789012, "MYR", Decimal("1234567890.12"), "1234567890.12"),
        (999, "USD", Decimal("9.99"), "9.99"),
    ],
)
def test_amounts_go_out_exactly(minor: int, currency: str, wire_amount: int | Decimal, text: str) -> None:
    amount = wire.to_xendit_amount(minor, currency)
    assert amount == wire_amount and type(amount) is type(wire_amount)
    assert json.dumps(wire.amount_json(amount)) == text


@pytest.mark.parametrize(
    ("minor", "currency"),
    [
        (2_500_050, "IDR"),  # 25000.50 rupiah: Xendit would truncate the sen
        (1, "IDR"),
        (2500, "EUR"),  # not an invoice currency
        (2500, "KES"),
        (0, "PHP"),
        (-100, "PHP"),
    ],
)
def test_amounts_xendit_cannot_take_are_refused(minor: int, currency: str) -> None:
    with pytest.raises(MoneyError):
        wire.to_xendit_amount(minor, currency)


@pytest.mark.parametrize("value", [True, 25.5, "2505", None])
def test_only_integer_minor_units_go_out(value: Any) -> None:
    with pytest.raises(MoneyError):
        wire.to_xendit_amount(value, "PHP")


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        (b"25000", "IDR", 2_500_000),
        (b"25000.0", "IDR", 2_500_000),
        (b"25.05", "PHP", 2505),
        (b"25.1", "THB", 2510),
        (b"25000", "VND", 25000),
    ],
)
def test_amounts_come_in_exactly(text: bytes, currency: str, minor: int) -> None:
    assert wire.from_xendit_amount(wire.load_json(text), currency) == minor


@pytest.mark.parametrize(
    ("value", "currency"),
    [
        (Decimal("25.055"), "PHP"),
        (Decimal("0.5"), "VND"),
        (Decimal("-1"), "PHP"),
        (True, "PHP"),
        ("25.00", "PHP"),
        (Decimal(25), "EUR"),
    ],
)
def test_amounts_that_are_not_money_are_refused(value: Any, currency: str) -> None:
    with pytest.raises(MoneyError):
        wire.from_xendit_amount(value, currency)


@given(st.integers(min_value=1, max_value=10**13), st.sampled_from(["PHP", "THB", "MYR", "USD"]))
def test_cent_currencies_round_trip(minor: int, currency: str) -> None:
    text = json.dumps(wire.amount_json(wire.to_xendit_amount(minor, currency)))
    assert wire.from_xendit_amount(wire.load_json(text.encode()), currency) == minor
    assert Decimal(text) == Decimal(minor).scaleb(-2)


@given(st.integers(min_value=1, max_value=10**12))
def test_rupiah_round_trip_in_whole_units(rupiah: int) -> None:
    amount = wire.to_xendit_amount(rupiah * 100, "IDR")
    assert amount == rupiah and json.dumps(wire.amount_json(amount)) == str(rupiah)
    assert wire.from_xendit_amount(amount, "IDR") == rupiah * 100


# --- requests --------------------------------------------------------------------------------------


def test_the_invoice_body_has_every_field_right() -> None:
    body = wire.invoice_body(checkout_request(), 3600)
    assert json.loads(json.dumps(body)) == {
        "external_id": REFERENCE,
        "amount": 25.05,
        "currency": "PHP",
        "description": "Balance top-up",
        "invoice_duration": 3600,
        "success_redirect_url": "https://pay.example.com/topup/abc/return?xendit=success",
        "failure_redirect_url": "https://pay.example.com/topup/abc/return?xendit=failure",
        "payment_methods": ["GCASH"],
        "should_send_email": False,
        "metadata": {"payment_id": REFERENCE, "order_id": "11111111-2222-4333-8444-555555555555"},
        "locale": "id",
    }
    assert '"amount": 25.05' in json.dumps(body)


@pytest.mark.parametrize(
    ("method", "codes"),
    [
        ("card", ["CREDIT_CARD"]),
        ("bank_transfer", ["BCA", "BNI", "BRI", "MANDIRI", "PERMATA", "BSI"]),
        ("qris", ["QRIS"]),
        ("ovo", ["OVO"]),
        ("dana", ["DANA"]),
        ("shopeepay", ["SHOPEEPAY"]),
        ("linkaja", ["LINKAJA"]),
        ("gcash", ["GCASH"]),
        ("grabpay", ["GRABPAY"]),
        ("paymaya", ["PAYMAYA"]),
        ("promptpay", ["PROMPTPAY"]),
    ],
)
def test_each_method_maps_to_xendits_codes(method: str, codes: list[str]) -> None:
    assert wire.invoice_body(checkout_request(method=method), 3600)["payment_methods"] == codes


def test_every_method_drivers_can_pick_has_codes() -> None:
    assert set(XenditSettings.payment_methods) == set(wire.METHOD_CODES)


def test_an_unknown_method_or_locale() -> None:
    with pytest.raises(ValueError, match="no payment method"):
        wire.invoice_body(checkout_request(method="mpesa"), 3600)
    assert "locale" not in wire.invoice_body(checkout_request(locale="de"), 3600)
    assert "locale" not in wire.invoice_body(checkout_request(locale=None), 3600)
    assert wire.invoice_body(checkout_request(locale="en_GB"), 3600)["locale"] == "en"
    redirect = wire.invoice_body(checkout_request(return_url="https://x.test/r?o=1"), 60)["success_redirect_url"]
    assert redirect == "https://x.test/r?o=1&xendit=success"


def test_the_refund_body() -> None:
    request = RefundRequest(
        payment=PaymentRef(merchant_reference=REFERENCE, processor_reference=INVOICE_ID),
        refund_key="refund-key-1",
        amount_minor=1000,
        currency="PHP",
        reason="driver asked",
    )
    assert wire.refund_body(INVOICE_ID, request) == {
        "invoice_id": INVOICE_ID,
        "reference_id": "refund-key-1",
        "amount": 10,
        "currency": "PHP",
        "reason": "OTHERS",
        "metadata": {"refund_key": "refund-key-1", "external_id": REFERENCE, "reason": "driver asked"},
    }
    with pytest.raises(MoneyError):
        wire.refund_body(INVOICE_ID, RefundRequest(request.payment, "k", 150, "IDR", "x"))


# --- the callback token ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("presented", "valid"),
    [
        ("tok_0123456789abcdefXYZ", True),
        ("tok_0123456789abcdefXYz", False),
        ("tok_0123456789abcdef", False),  # a prefix
        ("tok_0123456789abcdefXYZ ", False),
        ("", False),
        (None, False),
        ("tök_0123456789abcdefXYZ", False),  # not ASCII: never equal, never an error
    ],
)
def test_the_callback_token_is_compared_exactly(presented: str | None, valid: bool) -> None:
    assert wire.token_valid("tok_0123456789abcdefXYZ", presented) is valid


# --- callbacks -------------------------------------------------------------------------------------


def test_the_captured_paid_callback_is_read() -> None:
    callback = wire.parse_callback(CAPTURED_PAID)
    assert callback == wire.InvoiceCallback("62f00ac409accd62c85673c4", "INV0048/VIII/2022", "PAID")


def test_a_refund_callback_is_read() -> None:
    body = json.dumps(
        {"event": "refund.failed", "business_id": "6279ce4495d10c9afc3171b8", "created": "x", "data": refund_json()},
        default=str,
    ).encode()
    assert wire.parse_callback(body) == wire.RefundCallback("refund.failed", REFUND_ID)


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "payment.capture", "data": {}}',  # the Payments API's, not an invoice's
        b'{"id": "5f4708b7bd394b0400b96276", "account_number": "123", "bank_code": "BCA"}',  # a VA callback
    ],
)
def test_other_products_callbacks_are_not_ours(body: bytes) -> None:
    assert isinstance(wire.parse_callback(body), wire.OtherCallback)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"id": "x", "external_id": "r", "status": "PENDING"}',  # Xendit sends no PENDING callback
        b'{"id": "x", "external_id": "r", "status": "REFUNDED"}',
        b'{"id": "../etc", "external_id": "r", "status": "PAID"}',
        b'{"id": "x", "external_id": "", "status": "PAID"}',
        b'{"event": "refund.succeeded"}',
        b'{"event": "refund.succeeded", "data": {"id": 5}}',
        b'{"id": NaN, "external_id": "r", "status": "PAID"}',
        b"\xff\xfe",
    ],
)
def test_unreadable_callbacks_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        wire.parse_callback(body)


# --- invoices and their events ---------------------------------------------------------------------


def test_a_paid_invoice_states_what_was_paid() -> None:
    invoice = wire.XenditInvoice.from_json(
        invoice_json(status="PAID", paid_amount=Decimal("25.05"), payment_id="pay-1")
    )
    event = wire.invoice_event(invoice, poll=False)
    assert event.event_id == f"{INVOICE_ID}:succeeded"
    assert event.kind is EventKind.SUCCEEDED
    assert (event.amount_minor, event.currency) == (2505, "PHP")
    assert event.payment == PaymentRef(merchant_reference=REFERENCE, processor_reference=INVOICE_ID)
    polled = wire.invoice_event(invoice, poll=True)
    assert polled.event_id == f"poll:{INVOICE_ID}:succeeded"


def test_settled_is_paid_with_the_same_event_id() -> None:
    paid = wire.XenditInvoice.from_json(invoice_json(status="PAID", paid_amount=Decimal("25.05")))
    settled = wire.XenditInvoice.from_json(invoice_json(status="SETTLED", paid_amount=Decimal("25.05")))
    assert wire.invoice_event(paid, poll=False) == wire.invoice_event(settled, poll=False)


def test_a_paid_amount_other_than_the_invoices_is_stated() -> None:
    invoice = wire.XenditInvoice.from_json(invoice_json(status="PAID", paid_amount=Decimal("25.00")))
    assert wire.invoice_event(invoice, poll=False).amount_minor == 2500


def test_an_invoice_that_ran_out_expired_one_ended_early_failed() -> None:
    ran_out = wire.XenditInvoice.from_json(
        invoice_json(status="EXPIRED", updated="2026-11-03T10:00:02.000Z", expiry_date="2026-11-03T10:00:00.000Z")
    )
    ended = wire.XenditInvoice.from_json(
        invoice_json(status="EXPIRED", updated="2026-11-02T10:05:00.000Z", expiry_date="2026-11-03T10:00:00.000Z")
    )
    undated = wire.XenditInvoice.from_json({k: v for k, v in invoice_json(status="EXPIRED").items() if k != "updated"})
    assert wire.invoice_event(ran_out, poll=False).kind is EventKind.EXPIRED
    assert wire.invoice_event(undated, poll=False).kind is EventKind.EXPIRED
    event = wire.invoice_event(ended, poll=False)
    assert (event.kind, event.event_id) == (EventKind.FAILED, f"{INVOICE_ID}:failed")
    # An unpaid ending names the invoice alone: a duplicate the adapter expired carries our reference too.
    assert event.payment == PaymentRef(processor_reference=INVOICE_ID)


def test_a_pending_invoice() -> None:
    event = wire.invoice_event(wire.XenditInvoice.from_json(invoice_json()), poll=True)
    assert (event.kind, event.event_id, event.amount_minor) == (EventKind.PENDING, f"poll:{INVOICE_ID}:pending", 2505)


@pytest.mark.parametrize(
    "overrides",
    [
        {"status": "VOIDED"},
        {"currency": "EUR"},
        {"amount": "25.05"},
        {"amount": Decimal("25.055")},
        {"id": None},
        {"id": "a/b"},
        {"external_id": 5},
        {"created": "yesterday"},
    ],
)
def test_unreadable_invoices_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        wire.XenditInvoice.from_json(invoice_json(**overrides))


def test_keep_one_keeps_the_paid_or_oldest_and_expires_the_other_payable_ones() -> None:
    def inv(id_: str, created: str, status: str = "PENDING") -> wire.XenditInvoice:
        return wire.XenditInvoice.from_json(invoice_json(id=id_, created=created, status=status))

    old, young, gone = (
        inv("a1", "2026-11-02T10:00:00Z"),
        inv("b2", "2026-11-02T10:00:05Z"),
        inv("c3", "2026-11-02T09:00:00Z", "EXPIRED"),
    )
    assert wire.keep_one([young, gone, old]) == (old, [young])
    paid = inv("d4", "2026-11-02T10:00:09Z", "PAID")
    assert wire.keep_one([old, paid, young]) == (paid, [old, young])
    assert wire.keep_one([gone]) == (None, [])
    assert wire.keep_one([]) == (None, [])


def test_invoice_callbacks_are_confirmed_by_the_fetched_invoice() -> None:
    paid = wire.XenditInvoice.from_json(invoice_json(status="SETTLED", paid_amount=Decimal("25.05")))
    assert wire.invoice_callback_confirmed(wire.InvoiceCallback(INVOICE_ID, REFERENCE, "PAID"), paid)
    assert not wire.invoice_callback_confirmed(wire.InvoiceCallback(INVOICE_ID, REFERENCE, "EXPIRED"), paid)
    assert not wire.invoice_callback_confirmed(wire.InvoiceCallback(INVOICE_ID, "another", "PAID"), paid)
    assert not wire.invoice_callback_confirmed(wire.InvoiceCallback("ffff", REFERENCE, "PAID"), paid)
    pending = wire.XenditInvoice.from_json(invoice_json())
    assert not wire.invoice_callback_confirmed(wire.InvoiceCallback(INVOICE_ID, REFERENCE, "PAID"), pending)


# --- refunds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [("SUCCEEDED", EventKind.REFUNDED), ("FAILED", EventKind.REFUND_FAILED), ("CANCELLED", EventKind.REFUND_FAILED)],
)
def test_refund_outcomes(status: str, kind: EventKind) -> None:
    refund = wire.XenditRefund.from_json(refund_json(status=status, failure_code="INSUFFICIENT_BALANCE"))
    [event] = wire.refund_events(refund)
    assert (event.event_id, event.kind, event.cause_id) == (f"{REFUND_ID}:{kind}", kind, REFUND_ID)
    assert (event.amount_minor, event.currency) == (1000, "PHP")
    assert event.payment == PaymentRef(merchant_reference=REFERENCE, processor_reference=INVOICE_ID)
    assert event.reason == (None if kind is EventKind.REFUNDED else "INSUFFICIENT_BALANCE")


def test_pending_refunds_and_refunds_of_other_products_are_no_events() -> None:
    assert wire.refund_events(wire.XenditRefund.from_json(refund_json(status="PENDING"))) == []
    other = wire.XenditRefund.from_json(refund_json(invoice_id=None, payment_request_id="pr-1"))
    assert wire.refund_events(other) == []


def test_refund_callbacks_are_confirmed_by_the_fetched_refund() -> None:
    refund = wire.XenditRefund.from_json(refund_json())
    assert wire.refund_callback_confirmed(wire.RefundCallback("refund.succeeded", REFUND_ID), refund)
    assert not wire.refund_callback_confirmed(wire.RefundCallback("refund.failed", REFUND_ID), refund)
    pending = wire.XenditRefund.from_json(refund_json(status="PENDING"))
    assert not wire.refund_callback_confirmed(wire.RefundCallback("refund.succeeded", REFUND_ID), pending)


def test_error_bodies() -> None:
    assert wire.error_of({"error_code": "API_VALIDATION_ERROR", "message": "bad"}) == ("API_VALIDATION_ERROR", "bad")
    assert wire.error_of([1]) == (None, None)
    assert wire.error_of({"error_code": 5}) == (None, None)


# --- settings and capabilities ---------------------------------------------------------------------


def settings(**overrides: Any) -> XenditSettings:
    values: dict[str, Any] = {
        "processor": "xendit",
        "methods": ["gcash"],
        "secret_key": "xnd_production_" + "a" * 40,
        "callback_token": "t" * 32,
    }
    return XenditSettings.model_validate(values | overrides)


def test_the_key_must_match_the_environment() -> None:
    assert settings().invoice_duration_s == 86_400
    settings(environment="test", secret_key="xnd_development_" + "b" * 40)
    with pytest.raises(ValidationError, match="xnd_production_"):
        settings(secret_key="xnd_development_" + "b" * 40)
    with pytest.raises(ValidationError, match="xnd_development_"):
        settings(environment="test")
    with pytest.raises(ValidationError, match="xnd_production_"):
        settings(secret_key="xnd_public_production_" + "c" * 40)


@pytest.mark.parametrize(
    "overrides",
    [
        {"callback_token": "short"},
        {"callback_token": " " + "t" * 32},
        {"methods": ["mpesa"]},
        {"invoice_duration_s": 10},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(**overrides)


def test_capabilities_say_what_the_adapter_does() -> None:
    capabilities = XenditAdapter.capabilities
    assert capabilities.webhook_auth is WebhookAuth.STATUS_QUERY
    assert capabilities.next_step is NextStepKind.REDIRECT
    assert (capabilities.refunds, capabilities.partial_refunds, capabilities.disputes) == (True, True, False)
    assert capabilities.create_is_idempotent and capabilities.replay_window_s is None
