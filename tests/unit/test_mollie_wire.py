"""Mollie's wire format (``services/payments/processors/mollie/wire.py``) on fixed vectors: amounts as
Mollie's decimal strings, request bodies, the id-only webhook, every status of payments, refunds and
chargebacks mapped to events, and what is refused. The vectors are Mollie's own examples where the
documentation has one (mollie/api-documentation ``get-payment-chargeback.rst``: ``chb_n9z0tp``,
``"43.38"`` USD; docs.mollie.com/reference/webhooks: ``id=tr_5B8cwPMGnU6qLbRvo7qEZo``)."""

from __future__ import annotations

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
    PaymentRef,
    ProcessorEvent,
    RefundRequest,
)
from services.payments.processors.mollie import wire
from services.payments.processors.mollie.config import MollieSettings
from shared.money import CURRENCY_EXPONENTS, MoneyError

TEST_KEY = "test_dHar4XY7LxsDOtmnkVtjNVWXLSlXsM"  # Mollie's documentation key
LIVE_KEY = "live_dHar4XY7LxsDOtmnkVtjNVWXLSlXsM"
REFERENCE = "7f0c3f5e-57b5-4bd6-9b1f-9f5d0f6c1a11"


def payment_json(status: str = "paid", **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resource": "payment",
        "id": "tr_7UhSN1zuXS",
        "mode": "live",
        "status": status,
        "amount": {"currency": "EUR", "value": "25.00"},
        "description": "Top-up",
        "method": "ideal",
        "metadata": {"reference": REFERENCE, "payment_id": REFERENCE, "order_id": str(uuid.uuid4())},
        "_links": {
            "checkout": {"href": "https://www.mollie.com/checkout/select-method/7UhSN1zuXS", "type": "text/html"}
        },
    }
    body.update(more)
    return body


def refund_json(refund_id: str, status: str, value: str = "10.00") -> dict[str, Any]:
    return {"resource": "refund", "id": refund_id, "status": status, "amount": {"currency": "EUR", "value": value}}


def chargeback_json(chargeback_id: str = "chb_n9z0tp", reversed_at: str | None = None) -> dict[str, Any]:
    return {
        "resource": "chargeback",
        "id": chargeback_id,
        "amount": {"currency": "EUR", "value": "25.00"},
        "settlementAmount": {"currency": "EUR", "value": "-25.00"},
        "createdAt": "2018-03-14T17:00:52.0Z",
        "reason": {"code": "AC01", "description": "Account identifier incorrect (i.e. invalid IBAN)"},
        "reversedAt": reversed_at,
        "paymentId": "tr_7UhSN1zuXS",
    }


def events_of(obj: dict[str, Any]) -> list[ProcessorEvent]:
    return wire.payment_events(wire.MolliePayment.from_json(obj))


OURS = PaymentRef(merchant_reference=REFERENCE, processor_reference="tr_7UhSN1zuXS")


# --- amounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "value"),
    [
        (2500, "EUR", "25.00"),
        (1, "EUR", "0.01"),
        (100000, "EUR", "1000.00"),
        (2550, "GBP", "25.50"),
        (500, "ISK", "500"),
    ],
)
def test_amounts_are_strings_with_the_currencys_decimals(minor: int, currency: str, value: str) -> None:
    assert wire.to_mollie_amount(minor, currency) == {"currency": currency, "value": value}
    assert wire.from_mollie_amount({"currency": currency, "value": value}) == (minor, currency)


def test_amounts_that_cannot_be_charged_are_refused() -> None:
    for minor in (0, -1):
        with pytest.raises(MoneyError):
            wire.to_mollie_amount(minor, "EUR")
    with pytest.raises(MoneyError):
        wire.to_mollie_amount(True, "EUR")
    with pytest.raises(MoneyError):
        wire.to_mollie_amount(2500, "XXX")


