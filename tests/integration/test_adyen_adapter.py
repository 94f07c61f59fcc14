"""The Adyen adapter against the Adyen simulator (``tests/simulators/adyen_sim.py``): payment links,
notifications received over HTTP by a small receiver that runs the adapter's checks on the real
request, polling, refunds, disputes and the simulator's faults. No database or broker."""

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
from aiohttp import web

from services.payments.processors.adyen import AdyenAdapter
from services.payments.processors.adyen.config import AdyenSettings
from services.payments.processors.base import (
    Checkout,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    PaymentRef,
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundRequest,
    WebhookRequest,
)
from tests.simulators.adyen_sim import AdyenSimulator
from tests.simulators.processor import ProcessorSimulator, serve, simulated_settings
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver


@dataclass
class World:
    sim: AdyenSimulator
    adapter: AdyenAdapter
    receiver: WebhookReceiver
    http: aiohttp.ClientSession

    def adapter_with(self, **changes: Any) -> AdyenAdapter:
        adapter = AdyenAdapter("adyen_test", settings_for(self.sim, **changes), SERVICES, self.http)
        adapter.request_timeout_s = self.adapter.request_timeout_s
        return adapter


def settings_for(sim: AdyenSimulator, **overrides: Any) -> AdyenSettings:
    return simulated_settings(AdyenSettings, sim, ["card"], **overrides)


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    async with WebhookReceiver(integration_id="adyen_test") as receiver, aiohttp.ClientSession() as http:
        sim = AdyenSimulator(hang_s=1.5, webhook_url=receiver.url)
        await sim.start()
        adapter = AdyenAdapter("adyen_test", settings_for(sim), SERVICES, http)
        adapter.request_timeout_s = 0.5
        receiver.adapter = adapter
        try:
            yield World(sim, adapter, receiver, http)
        finally:
            await sim.close()


def checkout_request(amount_minor: int = 2500, payment_id: uuid.UUID | None = None) -> CheckoutRequest:
    payment_id = payment_id or uuid.uuid4()
    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.uuid4(),
        reference=str(payment_id),
        amount_minor=amount_minor,
        currency="EUR",
        method="card",
        return_url="https://topup.example/return",
        webhook_url="https://payments.example/webhooks/adyen_test",
        description="EV top-up",
        locale="nl-NL",
    )


async def paid(world: World, amount_minor: int = 2500) -> tuple[Checkout, PaymentRef]:
    """A checkout the driver paid, and the payment as payments knows it after the AUTHORISATION."""
    request = checkout_request(amount_minor)
    checkout = await world.adapter.create_checkout(request)
    await world.sim.act(checkout, "succeeded")
    # Notifications name the payment by its (signed) merchantReference only.
    [event] = [e for e in world.receiver.events if e.payment.merchant_reference == request.reference]
    assert event.kind is EventKind.SUCCEEDED
    assert event.payment.processor_reference is None
    return checkout, PaymentRef(request.reference, checkout.processor_reference, dict(event.payment.ids))


def test_the_simulator_keeps_the_conformance_protocol() -> None:
    simulator: ProcessorSimulator = AdyenSimulator()  # checked by mypy
    assert simulator.processor == AdyenAdapter.name
    assert set(simulator.secrets()) == {"api_key", "hmac_key", "webhook_username", "webhook_password"}
    assert simulator.settings()["environment"] == "test"  # its notifications say "live": "false"


# --- checkout --------------------------------------------------------------------------------


