"""The Stripe adapter against the Stripe simulator (``tests/simulators/stripe_sim.py``), over real HTTP
both ways: checkouts, the driver's outcomes, webhooks verified and parsed by a small receiver exactly
as payments' webhook endpoint would, polling, refunds, disputes, delivery faults and API failures.
No database or broker is needed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from services.payments.processors.base import (
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
from services.payments.processors.stripe import StripeAdapter
from services.payments.processors.stripe.config import StripeSettings
from tests.simulators.processor import ProcessorSimulator, serve, simulated_settings
from tests.simulators.stripe_sim import StripeSimulator
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="stripe_main") as receiver:
        yield receiver


@pytest_asyncio.fixture
async def sim(receiver: WebhookReceiver) -> AsyncIterator[StripeSimulator]:
    simulator = StripeSimulator(webhook_url=receiver.url)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: StripeSimulator, **changes: Any) -> StripeSettings:
    return simulated_settings(StripeSettings, sim, ["card"], **changes)


@pytest_asyncio.fixture
async def adapter(sim: StripeSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> StripeAdapter:
    adapter = StripeAdapter("stripe_main", settings_for(sim), SERVICES, http)
    receiver.adapter = adapter
    return adapter


def checkout_request(amount_minor: int = 2500, currency: str = "EUR", **changes: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": currency,
        "method": "card",
        "return_url": "http://127.0.0.1:9/return",
        "webhook_url": "http://127.0.0.1:9/webhooks/stripe_main",
        "description": "Top-up",
        "locale": "en",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


async def paid(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver, amount_minor: int = 2500
) -> ProcessorEvent:
    """A checkout the driver paid; its SUCCEEDED event (with the PaymentIntent among its ids)."""
    checkout = await adapter.create_checkout(checkout_request(amount_minor))
    before = len(receiver.of(EventKind.SUCCEEDED))
    await sim.act(checkout, "succeeded")
    events = await receiver.wait_for(EventKind.SUCCEEDED, before + 1)
    return next(e for e in events if e.payment.processor_reference == checkout.processor_reference)


def test_the_simulator_is_a_processor_simulator() -> None:
    simulator: ProcessorSimulator = StripeSimulator()
    assert simulator.processor == StripeAdapter.name
    assert set(simulator.secrets()) == {"secret_key", "webhook_secret"}


# --- checkout ------------------------------------------------------------------------------------


async def test_create_makes_a_session_and_redirects_to_its_page(adapter: StripeAdapter, sim: StripeSimulator) -> None:
    request = checkout_request(locale="pt-BR", method="ideal")
    checkout = await adapter.create_checkout(request)
    assert checkout.processor_reference.startswith("cs_test_")
    assert checkout.next_step == Redirect(f"{sim.base_url}/c/pay/{checkout.processor_reference}")
    [call] = sim.requests
    assert call.headers["Idempotency-Key"] == request.reference
    assert call.headers["Stripe-Version"] == "2024-10-28.acacia"
    form = dict(call.form)
    assert form["client_reference_id"] == request.reference
    assert form["payment_intent_data[metadata][reference]"] == request.reference
    assert (form["line_items[0][price_data][currency]"], form["line_items[0][price_data][unit_amount]"]) == (
        "eur",
        "2500",
    )
    assert (form["locale"], form["payment_method_types[0]"]) == ("pt-BR", "ideal")
    assert sim.created_payments() == 1


async def test_a_retried_create_returns_the_same_session(adapter: StripeAdapter, sim: StripeSimulator) -> None:
    request = checkout_request()
    first = await adapter.create_checkout(request)
    again = await adapter.create_checkout(request)
    other = await adapter.create_checkout(checkout_request())
    assert first == again
    assert other.processor_reference != first.processor_reference
    assert sim.created_payments() == 2
    assert [r.status for r in sim.requests] == [200, 200, 200]


async def test_the_same_reference_with_another_amount_is_refused(adapter: StripeAdapter, sim: StripeSimulator) -> None:
    request = checkout_request(2500)
    await adapter.create_checkout(request)
    changed = CheckoutRequest(**{**request.__dict__, "amount_minor": 2600})
    with pytest.raises(ProcessorRefused, match="idempotency key reused"):
        await adapter.create_checkout(changed)
    assert sim.created_payments() == 1


async def test_a_zero_decimal_and_a_cents_only_currency_are_converted(
    adapter: StripeAdapter, sim: StripeSimulator
) -> None:
    await adapter.create_checkout(checkout_request(1500, "JPY"))
    await adapter.create_checkout(checkout_request(1500, "ISK"))
    amounts = [dict(r.form)["line_items[0][price_data][unit_amount]"] for r in sim.requests]
    assert amounts == ["1500", "150000"]
    for session in sim.sessions.values():
        polled = await adapter.fetch_status(PaymentRef(processor_reference=session.id))
        assert polled.amount_minor == 1500


async def test_an_amount_stripe_cannot_take_is_refused_before_any_call(
    adapter: StripeAdapter, sim: StripeSimulator
) -> None:
    with pytest.raises(ProcessorRefused, match="cannot charge"):
        await adapter.create_checkout(checkout_request(1005, "KWD"))
    assert sim.requests == []


# --- the driver's outcomes, webhooks and polling ---------------------------------------------------


async def test_a_paid_checkout_is_succeeded_by_webhook_and_by_polling(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(4321)
    checkout = await adapter.create_checkout(request)
    ref = PaymentRef(processor_reference=checkout.processor_reference)
    pending = await adapter.fetch_status(ref)
    assert (pending.kind, pending.event_id) == (EventKind.PENDING, f"poll:{checkout.processor_reference}:pending")
    assert dict(pending.payment.ids) == {}

    await sim.act(checkout, "succeeded")
    [event] = await receiver.wait_for(EventKind.SUCCEEDED)
    intent_id = sim.sessions[checkout.processor_reference].intent.id
    assert event.payment == PaymentRef(request.reference, checkout.processor_reference, {"payment_intent": intent_id})
    assert (event.amount_minor, event.currency) == (4321, "EUR")
    assert event.event_id.startswith("evt_")

    polled = await adapter.fetch_status(ref)
    assert (polled.kind, polled.amount_minor, polled.currency) == (EventKind.SUCCEEDED, 4321, "EUR")
    assert polled.event_id == f"poll:{checkout.processor_reference}:succeeded"
    assert polled.payment == event.payment
    await sim.wait_idle()
    assert len(receiver.delivered) == 2  # payment_intent.succeeded too, ignored
    assert receiver.refused == []


async def test_a_declined_card_fails_but_the_driver_may_still_pay(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "declined")
    [failed] = await receiver.wait_for(EventKind.FAILED)
    intent_id = sim.sessions[checkout.processor_reference].intent.id
    assert failed.payment.merchant_reference == request.reference
    assert failed.payment.ids["payment_intent"] == intent_id
    assert failed.reason == "generic_decline: Your card was declined."
    still = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert still.kind is EventKind.PENDING

    await sim.act(checkout, "succeeded")
    [succeeded] = await receiver.wait_for(EventKind.SUCCEEDED)
    assert succeeded.payment.ids["payment_intent"] == intent_id


async def test_an_expired_checkout_is_expired(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "expired")
    [event] = await receiver.wait_for(EventKind.EXPIRED)
    assert event.payment.processor_reference == checkout.processor_reference
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.EXPIRED


@pytest.mark.parametrize(("settles", "kind"), [(True, EventKind.SUCCEEDED), (False, EventKind.FAILED)])
async def test_a_delayed_method_is_pending_until_it_settles(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver, settles: bool, kind: EventKind
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    ref = PaymentRef(processor_reference=checkout.processor_reference)
    await sim.act_delayed(checkout)
    await receiver.wait_for(EventKind.PENDING)
    assert (await adapter.fetch_status(ref)).kind is EventKind.PENDING
    sim.finish_delayed(checkout.processor_reference, settles)
    [event] = await receiver.wait_for(kind)
    assert event.payment.processor_reference == checkout.processor_reference
    # Polling heals a lost async event too: the PaymentIntent tells.
    assert (await adapter.fetch_status(ref)).kind is kind


# --- refunds -------------------------------------------------------------------------------------


def refund_request(event: ProcessorEvent, amount_minor: int, key: str | None = None) -> RefundRequest:
    return RefundRequest(event.payment, key or str(uuid.uuid4()), amount_minor, "EUR", "driver asked")


async def test_a_full_refund_is_refunded_once(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid(adapter, sim, receiver)
    accepted = await adapter.refund(refund_request(payment, 2500))
    assert accepted.refund_id.startswith("re_") and accepted.status == "pending"
    [event] = await receiver.wait_for(EventKind.REFUNDED)
    assert (event.cause_id, event.event_id) == (accepted.refund_id, f"{accepted.refund_id}:refunded")
    assert (event.amount_minor, event.currency) == (2500, "EUR")
    assert event.payment.ids["payment_intent"] == payment.payment.ids["payment_intent"]
    assert event.payment.merchant_reference == payment.payment.merchant_reference
    await sim.wait_idle()
    assert len(receiver.of(EventKind.REFUNDED)) == 1
    types = {d.event_type for d in sim.deliveries}
    assert {"refund.created", "refund.updated", "charge.refunded"} <= types


async def test_partial_refunds_then_what_is_left_is_refused(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid(adapter, sim, receiver)
    first = await adapter.refund(refund_request(payment, 1000))
    second = await adapter.refund(refund_request(payment, 500))
    events = await receiver.wait_for(EventKind.REFUNDED, 2)
    assert {(e.cause_id, e.amount_minor) for e in events} == {(first.refund_id, 1000), (second.refund_id, 500)}
    with pytest.raises(ProcessorRefused, match="amount_too_large") as too_much:
        await adapter.refund(refund_request(payment, 1001))
    assert "greater than unrefunded amount" in str(too_much.value)
    await adapter.refund(refund_request(payment, 1000))
    with pytest.raises(ProcessorRefused, match="charge_already_refunded"):
        await adapter.refund(refund_request(payment, 1))
    await receiver.wait_for(EventKind.REFUNDED, 3)


async def test_a_retried_refund_is_one_refund(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid(adapter, sim, receiver)
    request = refund_request(payment, 700, key="refund-key-1")
    first = await adapter.refund(request)
    again = await adapter.refund(request)
    assert first.refund_id == again.refund_id
    assert len(sim.refunds) == 1
    assert [r.headers["Idempotency-Key"] for r in sim.requests if r.path == "/v1/refunds"] == ["refund-key-1"] * 2


async def test_a_refund_finds_the_payment_intent_through_the_session(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid(adapter, sim, receiver)
    bare = PaymentRef(processor_reference=payment.payment.processor_reference)
    accepted = await adapter.refund(RefundRequest(bare, "k-1", 2500, "EUR", ""))
    assert sim.refunds[accepted.refund_id].payment_intent == payment.payment.ids["payment_intent"]


async def test_an_unpaid_payment_cannot_be_refunded(adapter: StripeAdapter, sim: StripeSimulator) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    with pytest.raises(ProcessorRefused, match="nothing was charged"):
        await adapter.refund(
            RefundRequest(PaymentRef(processor_reference=checkout.processor_reference), "k", 1, "EUR", "")
        )


async def test_a_refund_that_succeeds_at_once_is_refunded_once(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.refunds_succeed_at_once = True
    payment = await paid(adapter, sim, receiver)
    accepted = await adapter.refund(refund_request(payment, 300))
    assert accepted.status == "succeeded"
    await receiver.wait_for(EventKind.REFUNDED)
    await sim.wait_idle()
    assert [e.cause_id for e in receiver.of(EventKind.REFUNDED)] == [accepted.refund_id]


async def test_a_refund_that_fails_after_succeeding_is_refund_failed(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid(adapter, sim, receiver)
    accepted = await adapter.refund(refund_request(payment, 2500))
    await receiver.wait_for(EventKind.REFUNDED)
    await sim.fail_refund(accepted.refund_id)
    failed = (await receiver.wait_for(EventKind.REFUND_FAILED))[0]
    assert (failed.cause_id, failed.amount_minor, failed.reason) == (
        accepted.refund_id,
        2500,
        "expired_or_canceled_card",
    )
    await sim.wait_idle()
    # refund.updated and refund.failed both say it, as one event (one id): payments counts it once.
    assert {e.event_id for e in receiver.of(EventKind.REFUND_FAILED)} == {failed.event_id}


# --- disputes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("won", "kind"), [(True, EventKind.DISPUTE_WON), (False, EventKind.DISPUTE_LOST)])
async def test_a_chargeback_opens_then_is_won_or_lost(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver, won: bool, kind: EventKind
) -> None:
    payment = await paid(adapter, sim, receiver)
    assert payment.payment.processor_reference is not None
    dispute_id = await sim.open_dispute(payment.payment.processor_reference, 2500)
    opened = (await receiver.wait_for(EventKind.DISPUTE_OPENED))[0]
    assert (opened.cause_id, opened.amount_minor, opened.currency) == (dispute_id, 2500, "EUR")
    assert opened.payment.ids["payment_intent"] == payment.payment.ids["payment_intent"]
    await sim.settle_dispute(dispute_id, won)
    [closed] = await receiver.wait_for(kind)
    assert (closed.cause_id, closed.event_id) == (dispute_id, f"{dispute_id}:{kind}")
    await sim.wait_idle()
    # created and funds_withdrawn both say "opened": one statement, one id.
    assert {e.event_id for e in receiver.of(EventKind.DISPUTE_OPENED)} == {f"{dispute_id}:dispute_opened"}
    with pytest.raises(ProcessorRefused, match="charge_disputed"):
        await adapter.refund(refund_request(payment, 100))


async def test_an_inquiry_moves_no_money_until_it_escalates(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid(adapter, sim, receiver)
    assert payment.payment.processor_reference is not None
    dispute_id = await sim.open_dispute(payment.payment.processor_reference, 2500, inquiry=True)
    await sim.wait_idle()
    assert receiver.of(EventKind.DISPUTE_OPENED) == []
    await sim.escalate_inquiry(dispute_id)
    [opened] = await receiver.wait_for(EventKind.DISPUTE_OPENED)
    assert opened.cause_id == dispute_id


# --- delivery faults ---------------------------------------------------------------------------


async def test_copies_of_a_webhook_are_one_event(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.copies = 3
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED, 3)
    assert len({e.event_id for e in receiver.of(EventKind.SUCCEEDED)}) == 1


async def test_held_webhooks_are_released_newest_first(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.hold = True
    sim.send_noise_events = False
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "declined")
    await sim.act(checkout, "succeeded")
    await asyncio.sleep(0.1)
    assert receiver.events == []
    await sim.release()
    assert [e.kind for e in receiver.events] == [EventKind.SUCCEEDED, EventKind.FAILED]


async def test_a_released_webhook_that_fails_is_retried_without_holding_up_the_older_ones(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.hold = True
    sim.send_noise_events = False
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "declined")
    await sim.act(checkout, "succeeded")
    receiver.fail_next = 1  # the newest (the success) is refused once
    await sim.release()
    assert [e.kind for e in receiver.events] == [EventKind.FAILED]
    await receiver.wait_for(EventKind.SUCCEEDED)
    assert [(d.event_type, d.attempt, d.status) for d in sim.deliveries] == [
        ("checkout.session.completed", 1, 500),
        ("payment_intent.payment_failed", 1, 200),
        ("checkout.session.completed", 2, 200),
    ]


async def test_a_dropped_webhook_is_healed_by_polling(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.drop = True
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await sim.wait_idle()
    assert receiver.events == [] and [e["type"] for e in sim.dropped] == [
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.SUCCEEDED
    assert "payment_intent" in polled.payment.ids


async def test_a_failed_delivery_is_retried_re_signed_with_the_same_event(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.send_noise_events = False
    receiver.fail_next = 2
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    [event] = await receiver.wait_for(EventKind.SUCCEEDED)
    attempts = [(d.attempt, d.status) for d in sim.deliveries]
    assert attempts == [(1, 500), (2, 500), (3, 200)]
    assert {d.event_id for d in sim.deliveries} == {event.event_id}


async def test_an_endpoint_that_never_answers_2xx_is_given_up(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.send_noise_events = False
    receiver.fail_next = 100
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await sim.wait_idle()
    assert [d.status for d in sim.deliveries] == [500] * (len(sim.retry_backoffs_s) + 1)
    assert receiver.events == []


# --- webhook checks on the simulator's own signed webhooks ----------------------------------------


async def test_signed_webhooks_verify_and_tampered_stale_or_foreign_ones_do_not(
    adapter: StripeAdapter, sim: StripeSimulator
) -> None:
    checkout = await adapter.create_checkout(checkout_request(1234))
    reference = checkout.processor_reference
    good = sim.signed_webhook(reference, "succeeded")
    await adapter.verify_webhook(good)
    [event] = await adapter.parse_webhook(good)
    assert (event.kind, event.amount_minor, event.payment.processor_reference) == (EventKind.SUCCEEDED, 1234, reference)
    assert [e.event_id for e in await adapter.parse_webhook(good)] == [event.event_id]
    declined = sim.signed_webhook(reference, "declined")
    await adapter.verify_webhook(declined)
    [failed] = await adapter.parse_webhook(declined)
    assert failed.kind is EventKind.FAILED and failed.event_id != event.event_id

    tampered = WebhookRequest(**{**good.__dict__, "body": good.body.replace(b"1234", b"9234")})
    stale = sim.signed_webhook(reference, "succeeded", age_s=301)
    foreign = sim.with_other_secret().signed_webhook(reference, "succeeded")
    unsigned = WebhookRequest(**{**good.__dict__, "headers": {"Content-Type": "application/json"}})
    for webhook in (tampered, stale, foreign, unsigned):
        with pytest.raises(InvalidSignature):
            await adapter.verify_webhook(webhook)


async def test_a_webhook_is_stripes_bytes_and_a_reserialised_copy_is_refused(
    adapter: StripeAdapter, sim: StripeSimulator, receiver: WebhookReceiver
) -> None:
    sim.send_noise_events = False
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED)
    [webhook] = receiver.delivered
    assert b'"custom_fields": [\n\n      ],' in webhook.body and not webhook.body.endswith(b"\n")
    assert webhook.headers["User-Agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    assert webhook.headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.dumps(json.loads(webhook.body), indent=2, ensure_ascii=False).encode()
    again = replace(webhook, body=body, received_at_s=time.time())
    assert again.body != webhook.body
    with pytest.raises(InvalidSignature, match="does not match"):
        await adapter.verify_webhook(again)


async def test_a_rolled_secret_verifies_during_the_overlap(
    sim: StripeSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    new_secret = "whsec_" + "n" * 32
    sim.also_sign_with = [new_secret]
    rolled = StripeAdapter("stripe_main", settings_for(sim, webhook_secret=new_secret), SERVICES, http)
    receiver.adapter = rolled
    checkout = await rolled.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED)
    assert receiver.refused == []


# --- API failures --------------------------------------------------------------------------------


async def test_a_500_on_create_is_unavailable_and_the_retry_creates_one_session(
    adapter: StripeAdapter, sim: StripeSimulator
) -> None:
    sim.fail_next_create("error_500")
    request = checkout_request()
    with pytest.raises(ProcessorUnavailable, match="500"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 0
    checkout = await adapter.create_checkout(request)
    assert sim.created_payments() == 1
    assert checkout == await adapter.create_checkout(request)


async def test_a_create_answered_too_late_is_unavailable_and_the_retry_finds_the_session(
    adapter: StripeAdapter, sim: StripeSimulator
) -> None:
    sim.fail_next_create("timeout_after_create")
    adapter.request_timeout_s = 0.3
    request = checkout_request()
    with pytest.raises(ProcessorUnavailable, match="TimeoutError"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 1
    [created] = sim.sessions
    adapter.request_timeout_s = 10
    retried = await adapter.create_checkout(request)
    assert retried.processor_reference == created
    assert sim.created_payments() == 1


async def test_wrong_credentials_are_an_error_without_any_key(
    sim: StripeSimulator, http: aiohttp.ClientSession
) -> None:
    wrong_key = "sk_test_" + "w" * 28 + "9z8y"
    wrong = StripeAdapter("stripe_main", settings_for(sim, secret_key=wrong_key), SERVICES, http)
    for call in api_calls(wrong):
        with pytest.raises(ProcessorUnavailable, match="401") as failure:
            await call()
        text = str(failure.value)
        assert wrong_key not in text and "9z8y" not in text and "***" not in text and sim.secret_key not in text
    assert sim.requests == []  # Stripe's 401 comes before anything else


async def test_a_refusal_never_quotes_a_key(sim: StripeSimulator, http: aiohttp.ClientSession) -> None:
    async def leaky(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        body = {"error": {"type": "invalid_request_error", "code": "parameter_invalid", "message": f"bad {key} x"}}
        return web.json_response(body, status=400)

    async with serve(leaky) as url:
        adapter = StripeAdapter("stripe_main", settings_for(sim, api_base_url=url), SERVICES, http)
        with pytest.raises(ProcessorRefused, match="parameter_invalid") as failure:
            await adapter.create_checkout(checkout_request())
    assert sim.secret_key not in str(failure.value)
    assert "sk_" not in str(failure.value)


@pytest.mark.parametrize("answer", ["html_200", "json_list", "error_502", "rate_limited", "not_listening"])
async def test_an_unreadable_or_failing_api_is_unavailable_without_secrets(
    sim: StripeSimulator, http: aiohttp.ClientSession, answer: str
) -> None:
    async def failing(request: web.Request) -> web.Response:
        if answer == "html_200":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if answer == "json_list":
            return web.json_response([])
        status = 429 if answer == "rate_limited" else 502
        return web.Response(status=status, text=str(dict(request.headers)))

    async with serve(failing) as url:
        if answer != "not_listening":
            await assert_unavailable(
                StripeAdapter("stripe_main", settings_for(sim, api_base_url=url), SERVICES, http), sim
            )
    if answer == "not_listening":  # the server is gone: nothing listens on its port any more
        await assert_unavailable(StripeAdapter("stripe_main", settings_for(sim, api_base_url=url), SERVICES, http), sim)


def api_calls(adapter: StripeAdapter) -> list[Callable[[], Awaitable[Any]]]:
    """One call of each kind the adapter makes."""
    return [
        lambda: adapter.create_checkout(checkout_request()),
        lambda: adapter.fetch_status(PaymentRef(processor_reference="cs_test_x")),
        lambda: adapter.refund(RefundRequest(PaymentRef(ids={"payment_intent": "pi_x"}), "k", 1, "EUR", "")),
    ]


async def assert_unavailable(adapter: StripeAdapter, sim: StripeSimulator) -> None:
    for call in api_calls(adapter):
        with pytest.raises(ProcessorUnavailable) as failure:
            await call()
        for secret in sim.secrets().values():
            assert secret not in str(failure.value)


async def test_an_unknown_session_is_refused_and_polling_needs_a_session_id(adapter: StripeAdapter) -> None:
    with pytest.raises(ProcessorRefused, match="resource_missing"):
        await adapter.fetch_status(PaymentRef(processor_reference="cs_test_unknown"))
    for ref in (PaymentRef(merchant_reference="ref"), PaymentRef(processor_reference="../v1/refunds")):
        with pytest.raises(ProcessorRefused, match="Checkout Session id"):
            await adapter.fetch_status(ref)


async def test_the_hosted_page_shows_the_amount_and_act_pays_on_it(
    adapter: StripeAdapter, sim: StripeSimulator
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    assert isinstance(checkout.next_step, Redirect)
    async with aiohttp.ClientSession() as browser, browser.get(checkout.next_step.url) as page:
        assert page.status == 200 and "25.00 EUR" in await page.text()
    await sim.act(checkout, "succeeded")
    assert sim.sessions[checkout.processor_reference].payment_status == "paid"
