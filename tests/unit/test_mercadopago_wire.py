"""services/payments/processors/mercadopago/wire.py: amounts, the preference and refund bodies, the
webhook signature (fixed vectors computed once with openssl, and the official SDK's
``WebhookSignatureValidator.validate`` verdict beside ours), notifications, and the mapping of every
payment state to events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mercadopago.webhook import (  # type: ignore[import-untyped]
    InvalidWebhookSignatureError,
    WebhookSignatureValidator,
)
from pydantic import ValidationError

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
)
from services.payments.processors.mercadopago.config import MercadoPagoSettings
from services.payments.processors.mercadopago.wire import (
    Chargeback,
    Notification,
    Payment,
    Preference,
    acted_notification,
    check_body_agrees,
    compute_signature,
    from_mp_amount,
    idempotency_key,
    json_bytes,
    parse_notification_body,
    payment_events,
    payment_methods_of,
    preference_body,
    refund_body,
    signature_manifest,
    status_event,
    to_mp_amount,
    verify_signature,
)
from shared.money import MoneyError
from shared.settings import WithheldSecret

# Computed once, by hand:
#   printf 'id:123456789;request-id:bb56a2f1-6aae-46ac-982e-9dcd3581d08e;ts:1742505638;' \
#     | openssl dgst -sha256 -hmac 'mp_webhook_secret_8f2k4n6q9s1v3x5z'
SECRET = "mp_webhook_secret_8f2k4n6q9s1v3x5z"
REQUEST_ID = "bb56a2f1-6aae-46ac-982e-9dcd3581d08e"
TS = "1742505638"
V1 = "34a5be12ca3a1702552af3bc4e5bdfbbec8d9854aaf381adb3cc2843092813a8"
# Without the id pair (a notification whose query has no data.id).
V1_NO_ID = "05dfe2f80367350a294cc6a56a00523ca38c641be2152e76977a4f0493956be2"
# An alphanumeric id, signed lower-cased (Mercado Pago's docs) and as received (SDK >= 3.3.0).
MIXED_ID = "ORD01JQ4S4KY8HWQ6NA5PXB65B3D3"
V1_LOWER = "5f51802653facdb3eea9ff7a92a966c854b44855702c20255626dc0650eb9697"
V1_ORIGINAL = "d2052d1f29d69527bf4b481caec057eb6ba281f3159d6ba2801b314d56aea97a"
REFERENCE = str(uuid.UUID("6f1c8a52-3b0e-4d7a-9a51-0c2b7e4d9f10"))


def sdk_accepts(header: str | None, request_id: str | None, data_id: str | None, secret: str) -> bool:
    try:
        WebhookSignatureValidator.validate(header, request_id, data_id, secret)
    except InvalidWebhookSignatureError:
        return False
    return True


def ours_accepts(header: str | None, request_id: str | None, data_id: str | None, secret: str) -> bool:
    try:
        verify_signature(secret, header, request_id, data_id)
    except InvalidSignature:
        return False
    return True


# --- signature ---------------------------------------------------------------------------------


def test_the_manifest_is_mercado_pagos_template_with_missing_pairs_left_out() -> None:
    assert signature_manifest("123", "r", "9") == "id:123;request-id:r;ts:9;"
    assert signature_manifest(None, "r", "9") == "request-id:r;ts:9;"
    assert signature_manifest("123", None, "9") == "id:123;ts:9;"


def test_the_fixed_vectors() -> None:
    assert compute_signature(SECRET, "123456789", REQUEST_ID, TS) == V1
    assert compute_signature(SECRET, None, REQUEST_ID, TS) == V1_NO_ID
    assert verify_signature(SECRET, f"ts={TS},v1={V1}", REQUEST_ID, "123456789") == TS


@pytest.mark.parametrize(
    ("header", "request_id", "data_id", "secret", "accepted"),
    [
        (f"ts={TS},v1={V1}", REQUEST_ID, "123456789", SECRET, True),
        (f" ts = {TS} , v1 = {V1} ", REQUEST_ID, "123456789", SECRET, True),  # spaces, as the SDK strips them
        (f"v1={V1},ts={TS}", REQUEST_ID, "123456789", SECRET, True),  # either order
        (f"TS={TS},V1={V1}", REQUEST_ID, "123456789", SECRET, True),  # keys case-insensitive (SDK)
        (f"ts={TS},v1={V1_NO_ID}", REQUEST_ID, None, SECRET, True),
        (f"ts={TS},v1={V1}", REQUEST_ID, "123456780", SECRET, False),  # another payment
        (f"ts={TS},v1={V1}", "another-request", "123456789", SECRET, False),
        (f"ts=1742505639,v1={V1}", REQUEST_ID, "123456789", SECRET, False),
        (f"ts={TS},v1={V1}", REQUEST_ID, "123456789", SECRET + "x", False),
        (f"ts={TS},v1={V1.upper()}", REQUEST_ID, "123456789", SECRET, False),
        (f"ts={TS}", REQUEST_ID, "123456789", SECRET, False),
        (f"v1={V1}", REQUEST_ID, "123456789", SECRET, False),
        ("garbage", REQUEST_ID, "123456789", SECRET, False),
        ("", REQUEST_ID, "123456789", SECRET, False),
        (None, REQUEST_ID, "123456789", SECRET, False),
        (f"ts={TS},v1={V1_ORIGINAL}", REQUEST_ID, MIXED_ID, SECRET, True),  # as received: SDK >= 3.3.0
    ],
)
def test_our_verdict_is_the_sdks(
    header: str | None, request_id: str, data_id: str | None, secret: str, accepted: bool
) -> None:
    assert sdk_accepts(header, request_id, data_id, secret) is accepted
    assert ours_accepts(header, request_id, data_id, secret) is accepted


def test_a_lower_cased_id_as_the_docs_sign_it_is_accepted_too_where_the_sdk_would_refuse() -> None:
    header = f"ts={TS},v1={V1_LOWER}"
    assert not sdk_accepts(header, REQUEST_ID, MIXED_ID, SECRET)
    assert ours_accepts(header, REQUEST_ID, MIXED_ID, SECRET)
    # Upper-casing is never guessed: a signature over the upper-cased id of a lower-case one fails.
    assert not ours_accepts(f"ts={TS},v1={V1_ORIGINAL}", REQUEST_ID, MIXED_ID.lower(), SECRET)


def test_ts_must_be_ascii_digits() -> None:
    for ts in ("17425056\uff138", "+1742505638", "1_742_505_638", "abc"):
        with pytest.raises(InvalidSignature):
            verify_signature(SECRET, f"ts={ts},v1={V1}", REQUEST_ID, "123456789")


def test_a_non_ascii_signature_is_refused_not_an_error() -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, f"ts={TS},v1=é{V1[1:]}", REQUEST_ID, "123456789")


@given(st.integers(min_value=1, max_value=10**12), st.uuids(), st.integers(min_value=0, max_value=2**40))
def test_ours_and_the_sdk_agree_on_generated_notifications(payment_id: int, request_id: uuid.UUID, ts: int) -> None:
    signature = compute_signature(SECRET, str(payment_id), str(request_id), str(ts))
    header = f"ts={ts},v1={signature}"
    assert sdk_accepts(header, str(request_id), str(payment_id), SECRET)
    assert ours_accepts(header, str(request_id), str(payment_id), SECRET)
    assert not ours_accepts(header, str(request_id), str(payment_id + 1), SECRET)


# --- notifications -----------------------------------------------------------------------------


def payment_body(data_id: str = "123456789", **more: Any) -> bytes:
    body = {
        "action": "payment.updated",
        "api_version": "v1",
        "data": {"id": data_id},
        "date_created": "2026-11-27T20:00:00Z",
        "id": 112233445566,
        "live_mode": True,
        "type": "payment",
        "user_id": "987654321",
        **more,
    }
    return json.dumps(body).encode()


def test_a_payment_notification_names_the_payment_of_its_query() -> None:
    query = {"data.id": "123456789", "type": "payment"}
    assert acted_notification(query, payment_body()) == Notification("payment", "123456789")


def test_a_chargeback_notification_names_its_case() -> None:
    query = {"data.id": "233000061680860000", "type": "topic_chargebacks_wh"}
    body = json.dumps({"type": "topic_chargebacks_wh", "data": {"id": 233000061680860000, "payment_id": 1}}).encode()
    notification = acted_notification(query, body)
    assert notification == Notification("topic_chargebacks_wh", "233000061680860000")
    check_body_agrees(notification, body)  # a number in the body, a string in the query: the same id


@pytest.mark.parametrize(
    "query",
    [
        {"id": "123456789", "topic": "payment"},  # IPN copy
        {"id": "987", "topic": "merchant_order"},
        {"data.id": "987", "type": "topic_merchant_order_wh"},
        {"data.id": "x", "type": "topic_claims_integration_wh"},
        {},
    ],
)
def test_other_topics_are_acknowledged_and_ignored(query: dict[str, str]) -> None:
    assert acted_notification(query, b'{"resource": "x", "topic": "merchant_order"}') is None


def test_a_payment_named_only_in_the_body_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        acted_notification({}, payment_body())


@pytest.mark.parametrize("data_id", [None, "", "12 34", "abc", "1" * 31])
def test_a_payment_notification_needs_a_numeric_data_id(data_id: str | None) -> None:
    query = {"type": "payment"} | ({"data.id": data_id} if data_id is not None else {})
    with pytest.raises(InvalidSignature):
        acted_notification(query, payment_body())


def test_a_body_naming_another_payment_or_topic_than_the_signed_query_is_refused() -> None:
    notification = Notification("payment", "123456789")
    check_body_agrees(notification, payment_body())
    with pytest.raises(InvalidSignature):
        check_body_agrees(notification, payment_body("999"))
    with pytest.raises(InvalidSignature):
        check_body_agrees(notification, payment_body(type="topic_chargebacks_wh"))


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"type": "payment"}', b'{"data": 1}', b"[" * 100000])
def test_unreadable_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        parse_notification_body(body)


# --- amounts -----------------------------------------------------------------------------------


def test_amounts_to_mercado_pago() -> None:
    assert to_mp_amount(2500, "BRL") == Decimal("25.00")
    assert to_mp_amount(1, "MXN") == Decimal("0.01")
    assert to_mp_amount(5000, "CLP") == Decimal("5000")
    for amount, currency in ((0, "BRL"), (-1, "BRL"), (100, "EUR"), (100, "XYZ")):
        with pytest.raises(MoneyError):
            to_mp_amount(amount, currency)


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        (25, "BRL", 2500),
        (25.5, "BRL", 2550),
        (0.1, "BRL", 10),
        (10.01, "MXN", 1001),
        ("10.01", "MXN", 1001),
        (5000, "CLP", 5000),
    ],
)
def test_amounts_from_mercado_pago(value: object, currency: str, minor: int) -> None:
    assert from_mp_amount(value, currency) == minor


@pytest.mark.parametrize("value", [25.005, True, None, "1e3", float("nan"), float("inf"), -1, "abc", [1]])
def test_amounts_that_are_not_exact_are_refused(value: object) -> None:
    with pytest.raises(MoneyError):
        from_mp_amount(value, "BRL")


@given(st.integers(min_value=1, max_value=10**13))
def test_amounts_round_trip_through_json(minor: int) -> None:
    major = to_mp_amount(minor, "BRL")
    sent = json.loads(json_bytes({"amount": major}))["amount"]  # what Mercado Pago parses back
    assert from_mp_amount(sent, "BRL") == minor


def test_json_writes_decimals_as_the_exact_numbers() -> None:
    assert json_bytes({"a": Decimal("25.00"), "b": [Decimal("0.10")], "c": "x"}) == b'{"a":25.00,"b":[0.10],"c":"x"}'
    with pytest.raises(TypeError):
        json_bytes({"a": object()})


# --- requests ----------------------------------------------------------------------------------


def checkout_request(method: str = "pix", amount: int = 2500, currency: str = "BRL") -> CheckoutRequest:
    payment_id = uuid.UUID(REFERENCE)
    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.UUID("0d4d2b8e-7c1a-4f55-8e0b-3f0a4b6c2d11"),
        reference=REFERENCE,
        amount_minor=amount,
        currency=currency,
        method=method,
        return_url="https://pay.example.com/topup/1/return",
        webhook_url="https://pay.example.com/webhooks/mp_main",
        description="Top-up 25 BRL",
    )


def test_the_preference_body() -> None:
    expires = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
    body = json.loads(json_bytes(preference_body(checkout_request(), expires)))
    assert body["items"] == [
        {"id": REFERENCE, "title": "Top-up 25 BRL", "quantity": 1, "unit_price": 25.0, "currency_id": "BRL"}
    ]
    assert body["external_reference"] == REFERENCE
    assert body["notification_url"] == "https://pay.example.com/webhooks/mp_main"
    assert set(body["back_urls"].values()) == {"https://pay.example.com/topup/1/return"}
    assert body["auto_return"] == "approved"
    assert body["expires"] is True
    assert body["expiration_date_to"] == "2026-11-27T21:00:00.000+00:00"
    assert body["metadata"] == {"payment_id": REFERENCE, "order_id": "0d4d2b8e-7c1a-4f55-8e0b-3f0a4b6c2d11"}
    # Pix is a bank transfer: every other excludable type is excluded (the balance cannot be).
    excluded = {e["id"] for e in body["payment_methods"]["excluded_payment_types"]}
    assert excluded == {"ticket", "atm", "credit_card", "debit_card", "prepaid_card"}


@pytest.mark.parametrize(
    ("method", "kept"),
    [
        ("pix", {"bank_transfer"}),
        ("pse", {"bank_transfer"}),
        ("boleto", {"ticket"}),
        ("oxxo", {"ticket"}),
        ("card", {"credit_card", "debit_card", "prepaid_card"}),
        ("account_money", set()),
    ],
)
def test_each_method_keeps_its_payment_types(method: str, kept: set[str]) -> None:
    excluded = {e["id"] for e in payment_methods_of(method)["excluded_payment_types"]}
    assert excluded.isdisjoint(kept)
    assert excluded | kept == {"ticket", "atm", "bank_transfer", "credit_card", "debit_card", "prepaid_card"}
    assert "account_money" not in excluded  # "The payment method Cash in account cannot be excluded"


def test_every_declared_method_is_mapped() -> None:
    for method in MercadoPagoSettings.payment_methods:
        assert payment_methods_of(method)


def test_an_unknown_method_leaves_the_choice_to_checkout_pro() -> None:
    assert payment_methods_of("unknown") == {}


def test_a_preference_body_refuses_an_amount_mercado_pago_cannot_take() -> None:
    with pytest.raises(MoneyError):
        preference_body(checkout_request(currency="EUR"), datetime.now(UTC))


def test_the_refund_body() -> None:
    assert json_bytes(refund_body(1000, "BRL")) == b'{"amount":10.00}'
    with pytest.raises(MoneyError):
        refund_body(0, "BRL")


def test_idempotency_keys_fit_mercado_pagos_limit() -> None:
    assert idempotency_key(REFERENCE) == REFERENCE
    long = "refund:" + "x" * 80
    assert len(idempotency_key(long)) == 64
    assert idempotency_key(long) == idempotency_key(long)
    assert len(idempotency_key("")) == 64


# --- answers and events ------------------------------------------------------------------------


def payment(status: str = "approved", detail: str | None = "accredited", **more: Any) -> Payment:
    body: dict[str, Any] = {
        "id": 1234567890,
        "status": status,
        "status_detail": detail,
        "transaction_amount": 25,
        "currency_id": "BRL",
        "external_reference": REFERENCE,
        "refunds": [],
        **more,
    }
    return Payment.from_json(body)


def kinds(events: list[Any]) -> list[str]:
    return [e.kind.value for e in events]


def test_an_approved_payment_succeeds_and_names_itself() -> None:
    [event] = payment_events(payment())
    assert (event.event_id, event.kind, event.amount_minor, event.currency) == (
        "payment:1234567890:succeeded",
        EventKind.SUCCEEDED,
        2500,
        "BRL",
    )
    assert event.payment == PaymentRef(merchant_reference=REFERENCE, ids={"payment": "1234567890"})


@pytest.mark.parametrize(
    ("status", "detail", "kind"),
    [
        ("pending", "pending_waiting_transfer", "pending"),
        ("pending", "pending_waiting_payment", "pending"),
        ("in_process", "pending_review_manual", "pending"),
        ("authorized", "pending_capture", "pending"),
        ("rejected", "cc_rejected_other_reason", "failed"),
        ("rejected", "bank_error", "failed"),
        ("cancelled", "expired", "expired"),
        ("cancelled", "by_payer", "failed"),
        ("in_mediation", None, "succeeded"),
    ],
)
def test_every_payment_status(status: str, detail: str, kind: str) -> None:
    [event] = payment_events(payment(status, detail))
    assert event.kind.value == kind
    assert event.event_id == f"payment:1234567890:{kind}"
    if kind in ("failed", "expired"):
        assert event.reason == detail
    if kind != "succeeded":
        assert event.payment.ids == {}  # a declined attempt is not the payment refunds go to


def test_refunds_each_count_once_by_their_id() -> None:
    refunds = [
        {"id": 11, "amount": 10, "status": "approved"},
        {"id": 12, "amount": 5.5, "status": "approved"},
        {"id": 13, "amount": 1, "status": "in_process"},
        {"id": 14, "amount": 2, "status": "rejected"},
    ]
    events = payment_events(payment("approved", "partially_refunded", refunds=refunds))
    assert kinds(events) == ["succeeded", "refunded", "refunded", "refund_failed"]
    assert [(e.event_id, e.amount_minor, e.cause_id) for e in events[1:]] == [
        ("refund:11:refunded", 1000, "11"),
        ("refund:12:refunded", 550, "12"),
        ("refund:14:refund_failed", 200, "14"),
    ]
    refunded = payment_events(
        payment("refunded", "refunded", refunds=[*refunds[:2], {"id": 15, "amount": 9.5, "status": "approved"}])
    )
    assert [e.event_id for e in refunded] == [
        "payment:1234567890:succeeded",
        "refund:11:refunded",
        "refund:12:refunded",
        "refund:15:refunded",
    ]


@pytest.mark.parametrize(
    ("detail", "kind"),
    [
        ("in_process", "dispute_opened"),
        ("settled", "dispute_lost"),
        ("reimbursed", "dispute_won"),
        (None, "dispute_opened"),
    ],
)
def test_chargebacks_are_the_payments_charged_back_status(detail: str | None, kind: str) -> None:
    events = payment_events(payment("charged_back", detail))
    assert kinds(events) == ["succeeded", kind]
    dispute = events[1]
    assert (dispute.event_id, dispute.cause_id, dispute.amount_minor) == (
        f"chargeback:1234567890:{kind}",
        "chargeback:1234567890",
        2500,
    )


def test_a_payment_that_is_not_ours_says_nothing() -> None:
    assert payment_events(payment(external_reference=None)) == []
    assert payment_events(payment(currency_id="VES")) == []


@pytest.mark.parametrize(
    "body",
    [
        {"status": "approved"},
        {"id": 1, "status": "approved", "currency_id": "BRL", "transaction_amount": 25.001},
        {"id": 1, "status": "approved", "currency_id": "BRL", "transaction_amount": "x"},
        {"id": 1, "status": "approved", "currency_id": "BRL", "transaction_amount": 1, "refunds": {}},
        {"id": 1, "status": "approved", "currency_id": "BRL", "transaction_amount": 1, "refunds": [{"amount": 1}]},
        {"id": [1], "status": "approved"},
        [],
    ],
)
def test_unreadable_payments_are_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        Payment.from_json(body)


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        payment_events(payment("teleported", None))


def test_a_chargeback_names_its_payments() -> None:
    chargeback = Chargeback.from_json({"id": "234000062890459000", "payments": [86439942806], "amount": 1000.5})
    assert chargeback.payments == ("86439942806",)
    for bad in ({"id": "1", "payments": []}, {"id": "1", "payments": ["x"]}, {"payments": [1]}, {"id": "1"}):
        with pytest.raises(ValueError):
            Chargeback.from_json(bad)


def test_a_preference_answer() -> None:
    preference = Preference.from_json(
        {
            "id": "202809963-920c288b-4ebb-40be-966f-700250fa5370",
            "init_point": "https://www.mercadopago.com.br/checkout/v1/redirect?pref_id=202809963-920c288b",
            "sandbox_init_point": "https://sandbox.mercadopago.com.br/checkout/v1/redirect?pref_id=202809963",
            "external_reference": REFERENCE,
            "items": [{"title": "t", "quantity": 1, "unit_price": 25, "currency_id": "BRL"}],
            "expires": True,
            "expiration_date_to": "2026-11-27T18:00:00.000-03:00",
        }
    )
    assert (preference.amount_minor, preference.currency) == (2500, "BRL")
    lapse = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
    assert preference.expired_at(lapse) and not preference.expired_at(lapse - timedelta(seconds=1))
    with pytest.raises(ValueError):
        Preference.from_json({"id": "1", "expires": True, "expiration_date_to": "2026-11-27T18:00:00"})


def test_the_status_of_a_payment_from_every_attempt() -> None:
    rejected = payment("rejected", "cc_rejected_other_reason", id=1)
    approved = payment(id=2)
    pending = payment("pending", "pending_waiting_transfer", id=3)
    assert status_event(REFERENCE, [rejected, approved], False).kind is EventKind.SUCCEEDED
    assert status_event(REFERENCE, [approved], False).payment.ids == {"payment": "2"}
    assert status_event(REFERENCE, [pending, rejected], False).kind is EventKind.PENDING
    assert status_event(REFERENCE, [rejected], False).kind is EventKind.FAILED
    assert status_event(REFERENCE, [rejected], True).kind is EventKind.EXPIRED
    assert status_event(REFERENCE, [], False).kind is EventKind.PENDING
    expired = status_event(REFERENCE, [], True)
    assert (expired.event_id, expired.kind, expired.payment) == (
        f"poll:{REFERENCE}:expired",
        EventKind.EXPIRED,
        PaymentRef(REFERENCE),
    )
    assert status_event(REFERENCE, [payment(id=4, external_reference="other")], False).kind is EventKind.PENDING


# --- settings ----------------------------------------------------------------------------------


def settings(**more: Any) -> MercadoPagoSettings:
    values: dict[str, Any] = {
        "processor": "mercadopago",
        "methods": ["pix"],
        "access_token": "APP_USR-1234567890123456-112720-abcdef",
        "webhook_secret": SECRET,
        **more,
    }
    return MercadoPagoSettings.model_validate(values)


def test_settings() -> None:
    assert settings().api_base_url == "https://api.mercadopago.com"
    assert settings(environment="test", access_token="TEST-1234567890123456-112720-abcdef").environment == "test"
    assert settings(environment="test").environment == "test"  # test users' credentials are APP_USR-
    assert settings(access_token=WithheldSecret()).methods == ["pix"]


@pytest.mark.parametrize(
    "more",
    [
        {"access_token": "TEST-1234567890123456-112720-abcdef"},  # a test token takes no production money
        {"access_token": "APP_USR-a"},  # too short
        {"access_token": "PUBLIC-KEY-1234567890123456"},
        {"webhook_secret": "short"},
        {"methods": ["ideal"]},
    ],
)
def test_settings_refused(more: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as error:
        settings(**more)
    assert "1234567890123456" not in str(error.value)
