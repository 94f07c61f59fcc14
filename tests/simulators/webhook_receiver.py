"""payments' ``POST /webhooks/{integration_id}`` reduced to the adapter's part, for the adapter tests
against a processor simulator (``tests/integration/test_<processor>_adapter.py``): the request as it
arrived (raw bytes, headers, query, peer), the adapter's ``verify_webhook`` and ``parse_webhook`` on
it, the adapter's ack. No database: the events are kept for the test to look at, and so is what was
refused. It can fail the next deliveries, as a receiver that is down does, so that the simulator
retries them."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from aiohttp import web

from services.payments.processors.base import (
    AnyAdapter,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    ProcessorEvent,
    ProcessorUnavailable,
    WebhookRequest,
)
from shared.settings import ServiceSettings
from tests.simulators.processor import serve_app

# The services an adapter is built with; none of these is listened on (the adapters under test do not
# call payments or the page).
SERVICES = ServiceSettings(
    page_public_url="http://127.0.0.1:1",
    payments_public_url="http://127.0.0.1:2",
    payments_internal_url="http://127.0.0.1:3",
)


class WebhookReceiver:
    """Answers as payments does: 401 to a bad signature, 503 when the processor's verification cannot
    be asked, 400 to a malformed webhook, the adapter's ack to the rest; ``fail_status`` to the next
    ``fail_next`` deliveries whatever they are. ``url`` (once started) is its
    ``/webhooks/{integration_id}``; any other integration id is served alike."""

    def __init__(
        self,
        adapter: AnyAdapter | None = None,
        *,
        integration_id: str,
        fail_status: int = 500,
        wait_s: float = 5.0,
    ) -> None:
        self.adapter = adapter
        self.integration_id = integration_id
        self.fail_next = 0  # answer ``fail_status`` to this many deliveries first (the processor retries them)
        self.fail_status = fail_status
        self.wait_s = wait_s  # how long ``wait_for`` waits
        self.batches: list[list[ProcessorEvent]] = []  # the events of each delivery accepted, in order
        self.delivered: list[WebhookRequest] = []  # each delivery accepted, as it arrived
        self.refused: list[str] = []  # why each delivery was refused (401 or 400)
        self.answers: list[int] = []  # the status of every delivery, in order
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/{integration_id}", self.handle)
        self._runner, port = await serve_app(app, shutdown_timeout=0.5)
        self.url = f"http://127.0.0.1:{port}/webhooks/{self.integration_id}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def handle(self, request: web.Request) -> web.Response:
        assert self.adapter is not None, "no adapter to check the webhook with"
        webhook = WebhookRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=await request.read(),
            peer=request.remote,
            received_at_s=time.time(),
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._answer(self.fail_status)
        try:
            await self.adapter.verify_webhook(webhook)
            events = await self.adapter.parse_webhook(webhook)
        except (InvalidSignature, MalformedWebhook) as exc:
            self.refused.append(str(exc))
            return self._answer(401 if isinstance(exc, InvalidSignature) else 400)
        except ProcessorUnavailable:  # not a verdict: the processor is to try again
            return self._answer(503)
        self.delivered.append(webhook)
        self.batches.append(events)
        ack = self.adapter.webhook_ack()
        self.answers.append(ack.status)
        return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)

    def _answer(self, status: int) -> web.Response:
        self.answers.append(status)
        return web.Response(status=status)

    @property
    def events(self) -> list[ProcessorEvent]:
        """Every event of every delivery accepted, in order."""
        return [event for batch in self.batches for event in batch]

    def of(self, kind: EventKind) -> list[ProcessorEvent]:
        return [event for event in self.events if event.kind is kind]

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    async def wait_for(self, kind: EventKind, count: int = 1, timeout_s: float | None = None) -> list[ProcessorEvent]:
        """At least ``count`` events of ``kind`` (all there are of it); fails at once on a refusal."""
        timeout_s = self.wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while len(self.of(kind)) < count:
            assert not self.refused, self.refused
            assert time.monotonic() < deadline, f"no {count} {kind} event(s) in {timeout_s} s: {self.events}"
            await asyncio.sleep(0.01)
        return self.of(kind)
