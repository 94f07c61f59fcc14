"""M-Pesa Daraja's wire format: amounts, request bodies, the STK password, answers, callbacks and their
confirmation. Fixed vectors are Daraja's own samples (the portal's M-Pesa Express page) or computed
once by hand, never by the code under test."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.payments.processors.base import (
    EventKind,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    PhonePrompt,
    ProcessorRefused,
    ProcessorUnavailable,
    WebhookAuth,
)
from services.payments.processors.mpesa import MpesaAdapter, wire
from services.payments.processors.mpesa.config import MpesaSettings

# Daraja's sandbox shortcode and passkey, and the Password its M-Pesa Express page shows for
# Timestamp 20210628092408 (checked by hand: printf '%s' 174379<passkey>20210628092408 | base64 -w0).
SANDBOX_SHORTCODE = "174379"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
DOC_TIMESTAMP = "20210628092408"
DOC_PASSWORD = (
    "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkxOTIwMjEwNjI4MDkyNDA4"
)

# The callbacks of Daraja's M-Pesa Express page, and the captured one of the reference (§6, with the
# Balance item that has no Value and the amount written 1.00).
DOC_SUCCESS = b"""{
  "Body": {
    "stkCallback": {
      "MerchantRequestID": "29115-34620561-1",
      "CheckoutRequestID": "ws_CO_191220191020363925",
      "ResultCode": 0,
      "ResultDesc": "The service request is processed successfully.",
      "CallbackMetadata": {
        "Item": [
          { "Name": "Amount", "Value": 1.0 },
          { "Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV" },
          { "Name": "TransactionDate", "Value": 20191219102115 },
          { "Name": "PhoneNumber", "Value": 254708374149 }
        ]
      }
    }
  }
}"""
CAPTURED_SUCCESS = (
    b'{"Body":{"stkCallback":{"MerchantRequestID":"8555-67195-1","CheckoutRequestID":"ws_CO_27072022125336783",'
    b'"ResultCode":0,"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":['
    b'{"Name":"Amount","Value":1.00},{"Name":"MpesaReceiptNumber","Value":"QKH94M1Z11"},{"Name":"Balance"},'
    b'{"Name":"TransactionDate","Value":20221117155745},{"Name":"PhoneNumber","Value":254796440427}]}}}}'
)
DOC_CANCELLED = b"""{
  "Body": {
    "stkCallback": {
      "MerchantRequestID": "f1e2-4b95-a71d-b30d3cdbb7a7942864",
      "CheckoutRequestID": "ws_CO_21072024125243250722943992",
      "ResultCode": 1032,
      "ResultDesc": "Request cancelled by user"
    }
  }
}"""


def callback(result_code: object, desc: str = "words", items: list[dict[str, object]] | None = None) -> bytes:
    stk: dict[str, object] = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": result_code,
        "ResultDesc": desc,
    }
    if items is not None:
        stk["CallbackMetadata"] = {"Item": items}
    return json.dumps({"Body": {"stkCallback": stk}}).encode()


def success_items(amount: object = 12) -> list[dict[str, object]]:
    return [
        {"Name": "PhoneNumber", "Value": 254708374149},
        {"Name": "Balance"},
        {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
        {"Name": "TransactionDate", "Value": 20191219102115},
        {"Name": "Amount", "Value": amount},
    ]


# -- the STK password and timestamp ---------------------------------------------------------------


def test_the_password_is_darajas_own_sample() -> None:
    assert wire.stk_password(SANDBOX_SHORTCODE, SANDBOX_PASSKEY, DOC_TIMESTAMP) == DOC_PASSWORD
    # And what that means, decoded by hand.
    assert base64.b64decode(DOC_PASSWORD).decode() == SANDBOX_SHORTCODE + SANDBOX_PASSKEY + DOC_TIMESTAMP


def test_the_timestamp_is_kenyan_time_whatever_the_clock_zone() -> None:
    utc = datetime(2021, 6, 28, 6, 24, 8, tzinfo=UTC)
    assert wire.daraja_timestamp(utc) == DOC_TIMESTAMP
    assert wire.daraja_timestamp(utc.astimezone(timezone(timedelta(hours=-5)))) == DOC_TIMESTAMP
    # Across midnight and a year: 22:30 UTC on New Year's Eve is 01:30 in Nairobi.
    assert wire.daraja_timestamp(datetime(2025, 12, 31, 22, 30, 0, tzinfo=UTC)) == "20260101013000"
    with pytest.raises(ValueError):
        wire.daraja_timestamp(datetime(2021, 6, 28, 6, 24, 8))


# -- amounts ----------------------------------------------------------------------------------------


def test_kes_minor_units_become_whole_shillings() -> None:
    assert wire.whole_shillings(1200, "KES") == 12
    assert wire.whole_shillings(100, "KES") == 1
    assert wire.whole_shillings(25_000_000, "KES") == 250_000


@pytest.mark.parametrize("amount_minor", [1250, 1, 99, 101, 10_050])
def test_cents_are_refused_never_rounded(amount_minor: int) -> None:
    with pytest.raises(ProcessorRefused, match="whole shillings"):
        wire.whole_shillings(amount_minor, "KES")


@pytest.mark.parametrize("amount_minor", [0, -100])
def test_nothing_or_less_is_refused(amount_minor: int) -> None:
    with pytest.raises(ProcessorRefused, match="at least KES 1"):
        wire.whole_shillings(amount_minor, "KES")


@pytest.mark.parametrize("currency", ["EUR", "USD", "UGX", "JPY", "KWD", "kes"])
def test_only_kes_is_charged(currency: str) -> None:
    # Zero-decimal (UGX, JPY) and three-decimal (KWD) currencies included: M-Pesa Kenya takes KES only.
    with pytest.raises(ProcessorRefused, match="only KES"):
        wire.whole_shillings(1000, currency)


def test_a_float_or_bool_amount_is_refused() -> None:
    with pytest.raises(ProcessorRefused):
        wire.whole_shillings(12.0, "KES")  # type: ignore[arg-type]
    with pytest.raises(ProcessorRefused):
        wire.whole_shillings(True, "KES")


@given(st.integers(min_value=1, max_value=250_000))
def test_shillings_round_trip_through_minor_units(shillings: int) -> None:
    assert wire.whole_shillings(shillings * 100, "KES") == shillings
    for written in (shillings, Decimal(f"{shillings}.00"), Decimal(f"{shillings}.0"), f"{shillings}.00"):
        assert wire.shillings_to_minor(written) == shillings * 100


@given(st.integers(min_value=-(10**12), max_value=10**12).filter(lambda n: n % 100 != 0))
def test_any_amount_with_cents_is_refused(amount_minor: int) -> None:
    with pytest.raises(ProcessorRefused):
        wire.whole_shillings(amount_minor, "KES")


@pytest.mark.parametrize(
    "value", [Decimal("1.5"), Decimal("0.99"), Decimal("0"), -1, 0, True, None, "1,00", "abc", 1.0, Decimal("1e10")]
)
def test_a_callback_amount_that_is_not_whole_positive_shillings_is_malformed(value: object) -> None:
    with pytest.raises(MalformedWebhook):
        wire.shillings_to_minor(value)


# -- request fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", ["254712345678", "254112345678", "254799999999"])
def test_kenyan_mobile_numbers_are_taken(phone: str) -> None:
    assert wire.kenyan_msisdn(phone) == phone


@pytest.mark.parametrize(
    "phone", [None, "", "0712345678", "+254712345678", "25471234567", "2547123456789", "254212345678", "4915112345678"]
)
def test_other_numbers_are_refused(phone: str | None) -> None:
    with pytest.raises(ProcessorRefused):
        wire.kenyan_msisdn(phone)


def test_the_account_reference_is_the_payment_ids_first_twelve_hex_digits() -> None:
    payment_id = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert wire.account_reference(payment_id) == "0f8fad5bd9cb"


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Top-up", "Top up"),
        ("EV charging balance top-up", "EV charging b"),
        ("Guthaben & <Aufladung>", "Guthaben Aufl"),
        ("", wire.DEFAULT_TRANSACTION_DESC),
        ("!!!", wire.DEFAULT_TRANSACTION_DESC),
    ],
)
def test_the_transaction_description_is_plain_and_short(description: str, expected: str) -> None:
    desc = wire.transaction_desc(description)
    assert desc == expected
    assert 1 <= len(desc) <= 13


def test_the_push_body_has_every_field_daraja_asks_for() -> None:
    body = wire.stk_push_body(
        shortcode=SANDBOX_SHORTCODE,
        passkey=SANDBOX_PASSKEY,
        timestamp=DOC_TIMESTAMP,
        transaction_type="CustomerPayBillOnline",
        amount_shillings=12,
        phone="254708374149",
        party_b=SANDBOX_SHORTCODE,
        callback_url="https://pay.example.com/webhooks/lipa",
        reference="0f8fad5bd9cb",
        description="EV top up",
    )
    assert body == {
        "BusinessShortCode": "174379",
        "Password": DOC_PASSWORD,
        "Timestamp": "20210628092408",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 12,
        "PartyA": "254708374149",
        "PartyB": "174379",
        "PhoneNumber": "254708374149",
        "CallBackURL": "https://pay.example.com/webhooks/lipa",
        "AccountReference": "0f8fad5bd9cb",
        "TransactionDesc": "EV top up",
    }
    assert isinstance(body["Amount"], int)


def test_the_query_body() -> None:
    assert wire.stk_query_body(
        shortcode=SANDBOX_SHORTCODE, passkey=SANDBOX_PASSKEY, timestamp=DOC_TIMESTAMP, checkout_request_id="ws_CO_1"
    ) == {
        "BusinessShortCode": "174379",
        "Password": DOC_PASSWORD,
        "Timestamp": DOC_TIMESTAMP,
        "CheckoutRequestID": "ws_CO_1",
    }


# -- answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expires_in", "seconds"), [("3599", 3599), (3599, 3599), (" 3599 ", 3599), ("0", 0)])
def test_the_token_answer_takes_expires_in_as_string_or_number(expires_in: object, seconds: int) -> None:
    assert wire.parse_token_answer({"access_token": "c9SQxWWhmdVRlyh0zh8gZDTkubVF", "expires_in": expires_in}) == (
        "c9SQxWWhmdVRlyh0zh8gZDTkubVF",
        seconds,
    )


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"expires_in": "3599"},
        {"access_token": "", "expires_in": "3599"},
        {"access_token": "a b", "expires_in": "3599"},
        {"access_token": "tok", "expires_in": "soon"},
        {"access_token": "tok", "expires_in": True},
        {"access_token": "tok", "expires_in": -1},
        {"access_token": "tok"},
    ],
)
def test_an_unusable_token_answer_is_unavailable(body: object) -> None:
    with pytest.raises(ProcessorUnavailable):
        wire.parse_token_answer(body)


def test_oauth_refusals_and_outages() -> None:
    refused = wire.oauth_failure(400, {"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"})
    assert isinstance(refused, ProcessorRefused)
    assert "400.008.01 Invalid Authentication passed" in str(refused)
    assert isinstance(wire.oauth_failure(503, None), ProcessorUnavailable)


def test_a_token_is_rejected_by_404_001_03_or_401() -> None:
    assert wire.token_rejected(404, {"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"})
    assert wire.token_rejected(401, None)
    assert not wire.token_rejected(404, {"errorCode": "404.001.01", "errorMessage": "Resource not found"})
    assert not wire.token_rejected(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Amount"})


def test_an_accepted_push_is_a_phone_prompt() -> None:
    checkout = wire.parse_push_answer(
        200,
        {
            "MerchantRequestID": "2654-4b64-97ff-b827b542881d3130",
            "CheckoutRequestID": "ws_CO_1007202409152617172396192",
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        },
    )
    assert checkout.processor_reference == "ws_CO_1007202409152617172396192"
    assert checkout.next_step == PhonePrompt("Success. Request accepted for processing")


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (
            400,
            {"requestId": "1", "errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Amount"},
            "Invalid Amount",
        ),
        (
            500,
            {"requestId": "1", "errorCode": "500.001.1001", "errorMessage": "Wrong credentials"},
            "Wrong credentials",
        ),
        (500, {"requestId": "1", "errorCode": "500.001.1001", "errorMessage": "Merchant does not exist"}, "Merchant"),
        (200, {"ResponseCode": "1", "ResponseDescription": "Rejected"}, "Rejected"),
        (404, {"requestId": "1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}, "Access Token"),
    ],
)
def test_a_refused_push_says_why(status: int, body: object, words: str) -> None:
    with pytest.raises(ProcessorRefused, match=words):
        wire.parse_push_answer(status, body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"requestId": "1", "errorCode": "500.003.1001", "errorMessage": "Internal Server Error"}),
        (500, {"requestId": "1", "errorCode": "500.003.02", "errorMessage": "Spike Arrest Violation"}),
        (503, None),
        (502, "<html>bad gateway</html>"),
        (200, None),
        (200, {"ResponseCode": "0"}),
        (200, {"ResponseCode": "0", "CheckoutRequestID": "ws CO with spaces"}),
    ],
)
def test_a_push_that_may_have_prompted_is_unavailable(status: int, body: object) -> None:
    with pytest.raises(ProcessorUnavailable):
        wire.parse_push_answer(status, body)


def test_an_echoed_credential_never_reaches_an_exception_text() -> None:
    echoed = {"errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid Password {DOC_PASSWORD}"}
    with pytest.raises(ProcessorRefused) as refused:
        wire.parse_push_answer(400, echoed)
    assert DOC_PASSWORD not in str(refused.value)
    assert "Invalid Password" in str(refused.value)


def test_a_query_of_a_decided_push_gives_its_result() -> None:
    result = wire.parse_query_answer(
        "ws_CO_1",
        200,
        {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": "22205-34066-1",
            "CheckoutRequestID": "ws_CO_1",
            "ResultCode": "1032",
            "ResultDesc": "Request cancelled by user",
        },
    )
    assert result == wire.StkQueryResult("ws_CO_1", False, "22205-34066-1", "1032", "Request cancelled by user")


def test_a_query_while_the_prompt_is_open_is_processing_not_a_failure() -> None:
    # safaricom/LNMOnlineAndroidSample#13, verbatim.
    body = {
        "requestId": "ws_CO_20022018230142206",
        "errorCode": "500.001.1001",
        "errorMessage": "The transaction is being processed",
    }
    assert wire.parse_query_answer("ws_CO_20022018230142206", 500, body).processing


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, {"errorCode": "500.001.1001", "errorMessage": "The transaction does not exist"}, ProcessorUnavailable),
        (500, {"errorCode": "500.003.02", "errorMessage": "System is busy"}, ProcessorUnavailable),
        (400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid CheckoutRequestID"}, ProcessorRefused),
        (200, {"ResponseCode": "0"}, ProcessorUnavailable),
        (200, [], ProcessorUnavailable),
        (200, {"ResponseCode": "0", "ResultCode": "0", "CheckoutRequestID": "ws_CO_other"}, ProcessorUnavailable),
    ],
)
def test_other_query_answers_are_errors(status: int, body: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        wire.parse_query_answer("ws_CO_1", status, body)


# -- callbacks --------------------------------------------------------------------------------------


def test_darajas_sample_success_callback() -> None:
    [event] = wire.parse_stk_webhook(DOC_SUCCESS)
    assert event.kind is EventKind.SUCCEEDED
    assert event.event_id == "ws_CO_191220191020363925:0"
    # Unsigned, and the STK query confirms only the outcome: the receipt and the Amount are anyone's
    # words, so the payment is named by its CheckoutRequestID alone and no amount is stated.
    assert event.payment == PaymentRef(processor_reference="ws_CO_191220191020363925")
    assert dict(event.payment.ids) == {}
    assert (event.amount_minor, event.currency) == (None, "KES")
    assert event.reason is None


def test_the_captured_callback_with_a_balance_item_without_value() -> None:
    parsed = wire.parse_stk_callback(CAPTURED_SUCCESS)
    assert parsed.amount_minor == 100
    assert parsed.receipt == "QKH94M1Z11"
    assert parsed.transaction_date == "20221117155745"
    assert parsed.phone == "254796440427"


@pytest.mark.parametrize("amount", [b"12", b"12.0", b"12.00", b'"12.00"'])
def test_items_are_read_by_name_in_any_order(amount: bytes) -> None:
    items = success_items()
    items[-1] = {"Name": "Amount", "Value": "__A__"}
    body = callback(0, items=items).replace(b'"__A__"', amount)
    # Parsed (and validated) by name wherever it stands, though not reported.
    assert wire.parse_stk_callback(body).amount_minor == 1200
    assert wire.parse_stk_callback(body).receipt == "NLJ7RT61SV"
    [event] = wire.parse_stk_webhook(body)
    assert event.kind is EventKind.SUCCEEDED
    assert (event.amount_minor, event.currency, dict(event.payment.ids)) == (None, "KES", {})


@pytest.mark.parametrize(
    ("result_code", "kind"),
    [
        (1032, EventKind.FAILED),
        (1037, EventKind.EXPIRED),
        (1019, EventKind.EXPIRED),
        (1, EventKind.FAILED),
        (2001, EventKind.FAILED),
        ("1032", EventKind.FAILED),
        ("SFC_IC0003", EventKind.FAILED),
    ],
)
def test_failures_map_to_their_kind_with_the_reason(result_code: object, kind: EventKind) -> None:
    [event] = wire.parse_stk_webhook(callback(result_code, "Request cancelled by user"))
    assert event.kind is kind
    assert event.event_id == f"ws_CO_191220191020363925:{result_code}"
    assert event.reason == "Request cancelled by user"
    assert event.amount_minor is None
    assert dict(event.payment.ids) == {}


def test_darajas_sample_cancelled_callback() -> None:
    [event] = wire.parse_stk_webhook(DOC_CANCELLED)
    assert (event.kind, event.event_id) == (EventKind.FAILED, "ws_CO_21072024125243250722943992:1032")


def test_a_failure_callbacks_metadata_is_ignored() -> None:
    [event] = wire.parse_stk_webhook(callback(1032, items=[{"Name": "Amount", "Value": "garbage"}]))
    assert event.kind is EventKind.FAILED


def test_a_redelivery_has_the_same_event_id_and_another_outcome_another() -> None:
    first = wire.parse_stk_webhook(CAPTURED_SUCCESS)
    again = wire.parse_stk_webhook(CAPTURED_SUCCESS.replace(b'"Body":', b'"Body" :'))
    failed = wire.parse_stk_webhook(callback(1032))
    assert first[0].event_id == again[0].event_id
    assert failed[0].event_id != wire.parse_stk_webhook(DOC_SUCCESS)[0].event_id


MALFORMED = [
    b"",
    b"not json",
    b"[]",
    b'{"id": 1}',
    b'{"Body": []}',
    b'{"Body": {}}',
    b'{"Body": {"stkCallback": []}}',
    b"\xff\xfe{}",
    b"[" * 100_000,
    b'{"Body": {"stkCallback": {"ResultCode": NaN}}}',
    callback(None),
    callback(True),
    callback(0.0),
    callback(""),
    callback(0),  # success without CallbackMetadata
    callback(0, items=[]),  # success without Amount
    callback(0, items=[{"Name": "Amount", "Value": 12}]),  # without receipt
    callback(0, items=success_items("12.5")),
    callback(0, items=success_items(-12)),
    callback(0, items=success_items(True)),
    callback(0, items=success_items(None)),
    callback(0, items=[*success_items(), {"Name": "Amount", "Value": 9999}]),
    callback(0, items=[{"Value": 12}]),
    callback(0, items=["Amount"]),  # type: ignore[list-item]
    json.dumps({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0}}}).encode(),
    json.dumps({"Body": {"stkCallback": {"MerchantRequestID": "1", "CheckoutRequestID": 5, "ResultCode": 1}}}).encode(),
    json.dumps(
        {"Body": {"stkCallback": {"MerchantRequestID": "1", "CheckoutRequestID": "ws CO", "ResultCode": 1}}}
    ).encode(),
    b'{"Body":{"stkCallback":{"MerchantRequestID":"1","CheckoutRequestID":"ws","ResultCode":1e999999999}}}',
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_an_unreadable_callback_is_malformed_never_a_crash(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        wire.parse_stk_webhook(body)


def test_a_fractional_amount_is_refused_not_rounded() -> None:
    body = CAPTURED_SUCCESS.replace(b'"Value":1.00', b'"Value":1.50')
    with pytest.raises(MalformedWebhook, match="whole number of shillings"):
        wire.parse_stk_webhook(body)


def test_an_amount_that_overflows_decimal_is_malformed_not_a_crash() -> None:
    body = callback(0, items=success_items("__A__")).replace(b'"__A__"', b"1e9999999999999999999")
    assert b'{"Name": "Amount", "Value": 1e9999999999999999999}' in body
    with pytest.raises(MalformedWebhook):
        wire.parse_stk_callback(body)
    with pytest.raises(MalformedWebhook):
        wire.parse_stk_callback(b'{"Amount": 1e9999999999999999999}')


def test_a_forged_amount_or_receipt_changes_nothing_reported() -> None:
    genuine = wire.parse_stk_webhook(callback(0, items=success_items(12)))
    forged = callback(0, items=success_items(92_000)).replace(b"NLJ7RT61SV", b"FORGED0001")
    assert wire.parse_stk_callback(forged).amount_minor == 9_200_000  # read, validated, not reported
    assert wire.parse_stk_webhook(forged) == genuine


# -- the callback as kept for audit -----------------------------------------------------------------


@pytest.mark.parametrize("raw", [DOC_SUCCESS, CAPTURED_SUCCESS, callback(0, items=success_items())])
def test_the_kept_callback_has_no_phone_number(raw: bytes) -> None:
    phone = str(wire.parse_stk_callback(raw).phone).encode()
    assert phone in raw
    kept = wire.callback_without_phone(raw)
    assert phone not in kept and b"PhoneNumber" not in kept
    # Everything else stays: the same callback, less the one item (a decimal Amount is kept as its
    # exact digits, written as a string: 1.00 becomes "1.00").
    original, stored = json.loads(raw, parse_float=str), json.loads(kept)
    items = original["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    original["Body"]["stkCallback"]["CallbackMetadata"]["Item"] = [i for i in items if i["Name"] != "PhoneNumber"]
    assert stored == original
    assert len(stored["Body"]["stkCallback"]["CallbackMetadata"]["Item"]) == len(items) - 1
    kept_callback = wire.parse_stk_callback(kept)
    assert kept_callback.phone is None
    assert (kept_callback.amount_minor, kept_callback.receipt) == (
        wire.parse_stk_callback(raw).amount_minor,
        wire.parse_stk_callback(raw).receipt,
    )
    assert wire.parse_stk_webhook(kept) == wire.parse_stk_webhook(raw)


def test_a_failure_callback_is_kept_as_it_came() -> None:
    assert json.loads(wire.callback_without_phone(DOC_CANCELLED)) == json.loads(DOC_CANCELLED)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"Body": {"stkCallback": {"CallbackMetadata": {"Item": "PhoneNumber 254708374149"}}}}',
        b'not json {"Name": "PhoneNumber", "Value": 254708374149}',
        b'{"PhoneNumber": 254708374149}',
        b'{"Body": {"stkCallback": {"CallbackMetadata": {"Item": [{"Name": "PhoneNumber", "Value": 2547083741',
    ],
)
def test_an_unreadable_body_naming_a_phone_number_is_not_kept(raw: bytes) -> None:
    assert wire.callback_without_phone(raw) == b""


def test_an_unreadable_body_without_a_phone_number_is_kept_as_it_came() -> None:
    assert wire.callback_without_phone(b"not json") == b"not json"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(
    st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v, default=str).encode()),
        json_values.map(lambda v: json.dumps({"Body": {"stkCallback": v}}, default=str).encode()),
        st.fixed_dictionaries(
            {
                "MerchantRequestID": st.text(max_size=8),
                "CheckoutRequestID": st.sampled_from(["ws_CO_1", "", "x y"]),
                "ResultCode": json_values,
                "CallbackMetadata": json_values,
            }
        ).map(lambda v: json.dumps({"Body": {"stkCallback": v}}, default=str).encode()),
    )
)
def test_any_body_either_parses_or_is_malformed(body: bytes) -> None:
    try:
        events = wire.parse_stk_webhook(body)
    except MalformedWebhook:
        return
    assert len(events) == 1
    assert events[0].amount_minor is None or events[0].amount_minor % 100 == 0


# -- confirmation by the query ----------------------------------------------------------------------


def stk(
    result_code: str, merchant: str = "29115-34620561-1", checkout: str = "ws_CO_191220191020363925"
) -> wire.StkCallback:
    return wire.StkCallback(merchant, checkout, result_code, "words")


def answer(result_code: str | None, merchant: str | None = "29115-34620561-1") -> wire.StkQueryResult:
    return wire.StkQueryResult("ws_CO_191220191020363925", result_code is None, merchant, result_code, "words")


@pytest.mark.parametrize(
    ("said", "queried", "confirmed"),
    [
        ("0", "0", True),
        ("1032", "1032", True),
        ("1037", "1032", True),  # a failure is a failure
        ("0", "1032", False),
        ("1032", "0", False),
        ("0", None, False),  # still being processed
        ("1032", None, False),
    ],
)
def test_a_callback_is_confirmed_only_by_the_same_side_of_success(
    said: str, queried: str | None, confirmed: bool
) -> None:
    assert wire.callback_confirmed(stk(said), answer(queried)) is confirmed


def test_a_callback_for_another_request_is_not_confirmed() -> None:
    assert not wire.callback_confirmed(stk("0", merchant="1-2-3"), answer("0"))
    assert not wire.callback_confirmed(stk("0", checkout="ws_CO_other"), answer("0"))
    assert wire.callback_confirmed(stk("0"), answer("0", merchant=None))


@pytest.mark.parametrize(
    ("peer", "allowed", "expected"),
    [
        ("196.201.214.200", ["196.201.214.200"], True),
        ("196.201.214.207", ["196.201.214.0/24"], True),
        ("196.201.213.114", ["196.201.214.0/24"], False),
        ("::ffff:196.201.214.200", ["196.201.214.200"], True),
        ("2001:db8::1", ["196.201.214.0/24"], False),
        ("2001:db8::1", ["2001:db8::/32"], True),
        (None, ["196.201.214.200"], False),
        ("not-an-ip", ["196.201.214.200"], False),
        ("196.201.214.200", [], False),
    ],
)
def test_the_peer_allow_list(peer: str | None, allowed: list[str], expected: bool) -> None:
    assert wire.peer_allowed(peer, allowed) is expected


def test_polling_answers_are_poll_events() -> None:
    pending = wire.query_event(wire.StkQueryResult("ws_CO_1", True))
    assert (pending.kind, pending.event_id, pending.reason) == (EventKind.PENDING, "poll:ws_CO_1:pending", None)
    paid = wire.query_event(answer("0"))
    assert (paid.kind, paid.event_id) == (EventKind.SUCCEEDED, "poll:ws_CO_191220191020363925:succeeded")
    # The query has no amount: a success says so rather than guessing.
    assert (paid.amount_minor, paid.currency) == (None, "KES")
    cancelled = wire.query_event(wire.StkQueryResult("ws_CO_1", False, "m", "1032", "Request cancelled by user"))
    assert (cancelled.kind, cancelled.reason) == (EventKind.FAILED, "Request cancelled by user")
    expired = wire.query_event(wire.StkQueryResult("ws_CO_1", False, "m", "1037", None))
    assert (expired.kind, expired.reason) == (EventKind.EXPIRED, "ResultCode 1037")


# -- settings and capabilities ----------------------------------------------------------------------


def settings(**overrides: object) -> MpesaSettings:
    values: dict[str, object] = {
        "processor": "mpesa",
        "methods": ["mpesa"],
        "shortcode": "174379",
        "consumer_key": "k" * 20,
        "consumer_secret": "s" * 20,
        "passkey": SANDBOX_PASSKEY,
    }
    return MpesaSettings.model_validate(values | overrides)


def test_settings_defaults() -> None:
    config = settings()
    assert config.api_base_url == "https://api.safaricom.co.ke"
    assert config.transaction_type == "CustomerPayBillOnline"
    assert config.credit_party == "174379"
    assert config.callback_ips == []
    assert settings(transaction_type="CustomerBuyGoodsOnline", party_b="5432109").credit_party == "5432109"


@pytest.mark.parametrize(
    "overrides",
    [
        {"shortcode": "17437a"},
        {"shortcode": "1234"},
        {"transaction_type": "CustomerPayBill"},
        {"party_b": "till"},
        {"callback_ips": ["196.201.214.300"]},
        {"consumer_secret": "short"},
        {"api_base_url": "https://user@api.safaricom.co.ke"},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        settings(**overrides)


def test_callback_ips_take_addresses_and_networks() -> None:
    assert settings(callback_ips=["196.201.214.200", "196.201.212.0/24"]).callback_ips == [
        "196.201.214.200",
        "196.201.212.0/24",
    ]


def test_capabilities() -> None:
    capabilities = MpesaAdapter.capabilities
    assert MpesaAdapter.name == "mpesa"
    assert MpesaAdapter.config_type is MpesaSettings
    assert capabilities.next_step is NextStepKind.PHONE_PROMPT
    assert capabilities.webhook_auth is WebhookAuth.STATUS_QUERY
    assert (capabilities.refunds, capabilities.partial_refunds, capabilities.disputes) == (False, False, False)
    assert capabilities.status_lookup is True
    assert capabilities.replay_window_s is None
    assert capabilities.create_is_idempotent is False
    assert "never" in capabilities.create_idempotency
    # Neither the query nor the unsigned callback vouches for an amount: payments uses the one it asked for.
    assert capabilities.states_amount is False


def test_the_ack_is_what_daraja_reads() -> None:
    assert json.loads(wire.ACK_BODY) == {"ResultCode": 0, "ResultDesc": "Accepted"}
