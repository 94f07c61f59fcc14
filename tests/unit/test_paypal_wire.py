"""services/payments/processors/paypal/wire.py: amounts, request bodies, the signed string (a fixed vector
whose CRC32 was computed independently with gzip), an RSA vector made once with openssl, the verbatim
splice of the raw body into the verification request, and every webhook mapping (PayPal's own sample
events where PayPal publishes one)."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
import zlib
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import load_pem_x509_certificate
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from pydantic import ValidationError

from services.payments.processors.base import (
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    ProcessorEvent,
    ProcessorRefused,
    Redirect,
    WebhookAuth,
)
from services.payments.processors.paypal import Adapter, PayPalAdapter
from services.payments.processors.paypal.config import PayPalSettings
from services.payments.processors.paypal.wire import (
    PAYPAL_DECIMALS,
    WireError,
    access_token,
    captured_order_event,
    check_request_id,
    checkout_from_order,
    create_order_body,
    minor_from_money,
    order_status_event,
    parse_paypal_webhook,
    paypal_error_reason,
    paypal_money,
    paypal_transmission_message,
    paypal_value,
    refund_answer,
    refund_body,
    verification_request_body,
    verification_verdict,
)
from tests.simulators.paypal import PayPalSimulator, split_verification_request

# --------------------------------------------------------------------------------------------------
# Fixed vectors
# --------------------------------------------------------------------------------------------------

VECTOR_TRANSMISSION_ID = "69cd13f0-d67a-11e5-baa3-778b53f4ae55"
VECTOR_TRANSMISSION_TIME = "2016-02-18T20:01:35Z"
VECTOR_WEBHOOK_ID = "1JE4291016473214C"
VECTOR_BODY = b'{"id":"WH-2WR32451HC0233532-67976317FL4543714","event_type":"PAYMENT.CAPTURE.COMPLETED"}'
# printf '%s' "$VECTOR_BODY" | gzip -c | tail -c8 | od -An -tu4   ->  3863852516 (CRC32, then the size)
# Above 2**31: a signed CRC32 (Java's int, PHP on 32 bits) would print a negative number here.
VECTOR_CRC32 = 3863852516
VECTOR_MESSAGE = b"69cd13f0-d67a-11e5-baa3-778b53f4ae55|2016-02-18T20:01:35Z|1JE4291016473214C|3863852516"
# openssl genrsa 2048 > k.pem; openssl rsa -in k.pem -pubout; printf '%s' "$VECTOR_MESSAGE" > msg
# openssl dgst -sha256 -sign k.pem msg | base64 -w0     (the private key was thrown away)
VECTOR_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsM2SxYPCFocEiPaGYdoK
ngbmzY58OBOsX/05n/aURIClkfuTht+jZz/5mjyVD74C90wn8uus1eRWvYUA1yd/
4+BFD78/V18540bozs8uKBlSmkEvAZ3fA0sfJfzNOg/UM+XjJKdHDXkbxtqmKI7g
nzsNoH+BhVOsjj5NhhuVL7IN9Q4b1bkKsOZ0CMl1PFAi5SlgtuxmtPgYUS6OHvgS
Uz7PD3yB98IDY2URXodO5AYLKBH7EfyCjMbaW1O17JM4JQMS/mffi9bu4zmYYk9v
xSlFFabYzFxAxKdQDyy08en8dYGYjMfBMpNpA98z4FNpVhT0/KX1CekAGYc48+eu
YQIDAQAB
-----END PUBLIC KEY-----
"""
VECTOR_SIGNATURE = (
    "AZHZfgBKqu+2k7//G6g0erPRlNMhTI01HO7BmeFzRQIiwOVPjW+LupvAbA43j+qU+/AdkLBHi4gS3Oa43m8WgvW00NSga86HdcgCzd6F7aD5"
    "ms2s2rmFmOFNLEFvxVSv8GJ7duvyXBrcpWJQhRe61Ul0eNnZ20chklMvS8zR2VCOKOhm2D5y2DzRBqLwaf6h0AuTiRXDW+cBgzBoyDa5HOK+"
    "hd2VJ8Sd6QLGDj7IaMkkcz8lt0aVjpYLv8I7JwABOt5gCYhUSLlu0KqwIBKyxCdO85nMushW2pPNjDVSGSjaazWopGmSfqZB55f4QYUVhlIK"
    "bGOs0YjoAG34t+3Ezw=="
)


def rsa_verifies(public_key: rsa.RSAPublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64), message, padding.PKCS1v15(), hashes.SHA256())
    except CryptoInvalidSignature:
        return False
    return True


def vector_key() -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(VECTOR_PUBLIC_KEY)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def test_the_signed_string_is_id_time_webhook_id_and_the_unsigned_crc32() -> None:
    assert zlib.crc32(VECTOR_BODY) == VECTOR_CRC32
    message = paypal_transmission_message(
        VECTOR_TRANSMISSION_ID, VECTOR_TRANSMISSION_TIME, VECTOR_WEBHOOK_ID, VECTOR_BODY
    )
    assert message == VECTOR_MESSAGE