@pytest.mark.parametrize(
    "amount",
    [
        {"currency": "EUR", "value": 25.0},  # "Non-string values are not accepted"
        {"currency": "EUR", "value": "25.001"},  # finer than a cent: never rounded
        {"currency": "EUR", "value": "-1.00"},
        {"currency": "EUR", "value": "1e3"},
        {"currency": "EUR", "value": " 25.00"},
        {"currency": "eur", "value": "25.00"},
        {"currency": "EUR"},
        "25.00",
    ],
)
def test_unreadable_amounts_are_refused(amount: object) -> None:
    with pytest.raises(wire.WireError):
        wire.from_mollie_amount(amount)


def test_a_currency_we_never_charge_in_is_not_ours() -> None:
    with pytest.raises(wire.UnsupportedCurrency):
        wire.from_mollie_amount({"currency": "XAU", "value": "1.00"})


@given(st.integers(min_value=1, max_value=10**12), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_amounts_round_trip_exactly(minor: int, currency: str) -> None:
    amount = wire.to_mollie_amount(minor, currency)
    assert Decimal(amount["value"]).as_tuple().exponent == -CURRENCY_EXPONENTS[currency]
    assert wire.from_mollie_amount(amount) == (minor, currency)


# --- requests ----------------------------------------------------------------------------------


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "payment_id": uuid.UUID(REFERENCE),
        "order_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "reference": REFERENCE,
        "amount_minor": 2500,
        "currency": "EUR",
        "method": "card",
        "return_url": "https://pay.example/topup/1/return",
        "webhook_url": "https://pay.example/webhooks/mollie_main",
        "description": "EV balance top-up",
        "locale": "nl-BE",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def test_the_create_body_is_the_documented_one() -> None:
    assert wire.create_payment_body(checkout_request()) == {
        "amount": {"currency": "EUR", "value": "25.00"},
        "description": "EV balance top-up",
        "redirectUrl": "https://pay.example/topup/1/return",
        "webhookUrl": "https://pay.example/webhooks/mollie_main",
        "metadata": {
            "reference": REFERENCE,
            "payment_id": REFERENCE,
            "order_id": "00000000-0000-4000-8000-000000000001",
        },
        "method": "creditcard",
        "locale": "nl_BE",
    }


def test_the_create_body_is_the_same_for_the_same_request() -> None:
    # A retry with the same Idempotency-Key must send the same parameters, or Mollie answers 400.
    assert wire.create_payment_body(checkout_request()) == wire.create_payment_body(checkout_request())


def test_every_method_we_offer_has_a_mollie_code() -> None:
    assert set(MollieSettings.payment_methods) == set(wire.METHOD_CODES)
    assert wire.create_payment_body(checkout_request(method="bank_transfer"))["method"] == "banktransfer"
    assert "method" not in wire.create_payment_body(checkout_request(method="anything"))


@pytest.mark.parametrize(
    ("ours", "mollies"),
    [
        ("de", "de_DE"),
        ("en", "en_US"),
        ("en-GB", "en_GB"),
        ("nl_BE", "nl_BE"),
        ("pt-BR", "pt_PT"),
        ("ja", None),
        (None, None),
    ],
)
def test_locales(ours: str | None, mollies: str | None) -> None:
    assert wire.mollie_locale(ours) == mollies


def test_a_long_description_is_cut_and_an_empty_one_named() -> None:
    assert len(wire.create_payment_body(checkout_request(description="x" * 400))["description"]) == 255
    assert wire.create_payment_body(checkout_request(description="  "))["description"] == "Top-up"


def test_the_refund_body() -> None:
    request = RefundRequest(payment=OURS, refund_key="rk-1", amount_minor=1000, currency="EUR", reason="driver asked")
    assert wire.create_refund_body(request) == {
        "amount": {"currency": "EUR", "value": "10.00"},
        "metadata": {"refund_key": "rk-1", "reference": REFERENCE},
        "description": "driver asked",
    }


# --- webhooks ----------------------------------------------------------------------------------


def test_the_webhook_names_one_payment() -> None:
    assert wire.webhook_payment_id(b"id=tr_5B8cwPMGnU6qLbRvo7qEZo") == "tr_5B8cwPMGnU6qLbRvo7qEZo"
    # Percent-encoding means the same form.
    assert wire.webhook_payment_id(b"id=tr%5F5B8cwPMGnU6qLbRvo7qEZo") == "tr_5B8cwPMGnU6qLbRvo7qEZo"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"id=",
        b"id=ord_5B8cwP",  # an order's id: evtopup sets webhooks on payments only
        b"id=re_5B8cwP",
        b"id=tr_1&id=tr_2",
        b"tr_5B8cwPMGnU6qLbRvo7qEZo",
        b'{"id": "tr_5B8cwPMGnU6qLbRvo7qEZo"}',
        b"id=tr_\xff",
        b"id=tr_abc%00",
    ],
)
def test_anything_else_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        wire.webhook_payment_id(body)


