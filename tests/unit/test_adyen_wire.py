"""services/payments/processors/adyen/wire.py: amounts, request bodies, the per-item HMAC (checked
against Adyen's own published vector, an openssl-computed one, the Adyen SDK and the independent
simulator's signer), basic authentication, and notifications and payment links into events."""

from __future__ import annotations

import base64
import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from Adyen.util import generate_notification_sig, is_valid_hmac_notification  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from services.payments.processors.adyen import wire
from services.payments.processors.adyen.config import AdyenSettings
from services.payments.processors.base import EventKind, InvalidSignature, MalformedWebhook, PaymentRef
from shared.money import MoneyError
from tests.simulators.adyen_sim import sign_item, signing_string

# Adyen's published example (the Ruby library's HmacValidator spec, and others): this key and item
# sign to this signature.
ADYEN_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
ADYEN_ITEM: dict[str, Any] = {
    "pspReference": "7914073381342284",
    "originalReference": "",
    "merchantAccountCode": "TestMerchant",
    "merchantReference": "TestPayment-1407325143704",
    "amount": {"value": 1130, "currency": "EUR"},
    "eventCode": "AUTHORISATION",
    "success": "true",
}
ADYEN_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="
# printf '%s' '7914073381342284::TestMerchant:a:b\c:1130:EUR:AUTHORISATION:true' \
#   | openssl dgst -sha256 -mac HMAC -macopt hexkey:<ADYEN_KEY> -binary | base64
COLON_REFERENCE = "a:b\\c"
COLON_SIGNATURE = "NymdpeS6dTCwROp86cJ3+TLmxB+ZjY9kcErJ0ZyiUCQ="

MERCHANT = "EvTopupECOM"
KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0"
KEY_BYTES = bytes.fromhex(KEY)
LINK = "PLE83C39B0E3E0D6F2"
REFERENCE = "5d0c1c3e-2f43-4d3c-9a47-6f0a7e1d2c3b"


def item(**fields: Any) -> dict[str, Any]:
    """A signed item: an AUTHORISATION of 1250 EUR unless told otherwise."""
    base: dict[str, Any] = {
        "amount": {"currency": "EUR", "value": 1250},
        "eventCode": "AUTHORISATION",
        "eventDate": "2026-11-03T10:00:00+01:00",
        "merchantAccountCode": MERCHANT,
        "merchantReference": REFERENCE,
        "paymentMethod": "visa",
        "pspReference": "QFQTPCQ8HXSKGK82",
        "reason": "033899:1111:03/2030",
        "success": "true",
        "additionalData": {"paymentLinkId": LINK},
    }
    base.update(fields)
    return signed(base)


def signed(raw: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    additional = dict(raw.get("additionalData") or {})
    additional.pop("hmacSignature", None)
    raw["additionalData"] = {**additional, "hmacSignature": sign_item(raw, key)}
    return raw


def body(*items: dict[str, Any], live: str = "false") -> bytes:
    return json.dumps({"live": live, "notificationItems": [{"NotificationRequestItem": i} for i in items]}).encode()


def events(*items: dict[str, Any]) -> list[Any]:
    return wire.adyen_notification_to_events(body(*items), MERCHANT)


# --- amounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "currency", "value"),
    [
        (1250, "EUR", 1250),
        (500, "JPY", 500),  # zero decimals
        (1250, "KWD", 1250),  # three decimals: 1.250 KWD
        (75, "ISK", 7500),  # Adyen: ISK has 2 decimals (ISO: 0)
        (3000, "CLP", 300000),  # Adyen: CLP has 2 decimals (ISO: 0)
        (1500000, "IDR", 15000),  # Adyen: IDR has 0 decimals (ISO: 2)
    ],
)
def test_amounts_go_out_in_adyens_minor_units_and_come_back(amount_minor: int, currency: str, value: int) -> None:
    assert wire.to_adyen_value(amount_minor, currency) == value
    assert wire.from_adyen_value(value, currency) == amount_minor


