"""The Mercado Pago adapter against the Mercado Pago simulator (``tests/simulators/mercadopago_sim.py``),
over real HTTP both ways: preferences, the driver's payments (card, Pix pending then approved, declined,
expired), webhooks verified and parsed by a small receiver exactly as payments' webhook endpoint would
(with the IPN and merchant_order copies acknowledged), polling, refunds, chargebacks, delivery faults
and API failures. No database or broker is needed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from services.payments.processors.base import (
    Checkout,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorEvent,
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundRequest,
    WebhookRequest,
)
from services.payments.processors.mercadopago import MercadoPagoAdapter
from services.payments.processors.mercadopago.config import MercadoPagoSettings
from tests.simulators.mercadopago_sim import MercadoPagoSimulator, sign
from tests.simulators.processor import ProcessorSimulator, WebhookFaults, serve, simulated_settings
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="mp_main") as receiver:
        yield receiver


@pytest_asyncio.fixture
async def sim(receiver: WebhookReceiver) -> AsyncIterator[MercadoPagoSimulator]:
    simulator = MercadoPagoSimulator(webhook_url=receiver.url, hang_s=3.0)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: MercadoPagoSimulator, **changes: Any) -> MercadoPagoSettings:
    return simulated_settings(MercadoPagoSettings, sim, ["pix", "card", "boleto"], **changes)


@pytest_asyncio.fixture
async def adapter(
    sim: MercadoPagoSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> MercadoPagoAdapter:
    adapter = MercadoPagoAdapter("mp_main", settings_for(sim), SERVICES, http)
    adapter.request_timeout_s = 2.0
    receiver.adapter = adapter
    return adapter


def checkout_request(
    receiver: WebhookReceiver, amount_minor: int = 2500, currency: str = "BRL", **changes: Any
) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": currency,
        "method": "card",
        "return_url": "http://127.0.0.1:9/return",
        "webhook_url": receiver.url,
        "description": "Top-up",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


async def paid(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver, method: str = "card"
) -> tuple[Checkout, ProcessorEvent]:
    checkout = await adapter.create_checkout(checkout_request(receiver, method=method))
    before = len(receiver.of(EventKind.SUCCEEDED))
    await sim.act(checkout, "succeeded")
    events = await receiver.wait_for(EventKind.SUCCEEDED, before + 1)
    return checkout, events[-1]


def test_the_simulator_is_a_processor_simulator() -> None:
    simulator: ProcessorSimulator = MercadoPagoSimulator()
    assert simulator.processor == MercadoPagoAdapter.name
    assert set(simulator.secrets()) == {"access_token", "webhook_secret"}


# --- checkout ------------------------------------------------------------------------------------


async def test_create_makes_a_preference_and_redirects_to_its_init_point(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver, method="pix")
    checkout = await adapter.create_checkout(request)
    preference = sim.preferences[checkout.processor_reference]
    assert isinstance(checkout.next_step, Redirect)
    assert checkout.next_step.url == f"{sim.base_url}/checkout/v1/redirect?pref_id={preference.id}"
    method, path, body, key = sim.requests[-1]
    assert (method, path, key) == ("POST", "/checkout/preferences", request.reference)
    assert body["external_reference"] == request.reference
    assert body["items"][0]["unit_price"] == 25 and body["items"][0]["currency_id"] == "BRL"
    assert str(body["items"][0]["unit_price"]) == "25.00"  # the exact decimal, as sent
    assert body["notification_url"] == receiver.url
    assert preference.allowed_types == ("bank_transfer", "account_money")


async def test_a_test_integration_redirects_to_the_sandbox(
    sim: MercadoPagoSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    adapter = MercadoPagoAdapter("mp_test", settings_for(sim, environment="test"), SERVICES, http)
    checkout = await adapter.create_checkout(checkout_request(receiver))
    assert isinstance(checkout.next_step, Redirect) and checkout.next_step.url.endswith("&sandbox=1")


async def test_a_retried_create_returns_the_same_preference(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    first = await adapter.create_checkout(request)
    again = await adapter.create_checkout(request)
    assert first == again
    assert sim.created_payments() == 1


async def test_an_amount_mercado_pago_cannot_take_is_refused_before_any_call(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    with pytest.raises(ProcessorRefused):
        await adapter.create_checkout(checkout_request(receiver, currency="EUR"))
    assert sim.requests == []


# --- outcomes ------------------------------------------------------------------------------------


async def test_a_paid_card_succeeds_by_webhook_and_by_polling(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    checkout, event = await paid(adapter, sim, receiver)
    [payment] = sim.payments.values()
    assert (event.kind, event.amount_minor, event.currency) == (EventKind.SUCCEEDED, 2500, "BRL")
    assert event.payment.ids == {"payment": str(payment.id)}
    ref = PaymentRef(payment.preference.reference, checkout.processor_reference)
    polled = await adapter.fetch_status(ref)
    assert (polled.kind, polled.amount_minor, polled.event_id) == (
        EventKind.SUCCEEDED,
        2500,
        f"poll:{payment.preference.reference}:succeeded",
    )
    await sim.idle()
    # The IPN copies of the same change (topic=payment, topic=merchant_order) were acknowledged, unused.
    assert {d.topic for d in sim.deliveries} == {"payment", "ipn:payment", "ipn:merchant_order"}
    assert all(d.accepted for d in sim.deliveries)
    assert len(receiver.delivered) == 3 and sum(map(len, receiver.batches)) == 1


async def test_pix_is_pending_until_the_transfer_arrives(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(hold=True)
    checkout = await adapter.create_checkout(checkout_request(receiver, method="pix"))
    await sim.act(checkout, "succeeded")
    [payment] = sim.payments.values()
    assert (payment.payment_type_id, payment.payment_method_id) == ("bank_transfer", "pix")
    # Delivered oldest first here; each notification states the payment's state when fetched.
    held, sim.held = sim.held, []
    payment.status, payment.status_detail = "pending", "pending_waiting_transfer"
    sim.faults = WebhookFaults()
    sim._send_later(held[0])
    [pending] = await receiver.wait_for(EventKind.PENDING)
    assert pending.event_id == f"payment:{payment.id}:pending" and pending.payment.ids == {}
    payment.status, payment.status_detail = "approved", "accredited"
    sim._send_later(held[3])  # payment.updated
    [succeeded] = await receiver.wait_for(EventKind.SUCCEEDED)
    assert succeeded.payment.ids == {"payment": str(payment.id)}


async def test_a_declined_payment_fails_but_the_driver_may_pay_again(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "declined")
    [failed] = await receiver.wait_for(EventKind.FAILED)
    assert failed.reason == "cc_rejected_other_reason" and failed.payment.ids == {}
    reference = failed.payment.merchant_reference
    assert (await adapter.fetch_status(PaymentRef(reference, checkout.processor_reference))).kind is EventKind.FAILED
    await sim.act(checkout, "succeeded")
    [succeeded] = await receiver.wait_for(EventKind.SUCCEEDED)
    assert succeeded.payment.merchant_reference == reference
    assert (await adapter.fetch_status(PaymentRef(reference, checkout.processor_reference))).kind is EventKind.SUCCEEDED


async def test_an_expired_preference_is_expired_by_polling(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    checkout = await adapter.create_checkout(request)
    ref = PaymentRef(request.reference, checkout.processor_reference)
    assert (await adapter.fetch_status(ref)).kind is EventKind.PENDING
    await sim.act(checkout, "expired")
    event = await adapter.fetch_status(ref)
    assert (event.kind, event.event_id) == (EventKind.EXPIRED, f"poll:{request.reference}:expired")
    assert receiver.answers == []  # Mercado Pago notifies nothing for a lapsed preference


async def test_polling_needs_our_reference(adapter: MercadoPagoAdapter) -> None:
    with pytest.raises(ProcessorRefused):
        await adapter.fetch_status(PaymentRef(None, "123-abc"))


# --- refunds -------------------------------------------------------------------------------------


def refund_request(event: ProcessorEvent, amount_minor: int, key: str | None = None) -> RefundRequest:
    return RefundRequest(event.payment, key or str(uuid.uuid4()), amount_minor, "BRL", "driver asked")


async def test_partial_refunds_then_the_rest_each_once_and_more_is_refused(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    _, event = await paid(adapter, sim, receiver)
    first = await adapter.refund(refund_request(event, 1000))
    assert first.status == "approved"
    [refunded] = await receiver.wait_for(EventKind.REFUNDED)
    assert (refunded.amount_minor, refunded.cause_id, refunded.event_id) == (
        1000,
        first.refund_id,
        f"refund:{first.refund_id}:refunded",
    )
    second = await adapter.refund(refund_request(event, 1500))
    events = await receiver.wait_for(EventKind.REFUNDED, 3)  # the first again, and the second
    assert {e.event_id for e in events} == {f"refund:{first.refund_id}:refunded", f"refund:{second.refund_id}:refunded"}
    [payment] = sim.payments.values()
    assert payment.status == "refunded"
    with pytest.raises(ProcessorRefused):
        await adapter.refund(refund_request(event, 100))


async def test_a_retried_refund_is_one_refund(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    _, event = await paid(adapter, sim, receiver)
    request = refund_request(event, 500, key="refund-key-1")
    assert await adapter.refund(request) == await adapter.refund(request)
    [payment] = sim.payments.values()
    assert len(payment.refunds) == 1
    assert [r[3] for r in sim.requests if r[1].endswith("/refunds")] == ["refund-key-1", "refund-key-1"]


async def test_a_refund_finds_the_paid_payment_by_our_reference(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "declined")
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED)
    reference = sim.preferences[checkout.processor_reference].reference
    accepted = await adapter.refund(
        RefundRequest(PaymentRef(reference, checkout.processor_reference), "k", 2500, "BRL", "r")
    )
    approved = next(p for p in sim.payments.values() if p.status == "refunded")
    assert [r.id for r in approved.refunds] == [int(accepted.refund_id)]


async def test_an_unpaid_payment_cannot_be_refunded(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "declined")
    with pytest.raises(ProcessorRefused):
        await adapter.refund(RefundRequest(PaymentRef(request.reference), "k", 100, "BRL", "r"))


# --- chargebacks ---------------------------------------------------------------------------------


async def test_a_chargeback_opens_then_is_lost_or_won(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    lost_checkout, lost_paid = await paid(adapter, sim, receiver)
    won_checkout, won_paid = await paid(adapter, sim, receiver)
    lost = await sim.open_dispute(lost_checkout.processor_reference, 2500)
    won = await sim.open_dispute(won_checkout.processor_reference, 2500)
    opened = await receiver.wait_for(EventKind.DISPUTE_OPENED, 4)  # by the payment and by the case
    assert {(e.event_id, e.amount_minor) for e in opened} == {
        (f"chargeback:{lost_paid.payment.ids['payment']}:dispute_opened", 2500),
        (f"chargeback:{won_paid.payment.ids['payment']}:dispute_opened", 2500),
    }
    await sim.settle_dispute(lost, won=False)
    await sim.settle_dispute(won, won=True)
    [lost_event, *_] = await receiver.wait_for(EventKind.DISPUTE_LOST, 2)
    [won_event, *_] = await receiver.wait_for(EventKind.DISPUTE_WON, 2)
    assert lost_event.payment.ids == lost_paid.payment.ids and won_event.payment.ids == won_paid.payment.ids
    assert lost_event.cause_id == f"chargeback:{lost_paid.payment.ids['payment']}"
    assert won_event.cause_id == f"chargeback:{won_paid.payment.ids['payment']}"
    assert {d.topic for d in sim.deliveries} >= {"topic_chargebacks_wh"}
    assert receiver.refused == []


async def test_a_chargeback_notification_names_no_payment_of_its_body(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    """The payment comes from the case Mercado Pago holds, never from the body's payment_id."""
    checkout, _ = await paid(adapter, sim, receiver)
    sim.faults = WebhookFaults(drop=True)
    case = await sim.open_dispute(checkout.processor_reference, 2500)
    notification = next(n for n in sim.dropped if n.topic == "topic_chargebacks_wh")
    body = json.loads(json.dumps(notification.body))
    body["data"]["payment_id"] = 1  # unsigned: ignored
    webhook = signed(sim, notification.query, json.dumps(body).encode())
    await adapter.verify_webhook(webhook)
    events = await adapter.parse_webhook(webhook)
    assert [e.kind for e in events] == [EventKind.SUCCEEDED, EventKind.DISPUTE_OPENED]
    assert sim.chargebacks[case].payment.id == int(events[1].payment.ids["payment"])


