"""The Template adapter against the Template simulator (``tests/simulators/_template_sim.py``), over real
HTTP both ways: checkouts, the driver's outcomes, webhooks verified and parsed by a small receiver
exactly as payments' webhook endpoint would, polling, refunds, disputes, delivery faults and API
failures. No database or broker is needed."""

# TEMPLATE: add a test for each of the processor's own ways that the simulator reproduces (a failure
# followed by a success, a rotated secret, a disabled endpoint, a second call after approval, …).

from __future__ import annotations

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

from services.payments.processors._template import Adapter, TemplateAdapter
from services.payments.processors._template.config import TemplateSettings
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
from tests.simulators._template_sim import TemplateSimulator
from tests.simulators.processor import ProcessorSimulator, serve, simulated_settings
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver

# TEMPLATE: a currency and a method the processor takes.
CURRENCY, METHOD = "EUR", "card"


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="template_main") as receiver:
        yield receiver


@pytest_asyncio.fixture
async def sim(receiver: WebhookReceiver) -> AsyncIterator[TemplateSimulator]:
    simulator = TemplateSimulator(webhook_url=receiver.url, hang_s=1.5)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: TemplateSimulator, **changes: Any) -> TemplateSettings:
    return simulated_settings(TemplateSettings, sim, [METHOD], **changes)


def make_adapter(sim: TemplateSimulator, http: aiohttp.ClientSession, **changes: Any) -> TemplateAdapter:
    adapter = TemplateAdapter("template_main", settings_for(sim, **changes), SERVICES, http)
    adapter.request_timeout_s = 1.0
    return adapter


