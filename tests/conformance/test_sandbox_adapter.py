"""The sandbox held to the webhook contract of every adapter (``test_processors.py`` runs the real
processors through the whole system). Its processor side is the running payments service, so these
tests use the session's stack."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from services.payments.processors import ADAPTERS
from services.payments.processors.base import (
    AnyAdapter,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorUnavailable,
    Redirect,
    WebhookRequest,
)
from tests.harness import Stack
from tests.simulators.sandbox import SandboxSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]


@dataclass(frozen=True)
class Case:
    integration_id: str
    simulator: Callable[[Stack, aiohttp.ClientSession], Any]


CASES: dict[str, Case] = {
    "sandbox": Case(
        "sandbox_main",
        lambda stack, http: SandboxSimulator(stack.webhook_secret, http),
    ),
}


@dataclass
class Subject:
    adapter: AnyAdapter
    simulator: Any

    async def verify(self, headers: dict[str, str], body: bytes) -> None:
        await self.adapter.verify_webhook(webhook(headers, body))

    async def parse(self, headers: dict[str, str], body: bytes) -> list[Any]:
        return await self.adapter.parse_webhook(webhook(headers, body))


def webhook(headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", "/webhooks/sandbox_main", {}, headers, body, "127.0.0.1", time.time())


@pytest_asyncio.fixture(params=sorted(CASES))
async def subject(request: pytest.FixtureRequest, stack: Stack) -> AsyncIterator[Subject]:
    case = CASES[request.param]
    async with aiohttp.ClientSession() as http:
        integration = stack.settings.integrations[case.integration_id]
        adapter = ADAPTERS[request.param](case.integration_id, integration, stack.settings.services, http)
        yield Subject(adapter, case.simulator(stack, http))


def checkout_request(amount_minor: int = 1234) -> CheckoutRequest:
    payment_id = uuid.uuid4()
    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.uuid4(),
        reference=str(payment_id),
        amount_minor=amount_minor,
        currency="EUR",
        method="card",
        return_url="http://127.0.0.1/return",
        webhook_url="http://127.0.0.1/webhooks/sandbox_main",
        description="conformance",
    )


async def test_a_signed_webhook_verifies_and_normalizes_to_minor_units(subject: Subject) -> None:
    headers, body = subject.simulator.signed_webhook("ref-1", "succeeded", 1234, "EUR")
    await subject.verify(headers, body)
    [event] = await subject.parse(headers, body)
    assert event.kind is EventKind.SUCCEEDED
    assert event.payment.processor_reference == "ref-1"
    assert (event.amount_minor, event.currency) == (1234, "EUR")
    assert isinstance(event.amount_minor, int) and event.event_id


async def test_each_delivery_of_a_new_event_has_its_own_id_and_a_redelivery_keeps_it(subject: Subject) -> None:
    headers, body = subject.simulator.signed_webhook("ref-2", "failed", 500, "EUR")
    first = await subject.parse(headers, body)
    again = await subject.parse(headers, body)
    other = await subject.parse(*subject.simulator.signed_webhook("ref-2", "failed", 500, "EUR"))
    assert first[0].event_id == again[0].event_id != other[0].event_id
    assert first[0].kind is EventKind.FAILED


@pytest.mark.parametrize("fault", ["tampered_body", "no_signature", "stale", "wrong_secret"])
async def test_an_unverifiable_webhook_is_refused(subject: Subject, fault: str) -> None:
    headers, body = subject.simulator.signed_webhook("ref-3", "succeeded", 1234, "EUR", age_s=3600 * (fault == "stale"))
    if fault == "tampered_body":
        body = body.replace(b"1234", b"9234")
    elif fault == "no_signature":
        headers = {"Content-Type": "application/json"}
    elif fault == "wrong_secret":
        subject.simulator.webhook_secret = "not-the-secret-at-all"
        headers, body = subject.simulator.signed_webhook("ref-3", "succeeded", 1234, "EUR")
    with pytest.raises(InvalidSignature):
        await subject.verify(headers, body)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"id": 1}'])
async def test_an_unreadable_webhook_is_malformed_not_a_crash(subject: Subject, body: bytes) -> None:
    with pytest.raises(MalformedWebhook):
        await subject.parse({}, body)


async def test_checkout_creation_is_idempotent_on_the_payment_id(subject: Subject) -> None:
    request = checkout_request()
    first = await subject.adapter.create_checkout(request)
    again = await subject.adapter.create_checkout(request)
    other = await subject.adapter.create_checkout(checkout_request())
    assert first == again
    assert other.processor_reference != first.processor_reference
    assert isinstance(first.next_step, Redirect) and first.next_step.url.startswith("http")


async def test_polling_reports_pending_then_the_outcome(subject: Subject) -> None:
    for outcome, kind in (("succeeded", EventKind.SUCCEEDED), ("failed", EventKind.FAILED)):
        checkout = await subject.adapter.create_checkout(checkout_request(4321))
        ref = PaymentRef(processor_reference=checkout.processor_reference)
        pending = await subject.adapter.fetch_status(ref)
        assert pending.kind is EventKind.PENDING
        assert isinstance(checkout.next_step, Redirect)
        await subject.simulator.settle(checkout.next_step.url, outcome)
        settled = await subject.adapter.fetch_status(ref)
        assert settled.kind is kind
        assert (settled.amount_minor, settled.currency) == (4321, "EUR")
        assert settled.payment.processor_reference == checkout.processor_reference


@pytest.mark.parametrize("answer", ["html_200", "error_500", "not_listening"])
async def test_a_processor_error_never_carries_a_credential(stack: Stack, answer: str) -> None:
    """A processor (or a proxy in front of it) answering something unreadable makes
    ``ProcessorUnavailable``, whose text goes to logs, the payment row and the page's RPC error:
    it must never carry the integration's secrets (an HTTP client error's repr holds the request)."""
    from aiohttp import web

    async def unreadable(http_request: web.Request) -> web.Response:
        if answer == "html_200":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        return web.Response(status=500, text=str(dict(http_request.headers)))

    runner = web.AppRunner(web.Application(middlewares=[]))
    runner.app.router.add_route("*", "/{tail:.*}", unreadable)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if answer == "not_listening":
        await runner.cleanup()
    try:
        for name, case in CASES.items():
            integration = stack.settings.integrations[case.integration_id]
            pointed = integration.model_copy(update={"api_base_url": f"http://127.0.0.1:{port}"})
            secrets = [
                getattr(integration, field).get_secret_value()
                for field, info in type(integration).model_fields.items()
                if info.annotation is not None and "Secret" in str(info.annotation)
            ]
            assert secrets, name
            async with aiohttp.ClientSession() as http:
                adapter = ADAPTERS[name](case.integration_id, pointed, stack.settings.services, http)
                for call in (
                    adapter.create_checkout(checkout_request()),
                    adapter.fetch_status(PaymentRef(processor_reference="ref-x")),
                ):
                    with pytest.raises(ProcessorUnavailable) as failure:
                        await call
                    assert not [s for s in secrets if s in str(failure.value)], (name, answer)
    finally:
        if answer != "not_listening":
            await runner.cleanup()
