"""Payments' webhook endpoint when the processor's API is needed and cannot be reached: while
verifying (PayPal's verification API) or while reading what the webhook means (Paystack's refunds
name no refund, so the adapter asks the API): 503, so the processor retries; never a 500, nothing
recorded (the endpoint fails before it touches the database, which this app does not even have)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from services.payments import webhooks
from services.payments.processors.base import (
    MAX_AMOUNT_MINOR,
    Capabilities,
    EventKind,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    ProcessorEvent,
    ProcessorUnavailable,
    WebhookAck,
    WebhookAuth,
    WebhookRequest,
)
from shared.http import service_middleware
from tests.simulators.processor import serve_app


class UnreachableProcessor:
    """An adapter whose processor API is down at the step ``down_at``."""

    integration_id = "psp_main"
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.BODY_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency="n/a",
    )

    def __init__(self, down_at: str) -> None:
        self.down_at = down_at

    async def verify_webhook(self, webhook: WebhookRequest) -> None:
        if self.down_at == "verify":
            raise ProcessorUnavailable("psp GET /verify failed: TimeoutError")
        if self.down_at == "unreadable":
            raise MalformedWebhook("the callback is not a JSON object")

    async def parse_webhook(self, webhook: WebhookRequest) -> list[ProcessorEvent]:
        if self.down_at == "parse":
            raise ProcessorUnavailable("psp GET /refund failed: ClientConnectorError")
        return []

    def webhook_ack(self) -> WebhookAck:
        return WebhookAck(200, b"{}", "application/json")


@pytest_asyncio.fixture
async def payments_webhooks() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    adapters: dict[str, Any] = {}
    app = web.Application(middlewares=[service_middleware("payments")])
    app[webhooks.ADAPTERS_KEY] = adapters
    webhooks.add_routes(app)
    runner, port = await serve_app(app)
    try:
        yield f"http://127.0.0.1:{port}/webhooks/psp_main", adapters
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("down_at", ["verify", "parse"])
async def test_the_processor_unreachable_is_a_503_so_it_retries(
    payments_webhooks: tuple[str, dict[str, Any]], down_at: str
) -> None:
    url, adapters = payments_webhooks
    adapters["psp_main"] = UnreachableProcessor(down_at)
    async with aiohttp.ClientSession() as http, http.post(url, data=b'{"event":"refund.processed"}') as response:
        assert response.status == 503
        body = await response.json(content_type=None)
    assert body["title"] == "Verification unavailable, retry later"
    assert "psp" not in str(body)  # the reason is for the operator's log only


async def test_a_body_an_adapter_cannot_read_while_verifying_is_a_400(
    payments_webhooks: tuple[str, dict[str, Any]],
) -> None:
    url, adapters = payments_webhooks
    adapters["psp_main"] = UnreachableProcessor("unreadable")
    async with aiohttp.ClientSession() as http, http.post(url, data=b"\xff\xfe") as response:
        assert response.status == 400
        assert (await response.json(content_type=None))["title"] == "Malformed webhook"


@pytest.mark.parametrize("amount", [-1, 2**63])
def test_an_event_amount_no_column_can_hold_is_unreadable(amount: int) -> None:
    with pytest.raises(MalformedWebhook):
        ProcessorEvent("e1", PaymentRef("r"), EventKind.SUCCEEDED, amount, "EUR")
    assert ProcessorEvent("e1", PaymentRef("r"), EventKind.SUCCEEDED, MAX_AMOUNT_MINOR, "EUR").amount_minor == 2**63 - 1