@pytest_asyncio.fixture
async def adapter(sim: TemplateSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> TemplateAdapter:
    adapter = make_adapter(sim, http)
    receiver.adapter = adapter
    return adapter


def checkout_request(amount_minor: int = 2500, **changes: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": CURRENCY,
        "method": METHOD,
        "return_url": "http://127.0.0.1:9/topup/1/return",
        "webhook_url": "http://127.0.0.1:9/webhooks/template_main",
        "description": "Top-up",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def test_the_package_exports_the_adapter_and_the_simulator_is_a_processor_simulator() -> None:
    assert Adapter is TemplateAdapter
    simulator: ProcessorSimulator = TemplateSimulator()
    assert simulator.processor == TemplateAdapter.name
    assert set(simulator.secrets()) == set(TemplateSettings.model_fields) & {"api_key", "webhook_secret"}


# --- checkout ------------------------------------------------------------------------------------


async def test_create_makes_a_checkout_and_redirects_to_it(adapter: TemplateAdapter, sim: TemplateSimulator) -> None:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    made = sim.checkouts[checkout.processor_reference]
    assert isinstance(checkout.next_step, Redirect)
    assert checkout.next_step.url == f"{sim.base_url}/pay/{made.id}"
    assert (made.reference, made.amount, made.currency, made.method) == (request.reference, 2500, CURRENCY, METHOD)
    method, path, _, headers = sim.requests[-1]
    assert (method, path) == ("POST", "/v1/checkouts")
    assert headers["Idempotency-Key"] == request.reference
    assert headers["Authorization"] == f"Bearer {sim.api_key}"


async def test_a_create_whose_answer_was_lost_gets_the_first_checkout(
    adapter: TemplateAdapter, sim: TemplateSimulator
) -> None:
    request = checkout_request()
    sim.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable) as lost:
        await adapter.create_checkout(request)
    assert "TimeoutError" in str(lost.value)
    assert sim.created_payments() == 1
    checkout = await adapter.create_checkout(request)
    assert sim.created_payments() == 1  # the same idempotency key: the first checkout, not a second
    assert checkout.processor_reference == next(iter(sim.checkouts))


async def test_a_create_that_failed_before_creating_is_simply_made_again(
    adapter: TemplateAdapter, sim: TemplateSimulator
) -> None:
    request = checkout_request()
    sim.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable, match="500"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 0
    await adapter.create_checkout(request)
    assert sim.created_payments() == 1


async def test_a_refused_create_says_why_without_credentials(adapter: TemplateAdapter, sim: TemplateSimulator) -> None:
    with pytest.raises(ProcessorRefused, match="cannot be limited"):
        await adapter.create_checkout(checkout_request(method="not-a-method"))
    with pytest.raises(ProcessorRefused, match="cannot charge"):
        await adapter.create_checkout(checkout_request(amount_minor=0))
    with pytest.raises(ProcessorRefused, match="cannot charge"):
        await adapter.create_checkout(checkout_request(currency="XXX"))
    request = checkout_request()
    await adapter.create_checkout(request)
    with pytest.raises(ProcessorRefused) as refused:  # the same key with another body
        await adapter.create_checkout(replace(request, amount_minor=2600))
    assert "idempotency_error" in str(refused.value) and sim.api_key not in str(refused.value)
    assert sim.created_payments() == 1


async def test_a_wrong_key_is_unavailable_and_never_in_the_error(
    sim: TemplateSimulator, http: aiohttp.ClientSession
) -> None:
    wrong = make_adapter(sim, http, api_key="sk_not-the-key-at-all-x")
    with pytest.raises(ProcessorUnavailable) as error:
        await wrong.create_checkout(checkout_request())
    assert "401" in str(error.value)
    assert "not-the-key" not in str(error.value) and sim.api_key not in str(error.value)


async def test_an_unreachable_or_broken_api_is_unavailable(sim: TemplateSimulator, http: aiohttp.ClientSession) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    async with serve(broken) as url:
        with pytest.raises(ProcessorUnavailable, match="502"):
            await make_adapter(sim, http, api_base_url=url).create_checkout(checkout_request())
    gone = make_adapter(sim, http, api_base_url=url)
    with pytest.raises(ProcessorUnavailable) as error:
        await gone.fetch_status(PaymentRef(processor_reference="co_AAAAAAAAAAAAAAAA"))
    assert sim.api_key not in str(error.value)


# --- outcomes, webhooks and polling --------------------------------------------------------------


async def test_a_paid_checkout_succeeds_by_webhook_and_by_polling(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "succeeded")
    [succeeded] = await receiver.wait_for(EventKind.SUCCEEDED)
    expected = PaymentRef(merchant_reference=request.reference, processor_reference=checkout.processor_reference)
    assert (succeeded.payment, succeeded.amount_minor, succeeded.currency) == (expected, 2500, CURRENCY)
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (polled.kind, polled.amount_minor, polled.payment) == (EventKind.SUCCEEDED, 2500, expected)
    assert polled.event_id == f"poll:{checkout.processor_reference}:succeeded"


async def test_a_declined_payment_fails_by_webhook_and_by_polling(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "declined")
    [failed] = await receiver.wait_for(EventKind.FAILED)
    assert (failed.payment.processor_reference, failed.reason) == (checkout.processor_reference, "card_declined")
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.FAILED


async def test_an_expired_checkout_expires_by_webhook_and_by_polling(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    pending = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert pending.kind is EventKind.PENDING
    await sim.expire_now(checkout.processor_reference)
    [expired] = await receiver.wait_for(EventKind.EXPIRED)
    assert expired.payment.processor_reference == checkout.processor_reference
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.EXPIRED
    with pytest.raises(ProcessorRefused):
        await adapter.fetch_status(PaymentRef(processor_reference="not-a-checkout"))
    with pytest.raises(ProcessorRefused, match="404"):
        await adapter.fetch_status(PaymentRef(processor_reference="co_NoSuchCheckout"))


async def test_copies_and_failed_deliveries_are_the_same_events(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.copies = 3
    receiver.fail_next = 2
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    succeeded = await receiver.wait_for(EventKind.SUCCEEDED, 3)
    assert len({e.event_id for e in succeeded}) == 1
    assert receiver.answers.count(500) == 2


async def test_held_webhooks_arrive_newest_first(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    paid = await adapter.create_checkout(checkout_request())
    declined = await adapter.create_checkout(checkout_request())
    sim.faults.hold = True
    await sim.act(paid, "succeeded")
    await sim.act(declined, "declined")
    assert receiver.events == []
    await sim.release()
    assert [json.loads(w.body)["type"] for w in receiver.delivered] == ["checkout.failed", "checkout.succeeded"]


async def test_a_lost_webhook_is_healed_by_polling(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults.drop = True
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    assert receiver.events == [] and len(sim.dropped) == 1
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.SUCCEEDED


async def test_forged_reserialised_unsigned_and_stale_webhooks_are_refused(
    adapter: TemplateAdapter, sim: TemplateSimulator
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    genuine = sim.signed_webhook(checkout.processor_reference, "succeeded")
    await adapter.verify_webhook(genuine)
    assert [e.kind for e in await adapter.parse_webhook(genuine)] == [EventKind.SUCCEEDED]
    await adapter.verify_webhook(replace(genuine, headers=dict(genuine.headers)))  # a plain dict works too
    forged = sim.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    reserialised = replace(genuine, body=json.dumps(json.loads(genuine.body), indent=1).encode())
    unsigned = replace(genuine, headers={"Content-Type": "application/json"})
    window = adapter.capabilities.replay_window_s
    assert window is not None
    stale = sim.signed_webhook(checkout.processor_reference, "succeeded", age_s=window + 60)
    late = replace(genuine, received_at_s=time.time() + window + 60)
    for webhook in (forged, reserialised, unsigned, stale, late):
        with pytest.raises(InvalidSignature):
            await adapter.verify_webhook(webhook)


# --- refunds -------------------------------------------------------------------------------------


async def paid_checkout(adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver) -> PaymentRef:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "succeeded")
    [*_, paid] = await receiver.wait_for(EventKind.SUCCEEDED)
    return paid.payment


async def test_partial_refunds_retried_refund_once_each(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid_checkout(adapter, sim, receiver)
    first = RefundRequest(payment, str(uuid.uuid4()), 1000, CURRENCY, "driver asked")
    accepted = await adapter.refund(first)
    again = await adapter.refund(first)  # a retry: the same refund
    assert again == accepted and len(sim.refunds) == 1
    assert sim.requests[-1][3]["Idempotency-Key"] == first.refund_key
    await adapter.refund(RefundRequest(payment, str(uuid.uuid4()), 1500, CURRENCY, "rest"))
    refunded = await receiver.wait_for(EventKind.REFUNDED, 2)
    assert sorted(e.amount_minor or 0 for e in refunded) == [1000, 1500]
    assert {e.cause_id for e in refunded} == set(sim.refunds)
    assert all(e.payment.processor_reference == payment.processor_reference for e in refunded)
    with pytest.raises(ProcessorRefused, match="amount_too_large"):
        await adapter.refund(RefundRequest(payment, str(uuid.uuid4()), 100, CURRENCY, "too much"))
    with pytest.raises(ProcessorRefused, match="idempotency_error"):
        await adapter.refund(replace(first, amount_minor=900))
    with pytest.raises(ProcessorRefused, match="checkout"):
        await adapter.refund(RefundRequest(PaymentRef(merchant_reference="x"), str(uuid.uuid4()), 1, CURRENCY, "x"))


async def test_a_failed_refund_is_reported(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    payment = await paid_checkout(adapter, sim, receiver)
    accepted = await adapter.refund(RefundRequest(payment, str(uuid.uuid4()), 2500, CURRENCY, "all"))
    await sim.fail_refund(accepted.refund_id)
    [failed] = await receiver.wait_for(EventKind.REFUND_FAILED)
    assert (failed.cause_id, failed.amount_minor) == (accepted.refund_id, 2500)


# --- disputes ------------------------------------------------------------------------------------


async def test_disputes_open_and_settle(
    adapter: TemplateAdapter, sim: TemplateSimulator, receiver: WebhookReceiver
) -> None:
    lost_payment = await paid_checkout(adapter, sim, receiver)
    won_payment = await paid_checkout(adapter, sim, receiver)
    lost = await sim.open_dispute(lost_payment.processor_reference or "", 2500)
    won = await sim.open_dispute(won_payment.processor_reference or "", 2500)
    opened = await receiver.wait_for(EventKind.DISPUTE_OPENED, 2)
    assert {e.cause_id for e in opened} == {lost, won}
    await sim.settle_dispute(lost, won=False)
    await sim.settle_dispute(won, won=True)
    [dispute_lost] = await receiver.wait_for(EventKind.DISPUTE_LOST)
    [dispute_won] = await receiver.wait_for(EventKind.DISPUTE_WON)
    assert (dispute_lost.cause_id, dispute_won.cause_id) == (lost, won)
    assert dispute_lost.payment.processor_reference == lost_payment.processor_reference
