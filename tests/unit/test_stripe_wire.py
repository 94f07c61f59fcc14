"""services/payments/processors/stripe/wire.py: Stripe amounts, request forms, the webhook signature
(a fixed vector computed once with openssl, and the official SDK's verdict on the same payloads),
and the mapping of every Stripe event we act on (and of the ones we do not)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

import pytest
import stripe
from hypothesis import given, settings
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
from services.payments.processors.stripe.config import StripeSettings
from services.payments.processors.stripe.wire import (
    SIGNATURE_TOLERANCE_S,
    StripeCheckoutSession,
    checkout_session_form,
    compute_stripe_signature,
    from_stripe_amount,
    parse_stripe_error,
    refund_form,
    session_status_kind,
    stripe_event_to_processor_events,
    stripe_locale,
    to_stripe_amount,
    verify_stripe_signature,
)
from shared.money import CURRENCY_EXPONENTS, MoneyError
from shared.settings import WithheldSecret

# Computed once, by hand:
#   printf '1700000000.{"id": "evt_test_vector", "object": "event"}' \
#     | openssl dgst -sha256 -hmac 'whsec_pG8vN3kq7T2xYb5RmC1dWz9e'
SECRET = "whsec_pG8vN3kq7T2xYb5RmC1dWz9e"
TIMESTAMP = 1700000000
BODY = b'{"id": "evt_test_vector", "object": "event"}'
V1 = "a674cdb02ed2511d6afdd68e75ac9a246fe8021ec7963c59523a92262289b9f2"
HEADER = f"t={TIMESTAMP},v1={V1}"
# The same line keyed with a second (rolled) secret.
ROLLED_SECRET = "whsec_rolled_Q4sL8uJ2nA6fK0hV"
ROLLED_V1 = "99ee7600db433735f9e27066f8bd95206cbf63b5c14b0fa6c1e002bdf2dbc557"
NOW = TIMESTAMP + 10


def sdk_accepts(body: bytes, header: str | None, secret: str, tolerance: int | None = SIGNATURE_TOLERANCE_S) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, tolerance)
    except stripe.SignatureVerificationError:
        return False
    return True


def we_accept(body: bytes, header: str | None, secret: str, now_s: float) -> bool:
    try:
        verify_stripe_signature(secret, header, body, now_s)
    except InvalidSignature:
        return False
    return True


def test_import_stripe_is_the_official_sdk_not_our_package() -> None:
    assert "site-packages" in (stripe.__file__ or "")
    assert stripe.WebhookSignature.EXPECTED_SCHEME == "v1"


# --- configuration -------------------------------------------------------------------------------


def stripe_settings(**changes: Any) -> StripeSettings:
    values: dict[str, Any] = {
        "processor": "stripe",
        "methods": ["card"],
        "secret_key": "sk_test_0123456789abcdef",
        "webhook_secret": "whsec_0123456789abcdef",
    }
    values.update(changes)
    return StripeSettings(**values)


def test_the_api_base_is_stripes_unless_pointed_elsewhere() -> None:
    assert stripe_settings().api_base_url == "https://api.stripe.com"
    assert stripe_settings(api_base_url="http://127.0.0.1:9").api_base_url == "http://127.0.0.1:9"
    assert "sk_test_0123456789abcdef" not in repr(stripe_settings())


@pytest.mark.parametrize(
    "changes",
    [
        {"secret_key": "pk_test_0123456789abcdef"},  # a publishable key cannot create sessions
        {"secret_key": "sk_test_short"},
        {"webhook_secret": "0123456789abcdef0123"},
        {"api_base_url": "https://user@api.stripe.com"},
        {"processor": "sandbox"},
    ],
)
def test_settings_that_cannot_work_are_refused_at_start(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        stripe_settings(**changes)


def test_a_restricted_key_and_withheld_secrets_are_accepted() -> None:
    assert stripe_settings(secret_key="rk_live_0123456789abcdef").secret_key.get_secret_value().startswith("rk_")
    withheld = stripe_settings(secret_key=WithheldSecret(), webhook_secret=WithheldSecret())
    assert isinstance(withheld.webhook_secret, WithheldSecret)


# --- signatures: the fixed vector --------------------------------------------------------------


def test_the_fixed_vector_verifies() -> None:
    assert verify_stripe_signature(SECRET, HEADER, BODY, NOW) == TIMESTAMP


def test_our_signature_is_the_fixed_vector() -> None:
    assert compute_stripe_signature(SECRET, TIMESTAMP, BODY) == V1


def test_the_sdk_signs_the_fixed_vector_and_accepts_it() -> None:
    assert stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, TIMESTAMP) == HEADER
    assert sdk_accepts(BODY, HEADER, SECRET, tolerance=None)


def test_a_rolled_secret_second_v1_is_the_fixed_vector_too() -> None:
    assert compute_stripe_signature(ROLLED_SECRET, TIMESTAMP, BODY) == ROLLED_V1


@pytest.mark.parametrize(
    ("body", "header", "secret"),
    [
        (b'{"id": "evt_test_vector", "object": "evenT"}', HEADER, SECRET),  # tampered
        (b'{"id":"evt_test_vector","object":"event"}', HEADER, SECRET),  # re-serialised (whitespace)
        (BODY + b"\n", HEADER, SECRET),
        (BODY, HEADER, "whsec_pG8vN3kq7T2xYb5RmC1dWz9f"),  # wrong secret
        (BODY, f"t={TIMESTAMP + 1},v1={V1}", SECRET),  # the timestamp is signed
        (BODY, f"t={TIMESTAMP},v1={V1[:-1]}0", SECRET),
        (BODY, f"t={TIMESTAMP},v1={V1.upper()}", SECRET),
    ],
    ids=["tampered", "reserialised", "trailing-newline", "wrong-secret", "other-timestamp", "other-mac", "upper-hex"],
)
def test_an_altered_webhook_is_refused_by_us_and_by_the_sdk(body: bytes, header: str, secret: str) -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_stripe_signature(secret, header, body, NOW)
    assert not sdk_accepts(body, header, secret, tolerance=None)


def test_any_v1_may_match_while_a_secret_is_rolled() -> None:
    both = f"t={TIMESTAMP},v1={ROLLED_V1},v1={V1}"
    assert verify_stripe_signature(SECRET, both, BODY, NOW) == TIMESTAMP
    assert verify_stripe_signature(ROLLED_SECRET, both, BODY, NOW) == TIMESTAMP
    assert sdk_accepts(BODY, both, SECRET, tolerance=None) and sdk_accepts(BODY, both, ROLLED_SECRET, tolerance=None)


def test_a_v0_signature_does_not_count() -> None:
    # Stripe's test-mode header carries v0 (an older scheme); only v1 is checked.
    with pytest.raises(InvalidSignature, match="no v1"):
        verify_stripe_signature(SECRET, f"t={TIMESTAMP},v0={V1}", BODY, NOW)
    assert not sdk_accepts(BODY, f"t={TIMESTAMP},v0={V1}", SECRET, tolerance=None)
    assert verify_stripe_signature(SECRET, f"t={TIMESTAMP},v1={V1},v0=abc", BODY, NOW) == TIMESTAMP


@pytest.mark.parametrize("age_s", [0, 299, 300])
def test_a_timestamp_within_the_tolerance_is_accepted(age_s: int) -> None:
    assert verify_stripe_signature(SECRET, HEADER, BODY, TIMESTAMP + age_s) == TIMESTAMP


@pytest.mark.parametrize("age_s", [301, 3600, 10**9])
def test_a_stale_timestamp_is_refused(age_s: int) -> None:
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_stripe_signature(SECRET, HEADER, BODY, TIMESTAMP + age_s)


@pytest.mark.parametrize("age_s", [-3600, 0, 299, 301, 3600])
def test_the_tolerance_agrees_with_the_sdk(age_s: int) -> None:
    """A webhook signed ``age_s`` ago (negative: in the future) is accepted by us iff by the SDK."""
    body = b'{"id": "evt_age", "object": "event"}'
    now = time.time()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, int(now) - age_s)
    assert we_accept(body, header, SECRET, now) == sdk_accepts(body, header, SECRET) == (age_s <= 300)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"v1={V1}",
        f"t=,v1={V1}",
        f"t=abc,v1={V1}",
        f"ts={TIMESTAMP},v1={V1}",
        f"t={TIMESTAMP}",
        f"t={TIMESTAMP},v1=",
        f"t={TIMESTAMP},v1=\udcff",
        f"t={TIMESTAMP},v1=\ud800",
        f"t={TIMESTAMP},v1=é{V1}",
        ",,,",
        "t=1700000000.0,v1=" + V1,
        "t=99999999999999999999999,v1=" + V1,
    ],
)
def test_a_missing_or_garbled_header_is_refused_not_a_crash(header: str | None) -> None:
    with pytest.raises(InvalidSignature):
        verify_stripe_signature(SECRET, header, BODY, NOW)


@pytest.mark.parametrize("header", [f"t=+{TIMESTAMP},v1={V1}", f"t= {TIMESTAMP},v1={V1}", f"t=1_700_000_000,v1={V1}"])
def test_timestamps_only_python_int_would_read_are_refused(header: str) -> None:
    # stripe-python's int() takes these (and then verifies); we take only plain digits. A real
    # Stripe header never has them, so refusing costs nothing.
    with pytest.raises(InvalidSignature, match="timestamp"):
        verify_stripe_signature(SECRET, header, BODY, NOW)


def test_a_body_that_is_not_utf8_is_refused_not_a_crash() -> None:
    body = b'{"id": "\xff"}'
    header = f"t={TIMESTAMP},v1={compute_stripe_signature(SECRET, TIMESTAMP, b'other')}"
    with pytest.raises(InvalidSignature):
        verify_stripe_signature(SECRET, header, body, NOW)


@settings(max_examples=60, deadline=None)
@given(
    body=st.text(max_size=200).map(str.encode),
    secret=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    flip=st.integers(min_value=0, max_value=3),
)
def test_we_and_the_sdk_agree_on_signed_and_tampered_bodies(body: bytes, secret: str, flip: int) -> None:
    now = time.time()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), "whsec_" + secret, int(now))
    checked = body + b" " if flip == 1 else body
    key = "whsec_" + secret + ("x" if flip == 2 else "")
    if flip == 3:
        header = header.replace("v1=", "v1=0", 1)
    assert we_accept(checked, header, key, now) == sdk_accepts(checked, header, key) == (flip == 0)


def test_construct_event_and_our_parser_read_the_same_event() -> None:
    body = json.dumps(session_event("checkout.session.completed", session()), indent=2).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    sdk_event = stripe.Webhook.construct_event(body, header, SECRET)
    verify_stripe_signature(SECRET, header, body, time.time())
    [ours] = stripe_event_to_processor_events(body)
    assert ours.event_id == sdk_event.id
    assert ours.payment.processor_reference == sdk_event.data.object.id
    assert ours.amount_minor == sdk_event.data.object.amount_total


# --- amounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "currency", "stripe_amount"),
    [
        (1234, "EUR", 1234),
        (1, "USD", 1),
        (500, "JPY", 500),  # zero-decimal in ISO and at Stripe
        (7, "KRW", 7),
        (1230, "KWD", 1230),  # three-decimal: 1.230 KWD
        (1000, "BHD", 1000),
        (500, "ISK", 50000),  # ISO zero-decimal, Stripe two-decimal: 500 ISK is 50000
        (250000, "HUF", 250000),
    ],
)
def test_amounts_convert_both_ways(amount_minor: int, currency: str, stripe_amount: int) -> None:
    assert to_stripe_amount(amount_minor, currency) == stripe_amount
    assert from_stripe_amount(stripe_amount, currency) == amount_minor


@pytest.mark.parametrize(
    ("amount_minor", "currency"),
    [(1234, "KWD"), (1001, "TND"), (100, "XYZ"), (100, "eur"), (True, "EUR"), (12.5, "EUR")],
)
def test_an_amount_stripe_cannot_take_is_refused_not_rounded(amount_minor: Any, currency: str) -> None:
    with pytest.raises(MoneyError):
        to_stripe_amount(amount_minor, currency)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(150, "ISK"), (-1, "EUR"), ("100", "EUR"), (1.0, "EUR"), (None, "EUR"), (False, "EUR"), (100, "XYZ")],
)
def test_a_stripe_amount_we_cannot_represent_is_refused(amount: Any, currency: str) -> None:
    with pytest.raises(MoneyError):
        from_stripe_amount(amount, currency)


@given(
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    amount=st.integers(min_value=0, max_value=10**12),
)
def test_every_amount_stripe_takes_round_trips(currency: str, amount: int) -> None:
    try:
        stripe_amount = to_stripe_amount(amount, currency)
    except MoneyError:
        assert currency in {"BHD", "JOD", "KWD", "OMR", "TND"} and amount % 10
        return
    assert isinstance(stripe_amount, int)
    assert from_stripe_amount(stripe_amount, currency) == amount


# --- request forms ---------------------------------------------------------------------------

PAYMENT_ID = uuid.UUID("6f1c1f0e-9a53-4f49-9d3e-0f4f3b1f9a10")
ORDER_ID = uuid.UUID("0b5e2d2a-1111-4c4c-8c8c-2f2f2f2f2f2f")


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "payment_id": PAYMENT_ID,
        "order_id": ORDER_ID,
        "reference": str(PAYMENT_ID),
        "amount_minor": 2500,
        "currency": "EUR",
        "method": "card",
        "return_url": "https://pay.example/return/abc",
        "webhook_url": "https://pay.example/webhooks/stripe_main",
        "description": "EV charging balance top-up",
        "locale": "de",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def test_the_checkout_form_is_the_documented_one() -> None:
    assert checkout_session_form(checkout_request()) == [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "eur"),
        ("line_items[0][price_data][unit_amount]", "2500"),
        ("line_items[0][price_data][product_data][name]", "EV charging balance top-up"),
        ("line_items[0][quantity]", "1"),
        ("success_url", "https://pay.example/return/abc"),
        ("cancel_url", "https://pay.example/return/abc"),
        ("client_reference_id", str(PAYMENT_ID)),
        ("metadata[payment_id]", str(PAYMENT_ID)),
        ("metadata[order_id]", str(ORDER_ID)),
        ("payment_intent_data[metadata][reference]", str(PAYMENT_ID)),
        ("payment_intent_data[metadata][payment_id]", str(PAYMENT_ID)),
        ("payment_method_types[0]", "card"),
        ("locale", "de"),
    ]


def test_the_checkout_form_depends_on_the_request_alone() -> None:
    # A retry must send the same parameters: Stripe refuses a reused key with others.
    assert checkout_session_form(checkout_request()) == checkout_session_form(checkout_request())
    assert not any(name == "expires_at" for name, _ in checkout_session_form(checkout_request()))


def test_an_unknown_method_name_leaves_the_choice_to_the_dashboard() -> None:
    form = dict(checkout_session_form(checkout_request(method="wallet", locale=None, description="  ")))
    assert "payment_method_types[0]" not in form and "locale" not in form
    assert form["line_items[0][price_data][product_data][name]"] == "Top-up"


def test_the_checkout_form_converts_the_amount_and_refuses_what_stripe_cannot_take() -> None:
    form = dict(checkout_session_form(checkout_request(amount_minor=2000, currency="ISK")))
    assert (form["line_items[0][price_data][currency]"], form["line_items[0][price_data][unit_amount]"]) == (
        "isk",
        "200000",
    )
    with pytest.raises(MoneyError):
        checkout_session_form(checkout_request(amount_minor=1005, currency="KWD"))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("de", "de"),
        ("pt-BR", "pt-BR"),
        ("pt_br", "pt-BR"),
        ("en-US", "en"),
        ("fr-BE", "fr"),
        ("xx", None),
        (None, None),
    ],
)
def test_locales_map_to_checkout_locales(ours: str | None, theirs: str | None) -> None:
    assert stripe_locale(ours) == theirs


def test_the_refund_form_carries_the_keys_that_trace_it() -> None:
    request = RefundRequest(
        payment=PaymentRef(merchant_reference="ref-1", processor_reference="cs_1", ids={"payment_intent": "pi_1"}),
        refund_key="rk-1",
        amount_minor=300,
        currency="JPY",
        reason="driver asked",
    )
    assert refund_form("pi_1", request) == [
        ("payment_intent", "pi_1"),
        ("amount", "300"),
        ("metadata[refund_key]", "rk-1"),
        ("metadata[reference]", "ref-1"),
        ("metadata[reason]", "driver asked"),
    ]
    with pytest.raises(MoneyError):
        refund_form("pi_1", RefundRequest(PaymentRef(), "rk-2", 0, "EUR", ""))


def test_an_error_body_is_read_and_anything_else_is_empty() -> None:
    body = {"error": {"type": "invalid_request_error", "code": "amount_too_large", "message": "too much"}}
    error = parse_stripe_error(body)
    assert (error.type, error.code, error.message) == ("invalid_request_error", "amount_too_large", "too much")
    for other in (None, "<html>", [], {"error": "x"}, {"error": {"code": 7}}):
        assert parse_stripe_error(other).code is None


# --- events --------------------------------------------------------------------------------


def session(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "cs_test_a1",
        "object": "checkout.session",
        "amount_subtotal": 2500,
        "amount_total": 2500,
        "client_reference_id": "ref-1",
        "currency": "eur",
        "metadata": {"payment_id": "ref-1"},
        "mode": "payment",
        "payment_intent": "pi_1",
        "payment_status": "paid",
        "status": "complete",
        "url": None,
    }
    obj.update(changes)
    return obj


def session_event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-10-28.acacia",
        "created": 1700000000,
        "data": {"object": obj, **data},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def parse(event: dict[str, Any]) -> list[Any]:
    return stripe_event_to_processor_events(json.dumps(event, indent=2).encode())


@pytest.mark.parametrize(
    ("event_type", "changes", "kind"),
    [
        ("checkout.session.completed", {}, EventKind.SUCCEEDED),
        ("checkout.session.completed", {"payment_status": "unpaid"}, EventKind.PENDING),
        ("checkout.session.async_payment_succeeded", {}, EventKind.SUCCEEDED),
        ("checkout.session.async_payment_failed", {"payment_status": "unpaid"}, EventKind.FAILED),
        (
            "checkout.session.expired",
            {"status": "expired", "payment_status": "unpaid", "payment_intent": None},
            EventKind.EXPIRED,
        ),
    ],
)
def test_session_events(event_type: str, changes: dict[str, Any], kind: EventKind) -> None:
    [event] = parse(session_event(event_type, session(**changes), "evt_s"))
    assert event.kind is kind
    assert event.event_id == "evt_s"
    assert (event.amount_minor, event.currency) == (2500, "EUR")
    assert event.payment.merchant_reference == "ref-1"
    assert event.payment.processor_reference == "cs_test_a1"
    expected_ids = {"payment_intent": "pi_1"} if changes.get("payment_intent", "pi_1") else {}
    assert dict(event.payment.ids) == expected_ids
    assert event.cause_id is None


def test_a_session_amount_is_read_in_our_minor_units() -> None:
    [event] = parse(session_event("checkout.session.completed", session(currency="isk", amount_total=50000)))
    assert (event.amount_minor, event.currency) == (500, "ISK")


def test_a_completed_session_with_nothing_to_pay_is_ignored() -> None:
    assert parse(session_event("checkout.session.completed", session(payment_status="no_payment_required"))) == []


def test_a_completed_session_with_an_unknown_payment_status_is_malformed() -> None:
    with pytest.raises(MalformedWebhook):
        parse(session_event("checkout.session.completed", session(payment_status="maybe")))


def intent(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 2500,
        "currency": "eur",
        "status": "requires_payment_method",
        "metadata": {"reference": "ref-1", "payment_id": "ref-1"},
        "latest_charge": "ch_failed",
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    }
    obj.update(changes)
    return obj


def test_a_declined_card_is_failed_with_the_reference_from_the_intent_metadata() -> None:
    [event] = parse(session_event("payment_intent.payment_failed", intent(), "evt_d"))
    assert event.kind is EventKind.FAILED
    assert event.event_id == "evt_d"
    assert event.payment == PaymentRef(
        merchant_reference="ref-1", ids={"payment_intent": "pi_1", "charge": "ch_failed"}
    )
    assert (event.amount_minor, event.currency) == (2500, "EUR")
    assert event.reason == "insufficient_funds: Your card has insufficient funds."


def test_a_payment_failure_of_an_intent_that_is_not_ours_is_ignored() -> None:
    assert parse(session_event("payment_intent.payment_failed", intent(metadata={}))) == []
    # Not ours, so not read: even a shape we could not read is no reason to refuse it.
    assert parse(session_event("payment_intent.payment_failed", intent(metadata=None, amount="x"))) == []


def test_a_session_that_is_not_ours_is_ignored() -> None:
    foreign = session(metadata={"cart": "42"}, client_reference_id="cart-42", currency="cny", amount_total=1.5)
    assert parse(session_event("checkout.session.completed", foreign)) == []


def refund(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "re_1",
        "object": "refund",
        "amount": 700,
        "charge": "ch_1",
        "currency": "eur",
        "failure_reason": None,
        "metadata": {"refund_key": "rk-1", "reference": "ref-1"},
        "payment_intent": "pi_1",
        "status": "succeeded",
    }
    obj.update(changes)
    return obj


def test_a_succeeded_refund_is_refunded_once_whichever_event_says_so() -> None:
    created = parse(session_event("refund.created", refund(), "evt_r1"))
    updated = parse(session_event("refund.updated", refund(), "evt_r2", previous_attributes={"status": "pending"}))
    touched = parse(session_event("refund.updated", refund(), "evt_r3", previous_attributes={"metadata": {}}))
    assert created == updated == touched
    [event] = created
    assert event.kind is EventKind.REFUNDED
    assert event.event_id == "re_1:refunded"
    assert event.cause_id == "re_1"
    assert (event.amount_minor, event.currency) == (700, "EUR")
    assert event.payment == PaymentRef(merchant_reference="ref-1", ids={"payment_intent": "pi_1", "charge": "ch_1"})


def test_a_refund_still_pending_says_nothing() -> None:
    assert parse(session_event("refund.created", refund(status="pending"))) == []
    assert parse(session_event("refund.created", refund(status="requires_action"))) == []


def test_a_refund_that_failed_after_succeeding_is_refund_failed() -> None:
    failed = refund(status="failed", failure_reason="expired_or_canceled_card")
    [event] = parse(session_event("refund.updated", failed, "evt_f", previous_attributes={"status": "succeeded"}))
    assert event.kind is EventKind.REFUND_FAILED
    assert event.event_id == "re_1:refund_failed"
    assert (event.cause_id, event.amount_minor, event.reason) == ("re_1", 700, "expired_or_canceled_card")
    legacy = parse(session_event("charge.refund.updated", failed, "evt_g", previous_attributes={"status": "succeeded"}))
    assert legacy == [event]


@pytest.mark.parametrize(
    ("event_type", "status", "previous"),
    [
        ("refund.updated", "failed", {"status": "pending"}),
        ("refund.updated", "canceled", {"status": "requires_action"}),
        ("refund.failed", "failed", None),  # no previous_attributes: the state is payments' to know
        ("refund.updated", "failed", None),
    ],
)
def test_a_failed_refund_is_reported_whatever_came_before(
    event_type: str, status: str, previous: dict[str, Any] | None
) -> None:
    """Whether it had moved money (succeeded before) is payments' record of the refund to tell: a
    failure from pending undoes nothing there (``domain.decide_return``)."""
    data: dict[str, Any] = {"previous_attributes": previous} if previous is not None else {}
    [event] = parse(session_event(event_type, refund(status=status, failure_reason="declined"), **data))
    assert (event.kind, event.event_id, event.cause_id) == (EventKind.REFUND_FAILED, "re_1:refund_failed", "re_1")


def dispute(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "du_1",
        "object": "dispute",
        "amount": 2500,
        "balance_transactions": [],
        "charge": "ch_1",
        "currency": "eur",
        "is_charge_refundable": False,
        "payment_intent": "pi_1",
        "reason": "fraudulent",
        "status": "needs_response",
    }
    obj.update(changes)
    return obj


def test_a_chargeback_is_opened_once_by_created_and_funds_withdrawn() -> None:
    created = parse(session_event("charge.dispute.created", dispute(), "evt_1"))
    withdrawn = parse(session_event("charge.dispute.funds_withdrawn", dispute(), "evt_2"))
    assert created == withdrawn
    [event] = created
    assert event.kind is EventKind.DISPUTE_OPENED
    assert (event.event_id, event.cause_id) == ("du_1:dispute_opened", "du_1")
    assert (event.amount_minor, event.currency, event.reason) == (2500, "EUR", "fraudulent")
    assert event.payment == PaymentRef(ids={"payment_intent": "pi_1", "charge": "ch_1"})


@pytest.mark.parametrize(("status", "kind"), [("won", EventKind.DISPUTE_WON), ("lost", EventKind.DISPUTE_LOST)])
def test_a_closed_dispute_is_won_or_lost(status: str, kind: EventKind) -> None:
    [event] = parse(session_event("charge.dispute.closed", dispute(status=status, amount=1000)))
    assert event.kind is kind
    assert (event.event_id, event.cause_id, event.amount_minor) == (f"du_1:{kind}", "du_1", 1000)


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("charge.dispute.created", "warning_needs_response"),  # an inquiry withdraws nothing
        ("charge.dispute.created", "warning_under_review"),
        ("charge.dispute.closed", "warning_closed"),
        ("charge.dispute.closed", "prevented"),
    ],
)
def test_an_inquiry_moves_no_money(event_type: str, status: str) -> None:
    assert parse(session_event(event_type, dispute(status=status))) == []


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        ("checkout.session.completed", session(currency="cny")),
        ("refund.created", refund(currency="cny")),
        ("charge.dispute.created", dispute(currency="cny")),
    ],
)
def test_money_in_a_currency_evtopup_never_charges_in_is_not_ours(event_type: str, obj: dict[str, Any]) -> None:
    # Refused, Stripe would retry it for days and then disable the endpoint.
    assert parse(session_event(event_type, obj)) == []


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        ("payment_intent.succeeded", intent(status="succeeded")),
        ("payment_intent.created", intent()),
        ("charge.refunded", {"id": "ch_1", "object": "charge"}),
        ("charge.dispute.updated", dispute()),
        ("charge.dispute.funds_reinstated", dispute(status="won")),
        ("customer.created", {"id": "cus_1", "object": "customer"}),
        ("checkout.session.async_payment_pending", session()),
    ],
)
def test_events_we_do_not_act_on_are_ignored(event_type: str, obj: dict[str, Any]) -> None:
    assert parse(session_event(event_type, obj)) == []


def test_the_same_event_parsed_twice_is_the_same_and_another_event_is_another() -> None:
    body = json.dumps(session_event("payment_intent.payment_failed", intent(), "evt_a")).encode()
    other = json.dumps(session_event("payment_intent.payment_failed", intent(), "evt_b")).encode()
    assert stripe_event_to_processor_events(body) == stripe_event_to_processor_events(body)
    assert stripe_event_to_processor_events(body)[0].event_id != stripe_event_to_processor_events(other)[0].event_id


def broken(path: list[str], value: Any, base: dict[str, Any] | None = None) -> bytes:
    event = copy.deepcopy(base or session_event("checkout.session.completed", session()))
    node = event
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(event).encode()


MALFORMED = {
    "empty": b"",
    "not-json": b"not json",
    "array": b"[]",
    "id-int": b'{"id": 1}',
    "nested-deep": b"[" * 100_000,
    "not-utf8": b'{"id": "\xff\xfe"}',
    "nan": b'{"id": NaN}',
    "no-object-field": broken(["object"], KeyError),
    "thin-event": broken(["object"], "v2.core.event"),
    "no-data": broken(["data"], KeyError),
    "data-list": broken(["data"], []),
    "data-object-str": broken(["data", "object"], "cs_1"),
    "type-int": broken(["type"], 5),
    "session-not-a-session": broken(["data", "object", "object"], "refund"),
    "amount-str": broken(["data", "object", "amount_total"], "2500"),
    "amount-float": broken(["data", "object", "amount_total"], 25.0),
    "amount-bool": broken(["data", "object", "amount_total"], True),
    "amount-negative": broken(["data", "object", "amount_total"], -1),
    "amount-missing": broken(["data", "object", "amount_total"], KeyError),
    "currency-upper": broken(["data", "object", "currency"], "EUR"),
    "isk-fraction": broken(
        ["data", "object", "amount_total"], 150, session_event("checkout.session.completed", session(currency="isk"))
    ),
    "id-missing": broken(["data", "object", "id"], KeyError),
    "payment-status-int": broken(["data", "object", "payment_status"], 1),
    "intent-not-an-id": broken(["data", "object", "payment_intent"], 5),
    "refund-amount-str": broken(["data", "object", "amount"], "7", session_event("refund.created", refund())),
    "dispute-status-missing": broken(
        ["data", "object", "status"], KeyError, session_event("charge.dispute.closed", dispute())
    ),
    "intent-currency-null": broken(
        ["data", "object", "currency"], None, session_event("payment_intent.payment_failed", intent())
    ),
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
def test_an_unreadable_webhook_is_malformed_never_another_exception(body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        stripe_event_to_processor_events(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["id", "object", "amount", "amount_total", "currency", "status", "payment_status", "payment_intent",
          "charge", "metadata", "client_reference_id", "last_payment_error", "latest_charge", "reason"]  # fmt: skip
HANDLED = [
    ("checkout.session.completed", session()),
    ("checkout.session.expired", session()),
    ("payment_intent.payment_failed", intent()),
    ("refund.updated", refund()),
    ("charge.dispute.closed", dispute()),
]


@settings(max_examples=300, deadline=None)
@given(
    handled=st.sampled_from(HANDLED),
    replacements=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
    previous=JSON,
)
def test_any_shape_of_a_handled_event_is_events_or_malformed(
    handled: tuple[str, dict[str, Any]], replacements: dict[str, Any], previous: Any
) -> None:
    event_type, obj = handled
    event = session_event(event_type, {**obj, **replacements}, previous_attributes=previous)
    try:
        events = parse(event)
    except MalformedWebhook:
        return
    for item in events:
        assert isinstance(item.amount_minor, int) and isinstance(item.currency, str) and item.event_id


# --- where a session stands --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payment_status", "intent_status", "kind"),
    [
        ("open", "unpaid", None, EventKind.PENDING),
        ("open", "unpaid", "requires_payment_method", EventKind.PENDING),  # declined, may still pay
        ("complete", "paid", "succeeded", EventKind.SUCCEEDED),
        ("complete", "unpaid", "processing", EventKind.PENDING),
        ("complete", "unpaid", None, EventKind.PENDING),
        ("complete", "unpaid", "requires_payment_method", EventKind.FAILED),  # a delayed method failed
        ("complete", "unpaid", "succeeded", EventKind.SUCCEEDED),
        ("expired", "unpaid", None, EventKind.EXPIRED),
        ("expired", "unpaid", "canceled", EventKind.EXPIRED),
    ],
)
def test_session_status_maps_to_a_kind(
    status: str, payment_status: str, intent_status: str | None, kind: EventKind
) -> None:
    expanded: Any = {"id": "pi_1", "object": "payment_intent", "status": intent_status} if intent_status else None
    parsed = StripeCheckoutSession.from_json(
        session(status=status, payment_status=payment_status, payment_intent=expanded)
    )
    assert session_status_kind(parsed) is kind
    assert parsed.payment_intent == ("pi_1" if intent_status else None)


@pytest.mark.parametrize(
    ("status", "payment_status"), [("complete", "no_payment_required"), (None, "paid"), ("x", "paid")]
)
def test_a_session_state_we_cannot_read_is_an_error(status: str | None, payment_status: str) -> None:
    parsed = StripeCheckoutSession.from_json(session(status=status, payment_status=payment_status))
    with pytest.raises(ValueError, match="unexpected session state"):
        session_status_kind(parsed)
