"""services/payments/processors/xendit against the Xendit simulator (tests/simulators/xendit_sim.py):
invoices created (and never twice for one payment), the driver's outcomes, callbacks received over
HTTP, checked by token and confirmed by the API, polling, refunds, delivery faults (copies, held,
lost, timed out), API failures, credentials. No database and no broker."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
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
    MalformedWebhook,
    PaymentRef,
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundRequest,
    WebhookRequest,
)
from services.payments.processors.xendit import XenditAdapter
from services.payments.processors.xendit.config import XenditSettings
from services.payments.webhooks import UNREADABLE
from tests.simulators.processor import ProcessorSimulator, WebhookFaults, serve, simulated_settings
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver
from tests.simulators.xendit_sim import XenditSimulator

INTEGRATION = "xendit_main"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[XenditSimulator]:
    simulator = XenditSimulator(time_scale=1 / 20000, callback_timeout_s=2.0)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


def settings_for(sim: XenditSimulator, **overrides: Any) -> XenditSettings:
    return simulated_settings(XenditSettings, sim, ["gcash", "card", "bank_transfer"], **overrides)


def make_adapter(sim: XenditSimulator, http: aiohttp.ClientSession, **overrides: Any) -> XenditAdapter:
    return XenditAdapter(INTEGRATION, settings_for(sim, **overrides), SERVICES, http)


@pytest_asyncio.fixture
async def receiver(sim: XenditSimulator, http: aiohttp.ClientSession) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(make_adapter(sim, http), integration_id=INTEGRATION, fail_status=503) as receiver:
        sim.webhook_url = receiver.url
        yield receiver


@pytest.fixture
def adapter(receiver: WebhookReceiver) -> XenditAdapter:
    assert isinstance(receiver.adapter, XenditAdapter)
    return receiver.adapter


def checkout_request(amount_minor: int = 2505, currency: str = "PHP", **overrides: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    values: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": currency,
        "method": "gcash",
        "return_url": "http://127.0.0.1:1/topup/x/return",
        "webhook_url": "http://127.0.0.1:2/webhooks/xendit_main",
        "description": "EV charging top-up",
        "locale": "en",
    }
    return CheckoutRequest(**(values | overrides))


async def paid(adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver, **kw: Any) -> Checkout:
    checkout = await adapter.create_checkout(checkout_request(**kw))
    before = len(receiver.of(EventKind.SUCCEEDED))
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED, before + 1)
    return checkout


def test_the_simulator_is_a_processor_simulator() -> None:
    simulator: ProcessorSimulator = XenditSimulator()
    assert simulator.processor == XenditAdapter.name
    assert set(simulator.secrets()) == {"secret_key", "callback_token"}


# --- checkout ------------------------------------------------------------------------------------


async def test_create_makes_an_invoice_and_redirects_to_its_page(adapter: XenditAdapter, sim: XenditSimulator) -> None:
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    invoice = sim.invoice(checkout.processor_reference)
    assert checkout.next_step == Redirect(f"{sim.base_url}/web/{invoice.id}")
    assert (invoice.external_id, invoice.amount, invoice.currency) == (request.reference, Decimal("25.05"), "PHP")
    assert invoice.payment_methods == ["GCASH"]
    [sent] = sim.create_requests
    assert sent["amount"] == Decimal("25.05") and sent["invoice_duration"] == 86400 and sent["locale"] == "en"
    assert sent["success_redirect_url"] == "http://127.0.0.1:1/topup/x/return?xendit=success"
    assert sim.created_payments() == 1


async def test_rupiah_go_out_in_whole_units(adapter: XenditAdapter, sim: XenditSimulator) -> None:
    checkout = await adapter.create_checkout(checkout_request(2_500_000, "IDR", method="bank_transfer"))
    invoice = sim.invoice(checkout.processor_reference)
    assert (invoice.amount, invoice.payment_methods[0]) == (Decimal(25000), "BCA")
    with pytest.raises(ProcessorRefused, match="whole units"):
        await adapter.create_checkout(checkout_request(2_500_050, "IDR"))
    with pytest.raises(ProcessorRefused, match="not in EUR"):
        await adapter.create_checkout(checkout_request(2500, "EUR"))
    assert sim.created_payments() == 1


async def test_a_retried_create_returns_the_same_invoice(adapter: XenditAdapter, sim: XenditSimulator) -> None:
    request = checkout_request()
    first = await adapter.create_checkout(request)
    again = await adapter.create_checkout(request)
    assert again == first
    assert len(sim.create_requests) == 1 and sim.created_payments() == 1


async def test_a_create_answered_too_late_is_unavailable_and_the_retry_finds_the_invoice(
    adapter: XenditAdapter, sim: XenditSimulator
) -> None:
    adapter.request_timeout_s = 0.5
    request = checkout_request()
    sim.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 1
    checkout = await adapter.create_checkout(request)
    assert [invoice.id for invoice in sim.invoices.values()] == [checkout.processor_reference]
    assert len(sim.create_requests) == 1


async def test_a_500_on_create_is_unavailable_and_the_retry_creates_one_invoice(
    adapter: XenditAdapter, sim: XenditSimulator
) -> None:
    request = checkout_request()
    sim.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable, match="500"):
        await adapter.create_checkout(request)
    assert sim.created_payments() == 0
    await adapter.create_checkout(request)
    assert sim.created_payments() == 1


async def test_a_duplicate_that_landed_late_is_expired_and_the_oldest_kept(
    adapter: XenditAdapter, sim: XenditSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver
) -> None:
    """A first attempt still in flight lands after the lookup: the adapter's second look finds two
    payable invoices for one payment, keeps the older and expires its own at once."""
    request = checkout_request()
    auth = base64.b64encode(f"{sim.secret_key}:".encode()).decode()
    body = {"external_id": request.reference, "amount": 25.05, "currency": "PHP", "payment_methods": ["GCASH"]}
    async with http.post(f"{sim.base_url}/v2/invoices", json=body, headers={"Authorization": f"Basic {auth}"}) as r:
        assert r.status == 200
        late = (await r.json())["id"]  # the attempt whose answer was lost
    sim.unseen_searches = 1  # it is not visible yet when the adapter looks first
    checkout = await adapter.create_checkout(request)
    assert checkout.processor_reference == late
    [younger] = [invoice for invoice in sim.invoices.values() if invoice.id != late]
    assert younger.status == "EXPIRED" and sim.expired_by_api == [younger.id]
    assert sim.created_payments() == 1
    # Its EXPIRED callback names that invoice alone, never the payment by our reference.
    [ended] = await receiver.wait_for(EventKind.FAILED)
    assert ended.payment == PaymentRef(processor_reference=younger.id)


async def test_the_same_reference_with_another_amount_is_refused(adapter: XenditAdapter, sim: XenditSimulator) -> None:
    request = checkout_request()
    await adapter.create_checkout(request)
    with pytest.raises(ProcessorRefused, match="is for 2505 PHP, not 2600 PHP"):
        await adapter.create_checkout(dataclasses.replace(request, amount_minor=2600))


# --- outcomes, callbacks, polling -----------------------------------------------------------------


async def test_a_paid_invoice_is_succeeded_by_callback_and_by_polling(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    pending = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert pending.kind is EventKind.PENDING
    await sim.act(checkout, "succeeded")
    [event] = await receiver.wait_for(EventKind.SUCCEEDED)
    assert (event.amount_minor, event.currency) == (2505, "PHP")
    assert event.event_id == f"{checkout.processor_reference}:succeeded"
    [delivered] = receiver.delivered
    assert delivered.headers["x-callback-token"] == sim.callback_token
    assert json.loads(delivered.body)["status"] == "PAID"
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (polled.kind, polled.event_id, polled.amount_minor) == (
        EventKind.SUCCEEDED,
        f"poll:{checkout.processor_reference}:succeeded",
        2505,
    )
    sim.settle(checkout.processor_reference)
    settled = await adapter.fetch_status(PaymentRef(merchant_reference=event.payment.merchant_reference))
    assert settled.event_id == polled.event_id


async def test_a_declined_payment_fails_and_an_expired_one_expires(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    declined = await adapter.create_checkout(checkout_request())
    expired = await adapter.create_checkout(checkout_request())
    await sim.act(declined, "declined")
    await sim.act(expired, "expired")
    [failed] = await receiver.wait_for(EventKind.FAILED)
    [ran_out] = await receiver.wait_for(EventKind.EXPIRED)
    assert failed.payment == PaymentRef(processor_reference=declined.processor_reference)
    assert ran_out.payment == PaymentRef(processor_reference=expired.processor_reference)
    polled = await adapter.fetch_status(PaymentRef(processor_reference=expired.processor_reference))
    assert polled.kind is EventKind.EXPIRED


async def test_copies_of_a_callback_are_one_event(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(copies=3)
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    events = await receiver.wait_for(EventKind.SUCCEEDED, 3)
    assert len({event.event_id for event in events}) == 1


async def test_held_callbacks_are_released_newest_first(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(hold=True)
    first = await paid_later(adapter, sim)
    second = await paid_later(adapter, sim)
    assert receiver.events == []
    await sim.release()
    events = await receiver.wait_for(EventKind.SUCCEEDED, 2)
    assert [e.payment.processor_reference for e in events] == [second, first]


async def paid_later(adapter: XenditAdapter, sim: XenditSimulator) -> str:
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    return checkout.processor_reference


async def test_a_dropped_callback_is_healed_by_polling(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    request = checkout_request()
    checkout = await adapter.create_checkout(request)
    await sim.act(checkout, "succeeded")
    await sim.idle()
    assert receiver.events == [] and len(sim.dropped) == 1
    by_reference = await adapter.fetch_status(PaymentRef(merchant_reference=request.reference))
    assert (by_reference.kind, by_reference.payment.processor_reference) == (
        EventKind.SUCCEEDED,
        checkout.processor_reference,
    )


async def test_a_refused_callback_is_retried_on_xendits_schedule(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 6
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await receiver.wait_for(EventKind.SUCCEEDED, timeout_s=10)
    assert [d.status for d in sim.deliveries] == [503] * 6 + [200]


async def test_a_callback_refused_seven_times_is_given_up(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 100
    checkout = await adapter.create_checkout(checkout_request())
    await sim.act(checkout, "succeeded")
    await sim.idle()
    assert [d.status for d in sim.deliveries] == [503] * 7  # the original and six retries
    assert (await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))).kind is (
        EventKind.SUCCEEDED
    )


async def test_a_callback_that_times_out_is_lost_not_retried(
    adapter: XenditAdapter, sim: XenditSimulator, http: aiohttp.ClientSession
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    sim.callback_timeout_s = 0.2
    async with serve(slow) as url:
        sim.webhook_url = f"{url}/webhooks/{INTEGRATION}"
        checkout = await adapter.create_checkout(checkout_request())
        await sim.act(checkout, "succeeded")
        await sim.idle()
    assert len(sim.deliveries) == 1 and len(sim.lost) == 1
    healed = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert healed.kind is EventKind.SUCCEEDED


# --- verification ---------------------------------------------------------------------------------


async def test_genuine_callbacks_verify_and_foreign_or_false_ones_do_not(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request())
    reference = checkout.processor_reference
    # A callback with another account's token: refused before Xendit is asked.
    foreign = sim.with_other_secret().signed_webhook(reference, "succeeded")
    with pytest.raises(InvalidSignature, match="x-callback-token"):
        await adapter.verify_webhook(foreign)
    # The right token but a claim Xendit does not make (a leaked token, a replayed body): refused.
    claimed = sim.webhook_request(json.dumps(sim.invoice(reference).callback_json(sim.user_id, "PAID")).encode())
    with pytest.raises(InvalidSignature, match="PENDING"):
        await adapter.verify_webhook(claimed)
    # An invoice Xendit does not have.
    made_up = json.loads(claimed.body) | {"id": "ffffffffffffffffffffffff"}
    with pytest.raises(InvalidSignature, match="no such object"):
        await adapter.verify_webhook(sim.webhook_request(json.dumps(made_up).encode()))
    genuine = sim.signed_webhook(reference, "succeeded")
    await adapter.verify_webhook(genuine)
    [event] = await adapter.parse_webhook(genuine)
    assert (event.kind, event.amount_minor) == (EventKind.SUCCEEDED, 2505)
    without = dataclasses.replace(genuine, headers={"Content-Type": "application/json"})
    with pytest.raises(InvalidSignature):
        await adapter.verify_webhook(without)


async def test_the_body_is_never_believed_only_xendits_answer(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    sim.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request())
    genuine = sim.signed_webhook(checkout.processor_reference, "succeeded")
    tampered_body = json.loads(genuine.body) | {"amount": 1, "paid_amount": 1, "currency": "IDR"}
    tampered = dataclasses.replace(genuine, body=json.dumps(tampered_body, indent=2).encode())
    await adapter.verify_webhook(tampered)
    assert await adapter.parse_webhook(tampered) == await adapter.parse_webhook(genuine)
    replayed_late = dataclasses.replace(genuine, received_at_s=genuine.received_at_s + 30 * 86400)
    await adapter.verify_webhook(replayed_late)
    assert await adapter.parse_webhook(replayed_late) == await adapter.parse_webhook(genuine)


async def test_callbacks_of_other_products_are_acknowledged_with_no_events(
    adapter: XenditAdapter, sim: XenditSimulator
) -> None:
    va_paid = sim.webhook_request(b'{"id": "abc", "bank_code": "BCA", "account_number": "12345", "amount": 50000}')
    await adapter.verify_webhook(va_paid)
    assert await adapter.parse_webhook(va_paid) == []
    xml = sim.webhook_request(b"<xml/>")
    await adapter.verify_webhook(xml)  # nothing to confirm; parse refuses it
    with pytest.raises(MalformedWebhook):
        await adapter.parse_webhook(xml)


async def payments_answer(adapter: XenditAdapter, request: WebhookRequest) -> int:
    """The status payments' webhook endpoint (services/payments/webhooks.py) gives ``request``: it
    maps only these exceptions of verify_webhook and parse_webhook; anything else is a 500."""
    try:
        await adapter.verify_webhook(request)
    except InvalidSignature:
        return 401
    except ProcessorUnavailable:
        return 503
    except UNREADABLE:
        return 400
    except Exception:
        return 500
    try:
        await adapter.parse_webhook(request)
    except MalformedWebhook:
        return 400
    except ProcessorUnavailable:
        return 503
    except UNREADABLE:
        return 400
    except Exception:
        return 500
    return 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b"1e999",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"amount": NaN}',
        b'{"id": "abc", "external_id": "x", "status": "PENDING"}',
        b'{"id": "../../v2/invoices", "external_id": "x", "status": "PAID"}',
        b'{"id": "abc", "external_id": 5, "status": "PAID"}',
        b'{"event": "refund.succeeded"}',
        b'{"event": "refund.succeeded", "data": {"id": "../refunds?x=1"}}',
    ],
)
async def test_hostile_bytes_with_the_right_token_are_a_400_never_a_500(
    adapter: XenditAdapter, sim: XenditSimulator, body: bytes
) -> None:
    assert await payments_answer(adapter, sim.webhook_request(body)) == 400


async def test_when_xendit_cannot_be_asked_the_callback_is_unavailable(
    adapter: XenditAdapter, sim: XenditSimulator, http: aiohttp.ClientSession
) -> None:
    sim.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request())
    genuine = sim.signed_webhook(checkout.processor_reference, "succeeded")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async with serve(down) as url:
        offline = make_adapter(sim, http, api_base_url=url)
        with pytest.raises(ProcessorUnavailable):
            await offline.verify_webhook(genuine)


# --- refunds --------------------------------------------------------------------------------------


def refund_request(checkout: Checkout, amount_minor: int, key: str | None = None) -> RefundRequest:
    return RefundRequest(
        payment=PaymentRef(processor_reference=checkout.processor_reference),
        refund_key=key or str(uuid.uuid4()),
        amount_minor=amount_minor,
        currency="PHP",
        reason="driver asked",
    )


async def test_partial_refunds_are_refunded_once_each_and_a_retry_is_one_refund(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    first = await adapter.refund(refund_request(checkout, 1000, key="key-1"))
    again = await adapter.refund(refund_request(checkout, 1000, key="key-1"))
    assert again.refund_id == first.refund_id and first.status == "PENDING"
    [key, body] = sim.refund_requests[0]
    assert key == "key-1" and body["invoice_id"] == checkout.processor_reference and body["amount"] == 10
    await adapter.refund(refund_request(checkout, 1505))
    events = await receiver.wait_for(EventKind.REFUNDED, 2)
    assert sorted(e.amount_minor or 0 for e in events) == [1000, 1505]
    assert {e.cause_id for e in events} >= {first.refund_id}
    assert all(e.payment.processor_reference == checkout.processor_reference for e in events)
    with pytest.raises(ProcessorRefused, match="REFUND_AMOUNT_EXCEEDED"):
        await adapter.refund(refund_request(checkout, 1))


async def test_a_failed_refund_is_refund_failed(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    sim.fail_refunds = True
    accepted = await adapter.refund(refund_request(checkout, 2505))
    [event] = await receiver.wait_for(EventKind.REFUND_FAILED)
    assert (event.cause_id, event.reason, event.amount_minor) == (accepted.refund_id, "INSUFFICIENT_BALANCE", 2505)


async def test_an_unpaid_invoice_cannot_be_refunded(adapter: XenditAdapter, sim: XenditSimulator) -> None:
    checkout = await adapter.create_checkout(checkout_request())
    with pytest.raises(ProcessorRefused, match="INVALID_PAYMENT_STATUS"):
        await adapter.refund(refund_request(checkout, 100))
    with pytest.raises(ProcessorRefused, match="invoice id"):
        await adapter.refund(dataclasses.replace(refund_request(checkout, 100), payment=PaymentRef()))


async def test_a_forged_refund_callback_is_refused(
    adapter: XenditAdapter, sim: XenditSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await paid(adapter, sim, receiver)
    sim.faults = WebhookFaults(drop=True)
    sim.refund_settle_s = 60
    accepted = await adapter.refund(refund_request(checkout, 100))
    pending = sim.refunds[accepted.refund_id]
    claim = {"event": "refund.succeeded", "business_id": sim.user_id, "created": "now", "data": pending.json(None)}
    with pytest.raises(InvalidSignature, match="PENDING"):
        await adapter.verify_webhook(sim.webhook_request(json.dumps(claim).encode()))


async def test_xendit_has_no_disputes_for_invoices(sim: XenditSimulator) -> None:
    assert XenditAdapter.capabilities.disputes is False
    with pytest.raises(NotImplementedError):
        await sim.open_dispute("any", 100)


# --- failures and credentials ---------------------------------------------------------------------


def api_calls(adapter: XenditAdapter) -> list[Callable[[], Awaitable[Any]]]:
    checkout = Checkout("5f4708b7bd394b0400b96276", Redirect("https://x"))
    return [
        lambda: adapter.create_checkout(checkout_request()),
        lambda: adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference)),
        lambda: adapter.refund(refund_request(checkout, 100)),
    ]


async def test_a_wrong_key_is_unavailable_and_never_quoted(sim: XenditSimulator, http: aiohttp.ClientSession) -> None:
    wrong_key = "xnd_production_" + "W" * 40
    wrong = make_adapter(sim, http, secret_key=wrong_key)
    for call in api_calls(wrong):
        with pytest.raises(ProcessorUnavailable, match="refused the API key") as failure:
            await call()
        assert wrong_key not in str(failure.value) and "WWWW" not in str(failure.value)


@pytest.mark.parametrize("answer", ["echo_400", "echo_502", "rate_limited", "html_200", "not_listening"])
async def test_failing_apis_never_carry_secrets(sim: XenditSimulator, http: aiohttp.ClientSession, answer: str) -> None:
    async def failing(request: web.Request) -> web.Response:
        echoed = {"error_code": "X " + request.headers.get("Authorization", ""), "message": str(dict(request.headers))}
        if answer == "html_200":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        status = {"echo_400": 400, "echo_502": 502, "rate_limited": 429}[answer]
        return web.json_response(echoed, status=status)

    async with serve(failing) as url:
        failing_adapter = make_adapter(sim, http, api_base_url=url)
        if answer != "not_listening":
            await assert_no_secrets(
                failing_adapter, sim, ProcessorRefused if answer == "echo_400" else ProcessorUnavailable
            )
    if answer == "not_listening":
        await assert_no_secrets(failing_adapter, sim, ProcessorUnavailable)


async def assert_no_secrets(adapter: XenditAdapter, sim: XenditSimulator, kind: type[Exception]) -> None:
    basic = base64.b64encode(f"{sim.secret_key}:".encode()).decode()
    for call in api_calls(adapter):
        with pytest.raises(kind) as failure:
            await call()
        text = str(failure.value)
        for secret in [*sim.secrets().values(), basic, "xnd_production_"]:
            assert secret not in text, text