async def test_a_checkout_is_a_payment_link_and_a_retry_returns_the_same_one(world: World) -> None:
    request = checkout_request()
    first = await world.adapter.create_checkout(request)
    again = await world.adapter.create_checkout(request)
    other = await world.adapter.create_checkout(checkout_request())
    assert first == again
    assert isinstance(first.next_step, Redirect) and first.next_step.url.endswith(
        f"/paylink/{first.processor_reference}"
    )
    assert other.processor_reference != first.processor_reference
    assert world.sim.created_payments() == 2
    method, path, body, key = world.sim.requests[0]
    assert (method, path, key) == ("POST", "/v72/paymentLinks", request.reference)
    assert body == {
        "amount": {"value": 2500, "currency": "EUR"},
        "merchantAccount": world.sim.merchant_account,
        "reference": request.reference,
        "returnUrl": "https://topup.example/return",
        "description": "EV top-up",
        "shopperLocale": "nl-NL",
        "allowedPaymentMethods": ["scheme"],  # the driver chose a card
    }


async def test_an_amount_adyen_cannot_represent_is_refused_before_any_call(world: World) -> None:
    request = checkout_request(150050)
    request = CheckoutRequest(**{**request.__dict__, "currency": "IDR"})
    with pytest.raises(ProcessorRefused, match="IDR"):
        await world.adapter.create_checkout(request)
    assert world.sim.requests == []


# --- outcomes ----------------------------------------------------------------------------------


async def test_a_payment_succeeds_by_notification_and_by_polling(world: World) -> None:
    request = checkout_request(4321)
    checkout = await world.adapter.create_checkout(request)
    ref = PaymentRef(request.reference, checkout.processor_reference)
    pending = await world.adapter.fetch_status(ref)
    assert (pending.kind, pending.event_id) == (EventKind.PENDING, f"poll:{checkout.processor_reference}:pending")
    await world.sim.act(checkout, "succeeded")
    [event] = world.receiver.events
    assert event.kind is EventKind.SUCCEEDED
    assert (event.amount_minor, event.currency) == (4321, "EUR")
    assert event.payment.merchant_reference == request.reference
    # The link id comes in additionalData.paymentLinkId, which the HMAC does not cover: not used.
    assert event.payment.processor_reference is None
    psp = event.payment.ids["psp_reference"]
    assert world.sim.payments[psp].link.id == checkout.processor_reference
    assert event.event_id == f"{psp}:AUTHORISATION:true"
    settled = await world.adapter.fetch_status(ref)
    assert (settled.kind, settled.amount_minor, settled.currency) == (EventKind.SUCCEEDED, 4321, "EUR")
    assert settled.event_id == f"poll:{checkout.processor_reference}:succeeded"
    # Polling asks Adyen by link id, so its answer names the link.
    assert settled.payment == PaymentRef(request.reference, checkout.processor_reference)
    assert world.sim.deliveries[0].statuses == [200]