# --- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("open", EventKind.PENDING),
        ("pending", EventKind.PENDING),
        ("authorized", EventKind.PENDING),
        ("paid", EventKind.SUCCEEDED),
        ("failed", EventKind.FAILED),
        ("canceled", EventKind.FAILED),
        ("expired", EventKind.EXPIRED),
    ],
)
def test_every_payment_status(status: str, kind: EventKind) -> None:
    [event] = events_of(payment_json(status))
    reason = None if kind in (EventKind.PENDING, EventKind.SUCCEEDED) else status
    assert event == ProcessorEvent(f"tr_7UhSN1zuXS:{status}", OURS, kind, 2500, "EUR", reason)


def test_a_card_failure_says_why() -> None:
    [event] = events_of(payment_json("failed", details={"failureReason": "insufficient_funds"}))
    assert event.reason == "failed: insufficient_funds"


def test_a_payment_without_our_reference_is_not_ours() -> None:
    assert events_of(payment_json(metadata=None)) == []
    assert events_of(payment_json(metadata={"order": "someone else's"})) == []


def test_refunds_each_move_money_once_whatever_the_fetch() -> None:
    refunds = [
        refund_json("re_queued", "queued"),
        refund_json("re_pending", "pending"),
        refund_json("re_processing", "processing"),
        refund_json("re_done", "refunded", "5.00"),
        refund_json("re_failed", "failed"),
        refund_json("re_canceled", "canceled"),
    ]
    events = events_of(payment_json(_embedded={"refunds": refunds}))
    assert [(e.event_id, e.kind, e.amount_minor, e.cause_id) for e in events[1:]] == [
        ("re_processing:refunded", EventKind.REFUNDED, 1000, "re_processing"),
        ("re_done:refunded", EventKind.REFUNDED, 500, "re_done"),
        ("re_failed:refund_failed", EventKind.REFUND_FAILED, 1000, "re_failed"),
        ("re_canceled:refund_failed", EventKind.REFUND_FAILED, 1000, "re_canceled"),
    ]
    assert all(e.payment == OURS for e in events)
    # processing, then refunded: the same event, so the balance is debited once.
    later = events_of(payment_json(_embedded={"refunds": [refund_json("re_processing", "refunded")]}))
    assert later[1].event_id == events[1].event_id


def test_a_chargeback_opens_and_its_reversal_is_won() -> None:
    [_, opened] = events_of(payment_json(_embedded={"chargebacks": [chargeback_json()]}))
    assert opened == ProcessorEvent(
        "chb_n9z0tp:dispute_opened",
        OURS,
        EventKind.DISPUTE_OPENED,
        2500,
        "EUR",
        "AC01: Account identifier incorrect (i.e. invalid IBAN)",
        "chb_n9z0tp",
    )
    reversed_events = events_of(
        payment_json(_embedded={"chargebacks": [chargeback_json(reversed_at="2018-03-20T09:13:37.0Z")]})
    )
    assert [(e.event_id, e.kind) for e in reversed_events[1:]] == [
        ("chb_n9z0tp:dispute_opened", EventKind.DISPUTE_OPENED),
        ("chb_n9z0tp:dispute_won", EventKind.DISPUTE_WON),
    ]