def test_an_amount_adyen_cannot_represent_is_refused_not_rounded() -> None:
    with pytest.raises(MoneyError):
        wire.to_adyen_value(1500050, "IDR")  # 15000.50 IDR: Adyen takes whole rupiahs
    with pytest.raises(MoneyError):
        wire.from_adyen_value(7550, "ISK")  # 75.50 ISK is not a whole krona here
    with pytest.raises(MoneyError):
        wire.to_adyen_value(100, "XXX")


@pytest.mark.parametrize("value", [12.5, "1250", True, None, Decimal("1250")])
def test_an_amount_value_that_is_no_integer_is_refused(value: object) -> None:
    with pytest.raises(MoneyError):
        wire.from_adyen_value(value, "EUR")


@given(st.integers(min_value=1, max_value=10**12), st.sampled_from(["EUR", "JPY", "KWD", "ISK", "CLP"]))
def test_amounts_round_trip(amount_minor: int, currency: str) -> None:
    assert wire.from_adyen_value(wire.to_adyen_value(amount_minor, currency), currency) == amount_minor


@given(st.integers(min_value=1, max_value=10**10))
def test_idr_round_trips_whole_rupiahs(rupiahs: int) -> None:
    assert wire.from_adyen_value(wire.to_adyen_value(rupiahs * 100, "IDR"), "IDR") == rupiahs * 100


# --- requests ----------------------------------------------------------------------------------


def test_the_payment_link_request() -> None:
    request = wire.payment_link_request(
        merchant_account=MERCHANT,
        reference=REFERENCE,
        amount_minor=2500,
        currency="EUR",
        return_url="https://topup.example/return",
        description="x" * 300,
        locale="nl-NL",
    )
    assert request == {
        "amount": {"value": 2500, "currency": "EUR"},
        "merchantAccount": MERCHANT,
        "reference": REFERENCE,
        "returnUrl": "https://topup.example/return",
        "description": "x" * 280,
        "shopperLocale": "nl-NL",
    }
    without_locale = wire.payment_link_request(
        merchant_account=MERCHANT,
        reference=REFERENCE,
        amount_minor=2500,
        currency="EUR",
        return_url="https://r",
        description="d",
        locale=None,
    )
    assert "shopperLocale" not in without_locale


def test_the_link_offers_only_the_method_the_driver_chose() -> None:
    def allowed(method: str) -> object:
        body = wire.payment_link_request(
            merchant_account=MERCHANT,
            reference=REFERENCE,
            amount_minor=2500,
            currency="EUR",
            return_url="https://r",
            description="d",
            locale=None,
            method=method,
        )
        return body.get("allowedPaymentMethods")

    assert allowed("card") == ["scheme"]
    assert allowed("bancontact") == ["bcmc"]
    assert set(wire.ADYEN_PAYMENT_METHOD_TYPES) == set(AdyenSettings.payment_methods)


@pytest.mark.parametrize(("reference", "amount_minor"), [("r" * 65, 100), ("", 100), (REFERENCE, 0), (REFERENCE, -5)])
def test_a_link_request_adyen_would_not_take_is_refused(reference: str, amount_minor: int) -> None:
    with pytest.raises(ValueError):
        wire.payment_link_request(
            merchant_account=MERCHANT,
            reference=reference,
            amount_minor=amount_minor,
            currency="EUR",
            return_url="https://r",
            description="d",
            locale=None,
        )


def test_the_refund_request() -> None:
    assert wire.refund_path("QFQTPCQ8HXSKGK82") == "/v72/payments/QFQTPCQ8HXSKGK82/refunds"
    assert wire.refund_request(merchant_account=MERCHANT, amount_minor=75, currency="ISK", refund_key="rf-1") == {
        "merchantAccount": MERCHANT,
        "amount": {"value": 7500, "currency": "ISK"},
        "reference": "rf-1",
    }


