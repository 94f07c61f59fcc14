"""services/payments/processors/mpesa against the Daraja simulator (tests/simulators/mpesa.py): the STK
push, the phone prompt answered, the callback received over HTTP, confirmed by the STK query and
normalized; polling; faults (duplicates, held, lost callbacks, a failing or slow push); credentials.
No database and no broker."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
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
    PhonePrompt,
    ProcessorRefused,
    ProcessorUnavailable,
    RefundRequest,
)
from services.payments.processors.mpesa import MpesaAdapter
from services.payments.processors.mpesa.config import MpesaSettings
from tests.simulators.mpesa import MpesaSimulator
from tests.simulators.processor import ProcessorSimulator, WebhookFaults, serve
from tests.simulators.webhook_receiver import SERVICES, WebhookReceiver

PHONE = "254708374149"
EAT = timezone(timedelta(hours=3))


@pytest_asyncio.fixture
async def simulator() -> AsyncIterator[MpesaSimulator]:
    sim = MpesaSimulator(callback_backoff_s=(0.05, 0.1, 0.2), create_delay_s=1.0)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()


def make_settings(sim: MpesaSimulator, **overrides: Any) -> MpesaSettings:
    values: dict[str, Any] = {
        "processor": "mpesa",
        "methods": ["mpesa"],
        "api_base_url": sim.base_url,
        **sim.settings(),
        **sim.secrets(),
    }
    return MpesaSettings.model_validate(values | overrides)


def make_adapter(sim: MpesaSimulator, http: aiohttp.ClientSession, **overrides: Any) -> MpesaAdapter:
    return MpesaAdapter("lipa_main", make_settings(sim, **overrides), SERVICES, http)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(integration_id="lipa_main", fail_status=503) as receiver:
        yield receiver


@pytest.fixture
def adapter(simulator: MpesaSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver) -> MpesaAdapter:
    receiver.adapter = make_adapter(simulator, http)
    return receiver.adapter


def checkout_request(receiver: WebhookReceiver, amount_minor: int = 1200, **overrides: Any) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    values: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": uuid.uuid4(),
        "reference": str(payment_id),
        "amount_minor": amount_minor,
        "currency": "KES",
        "method": "mpesa",
        "return_url": "http://127.0.0.1:1/return",
        "webhook_url": receiver.url,
        "description": "EV charging top-up",
        "phone": PHONE,
    }
    return CheckoutRequest(**(values | overrides))


def all_secrets(sim: MpesaSimulator) -> list[str]:
    basic = base64.b64encode(f"{sim.consumer_key}:{sim.consumer_secret}".encode()).decode()
    return [*sim.secrets().values(), basic]


# -- the STK push -----------------------------------------------------------------------------------


async def test_a_push_prompts_the_phone_with_every_field_right(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    request = checkout_request(receiver)
    checkout = await adapter.create_checkout(request)
    assert re.fullmatch(r"ws_CO_[0-9]+", checkout.processor_reference)
    assert checkout.next_step == PhonePrompt("Success. Request accepted for processing")
    [push] = simulator.pushes
    assert push["Amount"] == 12 and isinstance(push["Amount"], int)
    assert (push["PartyA"], push["PhoneNumber"], push["PartyB"]) == (PHONE, PHONE, simulator.shortcode)
    assert push["AccountReference"] == request.payment_id.hex[:12]
    assert push["CallBackURL"] == receiver.url
    assert push["TransactionType"] == "CustomerPayBillOnline"
    assert push["TransactionDesc"] == "EV charging t"
    # Kenyan time: within a minute of now in Nairobi.
    sent_at = datetime.strptime(push["Timestamp"], "%Y%m%d%H%M%S").replace(tzinfo=EAT)
    assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert simulator.prompt(checkout.processor_reference).outcome is None


async def test_buy_goods_pays_the_till(
    simulator: MpesaSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver
) -> None:
    till = make_adapter(simulator, http, transaction_type="CustomerBuyGoodsOnline", party_b="5432109")
    await till.create_checkout(checkout_request(receiver))
    [push] = simulator.pushes
    assert (push["TransactionType"], push["BusinessShortCode"], push["PartyB"]) == (
        "CustomerBuyGoodsOnline",
        simulator.shortcode,
        "5432109",
    )


async def test_a_retried_create_is_a_second_prompt_so_payments_never_retries_it(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    """Daraja has no idempotency: the same request twice prompts twice. That is why
    ``create_is_idempotent`` is False and payments never sends a push again."""
    request = checkout_request(receiver)
    first = await adapter.create_checkout(request)
    again = await adapter.create_checkout(request)
    assert first.processor_reference != again.processor_reference
    assert simulator.created_payments() == 2
    assert MpesaAdapter.capabilities.create_is_idempotent is False


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"amount_minor": 1250}, "whole shillings"),
        ({"amount_minor": 0}, "at least KES 1"),
        ({"currency": "EUR", "amount_minor": 1200}, "only KES"),
        ({"phone": None}, "phone number"),
        ({"phone": "+254708374149"}, "Kenyan mobile number"),
    ],
)
async def test_what_m_pesa_cannot_charge_is_refused_before_any_call(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver, overrides: dict[str, Any], words: str
) -> None:
    with pytest.raises(ProcessorRefused, match=words):
        await adapter.create_checkout(checkout_request(receiver, **overrides))
    assert (simulator.oauth_calls, simulator.push_calls) == (0, 0)


async def test_an_amount_above_darajas_limit_is_refused_by_daraja(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    with pytest.raises(ProcessorRefused, match="Invalid Amount"):
        await adapter.create_checkout(checkout_request(receiver, amount_minor=25_000_100))
    assert simulator.created_payments() == 0


# -- the driver answers, the callback arrives -------------------------------------------------------


async def test_a_paid_prompt_sends_a_confirmed_callback_and_polling_agrees(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    pending = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (pending.kind, pending.event_id) == (EventKind.PENDING, f"poll:{checkout.processor_reference}:pending")

    await simulator.act(checkout, "succeeded")
    await simulator.idle()

    [event] = receiver.events
    receipt = simulator.prompt(checkout.processor_reference).receipt
    assert receipt is not None
    assert event.kind is EventKind.SUCCEEDED
    assert event.event_id == f"{checkout.processor_reference}:0"
    # Named by the CheckoutRequestID alone: the unsigned callback's receipt is not taken as an id.
    assert event.payment == PaymentRef(processor_reference=checkout.processor_reference)
    assert dict(event.payment.ids) == {}
    # No amount is stated (the query confirms none): payments fills in the one it asked for.
    assert (event.amount_minor, event.currency) == (None, "KES")
    assert MpesaAdapter.capabilities.states_amount is False
    [delivery] = simulator.deliveries
    assert delivery.status == 200
    assert receiver.refused == []

    settled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (settled.kind, settled.event_id) == (EventKind.SUCCEEDED, f"poll:{checkout.processor_reference}:succeeded")
    # The query tells no amount: reported as unknown, never guessed.
    assert (settled.amount_minor, settled.currency) == (None, "KES")


@pytest.mark.parametrize(
    ("outcome", "kind", "code", "reason"),
    [
        ("declined", EventKind.FAILED, "1032", "Request cancelled by user"),
        ("expired", EventKind.EXPIRED, "1037", "DS timeout user cannot be reached"),
    ],
)
async def test_a_declined_or_unanswered_prompt(
    adapter: MpesaAdapter,
    simulator: MpesaSimulator,
    receiver: WebhookReceiver,
    outcome: Any,
    kind: EventKind,
    code: str,
    reason: str,
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await simulator.act(checkout, outcome)
    await simulator.idle()
    [event] = receiver.events
    assert (event.kind, event.event_id, event.reason, event.amount_minor) == (
        kind,
        f"{checkout.processor_reference}:{code}",
        reason,
        None,
    )
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert (polled.kind, polled.reason) == (kind, reason)


async def test_the_ack_is_darajas_json(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    ack = adapter.webhook_ack()
    assert (ack.status, json.loads(ack.body), ack.content_type) == (
        200,
        {"ResultCode": 0, "ResultDesc": "Accepted"},
        "application/json",
    )


async def test_callbacks_go_to_webhook_url_when_the_simulator_has_one(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    simulator.webhook_url = receiver.url.replace("lipa_main", "elsewhere")
    checkout = await adapter.create_checkout(checkout_request(receiver, webhook_url="http://127.0.0.1:9/none"))
    await simulator.act(checkout, "succeeded")
    await simulator.idle()
    assert [d.url for d in simulator.deliveries] == [simulator.webhook_url]
    assert len(receiver.events) == 1


# -- faults -----------------------------------------------------------------------------------------


async def test_duplicate_callbacks_have_one_event_id(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    simulator.faults = WebhookFaults(copies=3)
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await simulator.act(checkout, "succeeded")
    await simulator.idle()
    assert len(receiver.events) == 3
    assert {e.event_id for e in receiver.events} == {f"{checkout.processor_reference}:0"}


async def test_held_callbacks_are_released_newest_first(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    simulator.faults = WebhookFaults(hold=True)
    older = await adapter.create_checkout(checkout_request(receiver))
    newer = await adapter.create_checkout(checkout_request(receiver))
    await simulator.act(older, "succeeded")
    await simulator.act(newer, "declined")
    await simulator.idle()
    assert receiver.events == [] and simulator.deliveries == []
    await simulator.release()
    assert [e.payment.processor_reference for e in receiver.events] == [
        newer.processor_reference,
        older.processor_reference,
    ]
    assert [e.kind for e in receiver.events] == [EventKind.FAILED, EventKind.SUCCEEDED]


async def test_a_lost_callback_is_healed_by_polling(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    simulator.faults = WebhookFaults(drop=True)
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await simulator.act(checkout, "succeeded")
    await simulator.idle()
    assert receiver.events == [] and len(simulator.dropped) == 1
    polled = await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert polled.kind is EventKind.SUCCEEDED


async def test_a_callback_answered_with_an_error_is_sent_again(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    receiver.fail_next = 2
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await simulator.act(checkout, "succeeded")
    await simulator.idle()
    assert [d.status for d in simulator.deliveries] == [503, 503, 200]
    assert len(receiver.events) == 1


async def test_a_push_failing_with_500_creates_nothing(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    simulator.fail_next_create("error_500")
    with pytest.raises(ProcessorUnavailable) as failure:
        await adapter.create_checkout(checkout_request(receiver))
    assert "500" in str(failure.value)
    assert not [s for s in all_secrets(simulator) if s in str(failure.value)]
    assert (simulator.push_calls, simulator.created_payments()) == (1, 0)


async def test_a_push_whose_answer_is_lost_is_not_sent_again(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt was made, the answer came too late: the adapter reports it unavailable (payments
    then treats the push as maybe sent and never repeats it) and makes no second push itself."""
    monkeypatch.setattr(adapter, "request_timeout_s", 0.3)
    simulator.fail_next_create("timeout_after_create")
    with pytest.raises(ProcessorUnavailable, match="TimeoutError"):
        await adapter.create_checkout(checkout_request(receiver))
    await asyncio.sleep(simulator.create_delay_s)
    assert (simulator.push_calls, simulator.created_payments()) == (1, 1)