def test_the_openssl_vector_verifies_with_cryptography_and_a_changed_byte_does_not() -> None:
    key = vector_key()
    assert rsa_verifies(key, VECTOR_SIGNATURE, VECTOR_MESSAGE)
    tampered_body = VECTOR_BODY.replace(b"COMPLETED", b"COMPLETEd")
    tampered = paypal_transmission_message(
        VECTOR_TRANSMISSION_ID, VECTOR_TRANSMISSION_TIME, VECTOR_WEBHOOK_ID, tampered_body
    )
    assert not rsa_verifies(key, VECTOR_SIGNATURE, tampered)
    other_webhook = paypal_transmission_message(VECTOR_TRANSMISSION_ID, VECTOR_TRANSMISSION_TIME, "OTHER", VECTOR_BODY)
    assert not rsa_verifies(key, VECTOR_SIGNATURE, other_webhook)


def test_the_simulator_signs_what_a_hand_built_string_and_cryptography_accept() -> None:
    """The simulator's signature checked without its own code: the message is built here by hand
    and verified with the public key of the certificate it serves."""
    simulator = PayPalSimulator()
    certificate = load_pem_x509_certificate(simulator.certificate_pem)
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    body = b'{"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}}'
    headers = simulator.signed_headers(body)
    assert headers["PAYPAL-AUTH-ALGO"] == "SHA256withRSA"
    by_hand = (
        f"{headers['PAYPAL-TRANSMISSION-ID']}|{headers['PAYPAL-TRANSMISSION-TIME']}|"
        f"{simulator.webhook_id}|{zlib.crc32(body) & 0xFFFFFFFF}"
    ).encode()
    assert rsa_verifies(public_key, headers["PAYPAL-TRANSMISSION-SIG"], by_hand)
    assert not rsa_verifies(public_key, headers["PAYPAL-TRANSMISSION-SIG"], by_hand.replace(b"|", b"/", 1))
    other = simulator.with_other_secret().signed_headers(body)
    by_hand_other = (
        f"{other['PAYPAL-TRANSMISSION-ID']}|{other['PAYPAL-TRANSMISSION-TIME']}|"
        f"{simulator.webhook_id}|{zlib.crc32(body) & 0xFFFFFFFF}"
    ).encode()
    assert not rsa_verifies(public_key, other["PAYPAL-TRANSMISSION-SIG"], by_hand_other)


# --------------------------------------------------------------------------------------------------
# The verification request
# --------------------------------------------------------------------------------------------------


def webhook_headers(**changes: str | None) -> CIMultiDict[str]:
    headers = {
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        "PAYPAL-CERT-URL": "https://api-m.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
        "PAYPAL-TRANSMISSION-ID": VECTOR_TRANSMISSION_ID,
        "PAYPAL-TRANSMISSION-SIG": VECTOR_SIGNATURE,
        "PAYPAL-TRANSMISSION-TIME": VECTOR_TRANSMISSION_TIME,
        "Content-Type": "application/json",
    }
    for name, value in changes.items():
        header = name.upper().replace("_", "-")
        if value is None:
            headers.pop(header)
        else:
            headers[header] = value
    # Lower-case on the wire: the lookup must not care.
    return CIMultiDict((name.lower(), value) for name, value in headers.items())


ODD_BODY = (
    b'{ "id" : "WH-1",\n  "event_type":"PAYMENT.CAPTURE.COMPLETED", '
    b'"summary": "caf\\u00e9 \xe2\x82\xac", "resource": {} }  '
)


def test_the_raw_body_is_spliced_into_the_verification_request_byte_for_byte() -> None:
    request = verification_request_body(webhook_headers(), VECTOR_WEBHOOK_ID, ODD_BODY)
    assert request.startswith(b'{"auth_algo":"SHA256withRSA",')
    assert request.endswith(b',"webhook_event":' + ODD_BODY + b"}")
    parsed = json.loads(request)
    assert parsed == {
        "auth_algo": "SHA256withRSA",
        "cert_url": "https://api-m.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
        "transmission_id": VECTOR_TRANSMISSION_ID,
        "transmission_sig": VECTOR_SIGNATURE,
        "transmission_time": VECTOR_TRANSMISSION_TIME,
        "webhook_id": VECTOR_WEBHOOK_ID,
        "webhook_event": json.loads(ODD_BODY),
    }
    # What PayPal (here: the simulator's parser) CRCs is exactly what came in.
    fields, event = split_verification_request(request)
    assert event == ODD_BODY.rstrip()
    assert zlib.crc32(event) == zlib.crc32(ODD_BODY.rstrip())
    assert fields["webhook_id"] == VECTOR_WEBHOOK_ID


@pytest.mark.parametrize(
    "header", ["auth_algo", "cert_url", "transmission_id", "transmission_sig", "paypal_transmission_time"]
)
def test_a_missing_paypal_header_is_an_invalid_signature(header: str) -> None:
    name = header if header.startswith("paypal") else f"paypal_{header}"
    with pytest.raises(InvalidSignature, match="missing"):
        verification_request_body(webhook_headers(**{name: None}), VECTOR_WEBHOOK_ID, VECTOR_BODY)