def test_error_summary_is_short_and_printable() -> None:
    answer = {"status": 422, "errorCode": "14_030", "message": "Return URL is missing.\n", "errorType": "validation"}
    assert wire.error_summary(answer) == "14_030 Return URL is missing."
    assert wire.error_summary({"message": "m" * 500}) == "m" * 200
    assert wire.error_summary("<html>") == "no error body"


# --- the HMAC ----------------------------------------------------------------------------------


def test_adyens_published_vector() -> None:
    assert wire.hmac_signing_string(ADYEN_ITEM) == (
        "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
    )
    assert wire.adyen_item_signature(ADYEN_ITEM, bytes.fromhex(ADYEN_KEY)) == ADYEN_SIGNATURE


def test_colons_and_backslashes_are_not_escaped() -> None:
    colon_item = {**ADYEN_ITEM, "merchantReference": COLON_REFERENCE}
    assert wire.hmac_signing_string(colon_item) == "7914073381342284::TestMerchant:a:b\\c:1130:EUR:AUTHORISATION:true"
    assert wire.adyen_item_signature(colon_item, bytes.fromhex(ADYEN_KEY)) == COLON_SIGNATURE


def test_the_simulator_signs_the_vectors_independently() -> None:
    assert signing_string(ADYEN_ITEM) == wire.hmac_signing_string(ADYEN_ITEM)
    assert sign_item(ADYEN_ITEM, ADYEN_KEY) == ADYEN_SIGNATURE
    assert sign_item({**ADYEN_ITEM, "merchantReference": COLON_REFERENCE}, ADYEN_KEY) == COLON_SIGNATURE


SDK_ITEMS = [
    ADYEN_ITEM,
    {**ADYEN_ITEM, "merchantReference": COLON_REFERENCE},
    {**ADYEN_ITEM, "merchantReference": "ends with a backslash\\", "pspReference": "X:Y"},
    {
        **ADYEN_ITEM,
        "eventCode": "REFUND",
        "originalReference": "7914073381342284",
        "pspReference": "8815555555555555",
        "amount": {"value": 0, "currency": "JPY"},
        "success": "false",
    },
    {**ADYEN_ITEM, "merchantReference": "Ünïcode €"},
]


@pytest.mark.parametrize("raw", SDK_ITEMS)
def test_the_sdk_agrees_on_valid_tampered_and_wrong_key(raw: dict[str, Any]) -> None:
    ours = wire.adyen_item_signature(raw, bytes.fromhex(ADYEN_KEY))
    assert generate_notification_sig(dict(raw), ADYEN_KEY).decode() == ours
    good = {**raw, "additionalData": {"hmacSignature": ours}}
    tampered = {**good, "amount": {**raw["amount"], "value": raw["amount"]["value"] + 1}}
    wrong_key = "00" + ADYEN_KEY[2:]
    for candidate, key, valid in ((good, ADYEN_KEY, True), (tampered, ADYEN_KEY, False), (good, wrong_key, False)):
        assert is_valid_hmac_notification(copy.deepcopy(candidate), key) is valid
        notification = {"live": "false", "notificationItems": [{"NotificationRequestItem": candidate}]}
        if valid:
            wire.verify_adyen_notification(json.dumps(notification).encode(), bytes.fromhex(key), live=False)
        else:
            with pytest.raises(InvalidSignature):
                wire.verify_adyen_notification(json.dumps(notification).encode(), bytes.fromhex(key), live=False)


def test_every_item_of_a_batch_is_verified_where_the_sdk_checks_only_the_first() -> None:
    first = item()
    second = item(pspReference="SECONDPSPREFEREN", amount={"currency": "EUR", "value": 1})
    second["amount"]["value"] = 99999  # tampered after signing
    batch = {"live": "false", "notificationItems": [{"NotificationRequestItem": i} for i in (first, second)]}
    assert is_valid_hmac_notification(copy.deepcopy(batch), KEY) is True  # the SDK looks at item 0 only
    with pytest.raises(InvalidSignature, match="item 1"):
        wire.verify_adyen_notification(json.dumps(batch).encode(), KEY_BYTES, live=False)