# --- delivery ------------------------------------------------------------------------------------


def signed(
    sim: MercadoPagoSimulator, query: dict[str, str], body: bytes, *, secret: str | None = None
) -> WebhookRequest:
    headers = sim.signed_headers(query, int(time.time()), secret)
    return WebhookRequest(
        "POST", "/webhooks/mp_main", query, CIMultiDictProxy(CIMultiDict(headers)), body, None, time.time()
    )


async def test_copies_of_a_notification_are_one_event(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(copies=3)
    await paid(adapter, sim, receiver)
    await sim.idle()
    assert len(receiver.of(EventKind.SUCCEEDED)) == 3
    assert len({e.event_id for e in receiver.of(EventKind.SUCCEEDED)}) == 1


async def test_held_notifications_are_released_newest_first_and_state_the_present(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(hold=True)
    checkout = await adapter.create_checkout(checkout_request(receiver, method="pix"))
    await sim.act(checkout, "succeeded")
    assert receiver.answers == []
    await sim.release()
    # payment.created (pending) and payment.updated both fetch the approved payment.
    assert [e.kind for e in receiver.events] == [EventKind.SUCCEEDED, EventKind.SUCCEEDED]


async def test_a_dropped_notification_is_healed_by_polling(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    request = checkout_request(receiver, method="boleto")
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "succeeded")
    assert receiver.answers == [] and sim.dropped
    event = await adapter.fetch_status(PaymentRef(request.reference, checkout.processor_reference))
    assert (event.kind, event.amount_minor) == (EventKind.SUCCEEDED, 2500)


async def test_a_failed_delivery_is_retried_and_signed_afresh(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 2
    await paid(adapter, sim, receiver)
    await sim.idle()
    assert all(d.accepted for d in sim.deliveries)
    assert sum(s == 500 for d in sim.deliveries for s in d.statuses) == 2
    assert len(receiver.of(EventKind.SUCCEEDED)) == 1


async def test_an_endpoint_that_never_answers_200_is_given_up(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 1000
    receiver.fail_status = 202  # not 200 or 201: Mercado Pago tries again
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "succeeded")
    assert sim.deliveries and all(len(d.statuses) == 6 and not d.accepted for d in sim.deliveries)


async def test_signed_notifications_verify_and_tampered_or_foreign_ones_do_not(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "succeeded")
    genuine = sim.signed_webhook(checkout.processor_reference, "succeeded")
    await adapter.verify_webhook(genuine)
    assert [e.kind for e in await adapter.parse_webhook(genuine)] == [EventKind.SUCCEEDED]
    # Old: no tolerance (Mercado Pago documents none); the events are the same statement again.
    old = sim.signed_webhook(checkout.processor_reference, "succeeded", age_s=30 * 86400)
    await adapter.verify_webhook(old)
    assert await adapter.parse_webhook(old) == await adapter.parse_webhook(genuine)
    forged = sim.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    other_payment = replace(genuine, query={**genuine.query, "data.id": "99999999999"})
    body_elsewhere = replace(genuine, body=genuine.body.replace(genuine.query["data.id"].encode(), b"99999999999"))
    unsigned = replace(genuine, headers=CIMultiDictProxy(CIMultiDict({"x-request-id": "r"})))
    other_request = replace(genuine, headers=CIMultiDictProxy(CIMultiDict({**genuine.headers, "x-request-id": "r"})))
    for bad in (forged, other_payment, body_elsewhere, unsigned, other_request):
        with pytest.raises(InvalidSignature):
            await adapter.verify_webhook(bad)
    # The body is not signed and carries no state: anything else in it changes nothing.
    extra = json.loads(genuine.body) | {"action": "payment.refunded", "amount": 1}
    changed = replace(genuine, body=json.dumps(extra, indent=2).encode())
    await adapter.verify_webhook(changed)
    assert await adapter.parse_webhook(changed) == await adapter.parse_webhook(genuine)


async def test_other_topics_are_acknowledged_without_a_signature_or_a_call(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator
) -> None:
    for query in ({"id": "123", "topic": "merchant_order"}, {"data.id": "9", "type": "topic_claims_integration_wh"}):
        webhook = WebhookRequest("POST", "/webhooks/mp_main", query, CIMultiDictProxy(CIMultiDict()), b"{}", None, 0.0)
        await adapter.verify_webhook(webhook)
        assert await adapter.parse_webhook(webhook) == []
    assert sim.requests == []


async def test_a_notification_of_a_payment_mercado_pago_does_not_hold_is_acknowledged(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator
) -> None:
    """The dashboard's "Simulate" button sends a made-up id: signed, and nothing to act on."""
    notification = sim.payment_notification(123456, "payment.updated", "x")
    webhook = signed(sim, notification.query, json.dumps(notification.body).encode())
    await adapter.verify_webhook(webhook)
    assert await adapter.parse_webhook(webhook) == []


async def test_a_notification_whose_payment_cannot_be_fetched_is_unavailable_not_refused(
    sim: MercadoPagoSimulator, http: aiohttp.ClientSession
) -> None:
    async def failing(_: web.Request) -> web.Response:
        return web.json_response({"message": "oops", "error": "internal_error", "status": 500}, status=500)

    async with serve(failing) as url:
        adapter = MercadoPagoAdapter("mp_main", settings_for(sim, api_base_url=url), SERVICES, http)
        notification = sim.payment_notification(1234567890, "payment.updated", "x")
        webhook = signed(sim, notification.query, json.dumps(notification.body).encode())
        with pytest.raises(ProcessorUnavailable):
            await adapter.verify_webhook(webhook)
        with pytest.raises(ProcessorUnavailable):
            await adapter.parse_webhook(webhook)  # nothing was kept from the failed verification


async def test_an_unreadable_body_is_malformed(adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator) -> None:
    query = {"data.id": "123", "type": "payment"}
    webhook = signed(sim, query, b"not json")
    await adapter.verify_webhook(webhook)
    with pytest.raises(MalformedWebhook):
        await adapter.parse_webhook(webhook)


def test_the_simulators_signature_is_mercado_pagos() -> None:
    # The fixed vector of tests/unit/test_mercadopago_wire.py, computed with openssl.
    assert (
        sign("mp_webhook_secret_8f2k4n6q9s1v3x5z", "123456789", "bb56a2f1-6aae-46ac-982e-9dcd3581d08e", 1742505638)
        == "34a5be12ca3a1702552af3bc4e5bdfbbec8d9854aaf381adb3cc2843092813a8"
    )


# --- API failures --------------------------------------------------------------------------------


async def test_a_500_on_create_is_unavailable_and_the_retry_creates_one_preference(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.fail_next_create("error_500")
    request = checkout_request(receiver)
    with pytest.raises(ProcessorUnavailable):
        await adapter.create_checkout(request)
    await adapter.create_checkout(request)
    assert sim.created_payments() == 1


async def test_a_create_answered_too_late_is_unavailable_and_the_retry_finds_the_preference(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver
) -> None:
    sim.fail_next_create("timeout_after_create")
    request = checkout_request(receiver)
    with pytest.raises(ProcessorUnavailable):
        await adapter.create_checkout(request)
    with pytest.raises(ProcessorUnavailable):  # 409: the first is still being answered
        await adapter.create_checkout(request)
    await asyncio.sleep(3.2)
    checkout = await adapter.create_checkout(request)
    assert sim.created_payments() == 1
    assert checkout.processor_reference in sim.preferences


async def test_wrong_credentials_are_an_error_without_the_token(
    sim: MercadoPagoSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    token = "APP_USR-0000000000000000-112720-wrongwrongwrong-1"
    adapter = MercadoPagoAdapter("mp_main", settings_for(sim, access_token=token), SERVICES, http)
    with pytest.raises(ProcessorUnavailable) as error:
        await adapter.create_checkout(checkout_request(receiver))
    assert "401" in str(error.value) and token not in str(error.value) and "APP_USR" not in str(error.value)


async def test_a_refusal_never_quotes_the_token(
    sim: MercadoPagoSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    async def quoting(request: web.Request) -> web.Response:
        message = f"bad request from {request.headers['Authorization']} and APP_USR-1234-other"
        return web.json_response({"message": message, "error": "bad_request", "status": 400}, status=400)

    async with serve(quoting) as url:
        adapter = MercadoPagoAdapter("mp_main", settings_for(sim, api_base_url=url), SERVICES, http)
        with pytest.raises(ProcessorRefused) as error:
            await adapter.create_checkout(checkout_request(receiver))
    text = str(error.value)
    assert "bad_request" in text and sim.access_token not in text and "APP_USR" not in text


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, {"message": "x"}, ProcessorUnavailable),
        (409, {"error": "conflict"}, ProcessorUnavailable),
        (423, {}, ProcessorUnavailable),
        (429, {}, ProcessorUnavailable),
        (403, {}, ProcessorUnavailable),
        (200, ["not an object"], ProcessorUnavailable),
        (201, {"id": "1", "items": [{"quantity": 1, "unit_price": 99, "currency_id": "BRL"}]}, ProcessorRefused),
        (201, {"id": "1"}, ProcessorUnavailable),  # no init_point
        (400, {"error": "invalid_items"}, ProcessorRefused),
    ],
)
async def test_unreadable_or_failing_answers(
    sim: MercadoPagoSimulator,
    receiver: WebhookReceiver,
    http: aiohttp.ClientSession,
    status: int,
    body: Any,
    error: type[Exception],
) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    async with serve(answer) as url:
        adapter = MercadoPagoAdapter("mp_main", settings_for(sim, api_base_url=url), SERVICES, http)
        with pytest.raises(error) as raised:
            await adapter.create_checkout(checkout_request(receiver))
    assert type(raised.value) is error
    assert sim.access_token not in str(raised.value)


async def test_an_unreachable_api_is_unavailable(
    sim: MercadoPagoSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    adapter = MercadoPagoAdapter("mp_main", settings_for(sim, api_base_url="http://127.0.0.1:9"), SERVICES, http)
    with pytest.raises(ProcessorUnavailable) as error:
        await adapter.create_checkout(checkout_request(receiver))
    assert sim.access_token not in str(error.value)


async def test_the_pay_page_shows_the_amount_and_refuses_a_lapsed_preference(
    adapter: MercadoPagoAdapter, sim: MercadoPagoSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    assert isinstance(checkout.next_step, Redirect)
    async with http.get(checkout.next_step.url) as response:
        assert response.status == 200 and "25.00 BRL" in await response.text()
    await sim.act(checkout, "expired")
    async with http.post(checkout.next_step.url, data={"outcome": "succeeded"}) as response:
        assert response.status == 410
    assert sim.payments == {}