@pytest.mark.parametrize(
    "changes",
    [
        {"paypal_transmission_id": "x" * 51},
        {"paypal_transmission_sig": "a b"},
        {"paypal_cert_url": "https://x/\ny"},
        {"paypal_auth_algo": ""},
        {"paypal_transmission_time": "é"},
    ],
)
def test_a_garbled_paypal_header_is_an_invalid_signature(changes: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        verification_request_body(webhook_headers(**changes), VECTOR_WEBHOOK_ID, VECTOR_BODY)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'"WH-1"', b"\xff\xfe{}", b"[" * 100_000])
def test_a_body_that_is_no_json_object_is_never_sent_for_verification(body: bytes) -> None:
    with pytest.raises(InvalidSignature):
        verification_request_body(webhook_headers(), VECTOR_WEBHOOK_ID, body)


def test_the_verdict_is_success_failure_or_unreadable() -> None:
    verification_verdict({"verification_status": "SUCCESS"})
    with pytest.raises(InvalidSignature):
        verification_verdict({"verification_status": "FAILURE"})
    for answer in ({}, None, [], {"verification_status": "success"}):
        with pytest.raises(WireError):
            verification_verdict(answer)


# --------------------------------------------------------------------------------------------------
# Amounts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "currency", "value"),
    [
        (1234, "EUR", "12.34"),
        (5, "USD", "0.05"),
        (100, "GBP", "1.00"),
        (1234, "JPY", "1234"),
        (123400, "HUF", "1234"),
        (99_999_999_999, "USD", "999999999.99"),
    ],
)
def test_minor_units_become_paypal_value_strings(amount_minor: int, currency: str, value: str) -> None:
    assert paypal_value(amount_minor, currency) == value
    assert paypal_money(amount_minor, currency) == {"currency_code": currency, "value": value}
    assert minor_from_money({"currency_code": currency, "value": value}) == (amount_minor, currency)


@pytest.mark.parametrize(
    ("amount_minor", "currency"),
    [
        (123450, "HUF"),  # 1234.50 forint: PayPal takes whole forints only; never rounded
        (1234, "KWD"),  # three decimals: PayPal does not take it
        (1000, "NGN"),  # not a PayPal currency
        (1000, "XXX"),
        (0, "EUR"),
        (-100, "EUR"),
        (10**40, "EUR"),
    ],
)
def test_an_amount_paypal_cannot_take_is_refused_not_rounded(amount_minor: int, currency: str) -> None:
    with pytest.raises(ProcessorRefused):
        paypal_value(amount_minor, currency)


def test_a_boolean_is_no_amount() -> None:
    with pytest.raises(ProcessorRefused):
        paypal_value(True, "EUR")


@pytest.mark.parametrize(
    ("money", "expected"),
    [
        ({"currency_code": "EUR", "value": "12.3"}, (1230, "EUR")),
        ({"currency_code": "EUR", "value": "12"}, (1200, "EUR")),
        ({"currency_code": "EUR", "value": ".5"}, (50, "EUR")),
        ({"currency_code": "KWD", "value": "1.234"}, (1234, "KWD")),  # three-decimal currency, exact
        ({"currency_code": "HUF", "value": "1234"}, (123400, "HUF")),
    ],
)
def test_paypal_values_become_minor_units(money: dict[str, str], expected: tuple[int, str]) -> None:
    assert minor_from_money(money) == expected


@pytest.mark.parametrize(
    "money",
    [
        {"currency_code": "EUR", "value": "12.345"},
        {"currency_code": "JPY", "value": "1234.5"},
        {"currency_code": "EUR", "value": "-1.00"},
        {"currency_code": "EUR", "value": "1e3"},
        {"currency_code": "EUR", "value": "NaN"},
        {"currency_code": "EUR", "value": ""},
        {"currency_code": "EUR", "value": 12.34},
        {"currency_code": "EUR", "value": "1" * 33},
        {"currency_code": "ZZZ", "value": "1.00"},
        {"value": "1.00"},
        "12.34 EUR",
        None,
    ],
)
def test_an_unreadable_paypal_amount_is_a_wire_error(money: object) -> None:
    with pytest.raises(WireError):
        minor_from_money(money)


@settings(max_examples=300)
@given(st.sampled_from(sorted(PAYPAL_DECIMALS)), st.integers(min_value=1, max_value=10**13))
def test_amounts_round_trip_through_paypal_values(currency: str, amount_minor: int) -> None:
    if currency == "HUF":
        amount_minor *= 100  # whole forints only
    assert minor_from_money(paypal_money(amount_minor, currency)) == (amount_minor, currency)


@given(st.integers(min_value=1, max_value=10**9).filter(lambda n: n % 100 != 0))
def test_no_forint_fraction_reaches_paypal(amount_minor: int) -> None:
    with pytest.raises(ProcessorRefused):
        paypal_value(amount_minor, "HUF")


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------