def test_a_valid_batch_verifies_and_a_signature_reordering_is_refused() -> None:
    a, b = item(), item(pspReference="OTHERPSPREFEREN1")
    wire.verify_adyen_notification(body(a, b), KEY_BYTES, live=False)
    a["additionalData"]["hmacSignature"], b["additionalData"]["hmacSignature"] = (
        b["additionalData"]["hmacSignature"],
        a["additionalData"]["hmacSignature"],
    )
    with pytest.raises(InvalidSignature):
        wire.verify_adyen_notification(body(a, b), KEY_BYTES, live=False)


def test_the_environment_must_match() -> None:
    wire.verify_adyen_notification(body(item(), live="true"), KEY_BYTES, live=True)
    with pytest.raises(InvalidSignature, match="test environment"):
        wire.verify_adyen_notification(body(item(), live="true"), KEY_BYTES, live=False)
    with pytest.raises(InvalidSignature, match="live environment"):
        wire.verify_adyen_notification(body(item(), live="false"), KEY_BYTES, live=True)
    with pytest.raises(InvalidSignature):
        wire.verify_adyen_notification(
            json.dumps({"notificationItems": [{"NotificationRequestItem": item()}]}).encode(), KEY_BYTES, live=False
        )


def unsigned(additional: object) -> bytes:
    return json.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": {"additionalData": additional}}]}
    ).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"live": "false"}',
        b'{"live": "false", "notificationItems": []}',
        b'{"live": "false", "notificationItems": [1]}',
        b'{"live": "false", "notificationItems": [{"NotificationRequestItem": "x"}]}',
        b'{"live": "false", "notificationItems": [{"NotificationRequestItem": {"pspReference": "P"}}]}',
        unsigned({"hmacSignature": ""}),
        unsigned({"hmacSignature": 5}),
        unsigned({"hmacSignature": "ü"}),
        unsigned("not an object"),
        b"[" * 100_000,
    ],
)
def test_an_unprovable_body_is_invalid_never_a_crash(raw: bytes) -> None:
    with pytest.raises(InvalidSignature):
        wire.verify_adyen_notification(raw, KEY_BYTES, live=False)


def test_a_bad_configured_key_is_an_invalid_signature() -> None:
    with pytest.raises(InvalidSignature):
        wire.hmac_key_bytes("not hex")


# --- basic authentication --------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_authentication() -> None:
    wire.verify_basic_auth(basic("ws_user", "p:ss"), "ws_user", "p:ss")
    wire.verify_basic_auth("basic " + basic("ws_user", "p:ss").split()[1], "ws_user", "p:ss")


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"ws_user:wrong").decode(), "Basic ü"],
)
def test_wrong_or_garbled_basic_authentication_is_refused(header: str | None) -> None:
    with pytest.raises(InvalidSignature):
        wire.verify_basic_auth(header, "ws_user", "p:ss")


# --- notifications into events -----------------------------------------------------------------


def test_a_successful_authorisation() -> None:
    [event] = events(item())
    assert event.kind is EventKind.SUCCEEDED
    assert event.event_id == "QFQTPCQ8HXSKGK82:AUTHORISATION:true"
    assert event.payment.merchant_reference == REFERENCE
    # additionalData.paymentLinkId is not covered by the HMAC: it never names the payment.
    assert event.payment.processor_reference is None
    assert event.payment.ids == {"psp_reference": "QFQTPCQ8HXSKGK82"}
    assert (event.amount_minor, event.currency, event.reason) == (1250, "EUR", None)


# The items that name their payment by merchantReference (an unsuccessful OFFER_CLOSED gives no event).
PAYMENT_ITEMS = [("AUTHORISATION", "true"), ("AUTHORISATION", "false"), ("OFFER_CLOSED", "true")]


