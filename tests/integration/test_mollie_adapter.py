"""The Mollie adapter against the Mollie simulator (``tests/simulators/mollie_sim.py``), over real HTTP
both ways: checkouts, the driver's outcomes, id-only webhooks confirmed by fetching the payment (as
payments' webhook endpoint would, through a small receiver), polling, refunds, chargebacks, delivery
faults and API failures. No database or broker is needed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
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
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundRequest,
    WebhookRequest,
)
from services.payments.processors.mollie import MollieAdapter
from services.payments.processors.mollie.config import MollieSettings
from tests.simulators.mollie_sim import MollieSimulator
from tests.simulators.processor import ProcessorSimulator, WebhookFaults, serve, simulated_settings
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="mollie_main") as receiver:
        yield receiver


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[MollieSimulator]:
    simulator = MollieSimulator()
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: MollieSimulator, **changes: Any) -> MollieSettings:
    return simulated_settings(
        MollieSettings,
        sim,
        ["ideal", "card"],
        **{"environment": "production" if sim.mode == "live" else "test", **changes},
    )


@pytest_asyncio.fixture
async def adapter(sim: MollieSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> MollieAdapter:
    adapter = MollieAdapter("mollie_main", settings_for(sim), SERVICES, http)
    receiver.adapter = adapter
    return adapter


def checkout_request(receiver: WebhookReceiver, amount_minor: int = 2500, **changes: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": "EUR",
        "method": "ideal",
        "return_url": "http://127.0.0.1:9/topup/1/return",
        "webhook_url": receiver.url,
        "description": "Top-up",
        "locale": "nl",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


async def paid(adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver) -> Checkout:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    before = len(receiver.of(EventKind.SUCCEEDED))
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED, before + 1)
    return checkout


def refund_request(checkout: Checkout, amount_minor: int, key: str | None = None) -> RefundRequest:
    return RefundRequest(
        payment=PaymentRef(processor_reference=checkout.processor_reference),
        refund_key=key or str(uuid.uuid4()),
        amount_minor=amount_minor,
        currency="EUR",
        reason="driver asked",
    )


def test_the_simulator_is_a_processor_simulator() -> None:
    simulator: ProcessorSimulator = MollieSimulator()
    assert simulator.processor == MollieAdapter.name
    assert set(simulator.secrets()) == {"api_key"}


# --- checkout ------------------------------------------------------------------------------------


async def test_create_makes_a_payment_and_redirects_to_its_checkout(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver, method="card")
    checkout = await adapter.create_checkout(request)
    payment = sim.payment(checkout.processor_reference)
    assert checkout.processor_reference.startswith("tr_")
    assert checkout.next_step == Redirect(payment.checkout_url)
    [(method, path, headers, body)] = sim.requests
    assert (method, path) == ("POST", "/v2/payments")
    assert headers["Idempotency-Key"] == request.reference
    assert headers["Authorization"] == f"Bearer {sim.api_key}"
    assert body["amount"] == {"currency": "EUR", "value": "25.00"}
    assert (body["method"], body["locale"], body["webhookUrl"]) == ("creditcard", "nl_NL", receiver.url)
    assert payment.metadata["reference"] == request.reference
    async with adapter.http.get(payment.checkout_url) as page:
        assert page.status == 200


async def test_a_retried_create_returns_the_same_payment(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    first = await adapter.create_checkout(request)
    again = await adapter.create_checkout(request)
    assert again == first
    assert sim.created_payments() == 1


async def test_a_create_whose_answer_is_lost_is_made_again_without_a_second_payment(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    adapter.request_timeout_s = 0.5
    request = checkout_request(receiver)
    sim.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable, match="failed: "):
        await adapter.create_checkout(request)
    checkout = await adapter.create_checkout(request)
    assert sim.created_payments() == 1
    assert checkout.processor_reference in sim.payments


async def test_a_create_refused_by_a_500_can_be_retried(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    sim.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable, match="500"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 0
    await adapter.create_checkout(request)
    assert sim.created_payments() == 1


async def test_the_same_key_with_other_parameters_is_refused(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    await adapter.create_checkout(request)
    with pytest.raises(ProcessorRefused, match="400"):
        await adapter.create_checkout(replace(request, amount_minor=3000))


async def test_an_amount_mollie_cannot_take_is_refused_before_calling(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    with pytest.raises(ProcessorRefused, match="cannot charge"):
        await adapter.create_checkout(checkout_request(receiver, amount_minor=0))
    assert sim.requests == []


# --- outcomes and webhooks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "outcome", "kind", "reason"),
    [
        ("ideal", "succeeded", EventKind.SUCCEEDED, None),
        ("ideal", "declined", EventKind.FAILED, "canceled"),
        ("card", "declined", EventKind.FAILED, "failed: refused_by_issuer"),
        ("ideal", "expired", EventKind.EXPIRED, "expired"),
    ],
)
async def test_each_outcome_arrives_as_a_confirmed_event(
    adapter: MollieAdapter,
    sim: MollieSimulator,
    receiver: WebhookReceiver,
    method: str,
    outcome: Any,
    kind: EventKind,
    reason: str | None,
) -> None:
    request = checkout_request(receiver, method=method)
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, outcome)
    [event] = await receiver.wait_for(kind)
    status = sim.payment(checkout.processor_reference).status
    assert event.event_id == f"{checkout.processor_reference}:{status}"
    assert event.payment == PaymentRef(request.reference, checkout.processor_reference)
    assert (event.amount_minor, event.currency, event.reason) == (2500, "EUR", reason)
    [delivery] = receiver.delivered
    assert delivery.body == f"id={checkout.processor_reference}".encode()
    assert delivery.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert delivery.headers["User-Agent"] == "Mollie HTTP client/1.0"


async def test_copies_of_a_webhook_are_one_event(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(copies=3)
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "succeeded")
    events = await receiver.wait_for(EventKind.SUCCEEDED, 3)
    assert {e.event_id for e in events} == {f"{checkout.processor_reference}:paid"}


async def test_a_receiver_that_is_down_gets_the_webhook_again(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 3
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED)
    await sim.idle()  # the last attempt's answer is recorded once it is back
    assert [d.status for d in sim.deliveries] == [500, 500, 500, 200]


async def test_mollie_unreachable_while_confirming_is_not_a_verdict(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    sim.api_failures = [503, 503]
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED)
    await sim.idle()
    # 503 from payments while Mollie cannot be asked; Mollie retries and the third one is confirmed.
    assert [d.status for d in sim.deliveries] == [503, 503, 200]


async def test_held_webhooks_are_released_newest_first(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(hold=True)
    first = await adapter.create_checkout(checkout_request(receiver))
    second = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(first, "succeeded")
    await sim.act(second, "declined")
    assert receiver.delivered == []
    await sim.release()
    assert [e.payment.processor_reference for e in receiver.events] == [
        second.processor_reference,
        first.processor_reference,
    ]


async def test_a_late_webhook_still_says_what_mollie_holds_now(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    """The driver is back before the webhook (the redirect/webhook race); and a webhook fetched after a
    refund states the payment and the refund, whatever it was sent for."""
    sim.webhook_delay_s = 0.3
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await sim.act(checkout, "succeeded")
    assert (await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))).kind is (
        EventKind.SUCCEEDED
    )
    await receiver.wait_for(EventKind.SUCCEEDED)


async def test_a_lost_webhook_is_found_by_polling(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    request = checkout_request(receiver)
    checkout = await adapter.create_checkout(request)
    ref = PaymentRef(request.reference, checkout.processor_reference)
    pending = await adapter.fetch_status(ref)
    assert (pending.event_id, pending.kind) == (f"poll:{checkout.processor_reference}:pending", EventKind.PENDING)
    await sim.act(checkout, "succeeded")
    event = await adapter.fetch_status(ref)
    assert (event.event_id, event.kind, event.amount_minor, event.payment) == (
        f"poll:{checkout.processor_reference}:succeeded",
        EventKind.SUCCEEDED,
        2500,
        ref,
    )
    assert receiver.delivered == [] and sim.dropped == [f"id={checkout.processor_reference}".encode()]


async def test_polling_refuses_what_is_not_ours(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    with pytest.raises(ProcessorRefused, match="another reference"):
        await adapter.fetch_status(PaymentRef("someone-else", checkout.processor_reference))
    with pytest.raises(ProcessorRefused, match="tr_"):
        await adapter.fetch_status(PaymentRef("x", "cs_123"))
    with pytest.raises(ProcessorRefused, match="404"):
        await adapter.fetch_status(PaymentRef(None, "tr_unknown1"))


# --- webhooks that must change nothing ------------------------------------------------------------


async def test_a_webhook_naming_a_payment_mollie_does_not_know_is_refused(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    forged = sim.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    with pytest.raises(InvalidSignature, match="does not know"):
        await adapter.verify_webhook(forged)
    for body in (b"", b"id=ord_123", b'{"id":"tr_1"}'):
        with pytest.raises(InvalidSignature, match="nothing to confirm"):
            await adapter.verify_webhook(replace(forged, body=body))


async def test_a_forger_naming_a_real_payment_learns_nothing_and_changes_nothing(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    checkout = await adapter.create_checkout(request)
    async with adapter.http.post(
        receiver.url, data=f"id={checkout.processor_reference}".encode(), headers={"Content-Type": "text/plain"}
    ) as answer:
        assert answer.status == 200
    # What Mollie holds, not what anyone claims: the payment is still open.
    assert [(e.kind, e.event_id) for e in receiver.events] == [
        (EventKind.PENDING, f"{checkout.processor_reference}:open")
    ]


async def test_a_payment_of_the_other_mode_is_unknown_to_this_key(
    sim: MollieSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    live = MollieAdapter("mollie_main", settings_for(sim), SERVICES, http)
    checkout = await live.create_checkout(checkout_request(receiver))
    test_mode = MollieAdapter(
        "mollie_test", settings_for(sim, environment="test", api_key=sim.other_mode_key), SERVICES, http
    )
    webhook = sim.signed_webhook(checkout.processor_reference, "succeeded")
    with pytest.raises(InvalidSignature):
        await test_mode.verify_webhook(webhook)
    await live.verify_webhook(webhook)


async def test_a_payment_that_is_not_ours_yields_nothing(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    sim.payment(checkout.processor_reference).metadata = {"shop_order": "42"}
    webhook = sim.signed_webhook(checkout.processor_reference, "succeeded")
    await adapter.verify_webhook(webhook)
    assert await adapter.parse_webhook(webhook) == []


async def test_parse_uses_the_fetch_made_to_verify(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    webhook = sim.signed_webhook(checkout.processor_reference, "succeeded")
    await adapter.verify_webhook(webhook)
    calls = len(sim.requests)
    [event] = await adapter.parse_webhook(webhook)
    assert event.kind is EventKind.SUCCEEDED and len(sim.requests) == calls
    # Another request (even with the same bytes) is fetched again.
    again = replace(webhook)
    assert [e.event_id for e in await adapter.parse_webhook(again)] == [event.event_id]
    assert len(sim.requests) == calls + 1


# --- refunds -------------------------------------------------------------------------------------


async def test_partial_refunds_are_confirmed_once_each(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    first = await adapter.refund(refund_request(checkout, 1000, "rk-1"))
    assert first.refund_id.startswith("re_") and first.status == "pending"
    _, headers, body = sim.requests[-1][1:]
    assert (headers["Idempotency-Key"], body["amount"]) == ("rk-1", {"currency": "EUR", "value": "10.00"})
    # The same key again: the same refund.
    assert await adapter.refund(refund_request(checkout, 1000, "rk-1")) == first
    second = await adapter.refund(refund_request(checkout, 1500, "rk-2"))
    await sim.idle()
    refunded = receiver.of(EventKind.REFUNDED)
    # processing and refunded, for each refund, in every later fetch: two outcomes in all.
    assert {(e.cause_id, e.event_id, e.amount_minor) for e in refunded} == {
        (first.refund_id, f"{first.refund_id}:refunded", 1000),
        (second.refund_id, f"{second.refund_id}:refunded", 1500),
    }
    with pytest.raises(ProcessorRefused, match="422"):
        await adapter.refund(refund_request(checkout, 1, "rk-3"))


async def test_a_refund_retried_after_mollies_24_hours_of_idempotency_is_still_one_refund(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    first = await adapter.refund(refund_request(checkout, 1000, "rk-late"))
    sim._idempotency.clear()  # a day later: Mollie no longer knows the Idempotency-Key
    again = await adapter.refund(refund_request(checkout, 1000, "rk-late"))
    assert again.refund_id == first.refund_id
    assert [r.amount_minor for r in sim.payments[checkout.processor_reference].refunds] == [1000]
    other = await adapter.refund(refund_request(checkout, 1000, "rk-other"))
    assert other.refund_id != first.refund_id


async def test_a_failed_refund_gives_the_money_back(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    refund = await adapter.refund(refund_request(checkout, 2500))
    await receiver.wait_for(EventKind.REFUNDED)
    await sim.idle()
    await sim.fail_refund(refund.refund_id)
    [failed] = await receiver.wait_for(EventKind.REFUND_FAILED)
    assert (failed.cause_id, failed.amount_minor, failed.reason) == (refund.refund_id, 2500, "refund failed")


async def test_a_refund_of_an_unpaid_payment_is_refused(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    with pytest.raises(ProcessorRefused, match="not refundable"):
        await adapter.refund(refund_request(checkout, 1000))
    with pytest.raises(ProcessorRefused, match="tr_"):
        await adapter.refund(replace(refund_request(checkout, 1000), payment=PaymentRef("x", None)))


# --- chargebacks ---------------------------------------------------------------------------------


async def test_a_chargeback_and_its_reversal(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    chargeback = await sim.open_dispute(checkout.processor_reference, 2500)
    [opened] = await receiver.wait_for(EventKind.DISPUTE_OPENED)
    assert (opened.event_id, opened.cause_id, opened.amount_minor) == (
        f"{chargeback}:dispute_opened",
        chargeback,
        2500,
    )
    await sim.settle_dispute(chargeback, won=True)
    [won] = await receiver.wait_for(EventKind.DISPUTE_WON)
    assert (won.event_id, won.cause_id) == (f"{chargeback}:dispute_won", chargeback)


async def test_a_chargeback_that_stays_sends_nothing_more(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    chargeback = await sim.open_dispute(checkout.processor_reference, 2500)
    await receiver.wait_for(EventKind.DISPUTE_OPENED)
    await sim.idle()
    deliveries = len(sim.deliveries)
    await sim.settle_dispute(chargeback, won=False)
    await sim.idle()
    assert len(sim.deliveries) == deliveries
    assert receiver.of(EventKind.DISPUTE_LOST) == []


# --- API failures and credentials ----------------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [(500, ProcessorUnavailable), (429, ProcessorUnavailable)])
async def test_api_failures(
    adapter: MollieAdapter, sim: MollieSimulator, receiver: WebhookReceiver, status: int, error: type[Exception]
) -> None:
    sim.api_failures = [status]
    with pytest.raises(error, match=str(status)):
        await adapter.create_checkout(checkout_request(receiver))


async def test_a_wrong_key_is_unavailable_and_never_shown(
    sim: MollieSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    wrong = "live_" + "x" * 30
    adapter = MollieAdapter("mollie_main", settings_for(sim, api_key=wrong), SERVICES, http)
    with pytest.raises(ProcessorUnavailable) as caught:
        await adapter.create_checkout(checkout_request(receiver))
    assert "401" in str(caught.value)
    assert wrong not in str(caught.value) and sim.api_key not in str(caught.value)


async def test_credentials_echoed_by_a_confused_server_never_reach_an_error(
    sim: MollieSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    async def echo(request: web.Request) -> web.Response:
        key = request.headers["Authorization"]
        return web.json_response({"status": 422, "title": "Unprocessable Entity", "detail": f"no: {key}"}, status=422)

    async with serve(echo) as url:
        adapter = MollieAdapter("mollie_main", settings_for(sim, api_base_url=url), SERVICES, http)
        with pytest.raises(ProcessorRefused) as caught:
            await adapter.create_checkout(checkout_request(receiver))
    assert sim.api_key not in str(caught.value) and "[redacted]" in str(caught.value)


async def test_an_unreachable_mollie_is_unavailable(
    sim: MollieSimulator, receiver: WebhookReceiver, http: aiohttp.ClientSession
) -> None:
    async def nothing(request: web.Request) -> web.Response:
        return web.Response()

    async with serve(nothing) as url:
        pass  # nothing listens there any more
    adapter = MollieAdapter("mollie_main", settings_for(sim, api_base_url=url), SERVICES, http)
    with pytest.raises(ProcessorUnavailable) as caught:
        await adapter.fetch_status(PaymentRef(None, "tr_abc"))
    assert sim.api_key not in str(caught.value)


async def test_the_webhook_request_object_is_what_the_simulator_sends(sim: MollieSimulator) -> None:
    sim.webhook_url = "http://127.0.0.1:9/webhooks/mollie_main"
    sim.payments.clear()
    adapter_request = CheckoutRequest(
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        reference="r",
        amount_minor=100,
        currency="EUR",
        method="ideal",
        return_url="http://127.0.0.1:9/r",
        webhook_url=sim.webhook_url,
        description="d",
    )
    async with aiohttp.ClientSession() as http:
        adapter = MollieAdapter("mollie_main", settings_for(sim), SERVICES, http)
        checkout = await adapter.create_checkout(adapter_request)
        webhook: WebhookRequest = sim.signed_webhook(checkout.processor_reference, "declined")
        assert (webhook.method, webhook.path, webhook.body) == (
            "POST",
            "/webhooks/mollie_main",
            f"id={checkout.processor_reference}".encode(),
        )
        await adapter.verify_webhook(webhook)
        [event] = await adapter.parse_webhook(webhook)
        assert event.kind is EventKind.FAILED