PAYMENT_ID = uuid.UUID("6f1c2a5e-7d43-4a8b-9c21-3b9e5f0d8a77")
ORDER_ID = uuid.UUID("0b6d8e2f-1c3a-4f5b-8d7e-9a0c1b2d3e4f")


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "payment_id": PAYMENT_ID,
        "order_id": ORDER_ID,
        "reference": str(PAYMENT_ID),
        "amount_minor": 2500,
        "currency": "EUR",
        "method": "paypal",
        "return_url": "https://charge.example/return/6f1c",
        "webhook_url": "https://pay.example/webhooks/paypal_main",
        "description": "EV charging balance top-up",
        "locale": "de-DE",
        **changes,
    }
    return CheckoutRequest(**fields)


def test_the_order_carries_our_reference_the_exact_amount_and_the_return_url() -> None:
    assert create_order_body(checkout_request()) == {
        "intent": "CAPTURE",
        "purchase_units": [
            {
                "reference_id": str(ORDER_ID),
                "custom_id": str(PAYMENT_ID),
                "amount": {"currency_code": "EUR", "value": "25.00"},
                "description": "EV charging balance top-up",
            }
        ],
        "payment_source": {
            "paypal": {
                "experience_context": {
                    "return_url": "https://charge.example/return/6f1c",
                    "cancel_url": "https://charge.example/return/6f1c",
                    "user_action": "PAY_NOW",
                    "shipping_preference": "NO_SHIPPING",
                    "locale": "de-DE",
                }
            }
        },
    }


def test_a_locale_paypal_does_not_accept_is_left_out_and_a_long_description_is_cut_to_127_bytes() -> None:
    body = create_order_body(checkout_request(locale="de_DE", description="Aufladung für Ladestrom " * 10))
    assert "locale" not in body["payment_source"]["paypal"]["experience_context"]
    description = body["purchase_units"][0]["description"]
    assert len(description.encode()) <= 127
    assert description.startswith("Aufladung für Ladestrom")
    assert "description" not in create_order_body(checkout_request(description=""))["purchase_units"][0]


def test_an_order_paypal_cannot_take_is_refused_before_any_call() -> None:
    with pytest.raises(ProcessorRefused):
        create_order_body(checkout_request(currency="HUF", amount_minor=150050))
    with pytest.raises(ProcessorRefused):
        create_order_body(checkout_request(reference="r" * 256))
    jpy = create_order_body(checkout_request(currency="JPY", amount_minor=1234))
    assert jpy["purchase_units"][0]["amount"] == {"currency_code": "JPY", "value": "1234"}


def test_request_ids_are_checked_against_paypals_limits() -> None:
    assert check_request_id("capture-5O190127TN364715T") == "capture-5O190127TN364715T"
    for bad in ("", "x" * 109, "a b", "é"):
        with pytest.raises(ProcessorRefused):
            check_request_id(bad)


def test_a_refund_names_its_amount_and_the_reason_as_a_note() -> None:
    assert refund_body(1050, "USD", "  charger faulty ") == {
        "amount": {"currency_code": "USD", "value": "10.50"},
        "note_to_payer": "charger faulty",
    }
    assert refund_body(1050, "USD", "   ") == {"amount": {"currency_code": "USD", "value": "10.50"}}
    assert len(refund_body(1, "USD", "x" * 400)["note_to_payer"]) == 255


# --------------------------------------------------------------------------------------------------
# API answers
# --------------------------------------------------------------------------------------------------


def created_order(status: str, rel: str) -> dict[str, Any]:
    return {
        "id": "5O190127TN364715T",
        "status": status,
        "payment_source": {"paypal": {}},
        "links": [
            {"href": "https://api-m.paypal.com/v2/checkout/orders/5O190127TN364715T", "rel": "self", "method": "GET"},
            {"href": "https://www.paypal.com/checkoutnow?token=5O190127TN364715T", "rel": rel, "method": "GET"},
        ],
    }


@pytest.mark.parametrize(("status", "rel"), [("PAYER_ACTION_REQUIRED", "payer-action"), ("CREATED", "approve")])
def test_the_checkout_is_the_order_id_and_the_payers_link(status: str, rel: str) -> None:
    checkout = checkout_from_order(created_order(status, rel))
    assert checkout.processor_reference == "5O190127TN364715T"
    assert checkout.next_step == Redirect("https://www.paypal.com/checkoutnow?token=5O190127TN364715T")


def test_an_order_without_a_payer_link_is_unreadable() -> None:
    with pytest.raises(WireError):
        checkout_from_order(created_order("PAYER_ACTION_REQUIRED", "self"))
    with pytest.raises(WireError):
        checkout_from_order({"links": []})