@pytest.mark.parametrize(("code", "success"), PAYMENT_ITEMS)
def test_an_unsigned_payment_link_id_changes_nothing(code: str, success: str) -> None:
    original = item(eventCode=code, success=success)
    changed = copy.deepcopy(original)
    changed["additionalData"]["paymentLinkId"] = "PLSOMEONEELSES01"
    # Still authentic (the field is not signed), and still the same statement about the same payment.
    wire.verify_adyen_notification(body(changed), KEY_BYTES, live=False)
    [event] = events(original)
    assert events(changed) == [event]
    assert event.payment == PaymentRef(
        merchant_reference=REFERENCE,
        ids={"psp_reference": "QFQTPCQ8HXSKGK82"} if (code, success) == ("AUTHORISATION", "true") else {},
    )
    dropped = copy.deepcopy(original)
    del dropped["additionalData"]["paymentLinkId"]
    wire.verify_adyen_notification(body(dropped), KEY_BYTES, live=False)
    assert events(dropped) == [event]


@pytest.mark.parametrize(("code", "success"), PAYMENT_ITEMS)
def test_an_authorisation_or_offer_closed_without_merchant_reference_is_malformed(code: str, success: str) -> None:
    raw = item(eventCode=code, success=success)
    del raw["merchantReference"]
    raw = signed(raw)  # authentic as it is, but it names no payment by a signed field
    wire.verify_adyen_notification(body(raw), KEY_BYTES, live=False)
    assert raw["additionalData"]["paymentLinkId"] == LINK  # the unsigned link id does not stand in for it
    with pytest.raises(MalformedWebhook, match="merchantReference"):
        events(raw)


def test_a_refused_authorisation_is_a_failure_whose_psp_reference_is_not_the_payments() -> None:
    [event] = events(item(success="false", reason="Refused", pspReference="REFUSEDATTEMPT01"))
    assert event.kind is EventKind.FAILED
    assert event.event_id == "REFUSEDATTEMPT01:AUTHORISATION:false"
    assert event.reason == "Refused"
    assert event.payment.ids == {}
    assert event.payment.merchant_reference == REFERENCE
    assert event.payment.processor_reference is None


def test_the_same_item_again_has_the_same_id_and_its_outcome_another() -> None:
    assert events(item())[0].event_id == events(item())[0].event_id
    assert events(item())[0].event_id != events(item(success="false"))[0].event_id


def test_an_offer_closed_is_an_expiry() -> None:
    [event] = events(item(eventCode="OFFER_CLOSED", reason=""))
    assert event.kind is EventKind.EXPIRED
    assert event.payment.merchant_reference == REFERENCE
    assert event.payment.processor_reference is None
    assert event.payment.ids == {}


def test_a_refund_and_its_failures() -> None:
    refund = {
        "eventCode": "REFUND",
        "pspReference": "REFUNDPSP0000001",
        "originalReference": "QFQTPCQ8HXSKGK82",
        "merchantReference": "refund-key-1",
        "amount": {"currency": "EUR", "value": 300},
        "additionalData": {},
    }
    [ok] = events(item(**refund))
    assert ok.kind is EventKind.REFUNDED
    assert ok.cause_id == "REFUNDPSP0000001"
    assert ok.payment.ids == {"psp_reference": "QFQTPCQ8HXSKGK82"}
    assert ok.payment.merchant_reference is None
    assert (ok.amount_minor, ok.currency) == (300, "EUR")
    [refused] = events(item(**refund, success="false", reason="Insufficient balance on payment"))
    assert refused.kind is EventKind.REFUND_FAILED
    assert refused.reason == "Insufficient balance on payment"
    assert refused.event_id == "REFUNDPSP0000001:REFUND:false"
    for code in ("REFUND_FAILED", "REFUNDED_REVERSED"):
        [undone] = events(item(**{**refund, "eventCode": code}, reason="Refund Failed"))
        assert (undone.kind, undone.cause_id) == (EventKind.REFUND_FAILED, "REFUNDPSP0000001")
        assert undone.event_id == f"REFUNDPSP0000001:{code}:true"


