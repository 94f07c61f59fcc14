"""The Paystack adapter against the Paystack simulator (``tests/simulators/paystack_sim.py``), over real
HTTP both ways: checkouts, the driver's outcomes (a decline and an abandoned page seen by polling
only), webhooks verified and parsed by a small receiver exactly as payments' webhook endpoint would,
refunds (each keyed by its own id, a retried one made once), disputes, delivery faults and API
failures. No database or broker is needed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

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
)
from services.payments.processors.paystack import PaystackAdapter
from services.payments.processors.paystack.config import PaystackSettings
from tests.simulators.paystack_sim import PaystackSimulator, paystack_json, sign
from tests.simulators.processor import ProcessorSimulator, WebhookFaults, serve, simulated_settings
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="paystack_main") as receiver:
        yield receiver


@pytest_asyncio.fixture
async def sim(receiver: WebhookReceiver) -> AsyncIterator[PaystackSimulator]:
    simulator = PaystackSimulator(webhook_url=receiver.url, checkout_expiry_s=0.5)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: PaystackSimulator, **changes: Any) -> PaystackSettings:
    return simulated_settings(PaystackSettings, sim, ["card", "bank_transfer"], **changes)


@pytest_asyncio.fixture
async def adapter(sim: PaystackSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> PaystackAdapter:
    adapter = PaystackAdapter("paystack_main", settings_for(sim), SERVICES, http)
    receiver.adapter = adapter
    return adapter


def checkout_request(amount_minor: int = 250000, currency: str = "NGN", **changes: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": currency,
        "method": "card",
        "return_url": "http://127.0.0.1:9/return",
        "webhook_url": "http://127.0.0.1:9/webhooks/paystack_main",
        "description": "Top-up",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


async def paid(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver, amount_minor: int = 250000
) -> tuple[Checkout, ProcessorEvent]:
    checkout = await adapter.create_checkout(checkout_request(amount_minor))
    before = len(receiver.of(EventKind.SUCCEEDED))
    await sim.act(checkout, "succeeded")
    events = await receiver.wait_for(EventKind.SUCCEEDED, before + 1)
    return checkout, next(e for e in events if e.payment.processor_reference == checkout.processor_reference)


def test_the_simulator_is_a_processor_simulator() -> None:
    simulator: ProcessorSimulator = PaystackSimulator()
    assert simulator.processor == PaystackAdapter.name
    assert set(simulator.secrets()) == {"secret_key"}
    assert PaystackSimulator().secret_key.startswith("sk_live_")
    assert PaystackSimulator(live=False).secret_key.startswith("sk_test_")


# --- checkout ------------------------------------------------------------------------------------


async def test_create_initializes_a_transaction_and_redirects_to_its_page(
    adapter: PaystackAdapter, sim: PaystackSimulator
) -> None:
    request = checkout_request(method="bank_transfer")
    checkout = await adapter.create_checkout(request)
    assert checkout.processor_reference == request.reference
    tx = sim.transactions[request.reference]
    assert checkout.next_step == Redirect(f"{sim.base_url}/checkout/{tx.access_code}")
    [body] = sim.initialize_bodies
    assert body["email"] == f"topup+{request.payment_id.hex}@cpo.example"  # nothing about the driver
    assert (body["amount"], body["currency"], body["channels"]) == (250000, "NGN", ["bank_transfer"])
    assert body["callback_url"] == request.return_url
    assert sim.created_payments() == 1


async def test_the_same_reference_is_never_a_second_transaction(
    adapter: PaystackAdapter, sim: PaystackSimulator
) -> None:
    request = checkout_request()
    await adapter.create_checkout(request)
    with pytest.raises(ProcessorRefused, match="Duplicate Transaction Reference"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 1
    assert not PaystackAdapter.capabilities.create_is_idempotent


@pytest.mark.parametrize(("amount", "currency"), [(0, "NGN"), (2500, "XOF"), (2500, "EUR")])
async def test_an_amount_paystack_cannot_take_is_refused_before_any_call(
    adapter: PaystackAdapter, sim: PaystackSimulator, amount: int, currency: str
) -> None:
    with pytest.raises(ProcessorRefused):
        await adapter.create_checkout(checkout_request(amount, currency))
    assert sim.created_payments() == 0


async def test_a_paid_checkout_is_succeeded_by_webhook_and_by_polling(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    checkout, event = await paid(adapter, sim, receiver)
    tx = sim.transactions[checkout.processor_reference]
    assert (event.amount_minor, event.currency) == (250000, "NGN")
    assert event.payment.ids == {"transaction": str(tx.id)}
    assert event.event_id == f"charge.success:{tx.id}:success"
    polled = await adapter.fetch_status(event.payment)
    assert (polled.kind, polled.amount_minor, polled.event_id) == (
        EventKind.SUCCEEDED,
        250000,
        f"poll:{checkout.processor_reference}:succeeded",
    )


async def test_a_declined_payment_fails_by_polling_only_and_may_still_be_paid(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    assert (await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))).kind is (
        EventKind.PENDING
    )
    await sim.act(checkout, "declined")
    await sim.wait_idle()
    assert receiver.events == []  # Paystack sends nothing for a decline
    failed = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (failed.kind, failed.reason) == (EventKind.FAILED, "Declined")
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED)


async def test_an_abandoned_checkout_expires_after_checkout_expiry_s(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    ref = PaymentRef(processor_reference=checkout.processor_reference)
    await sim.act(checkout, "expired")
    assert (await adapter.fetch_status(ref)).kind is EventKind.PENDING  # verify says "abandoned" either way
    await asyncio.sleep(sim.checkout_expiry_s)
    assert (await adapter.fetch_status(ref)).kind is EventKind.EXPIRED
    await sim.wait_idle()
    assert receiver.events == []


# --- refunds -------------------------------------------------------------------------------------


def refund_request(payment: PaymentRef, amount: int, key: str | None = None) -> RefundRequest:
    return RefundRequest(payment, key or str(uuid.uuid4()), amount, "NGN", "driver asked")


async def test_partial_refunds_of_the_same_amount_are_two_refunds(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(copies=2)
    _, event = await paid(adapter, sim, receiver)
    first = await adapter.refund(refund_request(event.payment, 100000))
    second = await adapter.refund(refund_request(event.payment, 100000))
    assert first.refund_id != second.refund_id and first.status == "pending"
    refunded = await receiver.wait_for(EventKind.REFUNDED, 2)
    await sim.wait_idle()
    assert {e.cause_id for e in refunded} == {first.refund_id, second.refund_id}
    assert {e.amount_minor for e in refunded} == {100000}
    assert {e.event_id for e in receiver.of(EventKind.REFUNDED)} == {
        f"refund:{first.refund_id}:refunded",
        f"refund:{second.refund_id}:refunded",
    }
    with pytest.raises(ProcessorRefused, match="more than"):
        await adapter.refund(refund_request(event.payment, 50001))
    # The rest, by reference alone (the transaction id is looked up): the transaction is reversed.
    await adapter.refund(refund_request(PaymentRef(merchant_reference=event.payment.merchant_reference), 50000))
    await receiver.wait_for(EventKind.REFUNDED, 3)
    assert (await adapter.fetch_status(event.payment)).kind is EventKind.SUCCEEDED  # reversed: it was paid


async def test_a_refund_whose_answer_was_lost_is_made_once(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    _, event = await paid(adapter, sim, receiver)
    request = refund_request(event.payment, 100000, key="rk-lost")
    sim.fail_next_refund("timeout_after_create")
    adapter.request_timeout_s = 0.3
    with pytest.raises(ProcessorUnavailable):
        await adapter.refund(request)
    adapter.request_timeout_s = 10
    again = await adapter.refund(request)
    assert len(sim.refunds) == 1
    assert again.refund_id == str(next(iter(sim.refunds)))
    [body] = sim.refund_bodies
    assert body["merchant_note"].startswith("evtopup-refund:rk-lost")


async def test_a_failed_refund_is_refund_failed(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    sim.refunds_settle = False
    _, event = await paid(adapter, sim, receiver)
    accepted = await adapter.refund(refund_request(event.payment, 250000))
    await sim.fail_refund(accepted.refund_id)
    [failed] = await receiver.wait_for(EventKind.REFUND_FAILED)
    assert (failed.cause_id, failed.amount_minor) == (accepted.refund_id, 250000)
    assert receiver.of(EventKind.REFUNDED) == []


async def test_an_unpaid_payment_cannot_be_refunded(adapter: PaystackAdapter, sim: PaystackSimulator) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    with pytest.raises(ProcessorRefused, match="abandoned"):
        await adapter.refund(refund_request(PaymentRef(processor_reference=checkout.processor_reference), 100))
    assert sim.refunds == {}


# --- disputes ------------------------------------------------------------------------------------


async def test_a_dispute_opens_is_reminded_and_is_won_or_lost(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    won_checkout, _ = await paid(adapter, sim, receiver)
    lost_checkout, _ = await paid(adapter, sim, receiver)
    won = await sim.open_dispute(won_checkout.processor_reference, 250000)
    lost = await sim.open_dispute(lost_checkout.processor_reference, 100000)
    await sim.remind_dispute(won)
    opened = await receiver.wait_for(EventKind.DISPUTE_OPENED, 3)
    assert {e.event_id for e in opened} == {f"dispute:{won}:dispute_opened", f"dispute:{lost}:dispute_opened"}
    await sim.settle_dispute(won, won=True)
    await sim.settle_dispute(lost, won=False)
    [won_event] = await receiver.wait_for(EventKind.DISPUTE_WON)
    [lost_event] = await receiver.wait_for(EventKind.DISPUTE_LOST)
    assert (won_event.cause_id, won_event.amount_minor, won_event.reason) == (won, 250000, "declined")
    assert (lost_event.cause_id, lost_event.amount_minor) == (lost, 100000)
    assert lost_event.payment.merchant_reference == lost_checkout.processor_reference


# --- webhooks and delivery -----------------------------------------------------------------------


async def test_copies_of_a_webhook_are_one_event(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(copies=3)
    await paid(adapter, sim, receiver)
    await sim.wait_idle()
    assert len(receiver.events) == 3 and len({e.event_id for e in receiver.events}) == 1


async def test_held_webhooks_are_released_newest_first(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    sim.faults = WebhookFaults(hold=True)
    await sim.act(checkout, "succeeded")
    dispute = await sim.open_dispute(checkout.processor_reference, 250000)
    await sim.settle_dispute(dispute, won=False)
    assert receiver.events == []
    await sim.release()
    assert receiver.kinds() == [EventKind.DISPUTE_LOST, EventKind.DISPUTE_OPENED, EventKind.SUCCEEDED]


async def test_a_dropped_webhook_is_healed_by_polling(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await sim.wait_idle()
    assert receiver.events == [] and [e["event"] for e in sim.dropped] == ["charge.success"]
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.SUCCEEDED


async def test_a_failed_delivery_is_retried_until_a_200(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 2
    await paid(adapter, sim, receiver)
    await sim.wait_idle()
    assert [(d.attempt, d.status) for d in sim.deliveries] == [(1, 500), (2, 500), (3, 200)]


async def test_a_receiver_that_never_answers_200_is_given_up(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    sim.retry_backoffs_s = (0.01, 0.01)
    receiver.fail_next = 10
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await sim.wait_idle()
    assert [d.attempt for d in sim.deliveries] == [1, 2, 3]
    assert receiver.events == []


async def test_signed_webhooks_verify_and_tampered_or_foreign_ones_do_not(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request())
    genuine = sim.signed_webhook(checkout.processor_reference, "succeeded")
    await adapter.verify_webhook(genuine)
    [event] = await adapter.parse_webhook(genuine)
    assert event.kind is EventKind.SUCCEEDED
    # No signed time: a late copy is the same event (payments deduplicates it).
    late = replace(genuine, received_at_s=genuine.received_at_s + 30 * 86400)
    await adapter.verify_webhook(late)
    assert await adapter.parse_webhook(late) == [event]
    body = json.loads(genuine.body)
    body["data"]["amount"] += 1
    tampered = replace(genuine, body=paystack_json(body))
    pretty = replace(genuine, body=json.dumps(json.loads(genuine.body), indent=2).encode())
    foreign = sim.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    unsigned = replace(genuine, headers={"Content-Type": "application/json"})
    for bad in (tampered, pretty, foreign, unsigned):
        with pytest.raises(InvalidSignature):
            await adapter.verify_webhook(bad)
    # Paystack documents no failure event: a signed "charge.failed" changes nothing.
    declined = sim.signed_webhook(checkout.processor_reference, "declined")
    await adapter.verify_webhook(declined)
    assert await adapter.parse_webhook(declined) == []


async def test_a_refund_webhook_is_acted_on_only_through_the_api(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    _, event = await paid(adapter, sim, receiver)
    ref = event.payment.merchant_reference
    assert ref is not None
    # A refund.processed that Paystack signed but whose refund the API does not list: nothing.
    body = paystack_json(
        {
            "event": "refund.processed",
            "data": {"status": "processed", "transaction_reference": ref, "amount": "5000", "currency": "NGN"},
        }
    )
    async with http.post(receiver.url, data=body, headers=sim.headers(body)) as response:
        assert response.status == 200
    assert receiver.of(EventKind.REFUNDED) == []
    # One for a transaction Paystack does not know is refused.
    unknown = paystack_json(
        {
            "event": "refund.processed",
            "data": {
                "status": "processed",
                "transaction_reference": str(uuid.uuid4()),
                "amount": 5000,
                "currency": "NGN",
            },
        }
    )
    async with http.post(receiver.url, data=unknown, headers={"x-paystack-signature": sign(sim.secret_key, unknown)}):
        pass
    assert receiver.answers[-1] == 400


# --- API failures --------------------------------------------------------------------------------


async def test_a_500_on_create_is_unavailable_and_creates_nothing(
    adapter: PaystackAdapter, sim: PaystackSimulator
) -> None:
    sim.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable, match="500"):
        await adapter.create_checkout(checkout_request())
    assert sim.created_payments() == 0


async def test_a_create_answered_too_late_is_unavailable_and_a_retry_is_refused(
    adapter: PaystackAdapter, sim: PaystackSimulator
) -> None:
    request = checkout_request()
    sim.fail_next_create("timeout_after_create")
    adapter.request_timeout_s = 0.3
    with pytest.raises(ProcessorUnavailable):
        await adapter.create_checkout(request)
    adapter.request_timeout_s = 10
    with pytest.raises(ProcessorRefused, match="Duplicate"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 1


async def test_wrong_credentials_are_an_error_without_any_key(
    sim: PaystackSimulator, http: aiohttp.ClientSession
) -> None:
    wrong_key = "sk_live_" + "w" * 36 + "9z8y"
    wrong = PaystackAdapter("paystack_main", settings_for(sim, secret_key=wrong_key), SERVICES, http)
    for call in api_calls(wrong):
        with pytest.raises(ProcessorUnavailable, match="401") as failure:
            await call()
        text = str(failure.value)
        assert wrong_key not in text and "9z8y" not in text and sim.secret_key not in text
    assert sim.auth_failures == 3 and sim.created_payments() == 0


async def test_a_refusal_never_quotes_a_key(sim: PaystackSimulator, http: aiohttp.ClientSession) -> None:
    async def leaky(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        return web.json_response({"status": False, "message": f"bad {key} and sk_test_abc123"}, status=400)

    async with serve(leaky) as url:
        adapter = PaystackAdapter("paystack_main", settings_for(sim, api_base_url=url), SERVICES, http)
        with pytest.raises(ProcessorRefused, match="bad") as failure:
            await adapter.create_checkout(checkout_request())
    assert sim.secret_key not in str(failure.value)
    assert "sk_" not in str(failure.value)


@pytest.mark.parametrize("answer", ["html_200", "false_200", "json_list", "error_502", "rate_limited", "not_listening"])
async def test_an_unreadable_or_failing_api_is_unavailable_without_secrets(
    sim: PaystackSimulator, http: aiohttp.ClientSession, answer: str
) -> None:
    async def failing(request: web.Request) -> web.Response:
        if answer == "html_200":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if answer == "false_200":
            return web.json_response({"status": False, "message": "hmm"})
        if answer == "json_list":
            return web.json_response([])
        status = 429 if answer == "rate_limited" else 502
        return web.Response(status=status, text=str(dict(request.headers)))

    async with serve(failing) as url:
        if answer != "not_listening":
            await assert_unavailable(
                PaystackAdapter("paystack_main", settings_for(sim, api_base_url=url), SERVICES, http), sim
            )
    if answer == "not_listening":
        await assert_unavailable(
            PaystackAdapter("paystack_main", settings_for(sim, api_base_url=url), SERVICES, http), sim
        )


def api_calls(adapter: PaystackAdapter) -> list[Callable[[], Awaitable[Any]]]:
    """One call of each kind the adapter makes."""
    return [
        lambda: adapter.create_checkout(checkout_request()),
        lambda: adapter.fetch_status(PaymentRef(processor_reference=str(uuid.uuid4()))),
        lambda: adapter.refund(RefundRequest(PaymentRef(ids={"transaction": "1"}), "k", 1, "NGN", "")),
    ]


async def assert_unavailable(adapter: PaystackAdapter, sim: PaystackSimulator) -> None:
    for call in api_calls(adapter):
        with pytest.raises(ProcessorUnavailable) as failure:
            await call()
        for secret in sim.secrets().values():
            assert secret not in str(failure.value)


async def test_an_unknown_reference_is_refused_and_polling_needs_a_reference(adapter: PaystackAdapter) -> None:
    with pytest.raises(ProcessorRefused, match="not found"):
        await adapter.fetch_status(PaymentRef(processor_reference=str(uuid.uuid4())))
    for ref in (PaymentRef(), PaymentRef(processor_reference="../refund")):
        with pytest.raises(ProcessorRefused, match="reference"):
            await adapter.fetch_status(ref)


async def test_stored_webhook_bodies_keep_nothing_about_the_driver(
    adapter: PaystackAdapter, sim: PaystackSimulator, receiver: WebhookReceiver
) -> None:
    await paid(adapter, sim, receiver)
    [delivered] = [w for w in receiver.delivered if b"charge.success" in w.body]
    assert b'"ip_address"' in delivered.body and b'"authorization"' in delivered.body
    stored = adapter.stored_body(delivered.body)
    assert b"ip_address" not in stored and b"authorization" not in stored and b'"phone"' not in stored
    assert json.loads(stored)["data"]["reference"] == json.loads(delivered.body)["data"]["reference"]