def order(status: str, capture_status: str | None = None) -> dict[str, Any]:
    unit: dict[str, Any] = {
        "reference_id": "default",
        "custom_id": "pay-1",
        "amount": {"currency_code": "EUR", "value": "25.00"},
    }
    if capture_status is not None:
        unit["payments"] = {
            "captures": [
                {
                    "id": "3C679366HH908993F",
                    "status": capture_status,
                    "amount": {"currency_code": "EUR", "value": "25.00"},
                    "custom_id": "pay-1",
                }
            ]
        }
    return {"id": "5O190127TN364715T", "intent": "CAPTURE", "status": status, "purchase_units": [unit]}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("CREATED", EventKind.PENDING),
        ("PAYER_ACTION_REQUIRED", EventKind.PENDING),
        ("SAVED", EventKind.PENDING),
        ("APPROVED", EventKind.APPROVED),
        ("VOIDED", EventKind.FAILED),
    ],
)
def test_an_uncaptured_order_polls_as_its_status(status: str, kind: EventKind) -> None:
    assert order_status_event(order(status)) == ProcessorEvent(
        event_id=f"poll:5O190127TN364715T:{kind}",
        payment=PaymentRef("pay-1", "5O190127TN364715T"),
        kind=kind,
        amount_minor=2500,
        currency="EUR",
    )


@pytest.mark.parametrize(
    ("capture_status", "kind"),
    [
        ("COMPLETED", EventKind.SUCCEEDED),
        ("PARTIALLY_REFUNDED", EventKind.SUCCEEDED),
        ("REFUNDED", EventKind.SUCCEEDED),
        ("PENDING", EventKind.PENDING),
        ("DECLINED", EventKind.FAILED),
        ("FAILED", EventKind.FAILED),
    ],
)
def test_a_completed_order_polls_as_its_capture(capture_status: str, kind: EventKind) -> None:
    polled = order_status_event(order("COMPLETED", capture_status))
    assert polled.kind is kind
    assert polled.event_id == f"poll:5O190127TN364715T:{kind}"
    assert polled.payment == PaymentRef("pay-1", "5O190127TN364715T", {"capture": "3C679366HH908993F"})
    captured = captured_order_event(order("COMPLETED", capture_status))
    assert captured.event_id == f"capture:3C679366HH908993F:{kind}"
    assert captured.payment == polled.payment
    assert (captured.amount_minor, captured.currency) == (2500, "EUR")


@pytest.mark.parametrize(
    "answer",
    [
        order("EXPIRED"),
        order("COMPLETED"),  # completed without a capture
        order("COMPLETED", "HELD"),
        {**order("APPROVED"), "purchase_units": []},
        {"status": "APPROVED"},
        "order",
    ],
)
def test_an_order_answer_we_cannot_read_is_a_wire_error(answer: object) -> None:
    with pytest.raises(WireError):
        order_status_event(answer)


def test_a_capture_answer_needs_its_capture() -> None:
    with pytest.raises(WireError):
        captured_order_event(order("APPROVED"))


def test_token_refund_and_error_answers() -> None:
    assert access_token({"access_token": "A21AAF", "token_type": "Bearer", "expires_in": 32400}) == ("A21AAF", 32400)
    for bad in ({"access_token": "A21AAF"}, {"expires_in": 10}, {"access_token": "A", "expires_in": True}, None):
        with pytest.raises(WireError):
            access_token(bad)
    assert refund_answer({"id": "1JU08902781691411", "status": "COMPLETED", "links": []}) == (
        "1JU08902781691411",
        "COMPLETED",
    )
    with pytest.raises(WireError):
        refund_answer({"status": "COMPLETED"})
    unprocessable = {
        "name": "UNPROCESSABLE_ENTITY",
        "details": [{"issue": "ORDER_ALREADY_CAPTURED", "description": "x"}],
    }
    assert paypal_error_reason(unprocessable) == "ORDER_ALREADY_CAPTURED"
    assert paypal_error_reason({"name": "RESOURCE_NOT_FOUND", "details": []}) == "RESOURCE_NOT_FOUND"
    assert paypal_error_reason({"error": "invalid_client", "error_description": "Client Authentication failed"}) == (
        "invalid_client"
    )
    # Free text (which could echo anything) never becomes the reason.
    assert paypal_error_reason({"name": "secret value here"}) == "UNKNOWN_ERROR"
    assert paypal_error_reason(None) == "UNKNOWN_ERROR"


# --------------------------------------------------------------------------------------------------
# Webhook events
# --------------------------------------------------------------------------------------------------


def envelope(
    event_type: str, resource_type: str, resource: Any, event_id: str = "WH-58D329510W468432D-8HN650336L201105X"
) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "create_time": "2019-02-14T21:50:07.940Z",
            "resource_type": resource_type,
            "event_type": event_type,
            "summary": "…",
            "resource": resource,
            "event_version": "1.0",
            "resource_version": "2.0",
        }
    ).encode()