def test_a_refund_without_the_payments_psp_reference_is_malformed() -> None:
    with pytest.raises(MalformedWebhook, match="originalReference"):
        events(item(eventCode="REFUND", pspReference="REFUNDPSP0000001"))


def test_a_dispute_keeps_one_cause_id_from_opening_to_its_end() -> None:
    dispute = {"pspReference": "DISPUTEPSP000001", "amount": {"currency": "EUR", "value": 1250}, "additionalData": {}}
    [opened] = events(item(**dispute, eventCode="CHARGEBACK", originalReference="QFQTPCQ8HXSKGK82"))
    [won] = events(item(**dispute, eventCode="CHARGEBACK_REVERSED"))
    [lost] = events(item(**dispute, eventCode="SECOND_CHARGEBACK"))
    assert [e.kind for e in (opened, won, lost)] == [
        EventKind.DISPUTE_OPENED,
        EventKind.DISPUTE_WON,
        EventKind.DISPUTE_LOST,
    ]
    assert {e.cause_id for e in (opened, won, lost)} == {"DISPUTEPSP000001"}
    assert len({e.event_id for e in (opened, won, lost)}) == 3
    assert opened.payment.ids == {"psp_reference": "QFQTPCQ8HXSKGK82"}
    assert won.payment.ids == {} and won.payment.merchant_reference == REFERENCE
    [pre_won] = events(item(**dispute, eventCode="PREARBITRATION_WON"))
    [pre_lost] = events(item(**dispute, eventCode="PREARBITRATION_LOST"))
    assert (pre_won.kind, pre_lost.kind) == (EventKind.DISPUTE_WON, EventKind.DISPUTE_LOST)


@pytest.mark.parametrize(
    "fields",
    [
        {"eventCode": "NOTIFICATION_OF_CHARGEBACK", "originalReference": "QFQTPCQ8HXSKGK82"},
        {"eventCode": "CAPTURE"},
        {"eventCode": "CANCELLATION"},
        {"eventCode": "EXPIRE"},
        {"eventCode": "REPORT_AVAILABLE", "merchantReference": ""},
        {"eventCode": "SOMETHING_NEW"},
        {"eventCode": "CHARGEBACK", "success": "false"},
        {"eventCode": "OFFER_CLOSED", "success": "false"},
        {"merchantAccountCode": "AnotherMerchantECOM"},
    ],
)
def test_items_we_do_not_act_on_give_no_event(fields: dict[str, Any]) -> None:
    assert events(item(**fields)) == []


def test_a_batch_gives_its_events_in_order() -> None:
    batch = events(
        item(pspReference="FIRSTPSPREFEREN1"),
        item(eventCode="NOTIFICATION_OF_CHARGEBACK"),
        item(pspReference="THIRDPSPREFEREN1", success="false"),
    )
    assert [e.event_id for e in batch] == [
        "FIRSTPSPREFEREN1:AUTHORISATION:true",
        "THIRDPSPREFEREN1:AUTHORISATION:false",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"id": 1}',
        b'{"notificationItems": {}}',
        b'{"notificationItems": [1]}',
        b'{"notificationItems": [{"NotificationRequestItem": []}]}',
        b"[" * 100_000,
    ],
)
def test_an_unreadable_body_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        wire.adyen_notification_to_events(raw, MERCHANT)


@pytest.mark.parametrize(
    "fields",
    [
        {"eventCode": 7},
        {"eventCode": ""},
        {"success": True},
        {"success": "yes"},
        {"pspReference": None},
        {"merchantAccountCode": None},
        {"merchantReference": 5},
        {"amount": None},
        {"amount": {"value": "1250", "currency": "EUR"}},
        {"amount": {"value": 12.5, "currency": "EUR"}},
        {"amount": {"value": 1250, "currency": "ZZZ"}},
        {"amount": {"value": 1250}},
        {"merchantReference": "", "additionalData": {}},
    ],
)
def test_an_unreadable_item_is_malformed_not_a_crash(fields: dict[str, Any]) -> None:
    raw = item()
    raw.update(fields)
    with pytest.raises(MalformedWebhook):
        wire.adyen_notification_to_events(body(raw), MERCHANT)


