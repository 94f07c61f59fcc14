"""The PayPal adapter against the PayPal simulator (``tests/simulators/paypal.py``), no database: orders,
approval, capture, refunds, disputes, webhooks received over HTTP by a tiny receiver that runs
``verify_webhook`` (PayPal's verification API, served by the simulator) and ``parse_webhook`` on the
request exactly as it arrived, and the faults: duplicates, held and reordered, lost, refused
deliveries, failing and slow creates, expired tokens, wrong credentials."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from services.payments.processors.base import (
    Checkout,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    PaymentRef,
    ProcessorEvent,
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundRequest,
    WebhookRequest,
)
from services.payments.processors.paypal import PayPalAdapter
from services.payments.processors.paypal.config import PayPalSettings
from tests.simulators.paypal import PayPalSimulator
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver

WAIT_S = 8.0


def make_adapter(simulator: PayPalSimulator, http: aiohttp.ClientSession, **changes: Any) -> PayPalAdapter:
    entry = {
        "processor": "paypal",
        "methods": ["paypal"],
        "api_base_url": simulator.base_url,
        **simulator.settings(),
        **simulator.secrets(),
        **changes,
    }
    return PayPalAdapter("paypal_main", PayPalSettings.model_validate(entry), SERVICES, http)


@dataclass
class World:
    simulator: PayPalSimulator
    adapter: PayPalAdapter
    receiver: WebhookReceiver
    http: aiohttp.ClientSession


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    simulator = PayPalSimulator()
    await simulator.start()
    http = aiohttp.ClientSession()
    adapter = make_adapter(simulator, http)
    receiver = WebhookReceiver(adapter, integration_id="paypal_main", fail_status=503, wait_s=WAIT_S)
    await receiver.start()
    simulator.webhook_url = receiver.url
    try:
        yield World(simulator, adapter, receiver, http)
    finally:
        await simulator.close()
        await receiver.close()
        await http.close()


def checkout_request(amount_minor: int = 2500, currency: str = "EUR") -> CheckoutRequest:
    payment_id = uuid.uuid4()
    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.uuid4(),
        reference=str(payment_id),
        amount_minor=amount_minor,
        currency=currency,
        method="paypal",
        return_url="http://127.0.0.1:9/return",
        webhook_url="http://127.0.0.1:9/webhooks/paypal_main",
        description="EV charging balance top-up",
        locale="en-GB",
    )


def ref(request: CheckoutRequest, checkout: Checkout, **ids: str) -> PaymentRef:
    return PaymentRef(request.reference, checkout.processor_reference, ids)


async def paid(world: World, amount_minor: int = 2500) -> tuple[CheckoutRequest, Checkout, PaymentRef]:
    """A payment approved and captured; its ``PaymentRef`` with the capture id."""
    request = checkout_request(amount_minor)
    checkout = await world.adapter.create_checkout(request)
    await world.simulator.act(checkout, "succeeded")
    captured = await world.adapter.complete_payment(ref(request, checkout), amount_minor, "EUR")
    assert captured.kind is EventKind.SUCCEEDED
    return request, checkout, captured.payment


def sent(world: World, event_type: str) -> int:
    return sum(event["event_type"] == event_type for event in world.simulator.sent_events)


# --------------------------------------------------------------------------------------------------
# Create, approve, capture
# --------------------------------------------------------------------------------------------------


async def test_a_create_retried_returns_the_same_order_and_it_polls_pending(world: World) -> None:
    request = checkout_request()
    first = await world.adapter.create_checkout(request)
    again = await world.adapter.create_checkout(request)
    assert first == again
    assert world.simulator.created_payments() == 1
    assert isinstance(first.next_step, Redirect)
    assert first.next_step.url == f"{world.simulator.base_url}/checkoutnow?token={first.processor_reference}"
    other = await world.adapter.create_checkout(checkout_request())
    assert other.processor_reference != first.processor_reference
    assert world.simulator.created_payments() == 2

    pending = await world.adapter.fetch_status(ref(request, first))
    assert pending == ProcessorEvent(
        event_id=f"poll:{first.processor_reference}:pending",
        payment=PaymentRef(request.reference, first.processor_reference),
        kind=EventKind.PENDING,
        amount_minor=2500,
        currency="EUR",
    )
    order = world.simulator.order(first.processor_reference)
    assert (order.custom_id, order.amount) == (request.reference, {"currency_code": "EUR", "value": "25.00"})


async def test_approval_then_capture_each_reported_by_webhook_and_by_poll(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    order_id = checkout.processor_reference
    await world.simulator.act(checkout, "succeeded")

    [approved] = await world.receiver.wait_for(EventKind.APPROVED)
    assert approved.payment == PaymentRef(request.reference, order_id)
    assert (approved.amount_minor, approved.currency) == (2500, "EUR")
    assert approved.event_id.startswith("WH-")
    polled = await world.adapter.fetch_status(ref(request, checkout))
    assert (polled.kind, polled.event_id) == (EventKind.APPROVED, f"poll:{order_id}:approved")

    captured = await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    capture_id = captured.payment.ids["capture"]
    assert captured == ProcessorEvent(
        event_id=f"capture:{capture_id}:succeeded",
        payment=PaymentRef(request.reference, order_id, {"capture": capture_id}),
        kind=EventKind.SUCCEEDED,
        amount_minor=2500,
        currency="EUR",
    )
    [webhook] = await world.receiver.wait_for(EventKind.SUCCEEDED)
    assert webhook.payment == captured.payment
    assert webhook.event_id.startswith("WH-") and webhook.event_id != approved.event_id

    # Capturing again (a retry after a lost answer) returns the same capture and captures nothing more.
    assert await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR") == captured
    assert sent(world, "PAYMENT.CAPTURE.COMPLETED") == 1
    after = await world.adapter.fetch_status(ref(request, checkout))
    assert (after.kind, after.event_id, after.payment.ids) == (
        EventKind.SUCCEEDED,
        f"poll:{order_id}:succeeded",
        {"capture": capture_id},
    )


async def test_an_order_captured_under_a_forgotten_request_id_reads_its_capture_back(world: World) -> None:
    request, checkout, payment = await paid(world)
    world.simulator.forget_request_ids()  # PayPal keeps a PayPal-Request-Id for hours only
    again = await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    assert again.kind is EventKind.SUCCEEDED
    assert again.payment == payment
    assert sent(world, "PAYMENT.CAPTURE.COMPLETED") == 1


async def test_a_declined_funding_source_fails_at_capture(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.simulator.act(checkout, "declined")
    await world.receiver.wait_for(EventKind.APPROVED)
    failed = await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    assert failed.kind is EventKind.FAILED
    assert failed.event_id == f"capture:{failed.payment.ids['capture']}:failed"
    [webhook] = await world.receiver.wait_for(EventKind.FAILED)
    assert webhook.payment == failed.payment
    assert webhook.reason == "DECLINED_BY_RISK_FRAUD_FILTERS"
    assert (await world.adapter.fetch_status(ref(request, checkout))).kind is EventKind.FAILED


async def test_an_expired_order_polls_expired_and_cannot_be_captured(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.simulator.act(checkout, "expired")
    expired = await world.adapter.fetch_status(ref(request, checkout))
    assert (expired.kind, expired.event_id, expired.payment) == (
        EventKind.EXPIRED,
        f"poll:{checkout.processor_reference}:expired",
        PaymentRef(request.reference, checkout.processor_reference),
    )
    with pytest.raises(ProcessorRefused, match="404"):
        await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    assert world.simulator.created_payments() == 1
    assert world.simulator.sent_events == []  # PayPal sends nothing for an order that expired


async def test_a_payer_who_cancels_leaves_the_order_pending_and_no_webhook(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    assert isinstance(checkout.next_step, Redirect)
    async with world.http.post(checkout.next_step.url, data={"action": "cancel"}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith(request.return_url + "?token=")
    assert (await world.adapter.fetch_status(ref(request, checkout))).kind is EventKind.PENDING
    assert world.simulator.sent_events == []


async def test_an_unapproved_order_is_not_captured(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    with pytest.raises(ProcessorRefused, match="ORDER_NOT_APPROVED"):
        await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    with pytest.raises(ProcessorRefused):
        await world.adapter.complete_payment(PaymentRef(request.reference), 2500, "EUR")


async def test_zero_decimal_currencies_and_amounts_paypal_cannot_take(world: World) -> None:
    jpy = await world.adapter.create_checkout(checkout_request(1234, "JPY"))
    assert world.simulator.order(jpy.processor_reference).amount == {"currency_code": "JPY", "value": "1234"}
    huf = await world.adapter.create_checkout(checkout_request(150000, "HUF"))
    assert world.simulator.order(huf.processor_reference).amount == {"currency_code": "HUF", "value": "1500"}
    calls = world.simulator.create_calls
    for amount_minor, currency in ((150050, "HUF"), (1234, "KWD"), (1000, "NGN")):
        with pytest.raises(ProcessorRefused):
            await world.adapter.create_checkout(checkout_request(amount_minor, currency))
    assert world.simulator.create_calls == calls  # refused before any call


# --------------------------------------------------------------------------------------------------
# Refunds and disputes
# --------------------------------------------------------------------------------------------------


async def test_a_full_refund_once_per_key(world: World) -> None:
    _, _, payment = await paid(world)
    refund = RefundRequest(payment, f"refund-{uuid.uuid4()}", 2500, "EUR", "charger out of order")
    accepted = await world.adapter.refund(refund)
    assert accepted.status == "COMPLETED"
    assert await world.adapter.refund(refund) == accepted  # the same key: the same refund
    [event] = await world.receiver.wait_for(EventKind.REFUNDED)
    assert (event.cause_id, event.amount_minor, event.currency) == (accepted.refund_id, 2500, "EUR")
    assert event.payment.ids == {"capture": payment.ids["capture"]}
    assert sent(world, "PAYMENT.CAPTURE.REFUNDED") == 1
    with pytest.raises(ProcessorRefused, match="CAPTURE_FULLY_REFUNDED"):
        await world.adapter.refund(RefundRequest(payment, "refund-again", 100, "EUR", ""))


async def test_partial_refunds_up_to_what_was_captured(world: World) -> None:
    _, _, payment = await paid(world)
    first = await world.adapter.refund(RefundRequest(payment, "partial-1", 1000, "EUR", "part"))
    second = await world.adapter.refund(RefundRequest(payment, "partial-2", 1200, "EUR", "part"))
    assert first.refund_id != second.refund_id
    events = await world.receiver.wait_for(EventKind.REFUNDED, 2)
    assert sorted((event.cause_id, event.amount_minor) for event in events) == sorted(
        [(first.refund_id, 1000), (second.refund_id, 1200)]
    )
    with pytest.raises(ProcessorRefused, match="REFUND_AMOUNT_EXCEEDED"):
        await world.adapter.refund(RefundRequest(payment, "partial-3", 301, "EUR", "too much"))
    await world.adapter.refund(RefundRequest(payment, "partial-4", 300, "EUR", "the rest"))
    assert world.simulator.order(payment.processor_reference or "").capture["status"] == "REFUNDED"  # type: ignore[index]


async def test_a_refund_needs_the_capture_id(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    with pytest.raises(ProcessorRefused, match="capture"):
        await world.adapter.refund(RefundRequest(ref(request, checkout), "refund-x", 100, "EUR", ""))


async def test_disputes_open_then_are_won_or_lost(world: World) -> None:
    _, checkout_won, payment_won = await paid(world)
    _, checkout_lost, payment_lost = await paid(world, 4000)
    won_id = await world.simulator.open_dispute(checkout_won.processor_reference, 2500)
    lost_id = await world.simulator.open_dispute(checkout_lost.processor_reference, 1500)
    opened = await world.receiver.wait_for(EventKind.DISPUTE_OPENED, 2)
    assert {(event.cause_id, event.amount_minor, event.payment.ids["capture"]) for event in opened} == {
        (won_id, 2500, payment_won.ids["capture"]),
        (lost_id, 1500, payment_lost.ids["capture"]),
    }
    await world.simulator.settle_dispute(won_id, won=True)
    await world.simulator.settle_dispute(lost_id, won=False)
    [won] = await world.receiver.wait_for(EventKind.DISPUTE_WON)
    [lost] = await world.receiver.wait_for(EventKind.DISPUTE_LOST)
    assert (won.cause_id, won.payment.ids) == (won_id, {"capture": payment_won.ids["capture"]})
    assert (lost.cause_id, lost.amount_minor) == (lost_id, 1500)


# --------------------------------------------------------------------------------------------------
# Webhook verification
# --------------------------------------------------------------------------------------------------


async def test_a_signed_webhook_verifies_through_paypals_api(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    webhook = world.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    await world.adapter.verify_webhook(webhook)
    [event] = await world.adapter.parse_webhook(webhook)
    assert (event.kind, event.payment.merchant_reference, event.payment.processor_reference) == (
        EventKind.SUCCEEDED,
        request.reference,
        checkout.processor_reference,
    )
    assert (event.amount_minor, event.currency) == (2500, "EUR")
    # No replay window: a delivery signed two days ago (PayPal retries for three) still verifies.
    await world.adapter.verify_webhook(
        world.simulator.signed_webhook(checkout.processor_reference, "declined", age_s=172800)
    )


def changed(
    webhook: WebhookRequest, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> WebhookRequest:
    return WebhookRequest(
        method=webhook.method,
        path=webhook.path,
        query=webhook.query,
        headers=headers if headers is not None else webhook.headers,
        body=body if body is not None else webhook.body,
        peer=webhook.peer,
        received_at_s=webhook.received_at_s,
    )


@pytest.mark.parametrize(
    "fault", ["tampered_body", "reserialised_body", "whitespace", "other_key", "other_transmission"]
)
async def test_a_webhook_paypal_did_not_sign_fails_verification(world: World, fault: str) -> None:
    checkout = await world.adapter.create_checkout(checkout_request())
    webhook = world.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    if fault == "tampered_body":
        webhook = changed(webhook, body=webhook.body.replace(b'"25.00"', b'"95.00"'))
    elif fault == "reserialised_body":
        # What a framework's parsed-then-dumped JSON would send: same content, other bytes.
        webhook = changed(webhook, body=json.dumps(json.loads(webhook.body), separators=(",", ":")).encode())
    elif fault == "whitespace":
        # Insignificant to JSON, not to PayPal's CRC32 of the event as sent.
        webhook = changed(webhook, body=webhook.body.replace(b'", "', b'",  "', 1))
    elif fault == "other_key":
        webhook = world.simulator.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    else:
        headers = dict(webhook.headers)
        headers["PAYPAL-TRANSMISSION-ID"] = str(uuid.uuid1())
        webhook = changed(webhook, headers=headers)
    calls = world.simulator.verify_calls
    with pytest.raises(InvalidSignature):
        await world.adapter.verify_webhook(webhook)
    assert world.simulator.verify_calls == calls + 1  # PayPal said FAILURE


async def test_missing_paypal_headers_are_refused_without_asking_paypal(world: World) -> None:
    checkout = await world.adapter.create_checkout(checkout_request())
    webhook = world.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    calls = world.simulator.verify_calls
    for header in ("PAYPAL-TRANSMISSION-SIG", "PAYPAL-CERT-URL", "PAYPAL-TRANSMISSION-TIME"):
        headers = {k: v for k, v in webhook.headers.items() if k.upper() != header}
        with pytest.raises(InvalidSignature, match="missing"):
            await world.adapter.verify_webhook(changed(webhook, headers=headers))
    with pytest.raises(InvalidSignature):
        await world.adapter.verify_webhook(changed(webhook, body=b"not json"))
    assert world.simulator.verify_calls == calls


async def test_another_webhook_id_fails_verification(world: World) -> None:
    other = make_adapter(world.simulator, world.http, webhook_id="7GH53639GA425732B")
    checkout = await world.adapter.create_checkout(checkout_request())
    with pytest.raises(InvalidSignature):
        await other.verify_webhook(world.simulator.signed_webhook(checkout.processor_reference, "succeeded"))


async def test_verification_when_paypal_is_unreachable_is_unavailable_so_the_webhook_comes_again(world: World) -> None:
    checkout = await world.adapter.create_checkout(checkout_request())
    webhook = world.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    dead = make_adapter(world.simulator, world.http, api_base_url="http://127.0.0.1:9")
    with pytest.raises(ProcessorUnavailable):
        await dead.verify_webhook(webhook)
    # The receiver answers 503 to what it cannot verify: PayPal (the simulator) tries again.
    world.receiver.adapter = dead
    await world.simulator.act(checkout, "succeeded")
    await world.simulator.wait_idle()
    assert world.receiver.answers == [503, 503, 503, 503]
    assert world.receiver.events == []


# --------------------------------------------------------------------------------------------------
# Delivery faults
# --------------------------------------------------------------------------------------------------


async def test_a_refused_delivery_is_retried_and_freshly_signed_each_time(world: World) -> None:
    world.receiver.fail_next = 2
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.simulator.act(checkout, "succeeded")
    [approved] = await world.receiver.wait_for(EventKind.APPROVED)
    await world.simulator.wait_idle()
    attempts = [d for d in world.simulator.deliveries if d.event_type == "CHECKOUT.ORDER.APPROVED"]
    assert [(d.attempt, d.status) for d in attempts] == [(0, 503), (1, 503), (2, 200)]
    assert len({d.transmission_id for d in attempts}) == 3
    assert approved.payment.merchant_reference == request.reference


async def test_copies_of_a_webhook_share_their_event_id(world: World) -> None:
    world.simulator.faults.copies = 2
    checkout = await world.adapter.create_checkout(checkout_request())
    await world.simulator.act(checkout, "succeeded")
    first, second = await world.receiver.wait_for(EventKind.APPROVED, 2)
    assert first == second
    assert world.receiver.answers == [200, 200]


async def test_held_webhooks_arrive_newest_first_on_release(world: World) -> None:
    world.simulator.faults.hold = True
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.simulator.act(checkout, "succeeded")
    await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    await asyncio.sleep(0.1)
    assert world.receiver.events == []
    await world.simulator.release()
    assert [event.kind for event in world.receiver.events] == [EventKind.SUCCEEDED, EventKind.APPROVED]


async def test_a_lost_webhook_is_healed_by_polling(world: World) -> None:
    world.simulator.faults.drop = True
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.simulator.act(checkout, "succeeded")
    await world.simulator.wait_idle()
    assert world.receiver.events == []
    assert (await world.adapter.fetch_status(ref(request, checkout))).kind is EventKind.APPROVED
    await world.adapter.complete_payment(ref(request, checkout), 2500, "EUR")
    healed = await world.adapter.fetch_status(ref(request, checkout))
    assert healed.kind is EventKind.SUCCEEDED


# --------------------------------------------------------------------------------------------------
# API faults, credentials, tokens
# --------------------------------------------------------------------------------------------------


async def test_a_500_on_create_is_unavailable_and_the_retry_creates_one_order(world: World) -> None:
    request = checkout_request()
    world.simulator.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable) as failure:
        await world.adapter.create_checkout(request)
    assert "500" in str(failure.value)
    assert world.simulator.created_payments() == 0
    await world.adapter.create_checkout(request)
    assert world.simulator.created_payments() == 1


async def test_a_create_answered_too_late_is_unavailable_and_the_retry_finds_the_same_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.adapter, "request_timeout_s", 0.5)
    world.simulator.slow_answer_s = 1.5
    request = checkout_request()
    world.simulator.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable, match="TimeoutError"):
        await world.adapter.create_checkout(request)
    assert world.simulator.created_payments() == 1
    retried = await world.adapter.create_checkout(request)
    assert world.simulator.created_payments() == 1
    assert world.simulator.order(retried.processor_reference).custom_id == request.reference


async def test_wrong_credentials_give_an_error_that_carries_no_secret(world: World) -> None:
    secrets = world.simulator.secrets()
    wrong = make_adapter(world.simulator, world.http, client_secret="not-the-secret-" + "x" * 20)
    with pytest.raises(ProcessorUnavailable) as failure:
        await wrong.create_checkout(checkout_request())
    text = f"{failure.value!s} {failure.value!r}"
    assert "401" in text
    for secret in (secrets["client_id"], secrets["client_secret"], "not-the-secret-", "Basic", "Authorization"):
        assert secret not in text
    # No chained exception that could carry the request (and its Authorization header) into a log.
    assert failure.value.__cause__ is None
    assert failure.value.__context__ is None or failure.value.__suppress_context__


async def test_an_unreachable_api_gives_an_error_that_carries_no_secret(world: World) -> None:
    dead = make_adapter(world.simulator, world.http, api_base_url="http://127.0.0.1:9")
    with pytest.raises(ProcessorUnavailable) as failure:
        await dead.fetch_status(PaymentRef("r", "5O190127TN364715T"))
    text = f"{failure.value!s} {failure.value!r}"
    for secret in world.simulator.secrets().values():
        assert secret not in text
    assert "ClientConnectorError" in text or "ClientOSError" in text


async def test_the_token_is_reused_and_fetched_again_once_paypal_refuses_it(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.adapter.fetch_status(ref(request, checkout))
    assert world.simulator.token_requests == 1
    world.simulator.expire_tokens()
    assert (await world.adapter.fetch_status(ref(request, checkout))).kind is EventKind.PENDING
    assert world.simulator.token_requests == 2
    assert world.simulator.refused_tokens == 1


async def test_a_token_about_to_expire_is_renewed_before_use() -> None:
    simulator = PayPalSimulator(token_ttl_s=2)
    await simulator.start()
    try:
        async with aiohttp.ClientSession() as http:
            adapter = make_adapter(simulator, http)
            request = checkout_request()
            checkout = await adapter.create_checkout(request)
            assert simulator.token_requests == 1
            await asyncio.sleep(1.2)  # past the renewal point (half of 2 s), before expiry
            await adapter.fetch_status(ref(request, checkout))
            assert simulator.token_requests == 2
            assert simulator.refused_tokens == 0  # renewed before use, not after a 401
    finally:
        await simulator.close()