def capture_resource(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "id": "42311647XV020574X",
        "amount": {"currency_code": "USD", "value": "2.51"},
        "final_capture": True,
        "seller_protection": {"status": "ELIGIBLE", "dispute_categories": ["ITEM_NOT_RECEIVED"]},
        "status": "COMPLETED",
        "custom_id": "d93e4fcb-d3af-137c-82fe-1a8101f1ad11",
        "supplementary_data": {"related_ids": {"order_id": "5O190127TN364715T"}},
        "links": [
            {"href": "https://api.paypal.com/v2/payments/captures/42311647XV020574X", "rel": "self", "method": "GET"},
            {"href": "https://api.paypal.com/v2/checkout/orders/5O190127TN364715T", "rel": "up", "method": "GET"},
        ],
    }
    resource.update(changes)
    return resource


CAPTURE_PAYMENT = PaymentRef(
    "d93e4fcb-d3af-137c-82fe-1a8101f1ad11", "5O190127TN364715T", {"capture": "42311647XV020574X"}
)


@pytest.mark.parametrize(
    ("event_type", "status", "kind"),
    [
        ("PAYMENT.CAPTURE.COMPLETED", "COMPLETED", EventKind.SUCCEEDED),
        ("PAYMENT.CAPTURE.PENDING", "PENDING", EventKind.PENDING),
        ("PAYMENT.CAPTURE.DENIED", "DECLINED", EventKind.FAILED),
    ],
)
def test_capture_events(event_type: str, status: str, kind: EventKind) -> None:
    reason = {"reason": "PENDING_REVIEW"} if status != "COMPLETED" else None
    resource = capture_resource(status=status, **({"status_details": reason} if reason else {}))
    [event] = parse_paypal_webhook(envelope(event_type, "capture", resource))
    assert event == ProcessorEvent(
        event_id="WH-58D329510W468432D-8HN650336L201105X",
        payment=CAPTURE_PAYMENT,
        kind=kind,
        amount_minor=251,
        currency="USD",
        reason="PENDING_REVIEW" if reason else None,
    )


def test_a_capture_without_related_ids_finds_its_order_through_the_up_link() -> None:
    resource = capture_resource()
    del resource["supplementary_data"]
    [event] = parse_paypal_webhook(envelope("PAYMENT.CAPTURE.COMPLETED", "capture", resource))
    assert event.payment == CAPTURE_PAYMENT


def test_a_capture_naming_neither_order_nor_reference_is_malformed() -> None:
    resource = capture_resource(links=[])
    del resource["supplementary_data"], resource["custom_id"]
    with pytest.raises(MalformedWebhook):
        parse_paypal_webhook(envelope("PAYMENT.CAPTURE.COMPLETED", "capture", resource))


def test_an_approved_order_is_approved_with_our_reference_and_amount() -> None:
    resource = {
        "id": "5O190127TN364715T",
        "intent": "CAPTURE",
        "status": "APPROVED",
        "purchase_units": [
            {"reference_id": "default", "custom_id": "pay-1", "amount": {"currency_code": "JPY", "value": "1500"}}
        ],
        "payer": {"payer_id": "QYR5Z8XDVJNXQ"},
    }
    [event] = parse_paypal_webhook(envelope("CHECKOUT.ORDER.APPROVED", "checkout-order", resource, "WH-A"))
    assert event == ProcessorEvent("WH-A", PaymentRef("pay-1", "5O190127TN364715T"), EventKind.APPROVED, 1500, "JPY")


def test_an_approval_paypal_reversed_before_the_capture_fails_the_payment() -> None:
    # PayPal's sample (/payment-methods/uncaptured-payments), trimmed.
    resource = {
        "order_id": "5O190127TN364715T",
        "purchase_units": [{"reference_id": "d9f80740", "amount": {"currency_code": "EUR", "value": "9.99"}}],
    }
    [event] = parse_paypal_webhook(envelope("CHECKOUT.PAYMENT-APPROVAL.REVERSED", "checkout-order", resource, "WH-R"))
    assert (event.kind, event.payment, event.amount_minor, event.currency) == (
        EventKind.FAILED,
        PaymentRef(None, "5O190127TN364715T"),
        999,
        "EUR",
    )


# PayPal's sample PAYMENT.CAPTURE.REFUNDED resource (quoted in lat9/paypalr PaymentCaptureRefunded.php).
REFUND_RESOURCE: dict[str, Any] = {
    "seller_payable_breakdown": {
        "gross_amount": {"currency_code": "USD", "value": "0.99"},
        "paypal_fee": {"currency_code": "USD", "value": "0.02"},
        "net_amount": {"currency_code": "USD", "value": "0.97"},
        "total_refunded_amount": {"currency_code": "USD", "value": "1.98"},
    },
    "amount": {"currency_code": "USD", "value": "0.99"},
    "update_time": "2018-08-15T12:13:29-07:00",
    "create_time": "2018-08-15T12:13:29-07:00",
    "links": [
        {"href": "https://api.paypal.com/v2/payments/refunds/1Y107995YT783435V", "rel": "self", "method": "GET"},
        {"href": "https://api.paypal.com/v2/payments/captures/0JF852973C016714D", "rel": "up", "method": "GET"},
    ],
    "id": "1Y107995YT783435V",
    "status": "COMPLETED",
}