# --- payment links -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("active", EventKind.PENDING),
        ("paymentPending", EventKind.PENDING),
        ("completed", EventKind.SUCCEEDED),
        ("paid", EventKind.SUCCEEDED),
        ("expired", EventKind.EXPIRED),
    ],
)
def test_link_statuses(status: str, kind: EventKind) -> None:
    link = {"id": LINK, "status": status, "amount": {"value": 7500, "currency": "ISK"}, "reference": REFERENCE}
    event = wire.payment_link_status_event(link, LINK)
    assert event.kind is kind
    assert event.event_id == f"poll:{LINK}:{kind}"
    assert (event.amount_minor, event.currency) == (75, "ISK")
    assert (event.payment.processor_reference, event.payment.merchant_reference) == (LINK, REFERENCE)


@pytest.mark.parametrize(
    "link",
    [
        None,
        [],
        {"status": "weird", "amount": {"value": 1, "currency": "EUR"}},
        {"status": "active"},
        {"status": "active", "amount": {"value": "1", "currency": "EUR"}},
    ],
)
def test_an_unreadable_link_is_a_value_error(link: object) -> None:
    with pytest.raises(ValueError):
        wire.payment_link_status_event(link, LINK)


def test_created_link() -> None:
    assert wire.created_link({"id": LINK, "url": "https://test.adyen.link/PL1"}) == (
        LINK,
        "https://test.adyen.link/PL1",
    )
    bad_answers: list[object] = [
        {"id": LINK},
        {"url": "https://x"},
        {"id": "", "url": "https://x"},
        {"id": LINK, "url": "ftp://x"},
        [],
    ]
    for bad in bad_answers:
        with pytest.raises(ValueError):
            wire.created_link(bad)


def test_the_ack_is_accepted_in_plain_text() -> None:
    assert (wire.ADYEN_ACK.status, wire.ADYEN_ACK.body, wire.ADYEN_ACK.content_type) == (
        200,
        b"[accepted]",
        "text/plain",
    )


# --- settings ----------------------------------------------------------------------------------


def settings(**fields: Any) -> AdyenSettings:
    base: dict[str, Any] = {
        "processor": "adyen",
        "environment": "test",
        "methods": ["card"],
        "merchant_account": MERCHANT,
        "api_key": "AQE" + "k" * 40,
        "hmac_key": KEY,
    }
    base.update(fields)
    return AdyenSettings.model_validate(base)


def test_settings_defaults_and_validation() -> None:
    config = settings()
    assert config.api_base_url == "https://checkout-test.adyen.com"
    assert config.webhook_username is None
    with pytest.raises(ValueError, match="hex"):
        settings(hmac_key="z" * 64)
    with pytest.raises(ValueError, match="hex digits"):
        settings(hmac_key="ab" * 8)
    with pytest.raises(ValueError, match="go together"):
        settings(webhook_username="ws_user")
    paired = settings(webhook_username="ws_user", webhook_password="pw" * 10)
    assert paired.webhook_password is not None
    with pytest.raises(ValueError):
        settings(merchant_account="")
    # Live money never goes to Adyen's test endpoint: a production integration names its live one.
    with pytest.raises(ValueError, match="live Checkout endpoint"):
        settings(environment="production")
    live = "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout"
    assert settings(environment="production", api_base_url=live).api_base_url == live


def test_an_item_we_ignore_is_not_read_further() -> None:
    odd = {"eventCode": "AUTHORISATION_ADJUSTMENT", "success": "maybe", "amount": "n/a"}
    assert wire.adyen_notification_to_events(body(odd), MERCHANT) == []
    with pytest.raises(MalformedWebhook, match="item 0"):
        wire.adyen_notification_to_events(body({**odd, "eventCode": "AUTHORISATION"}), MERCHANT)