async def test_a_declined_card_fails_the_attempt_but_the_link_can_still_be_paid(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    ref = PaymentRef(request.reference, checkout.processor_reference)
    await world.sim.act(checkout, "declined")
    [failed] = world.receiver.events
    assert (failed.kind, failed.reason, failed.payment.ids) == (EventKind.FAILED, "Refused", {})
    assert (await world.adapter.fetch_status(ref)).kind is EventKind.PENDING
    await world.sim.act(checkout, "succeeded")
    assert world.receiver.kinds() == [EventKind.FAILED, EventKind.SUCCEEDED]
    assert (await world.adapter.fetch_status(ref)).kind is EventKind.SUCCEEDED


async def test_an_expired_link_sends_nothing_and_polling_finds_it(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.sim.act(checkout, "expired")
    assert world.receiver.events == [] and world.sim.deliveries == []
    expired = await world.adapter.fetch_status(PaymentRef(request.reference, checkout.processor_reference))
    assert (expired.kind, expired.amount_minor) == (EventKind.EXPIRED, 2500)


async def test_polling_an_unknown_link_is_refused(world: World) -> None:
    with pytest.raises(ProcessorRefused, match="404"):
        await world.adapter.fetch_status(PaymentRef(processor_reference="PLDOESNOTEXIST00"))
    with pytest.raises(ProcessorUnavailable):
        await world.adapter.fetch_status(PaymentRef(merchant_reference="no link id"))


# --- refunds -----------------------------------------------------------------------------------


async def test_full_and_partial_refunds_are_confirmed_by_notifications(world: World) -> None:
    _, payment = await paid(world, 3000)
    psp = payment.ids["psp_reference"]
    first = await world.adapter.refund(RefundRequest(payment, "rf-1", 1000, "EUR", "driver asked"))
    again = await world.adapter.refund(RefundRequest(payment, "rf-1", 1000, "EUR", "driver asked"))
    second = await world.adapter.refund(RefundRequest(payment, "rf-2", 500, "EUR", "driver asked"))
    await world.sim.idle()
    assert first == again and first.status == "received"
    assert first.refund_id != second.refund_id
    refunds = [e for e in world.receiver.events if e.kind is EventKind.REFUNDED]
    assert [(e.cause_id, e.amount_minor) for e in refunds] == [(first.refund_id, 1000), (second.refund_id, 500)]
    assert all(e.payment.ids == {"psp_reference": psp} for e in refunds)
    assert world.sim.payments[psp].refunded_value == 1500
    method, path, body, key = world.sim.requests[-1]
    assert (method, path, key) == ("POST", f"/v72/payments/{psp}/refunds", "rf-2")
    assert body == {
        "merchantAccount": world.sim.merchant_account,
        "amount": {"value": 500, "currency": "EUR"},
        "reference": "rf-2",
    }
    rest = await world.adapter.refund(RefundRequest(payment, "rf-3", 1500, "EUR", "rest"))
    await world.sim.idle()
    assert world.receiver.events[-1].kind is EventKind.REFUNDED and world.receiver.events[-1].cause_id == rest.refund_id


async def test_a_refund_of_more_than_is_left_fails_by_notification(world: World) -> None:
    _, payment = await paid(world, 1000)
    accepted = await world.adapter.refund(RefundRequest(payment, "rf-big", 1001, "EUR", "too much"))
    await world.sim.idle()
    last = world.receiver.events[-1]
    assert (last.kind, last.cause_id) == (EventKind.REFUND_FAILED, accepted.refund_id)
    assert last.reason and "balance" in last.reason


async def test_a_confirmed_refund_that_fails_later(world: World) -> None:
    _, payment = await paid(world, 1000)
    accepted = await world.adapter.refund(RefundRequest(payment, "rf-late", 400, "EUR", "r"))
    await world.sim.idle()
    await world.sim.fail_refund(accepted.refund_id)
    await world.sim.fail_refund(accepted.refund_id, reversed_=True)
    tail = world.receiver.events[-3:]
    assert [e.kind for e in tail] == [EventKind.REFUNDED, EventKind.REFUND_FAILED, EventKind.REFUND_FAILED]
    assert {e.cause_id for e in tail} == {accepted.refund_id}
    assert len({e.event_id for e in tail}) == 3


async def test_a_refund_needs_the_payments_psp_reference(world: World) -> None:
    checkout, payment = await paid(world)
    with pytest.raises(ProcessorRefused, match="pspReference"):
        await world.adapter.refund(
            RefundRequest(PaymentRef(payment.merchant_reference, checkout.processor_reference), "rf", 1, "EUR", "r")
        )
    with pytest.raises(ProcessorRefused, match="167"):
        await world.adapter.refund(
            RefundRequest(PaymentRef(ids={"psp_reference": "UNKNOWNPSPREF001"}), "rf", 1, "EUR", "r")
        )


# --- disputes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("won", "end"), [(True, EventKind.DISPUTE_WON), (False, EventKind.DISPUTE_LOST)])
async def test_a_dispute_opens_and_ends_under_one_cause_id(world: World, won: bool, end: EventKind) -> None:
    checkout, payment = await paid(world)
    dispute_id = await world.sim.open_dispute(checkout.processor_reference, 2500)
    await world.sim.settle_dispute(dispute_id, won)
    opened, ended = world.receiver.events[-2:]  # NOTIFICATION_OF_CHARGEBACK gave none
    assert len(world.sim.deliveries) == 4
    assert (opened.kind, ended.kind) == (EventKind.DISPUTE_OPENED, end)
    assert opened.cause_id == ended.cause_id == dispute_id
    assert opened.payment.ids == payment.ids
    assert ended.payment.merchant_reference == payment.merchant_reference
    assert (ended.amount_minor, ended.currency) == (2500, "EUR")


# --- webhook faults ----------------------------------------------------------------------------


async def test_copies_carry_the_same_event_id(world: World) -> None:
    world.sim.faults.copies = 3
    checkout = await world.adapter.create_checkout(checkout_request())
    await world.sim.act(checkout, "succeeded")
    assert len(world.receiver.events) == 3
    assert len({e.event_id for e in world.receiver.events}) == 1


async def test_held_notifications_arrive_in_one_batch_newest_first_and_every_item_is_checked(world: World) -> None:
    world.sim.faults.hold = True
    first_request, second_request = checkout_request(), checkout_request()
    first = await world.adapter.create_checkout(first_request)
    second = await world.adapter.create_checkout(second_request)
    await world.sim.act(first, "declined")
    await world.sim.act(second, "succeeded")
    await world.sim.act(first, "succeeded")
    assert world.receiver.batches == []
    await world.sim.release()
    [batch] = world.receiver.batches
    assert [(e.payment.merchant_reference, e.kind) for e in batch] == [
        (first_request.reference, EventKind.SUCCEEDED),
        (second_request.reference, EventKind.SUCCEEDED),
        (first_request.reference, EventKind.FAILED),
    ]
    assert all(e.payment.processor_reference is None for e in batch)


async def test_a_batch_with_one_item_signed_with_another_key_is_refused_whole(world: World) -> None:
    checkout = await world.adapter.create_checkout(checkout_request())
    await world.sim.act(checkout, "succeeded")
    good = world.sim.signed_webhook(checkout.processor_reference, "succeeded")
    bad = world.sim.with_other_secret().signed_webhook(checkout.processor_reference, "declined")
    await world.adapter.verify_webhook(good)
    with pytest.raises(InvalidSignature):
        await world.adapter.verify_webhook(bad)
    items = [json.loads(r.body)["notificationItems"][0] for r in (good, bad)]
    mixed = WebhookRequest(
        **{**good.__dict__, "body": json.dumps({"live": "false", "notificationItems": items}).encode()}
    )
    with pytest.raises(InvalidSignature, match="item 1"):
        await world.adapter.verify_webhook(mixed)


async def test_dropped_notifications_are_healed_by_polling(world: World) -> None:
    world.sim.faults.drop = True
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    await world.sim.act(checkout, "succeeded")
    assert world.receiver.events == [] and len(world.sim.dropped) == 1
    polled = await world.adapter.fetch_status(PaymentRef(request.reference, checkout.processor_reference))
    assert polled.kind is EventKind.SUCCEEDED


async def test_a_refused_delivery_is_retried_until_accepted(world: World) -> None:
    world.receiver.fail_next = 2
    checkout = await world.adapter.create_checkout(checkout_request())
    await world.sim.act(checkout, "succeeded")
    assert world.sim.deliveries[0].statuses == [500, 500, 200]
    assert world.receiver.kinds() == [EventKind.SUCCEEDED]


async def test_a_notification_without_basic_auth_or_from_the_wrong_environment_is_refused(world: World) -> None:
    checkout = await world.adapter.create_checkout(checkout_request())
    signed = world.sim.signed_webhook(checkout.processor_reference, "succeeded")
    await world.adapter.verify_webhook(signed)
    no_auth = WebhookRequest(**{**signed.__dict__, "headers": {"Content-Type": "application/json"}})
    with pytest.raises(InvalidSignature, match="basic"):
        await world.adapter.verify_webhook(no_auth)
    production = world.adapter_with(environment="production")
    with pytest.raises(InvalidSignature, match="live environment"):
        await production.verify_webhook(signed)
    other_account = world.adapter_with(merchant_account="AnotherMerchantECOM")
    await other_account.verify_webhook(signed)
    assert await other_account.parse_webhook(signed) == []  # another account's: accepted, not acted on


async def test_an_unsigned_payment_link_id_pointed_at_another_payment_changes_nothing(world: World) -> None:
    request = checkout_request()
    checkout = await world.adapter.create_checkout(request)
    other = await world.adapter.create_checkout(checkout_request())
    genuine = world.sim.signed_webhook(checkout.processor_reference, "succeeded")
    assert checkout.processor_reference.encode() in genuine.body  # additionalData.paymentLinkId
    moved = WebhookRequest(
        **{
            **genuine.__dict__,
            "body": genuine.body.replace(checkout.processor_reference.encode(), other.processor_reference.encode()),
        }
    )
    assert moved.body != genuine.body
    await world.adapter.verify_webhook(moved)  # the HMAC does not cover it
    [event] = await world.adapter.parse_webhook(genuine)
    assert await world.adapter.parse_webhook(moved) == [event]
    assert (event.payment.merchant_reference, event.payment.processor_reference) == (request.reference, None)


async def test_without_configured_basic_auth_the_hmac_alone_decides(world: World) -> None:
    checkout = await world.adapter.create_checkout(checkout_request())
    signed = world.sim.signed_webhook(checkout.processor_reference, "succeeded")
    plain = world.adapter_with(webhook_username=None, webhook_password=None)
    await plain.verify_webhook(WebhookRequest(**{**signed.__dict__, "headers": {}}))


# --- API faults --------------------------------------------------------------------------------


async def test_a_500_on_create_is_unavailable_and_the_retry_makes_one_link(world: World) -> None:
    request = checkout_request()
    world.sim.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable, match="500"):
        await world.adapter.create_checkout(request)
    assert world.sim.created_payments() == 0
    checkout = await world.adapter.create_checkout(request)
    assert await world.adapter.create_checkout(request) == checkout
    assert world.sim.created_payments() == 1


async def test_a_lost_answer_is_retried_into_the_same_link(world: World) -> None:
    request = checkout_request()
    world.sim.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable, match="TimeoutError"):
        await world.adapter.create_checkout(request)
    assert world.sim.created_payments() == 1
    # Still in progress at Adyen: 409 errorCode 704, to be retried with the same key.
    with pytest.raises(ProcessorUnavailable, match="704"):
        await world.adapter.create_checkout(request)
    await asyncio.sleep(world.sim.hang_s)
    checkout = await world.adapter.create_checkout(request)
    assert checkout.processor_reference in world.sim.links
    assert world.sim.created_payments() == 1


async def test_wrong_credentials_never_show_the_secret(world: World) -> None:
    wrong = world.adapter_with(api_key="AQE_not_the_key_" + "x" * 30)
    secret = wrong.settings.api_key.get_secret_value()
    for call in (wrong.create_checkout(checkout_request()), wrong.fetch_status(PaymentRef(processor_reference="PL1"))):
        with pytest.raises(ProcessorUnavailable) as failure:
            await call
        assert "401" in str(failure.value)
        assert secret not in str(failure.value) and world.sim.api_key not in str(failure.value)
    assert world.sim.created_payments() == 0


async def test_an_unreachable_or_unreadable_api_is_unavailable_without_secrets(world: World) -> None:
    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async with serve(html) as url:
        for base in (url, "http://127.0.0.1:9"):
            adapter = world.adapter_with(api_base_url=base)
            with pytest.raises(ProcessorUnavailable) as failure:
                await adapter.create_checkout(checkout_request())
            assert world.sim.api_key not in str(failure.value)


async def test_the_merchant_account_must_be_the_keys(world: World) -> None:
    with pytest.raises(ProcessorUnavailable, match="403"):
        await world.adapter_with(merchant_account="SomeoneElseECOM").create_checkout(checkout_request())