# -- tokens and credentials -------------------------------------------------------------------------


async def test_the_token_is_reused_until_it_expires(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    await adapter.create_checkout(checkout_request(receiver))
    await adapter.fetch_status(PaymentRef(processor_reference=checkout.processor_reference))
    assert simulator.oauth_calls == 1


async def test_a_short_lived_token_is_renewed_before_daraja_refuses_it(
    http: aiohttp.ClientSession, receiver: WebhookReceiver
) -> None:
    sim = MpesaSimulator(token_lifetime_s=1)
    await sim.start()
    try:
        adapter = make_adapter(sim, http)
        await adapter.create_checkout(checkout_request(receiver))
        await asyncio.sleep(0.6)  # over half the lifetime: renewed, not refused
        await adapter.create_checkout(checkout_request(receiver))
        assert (sim.oauth_calls, sim.push_calls, sim.created_payments()) == (2, 2, 2)
    finally:
        await sim.close()


async def test_a_refused_token_is_renewed_once_and_the_push_made_once(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    await adapter.create_checkout(checkout_request(receiver))
    simulator.revoke_tokens()
    await adapter.create_checkout(checkout_request(receiver))
    # One push was refused at the gateway (404.001.03), so prompted nobody; one prompt each.
    assert (simulator.oauth_calls, simulator.push_calls, simulator.created_payments()) == (2, 3, 2)


@pytest.mark.parametrize("wrong", ["consumer_key", "consumer_secret"])
async def test_wrong_consumer_credentials_are_refused_without_the_secret(
    simulator: MpesaSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver, wrong: str
) -> None:
    adapter = make_adapter(simulator, http, **{wrong: "not-the-right-one-" + secrets.token_hex(8)})
    with pytest.raises(ProcessorRefused, match=r"400\.008\.01 Invalid Authentication passed") as refused:
        await adapter.create_checkout(checkout_request(receiver))
    secret_values = [*all_secrets(simulator), adapter.settings.consumer_key.get_secret_value()]
    secret_values.append(adapter.settings.consumer_secret.get_secret_value())
    assert not [s for s in secret_values if s in str(refused.value)]
    assert simulator.push_calls == 0


async def test_a_wrong_passkey_is_refused_without_the_passkey(
    simulator: MpesaSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver
) -> None:
    wrong = secrets.token_hex(32)
    adapter = make_adapter(simulator, http, passkey=wrong)
    with pytest.raises(ProcessorRefused, match="Wrong credentials") as refused:
        await adapter.create_checkout(checkout_request(receiver))
    assert wrong not in str(refused.value) and simulator.passkey not in str(refused.value)
    assert simulator.created_payments() == 0


@pytest.mark.parametrize("answer", ["html_200", "error_500", "not_listening", "echo_json"])
async def test_a_processor_error_never_carries_a_credential(
    simulator: MpesaSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver, answer: str
) -> None:
    """Something unreadable or hostile in Daraja's place: the exceptions (which go to logs, the payment
    row and the page) carry no consumer key or secret, passkey, Basic credentials, token or Password."""
    token = "tok" + secrets.token_urlsafe(30)
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        seen.append(raw)
        headers = str(dict(request.headers))
        if answer == "html_200":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if answer == "error_500":
            return web.Response(status=500, text=headers)
        if request.path.startswith("/oauth"):
            return web.json_response({"access_token": token, "expires_in": "3599"})
        return web.json_response(
            {"errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {headers} {raw}"}, status=400
        )

    async def assert_no_credential_told(api_base_url: str) -> None:
        adapter = make_adapter(simulator, http, api_base_url=api_base_url)
        calls = (
            adapter.create_checkout(checkout_request(receiver)),
            adapter.fetch_status(PaymentRef(processor_reference="ws_CO_1")),
        )
        for call in calls:
            with pytest.raises((ProcessorUnavailable, ProcessorRefused)) as failure:
                await call
            text = str(failure.value)
            passwords = [json.loads(body)["Password"] for body in seen if body.startswith("{")]
            assert not [s for s in [*all_secrets(simulator), token, *passwords] if s in text], (answer, text)

    async with serve(echo) as url:
        if answer != "not_listening":
            await assert_no_credential_told(url)
    if answer == "not_listening":  # the server is gone: nothing listens on its port any more
        await assert_no_credential_told(url)


# -- callbacks that are not what they say -----------------------------------------------------------


async def test_a_forged_callback_is_refused_and_the_true_one_accepted(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    # Both are what the conformance suite drives (checked statically by mypy).
    honest: ProcessorSimulator = simulator
    forger: ProcessorSimulator = simulator.with_other_secret()
    forger.faults = WebhookFaults(copies=2)  # the view is the simulator: one state
    assert honest.faults.copies == 2
    checkout = await adapter.create_checkout(checkout_request(receiver))
    forged = forger.signed_webhook(checkout.processor_reference, "succeeded")
    with pytest.raises(InvalidSignature, match="does not confirm"):
        await adapter.verify_webhook(forged)
    # Daraja holds the opposite: the driver declined; that callback is believed.
    true = simulator.signed_webhook(checkout.processor_reference, "declined")
    await adapter.verify_webhook(true)
    [event] = await adapter.parse_webhook(true)
    assert event.kind is EventKind.FAILED
    # And a forger claiming the other side of a decided payment is refused too.
    with pytest.raises(InvalidSignature):
        await adapter.verify_webhook(
            simulator.with_other_secret().signed_webhook(checkout.processor_reference, "declined")
        )


async def test_a_success_claimed_while_the_prompt_is_open_is_not_confirmed(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    prompt = simulator.prompt(checkout.processor_reference)
    early = simulator._webhook_request(prompt, simulator.callback_body(prompt, "succeeded"))
    with pytest.raises(InvalidSignature, match="being processed"):
        await adapter.verify_webhook(early)
    assert prompt.outcome is None


async def test_a_callback_for_a_push_daraja_never_made_is_refused(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    genuine = simulator.signed_webhook(checkout.processor_reference, "succeeded")
    invented = dataclasses.replace(
        genuine, body=genuine.body.replace(checkout.processor_reference.encode(), b"ws_CO_000000000000000")
    )
    with pytest.raises(InvalidSignature, match="could not confirm"):
        await adapter.verify_webhook(invented)
    await adapter.verify_webhook(genuine)


async def test_an_unreadable_callback_is_refused_by_verify_and_malformed_to_parse(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    junk = dataclasses.replace(simulator.signed_webhook(checkout.processor_reference, "succeeded"), body=b"[]")
    with pytest.raises(InvalidSignature, match="not a readable STK callback"):
        await adapter.verify_webhook(junk)
    with pytest.raises(MalformedWebhook):
        await adapter.parse_webhook(junk)
    assert simulator.query_calls == 0


async def test_the_amount_is_not_passed_on(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    """The STK query has no amount, so a callback's Amount cannot be confirmed: it is not reported at
    all (``states_amount`` is False and payments takes the amount its push asked for). A callback
    with a forged Amount is confirmed like the genuine one and yields exactly the same event."""
    checkout = await adapter.create_checkout(checkout_request(receiver))
    genuine = simulator.signed_webhook(checkout.processor_reference, "succeeded")
    tampered = dataclasses.replace(genuine, body=genuine.body.replace(b'"Value": 12.00', b'"Value": 92.00'))
    assert tampered.body != genuine.body
    await adapter.verify_webhook(genuine)
    await adapter.verify_webhook(tampered)
    [event] = await adapter.parse_webhook(genuine)
    assert await adapter.parse_webhook(tampered) == [event]
    assert (event.kind, event.amount_minor, event.currency) == (EventKind.SUCCEEDED, None, "KES")
    assert MpesaAdapter.capabilities.states_amount is False
    # Still read and checked, though: an Amount that is no whole positive number of shillings is malformed.
    for amount in (b"12.50", b"0", b"-12.00"):
        odd = dataclasses.replace(genuine, body=genuine.body.replace(b'"Value": 12.00', b'"Value": ' + amount))
        assert odd.body != genuine.body
        with pytest.raises(MalformedWebhook):
            await adapter.parse_webhook(odd)


async def test_the_callback_is_kept_without_the_phone_number(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout = await adapter.create_checkout(checkout_request(receiver))
    genuine = simulator.signed_webhook(checkout.processor_reference, "succeeded")
    assert PHONE.encode() in genuine.body
    kept = adapter.stored_body(genuine.body)
    assert PHONE.encode() not in kept and b"PhoneNumber" not in kept
    receipt = simulator.prompt(checkout.processor_reference).receipt
    assert receipt is not None and receipt.encode() in kept
    names = [item["Name"] for item in json.loads(kept)["Body"]["stkCallback"]["CallbackMetadata"]["Item"]]
    assert names == ["Amount", "MpesaReceiptNumber", "Balance", "TransactionDate"]
    assert await adapter.parse_webhook(dataclasses.replace(genuine, body=kept)) == await adapter.parse_webhook(genuine)
    assert adapter.stored_body(b'garbled {"Name": "PhoneNumber", "Value": ' + PHONE.encode()) == b""


async def test_callback_ips_keep_other_sources_out(
    simulator: MpesaSimulator, http: aiohttp.ClientSession, receiver: WebhookReceiver
) -> None:
    adapter = make_adapter(simulator, http, callback_ips=["196.201.214.0/24", "196.201.213.114"])
    checkout = await adapter.create_checkout(checkout_request(receiver))
    webhook = simulator.signed_webhook(checkout.processor_reference, "succeeded")
    assert webhook.peer == "127.0.0.1"
    with pytest.raises(InvalidSignature, match="callback_ips"):
        await adapter.verify_webhook(webhook)
    with pytest.raises(InvalidSignature, match="callback_ips"):
        await adapter.verify_webhook(dataclasses.replace(webhook, peer=None))
    await adapter.verify_webhook(dataclasses.replace(webhook, peer="196.201.214.207"))
    await adapter.verify_webhook(dataclasses.replace(webhook, peer="196.201.213.114"))


# -- what M-Pesa STK does not do --------------------------------------------------------------------


async def test_polling_needs_a_checkout_request_id(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    with pytest.raises(ProcessorRefused):
        await adapter.fetch_status(PaymentRef(merchant_reference="abc"))
    with pytest.raises(ProcessorUnavailable, match="does not exist"):
        await adapter.fetch_status(PaymentRef(processor_reference="ws_CO_000000000000000"))


async def test_no_refunds_and_no_disputes(
    adapter: MpesaAdapter, simulator: MpesaSimulator, receiver: WebhookReceiver
) -> None:
    checkout: Checkout = await adapter.create_checkout(checkout_request(receiver))
    with pytest.raises(ProcessorRefused):
        await adapter.refund(
            RefundRequest(
                payment=PaymentRef(processor_reference=checkout.processor_reference),
                refund_key="r1",
                amount_minor=1200,
                currency="KES",
                reason="driver asked",
            )
        )
    with pytest.raises(NotImplementedError):
        await simulator.open_dispute(checkout.processor_reference, 1200)
    with pytest.raises(NotImplementedError):
        await simulator.settle_dispute("d1", won=True)