def test_a_refund_is_tied_to_its_capture_through_the_up_link() -> None:
    body = envelope("PAYMENT.CAPTURE.REFUNDED", "refund", REFUND_RESOURCE, "WH-1GE84257G0350133W-6RW800890C634293G")
    [event] = parse_paypal_webhook(body)
    assert event == ProcessorEvent(
        event_id="WH-1GE84257G0350133W-6RW800890C634293G",
        payment=PaymentRef(ids={"capture": "0JF852973C016714D"}),
        kind=EventKind.REFUNDED,
        amount_minor=99,
        currency="USD",
        cause_id="1Y107995YT783435V",
    )


def test_a_reversal_by_paypal_is_money_back_like_a_refund() -> None:
    resource = {**REFUND_RESOURCE, "id": "09E71677NS257044M", "note_to_payer": "Payment reversed"}
    [event] = parse_paypal_webhook(envelope("PAYMENT.CAPTURE.REVERSED", "refund", resource, "WH-6F207351SC284371F"))
    assert (event.kind, event.cause_id, event.payment.ids, event.reason) == (
        EventKind.REFUNDED,
        "09E71677NS257044M",
        {"capture": "0JF852973C016714D"},
        "reversed by PayPal",
    )


@pytest.mark.parametrize(
    ("status", "kinds"),
    [("PENDING", []), ("FAILED", [EventKind.REFUND_FAILED]), ("CANCELLED", [EventKind.REFUND_FAILED])],
)
def test_a_refund_counts_only_once_it_completed_or_failed(status: str, kinds: list[EventKind]) -> None:
    events = parse_paypal_webhook(envelope("PAYMENT.CAPTURE.REFUNDED", "refund", {**REFUND_RESOURCE, "status": status}))
    assert [event.kind for event in events] == kinds


def test_a_refund_naming_no_capture_is_malformed_and_related_ids_also_count() -> None:
    orphan = {**REFUND_RESOURCE, "links": [REFUND_RESOURCE["links"][0]]}
    with pytest.raises(MalformedWebhook):
        parse_paypal_webhook(envelope("PAYMENT.CAPTURE.REFUNDED", "refund", orphan))
    related = {**orphan, "supplementary_data": {"related_ids": {"capture_id": "0JF852973C016714D"}}}
    [event] = parse_paypal_webhook(envelope("PAYMENT.CAPTURE.REFUNDED", "refund", related))
    assert event.payment.ids == {"capture": "0JF852973C016714D"}


def dispute(outcome: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "dispute_id": "PP-D-27803",
        "create_time": "2019-04-11T04:18:00.000Z",
        "disputed_transactions": [
            {"buyer_transaction_id": "4FH50829EL4151521", "seller_transaction_id": "3BC38643YC807283D"}
        ],
        "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
        "status": "RESOLVED" if outcome else "OPEN",
        "dispute_amount": {"currency_code": "USD", "value": "3.00"},
        "dispute_life_cycle_stage": "CHARGEBACK",
    }
    if outcome:
        resource["dispute_outcome"] = {"outcome_code": outcome}
    return resource


def test_a_new_dispute_is_opened_on_the_disputed_capture() -> None:
    [event] = parse_paypal_webhook(envelope("CUSTOMER.DISPUTE.CREATED", "dispute", dispute(), "WH-D1"))
    assert event == ProcessorEvent(
        event_id="WH-D1",
        payment=PaymentRef(ids={"capture": "3BC38643YC807283D"}),
        kind=EventKind.DISPUTE_OPENED,
        amount_minor=300,
        currency="USD",
        reason="MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
        cause_id="PP-D-27803",
    )


@pytest.mark.parametrize(
    ("outcome", "kinds"),
    [
        ("RESOLVED_SELLER_FAVOUR", [EventKind.DISPUTE_WON]),
        ("CANCELED_BY_BUYER", [EventKind.DISPUTE_WON]),
        ("RESOLVED_WITH_PAYOUT", [EventKind.DISPUTE_WON]),
        ("RESOLVED_BUYER_FAVOUR", [EventKind.DISPUTE_LOST]),
        ("ACCEPTED", [EventKind.DISPUTE_LOST]),
        ("DENIED", []),
        ("NONE", []),
        ("SOMETHING_NEW", []),
    ],
)
def test_a_resolved_dispute_is_won_or_lost_by_its_outcome(outcome: str, kinds: list[EventKind]) -> None:
    events = parse_paypal_webhook(envelope("CUSTOMER.DISPUTE.RESOLVED", "dispute", dispute(outcome)))
    assert [event.kind for event in events] == kinds
    assert all(event.cause_id == "PP-D-27803" and event.amount_minor == 300 for event in events)


@pytest.mark.parametrize(
    "event_type",
    ["CUSTOMER.DISPUTE.UPDATED", "PAYMENT.AUTHORIZATION.CREATED", "CHECKOUT.ORDER.COMPLETED", "BILLING.PLAN.CREATED"],
)
def test_events_we_do_not_act_on_give_no_event(event_type: str) -> None:
    assert parse_paypal_webhook(envelope(event_type, "x", {"anything": True})) == []


