"""``POST /webhooks/{integration_id}``: verify on the raw bytes, record each event once, move the
payment, answer 2xx fast. Anything unverifiable changes nothing."""

from __future__ import annotations

import time

from aiohttp import web

from services.payments import service
from services.payments.processors.base import InvalidSignature, MalformedWebhook, ProcessorAdapter
from shared.http import Problem, json_response
from shared.logging import get_logger
from shared.metrics import WEBHOOKS_RECEIVED
from shared.runtime import POOL_KEY

log = get_logger(__name__)

ADAPTERS_KEY = web.AppKey("adapters", dict[str, ProcessorAdapter])
MAX_WEBHOOK_BYTES = 256 * 1024


async def receive_webhook(request: web.Request) -> web.Response:
    integration_id = request.match_info["integration_id"]
    adapter = request.app[ADAPTERS_KEY].get(integration_id)
    if adapter is None:
        raise Problem(404, "Unknown integration")
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        raise Problem(413, "Webhook too large")
    body = await request.read()
    try:
        adapter.verify_webhook(request.headers, body, time.time())
    except InvalidSignature as exc:
        WEBHOOKS_RECEIVED.labels(integration_id, "invalid_signature").inc()
        log.warning("webhook_signature_rejected", integration=integration_id, reason=str(exc))
        raise Problem(401, "Invalid signature", str(exc)) from None
    try:
        events = adapter.parse_webhook(request.headers, body)
    except (MalformedWebhook, RecursionError) as exc:  # RecursionError: JSON nested deeper than any parser goes
        WEBHOOKS_RECEIVED.labels(integration_id, "bad_request").inc()
        raise Problem(400, "Malformed webhook", str(exc)) from None
    for event in events:
        outcome = await service.apply_processor_event(request.app[POOL_KEY], integration_id, event, body)
        WEBHOOKS_RECEIVED.labels(integration_id, outcome).inc()
    return json_response({"received": len(events)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/webhooks/{integration_id}", receive_webhook)