def test_the_documented_chargeback_example_reads() -> None:
    # get-payment-chargeback.rst's response, as it is.
    chargeback = wire.MollieChargeback.from_json(
        {
            "resource": "chargeback",
            "id": "chb_n9z0tp",
            "amount": {"currency": "USD", "value": "43.38"},
            "settlementAmount": {"currency": "EUR", "value": "-35.07"},
            "createdAt": "2018-03-14T17:00:52.0Z",
            "reason": {"code": "AC01", "description": "Account identifier incorrect (i.e. invalid IBAN)"},
            "reversedAt": None,
            "paymentId": "tr_WDqYK6vllg",
        }
    )
    assert (chargeback.id, chargeback.amount_minor, chargeback.currency, chargeback.reversed) == (
        "chb_n9z0tp",
        4338,
        "USD",
        False,
    )


def test_the_poll_event() -> None:
    payment = wire.MolliePayment.from_json(payment_json("paid"))
    assert wire.poll_event(payment) == ProcessorEvent(
        "poll:tr_7UhSN1zuXS:succeeded", OURS, EventKind.SUCCEEDED, 2500, "EUR"
    )
    assert payment.checkout_url == "https://www.mollie.com/checkout/select-method/7UhSN1zuXS"


@pytest.mark.parametrize(
    "changes",
    [
        {"resource": "order"},
        {"status": "refunded"},  # a v1 status: v2 has none such
        {"id": "ord_123"},
        {"amount": {"currency": "EUR", "value": 25}},
        {"_embedded": {"refunds": [{"resource": "refund", "id": "re_1", "status": "refunded"}]}},
        {"_embedded": {"chargebacks": [chargeback_json("chargeback_1")]}},
        {"_embedded": {"refunds": "none"}},
    ],
)
def test_unreadable_payments_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(wire.WireError):
        wire.MolliePayment.from_json(payment_json(**changes))


def test_errors_read_without_credentials() -> None:
    error = wire.parse_error(
        {"status": 422, "title": "Unprocessable Entity", "detail": f"bad key {LIVE_KEY}", "field": "amount.value"}
    )
    assert error.words() == "Unprocessable Entity (amount.value) bad key [redacted]"
    assert wire.parse_error("<html>") == wire.MollieError()


# --- settings ----------------------------------------------------------------------------------


def settings(**values: Any) -> MollieSettings:
    return MollieSettings(**{"processor": "mollie", "methods": ["ideal"], **values})


def test_the_key_must_be_the_environments() -> None:
    assert settings(api_key=LIVE_KEY).api_base_url == "https://api.mollie.com"
    assert settings(api_key=TEST_KEY, environment="test").environment == "test"
    with pytest.raises(ValidationError, match="production integration takes the live_"):
        settings(api_key=TEST_KEY)
    with pytest.raises(ValidationError, match="test integration takes the test_"):
        settings(api_key=LIVE_KEY, environment="test")


def test_other_keys_are_refused_without_showing_them() -> None:
    for key in ("access_dHar4XY7LxsDOtmnkVtjNVWXLSlXsM", "sk_live_dHar4XY7LxsDOtmnkVtjNVW", "live_short"):
        with pytest.raises(ValidationError) as caught:
            settings(api_key=key)
        # The configuration loader reports the message and where it is (never pydantic's input).
        assert key not in caught.value.errors()[0]["msg"]


def test_only_mollies_methods_may_be_offered() -> None:
    with pytest.raises(ValidationError, match="does not take"):
        settings(api_key=LIVE_KEY, methods=["mpesa"])
