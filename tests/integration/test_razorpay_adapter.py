"""The Razorpay adapter against the Razorpay simulator (``tests/simulators/razorpay_sim.py``), over real
HTTP both ways: links, the driver's outcomes, webhooks verified and parsed by a small receiver exactly
as payments' webhook endpoint would, polling, refunds, disputes, delivery faults, secret rotation and
API failures. No database or broker is needed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
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
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundRequest,
)
from services.payments.processors.razorpay import RazorpayAdapter
from services.payments.processors.razorpay.config import RazorpaySettings
from tests.simulators.processor import ProcessorSimulator, serve, simulated_settings
from tests.simulators.razorpay_sim import RazorpaySimulator
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="razorpay_main") as receiver:
        yield receiver


@pytest_asyncio.fixture
async def sim(receiver: WebhookReceiver) -> AsyncIterator[RazorpaySimulator]:
    simulator = RazorpaySimulator(webhook_url=receiver.url, hang_s=1.5)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: RazorpaySimulator, **changes: Any) -> RazorpaySettings:
    return simulated_settings(RazorpaySettings, sim, ["upi", "card"], **changes)


def make_adapter(sim: RazorpaySimulator, http: aiohttp.ClientSession, **changes: Any) -> RazorpayAdapter:
    adapter = RazorpayAdapter("razorpay_main", settings_for(sim, **changes), SERVICES, http)
    adapter.request_timeout_s = 1.0
    return adapter


@pytest_asyncio.fixture
async def adapter(sim: RazorpaySimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> RazorpayAdapter:
    adapter = make_adapter(sim, http)
    receiver.adapter = adapter
    return adapter


def checkout_request(amount_minor: int = 2500, method: str = "upi", **changes: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": "INR",
        "method": method,
        "return_url": "http://127.0.0.1:9/topup/1/return",
        "webhook_url": "http://127.0.0.1:9/webhooks/razorpay_main",
        "description": "Top-up",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def test_the_simulator_is_a_processor_simulator() -> None:
    simulator: ProcessorSimulator = RazorpaySimulator()
    assert simulator.processor == RazorpayAdapter.name
    assert set(simulator.secrets()) == {"key_id", "key_secret", "webhook_secret"}


# --- checkout ------------------------------------------------------------------------------------


async def test_create_makes_a_link_limited_to_the_method(adapter: RazorpayAdapter, sim: RazorpaySimulator) -> None:
    request = checkout_request(method="card")
    checkout = await adapter.create_checkout(request)
    link = sim.links[checkout.processor_reference]
    assert isinstance(checkout.next_step, Redirect)
    assert checkout.next_step.url == f"{sim.base_url}/i/{link.code}"
    assert (link.reference_id, link.amount, link.currency) == (request.reference, 2500, "INR")
    assert link.callback_url == request.return_url
    method, path, body, headers = sim.requests[-1]
    assert (method, path) == ("POST", "/v1/payment_links")
    assert body["options"] == {
        "checkout": {"method": {"card": True, "netbanking": False, "upi": False, "wallet": False}}
    }
    assert headers["Authorization"].startswith("Basic ")


async def test_a_create_whose_answer_was_lost_finds_the_first_link(
    adapter: RazorpayAdapter, sim: RazorpaySimulator
) -> None:
    request = checkout_request()
    sim.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable) as lost:
        await adapter.create_checkout(request)
    assert "TimeoutError" in str(lost.value)
    assert sim.created_payments() == 1
    checkout = await adapter.create_checkout(request)
    assert sim.created_payments() == 1  # Razorpay refused the duplicate reference_id; the first link is used
    assert checkout.processor_reference == next(iter(sim.links))
    assert [(m, p.split("?")[0]) for m, p, _, _ in sim.requests[-2:]] == [
        ("POST", "/v1/payment_links"),
        ("GET", "/v1/payment_links"),
    ]
    assert sim.requests[-1][1].endswith(f"reference_id={request.reference}")


async def test_a_create_that_failed_before_creating_is_simply_made_again(
    adapter: RazorpayAdapter, sim: RazorpaySimulator
) -> None:
    sim.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable, match="500"):
        await adapter.create_checkout(checkout_request())
    assert sim.created_payments() == 0
    await adapter.create_checkout(checkout_request())
    assert sim.created_payments() == 1


async def test_a_refused_create_says_why_without_credentials(adapter: RazorpayAdapter, sim: RazorpaySimulator) -> None:
    with pytest.raises(ProcessorRefused) as refused:
        await adapter.create_checkout(checkout_request(amount_minor=50))  # below ₹1
    assert "BAD_REQUEST_ERROR" in str(refused.value)
    assert sim.key_id not in str(refused.value) and sim.key_secret not in str(refused.value)
    with pytest.raises(ProcessorRefused, match="cannot be limited"):
        await adapter.create_checkout(checkout_request(method="emi"))
    with pytest.raises(ProcessorRefused, match="last digit"):
        await adapter.create_checkout(checkout_request(amount_minor=12345, currency="KWD"))
    assert sim.created_payments() == 0


async def test_wrong_keys_are_unavailable_and_never_in_the_error(
    sim: RazorpaySimulator, http: aiohttp.ClientSession
) -> None:
    wrong = make_adapter(sim, http, key_secret="not-the-secret-at-all-x")
    with pytest.raises(ProcessorUnavailable) as error:
        await wrong.create_checkout(checkout_request())
    assert "401" in str(error.value)
    assert "not-the-secret" not in str(error.value) and sim.key_id not in str(error.value)


async def test_an_unreachable_or_broken_api_is_unavailable(sim: RazorpaySimulator, http: aiohttp.ClientSession) -> None:
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    async with serve(teapot) as url:
        broken = make_adapter(sim, http, api_base_url=url)
        with pytest.raises(ProcessorUnavailable, match="502"):
            await broken.create_checkout(checkout_request())
    gone = make_adapter(sim, http, api_base_url=url)
    with pytest.raises(ProcessorUnavailable) as error:
        await gone.fetch_status(PaymentRef(processor_reference="plink_AAAAAAAAAAAAAA"))
    assert sim.key_secret not in str(error.value)


# --- outcomes, webhooks and polling --------------------------------------------------------------


async def test_a_paid_link_is_succeeded_by_webhook_and_by_polling(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "succeeded")
    succeeded = await receiver.wait_for(EventKind.SUCCEEDED, 2)  # payment.captured and payment_link.paid
    link = sim.links[checkout.processor_reference]
    payment_id = link.payments[0].id
    assert {e.event_id for e in succeeded} == {f"payment.captured:{payment_id}", f"payment_link.paid:{link.id}"}
    assert all((e.amount_minor, e.currency) == (2500, "INR") for e in succeeded)
    assert all(e.payment.ids == {"order": link.order_id, "payment": payment_id} for e in succeeded)
    assert receiver.kinds().count(EventKind.SUCCEEDED) == 2  # payment.authorized is acknowledged, not an event
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (polled.kind, polled.amount_minor, polled.event_id) == (
        EventKind.SUCCEEDED,
        2500,
        f"poll:{link.id}:succeeded",
    )
    assert link.order_id is not None
    assert polled.payment == PaymentRef(request.reference, link.id, {"order": link.order_id, "payment": payment_id})


async def test_a_declined_payment_fails_but_the_link_stays_payable(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "declined")
    [failed] = await receiver.wait_for(EventKind.FAILED)
    link = sim.links[checkout.processor_reference]
    assert link.order_id is not None
    assert failed.payment == PaymentRef(ids={"order": link.order_id})
    polled = await adapter.fetch_status(PaymentRef(processor_reference=link.id))
    assert polled.kind is EventKind.PENDING
    assert polled.payment.ids == {"order": link.order_id}  # payments learns the order: the failure finds it
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED, 2)


async def test_failed_then_captured_and_captured_then_failed_both_end_succeeded(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    first = await adapter.create_checkout(checkout_request())
    payment_id = await sim.fail_then_capture(first.processor_reference)
    kinds = [
        e.kind for e in receiver.events if e.payment.ids.get("order") == sim.links[first.processor_reference].order_id
    ]
    assert kinds == [EventKind.FAILED, EventKind.SUCCEEDED, EventKind.SUCCEEDED]
    assert receiver.events[1].event_id == f"payment.captured:{payment_id}"
    second = await adapter.create_checkout(checkout_request())
    await sim.capture_then_fail(second.processor_reference)
    order = sim.links[second.processor_reference].order_id
    assert [e.kind for e in receiver.events if e.payment.ids.get("order") == order][-1] is EventKind.FAILED
    for checkout in (first, second):
        polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
        assert polled.kind is EventKind.SUCCEEDED


async def test_an_expired_link_expires_by_webhook_and_by_polling(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    await sim.expire_now(checkout.processor_reference)
    [expired] = await receiver.wait_for(EventKind.EXPIRED)
    assert (expired.payment.processor_reference, expired.reason) == (checkout.processor_reference, "expired")
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.EXPIRED
    with pytest.raises(ProcessorRefused):
        await adapter.fetch_status(PaymentRef(processor_reference="not-a-link"))


async def test_copies_and_failed_deliveries_are_the_same_events(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.copies = 3
    receiver.fail_next = 2
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    succeeded = await receiver.wait_for(EventKind.SUCCEEDED, 6)
    assert len({e.event_id for e in succeeded}) == 2
    assert receiver.answers.count(500) == 2 and not sim.webhook_disabled
    headers = [w.headers["X-Razorpay-Event-Id"] for w in receiver.delivered]
    assert len(set(headers)) == 3  # authorized, captured, link paid: each sent three times with its id


async def test_held_webhooks_arrive_newest_first(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.hold = True
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    assert receiver.events == []
    await sim.release()
    names = [json.loads(w.body)["event"] for w in receiver.delivered]
    assert names == ["payment_link.paid", "payment.captured", "payment.authorized"]


async def test_a_receiver_down_for_good_gets_the_webhook_disabled(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 100
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "declined")
    assert sim.webhook_disabled
    assert sim.sent[0].statuses == [500] * 5  # the first try and four retries
    receiver.fail_next = 0
    await sim.act(checkout, "succeeded")
    assert receiver.events == [] and len(sim.dropped) == 3  # nothing is sent until re-enabled
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.SUCCEEDED  # polling heals what was lost


async def test_forged_reserialised_and_unsigned_webhooks_are_refused(
    adapter: RazorpayAdapter, sim: RazorpaySimulator
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    genuine = sim.signed_webhook(checkout.processor_reference, "succeeded")
    await adapter.verify_webhook(genuine)
    assert [e.kind for e in await adapter.parse_webhook(genuine)] == [EventKind.SUCCEEDED]
    forged = sim.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    reserialised = replace(genuine, body=json.dumps(json.loads(genuine.body), indent=1).encode())
    unsigned = replace(genuine, headers={"Content-Type": "application/json"})
    for webhook in (forged, reserialised, unsigned):
        with pytest.raises(InvalidSignature):
            await adapter.verify_webhook(webhook)


async def test_after_rotating_the_secret_old_retries_verify_only_with_the_previous_secret(
    sim: RazorpaySimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    old_adapter = make_adapter(sim, http)
    receiver.adapter = old_adapter
    checkout = await old_adapter.create_checkout(checkout_request())
    sim.faults.hold = True
    await sim.act(checkout, "succeeded")  # events made (and signed) under the old secret
    old_secret = sim.rotate_webhook_secret()
    sim.faults.hold = False
    receiver.adapter = make_adapter(sim, http, webhook_secret=sim.webhook_secret)
    await sim.release()
    # Each of the three refused on every try (401), until Razorpay gives up and disables the webhook.
    assert len(receiver.refused) == 3 * 5 and receiver.events == [] and sim.webhook_disabled
    receiver.refused.clear()
    sim.enable_webhook()
    receiver.adapter = make_adapter(sim, http, webhook_secret=sim.webhook_secret, previous_webhook_secret=old_secret)
    sim.held = [replace(event) for event in sim.sent]  # Razorpay retries them, as first signed
    sim.sent.clear()
    await sim.release()
    await receiver.wait_for(EventKind.SUCCEEDED, 2)
    await sim.expire_now((await old_adapter.create_checkout(checkout_request())).processor_reference)
    await receiver.wait_for(EventKind.EXPIRED)  # a new event, under the new secret


# --- refunds -------------------------------------------------------------------------------------


async def paid_link(adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver) -> PaymentRef:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "succeeded")
    [*_, paid] = await receiver.wait_for(EventKind.SUCCEEDED, 2)
    return PaymentRef(request.reference, checkout.processor_reference, paid.payment.ids)


async def test_partial_refunds_retried_refund_once_each(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid_link(adapter, sim, receiver)
    first = RefundRequest(payment, str(uuid.uuid4()), 1000, "INR", "driver asked")
    accepted = await adapter.refund(first)
    again = await adapter.refund(first)  # a retry: the same refund
    assert again.refund_id == accepted.refund_id and len(sim.refunds) == 1
    assert sim.requests[-1][3]["X-Refund-Idempotency"] == first.refund_key
    await adapter.refund(RefundRequest(payment, str(uuid.uuid4()), 1500, "INR", "rest"))
    refunded = await receiver.wait_for(EventKind.REFUNDED, 2)
    assert sorted(e.amount_minor or 0 for e in refunded) == [1000, 1500]
    assert all(e.payment.merchant_reference == payment.merchant_reference for e in refunded)
    with pytest.raises(ProcessorRefused, match="greater than"):
        await adapter.refund(RefundRequest(payment, str(uuid.uuid4()), 100, "INR", "too much"))
    with pytest.raises(ProcessorRefused, match="same idempotency key"):
        await adapter.refund(replace(first, amount_minor=900))


async def test_a_refund_before_the_payment_id_is_known_finds_it_on_the_link(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid_link(adapter, sim, receiver)
    bare = PaymentRef(payment.merchant_reference, payment.processor_reference)
    accepted = await adapter.refund(RefundRequest(bare, str(uuid.uuid4()), 2500, "INR", "all"))
    assert sim.refunds[accepted.refund_id].payment.id == payment.ids["payment"]
    unpaid = await adapter.create_checkout(checkout_request())
    with pytest.raises(ProcessorRefused, match="no captured payment"):
        await adapter.refund(
            RefundRequest(PaymentRef(processor_reference=unpaid.processor_reference), str(uuid.uuid4()), 1, "INR", "x")
        )


async def test_a_failed_refund_is_reported(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid_link(adapter, sim, receiver)
    accepted = await adapter.refund(RefundRequest(payment, str(uuid.uuid4()), 2500, "INR", "all"))
    await sim.fail_refund(accepted.refund_id)
    [failed] = await receiver.wait_for(EventKind.REFUND_FAILED)
    assert (failed.cause_id, failed.amount_minor) == (accepted.refund_id, 2500)


# --- disputes ------------------------------------------------------------------------------------


async def test_disputes_open_and_settle(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    lost_payment = await paid_link(adapter, sim, receiver)
    won_payment = await paid_link(adapter, sim, receiver)
    lost = await sim.open_dispute(lost_payment.processor_reference or "", 2500)
    won = await sim.open_dispute(won_payment.processor_reference or "", 2500)
    await sim.open_dispute(won_payment.processor_reference or "", 2500, phase="retrieval")
    opened = await receiver.wait_for(EventKind.DISPUTE_OPENED, 2)
    assert {e.cause_id for e in opened} == {lost, won}
    assert {e.payment.ids["payment"] for e in opened} == {lost_payment.ids["payment"], won_payment.ids["payment"]}
    await sim.settle_dispute(lost, won=False)
    await sim.settle_dispute(won, won=True)
    [dispute_lost] = await receiver.wait_for(EventKind.DISPUTE_LOST)
    [dispute_won] = await receiver.wait_for(EventKind.DISPUTE_WON)
    assert (dispute_lost.cause_id, dispute_won.cause_id) == (lost, won)
    await asyncio.sleep(0.1)
    assert len(receiver.of(EventKind.DISPUTE_OPENED)) == 2  # the retrieval request moved nothing


# --- stored bodies --------------------------------------------------------------------------------


async def test_stored_webhook_bodies_keep_no_driver_contact_or_payment_details(
    adapter: RazorpayAdapter, sim: RazorpaySimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(method="upi"))
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED, 2)  # payment.captured and payment_link.paid
    stored = [adapter.stored_body(webhook.body) for webhook in receiver.delivered]
    with_payment = [webhook.body for webhook in receiver.delivered if b'"contact"' in webhook.body]
    assert with_payment, "the simulator sends the payment's contact details"
    for body in stored:
        assert b"+919000090000" not in body and b"void@razorpay.com" not in body and b"driver@upi" not in body
        data = json.loads(body)
        assert data["event"] and data["payload"]  # the rest is kept for audit
    captured = next(json.loads(b) for b in stored if json.loads(b)["event"] == "payment.captured")
    assert captured["payload"]["payment"]["entity"]["id"].startswith("pay_")
    assert "contact" not in captured["payload"]["payment"]["entity"]