MALFORMED = [
    b"",
    b"not json",
    b"[]",
    b'{"id": 1}',
    b'{"id": "WH-1"}',
    b'{"id": "", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}}',
    b'{"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED"}',
    b'{"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": []}',
    b"\xff\xfe\x00",
    b"[" * 100_000,
    envelope("PAYMENT.CAPTURE.COMPLETED", "capture", capture_resource(id=7)),
    envelope(
        "PAYMENT.CAPTURE.COMPLETED", "capture", capture_resource(amount={"currency_code": "USD", "value": "2.515"})
    ),
    envelope("PAYMENT.CAPTURE.COMPLETED", "capture", capture_resource(amount=None)),
    envelope("PAYMENT.CAPTURE.REFUNDED", "refund", {**REFUND_RESOURCE, "status": "WEIRD"}),
    envelope("CHECKOUT.ORDER.APPROVED", "checkout-order", {"id": "5O19", "purchase_units": []}),
    envelope("CHECKOUT.PAYMENT-APPROVAL.REVERSED", "checkout-order", {"purchase_units": []}),
    envelope("CUSTOMER.DISPUTE.CREATED", "dispute", {**dispute(), "disputed_transactions": []}),
    envelope("CUSTOMER.DISPUTE.CREATED", "dispute", {**dispute(), "dispute_amount": {"value": "3.00"}}),
    envelope("CUSTOMER.DISPUTE.RESOLVED", "dispute", dispute()),  # resolved without an outcome
]


@pytest.mark.parametrize("body", MALFORMED)
def test_an_unreadable_webhook_is_malformed_never_another_error(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        parse_paypal_webhook(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    st.sampled_from(
        [
            "CHECKOUT.ORDER.APPROVED",
            "CHECKOUT.PAYMENT-APPROVAL.REVERSED",
            "PAYMENT.CAPTURE.COMPLETED",
            "PAYMENT.CAPTURE.DENIED",
            "PAYMENT.CAPTURE.REFUNDED",
            "PAYMENT.CAPTURE.REVERSED",
            "CUSTOMER.DISPUTE.CREATED",
            "CUSTOMER.DISPUTE.RESOLVED",
        ]
    ),
    json_values,
)
def test_any_resource_shape_parses_or_is_malformed(event_type: str, resource: object) -> None:
    try:
        events = parse_paypal_webhook(envelope(event_type, "x", resource))
    except MalformedWebhook:
        return
    assert all(isinstance(event, ProcessorEvent) for event in events)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_malformed(body: bytes) -> None:
    with contextlib.suppress(MalformedWebhook):
        parse_paypal_webhook(body)


# --------------------------------------------------------------------------------------------------
# Settings and capabilities
# --------------------------------------------------------------------------------------------------


def settings_entry(**changes: Any) -> dict[str, Any]:
    return {
        "processor": "paypal",
        "methods": ["paypal"],
        "webhook_id": "1JE4291016473214C",
        "client_id": "AeA1QIZXiflr1_-r0U2UbWTziOWX1GRQer5jkUq4ZfWT5qwb6qQRPq7jDtv57TL4POEEezGLdutcxnkJ",
        "client_secret": "ECYYrrSHdKfk_Q0EdvzdGkzj58a66kKaUQ5dZAEv4HvvtDId2_DpSuYDB088BZxGuMji7G4OFUnPog6p",
        **changes,
    }


def test_settings_default_to_paypals_live_api_and_check_the_webhook_id() -> None:
    config = PayPalSettings.model_validate(settings_entry())
    assert config.api_base_url == "https://api-m.paypal.com"
    assert "ECYY" not in repr(config)
    sandbox = PayPalSettings.model_validate(settings_entry(api_base_url="https://api-m.sandbox.paypal.com"))
    assert sandbox.api_base_url == "https://api-m.sandbox.paypal.com"
    for bad in ({"webhook_id": "WH-1"}, {"webhook_id": "x" * 51}, {"client_secret": "short"}, {"processor": "stripe"}):
        with pytest.raises(ValidationError):
            PayPalSettings.model_validate(settings_entry(**bad))


def test_capabilities() -> None:
    assert Adapter is PayPalAdapter  # what the registry imports
    capabilities = PayPalAdapter.capabilities
    assert PayPalAdapter.name == "paypal"
    assert PayPalAdapter.config_type is PayPalSettings
    assert capabilities.next_step is NextStepKind.REDIRECT
    assert capabilities.webhook_auth is WebhookAuth.VERIFICATION_API
    assert (capabilities.refunds, capabilities.partial_refunds, capabilities.disputes) == (True, True, True)
    assert capabilities.status_lookup and capabilities.create_is_idempotent
    # No source shows a retried delivery gets a fresh PAYPAL-TRANSMISSION-TIME: no replay window.
    assert capabilities.replay_window_s is None
