"""``POST /webhooks/{integration_id}``: the adapter verifies the whole request as received (raw bytes,
headers, query, peer), each event is recorded once and moves its payment, and the processor gets the
answer it expects, fast. Anything unverifiable changes nothing."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from aiohttp import web

from services.payments import service
from services.payments.processors.base import (
    AnyAdapter,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    PaymentRef,
    ProcessorUnavailable,
    WebhookAuth,
    WebhookRequest,
)
from shared.http import Problem
from shared.logging import get_logger
from shared.metrics import WEBHOOKS_RECEIVED
from shared.rate_limit import SlidingWindowLimiter
from shared.runtime import POOL_KEY

log = get_logger(__name__)

ADAPTERS_KEY = web.AppKey("adapters", dict[str, AnyAdapter])
COMPLETIONS_KEY = web.AppKey("completions", set[asyncio.Task[str]])
LIMITER_KEY = web.AppKey("verification_calls", SlidingWindowLimiter)
MAX_WEBHOOK_BYTES = 256 * 1024
# Verifying a webhook through the processor's API (PayPal) or by querying the payment (M-Pesa) is a
# call out for anything anyone posts: bounded per integration and process, so forged requests cannot
# spend the integration's rate limit at the processor (which would stall real payments). The
# processor retries what is refused with 429.
VERIFICATION_CALLS_PER_WINDOW = 100
VERIFICATION_WINDOW_S = 10.0
CALLS_OUT = frozenset({WebhookAuth.VERIFICATION_API, WebhookAuth.STATUS_QUERY})


async def receive_webhook(request: web.Request) -> web.Response:
    integration_id = request.match_info["integration_id"]
    adapter = request.app[ADAPTERS_KEY].get(integration_id)
    if adapter is None:
        raise Problem(404, "Unknown integration")
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        raise Problem(413, "Webhook too large")
    webhook = WebhookRequest(
        method=request.method,
        path=request.path,
        query=request.query,
        headers=request.headers,
        body=await request.read(),
        peer=request.remote,
        received_at_s=time.time(),
    )
    limiter = request.app[LIMITER_KEY]
    if adapter.capabilities.webhook_auth in CALLS_OUT and not limiter.allow(integration_id, time.monotonic()):
        WEBHOOKS_RECEIVED.labels(integration_id, "verification_limited").inc()
        retry_after = limiter.retry_after_s(integration_id, time.monotonic())
        raise Problem(429, "Too many webhooks to verify, retry later", headers={"Retry-After": str(retry_after)})
    try:
        await adapter.verify_webhook(webhook)
    except InvalidSignature as exc:
        WEBHOOKS_RECEIVED.labels(integration_id, "invalid_signature").inc()
        # Why, for the operator's log only: the sender learns nothing about our checks.
        log.warning("webhook_signature_rejected", integration=integration_id, reason=str(exc))
        raise Problem(401, "Invalid signature") from None
    except ProcessorUnavailable as exc:
        raise _unavailable(integration_id, exc) from None
    except MalformedWebhook as exc:
        raise _malformed(integration_id, exc) from None
    except UNREADABLE as exc:
        raise _unreadable(integration_id, exc) from None
    try:
        events = await adapter.parse_webhook(webhook)
    except MalformedWebhook as exc:
        raise _malformed(integration_id, exc) from None
    except ProcessorUnavailable as exc:
        # Some processors' webhooks must be completed from their API (Paystack's refunds name no refund).
        raise _unavailable(integration_id, exc) from None
    except UNREADABLE as exc:
        raise _unreadable(integration_id, exc) from None
    pool = request.app[POOL_KEY]
    for event in events:
        outcome = await service.apply_processor_event(
            pool,
            integration_id,
            event,
            adapter.stored_body(webhook.body),
            states_amount=adapter.capabilities.states_amount,
        )
        WEBHOOKS_RECEIVED.labels(integration_id, outcome).inc()
        if event.kind is EventKind.APPROVED:
            # Completed after the answer, outside the webhook's transaction; the poller retries it.
            completions = request.app[COMPLETIONS_KEY]
            task = asyncio.create_task(_complete(pool, adapter, event.payment))
            completions.add(task)
            task.add_done_callback(completions.discard)
    ack = adapter.webhook_ack()
    return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)


# What an adapter should have turned into MalformedWebhook or InvalidSignature; RecursionError: JSON
# nested deeper than any parser goes. Bytes anyone can post never make a 500.
UNREADABLE = (RecursionError, ValueError, TypeError, KeyError, IndexError, ArithmeticError, UnicodeError)


def _unavailable(integration_id: str, exc: ProcessorUnavailable) -> Problem:
    """The processor's API could not be asked: not a verdict, so the processor is told to retry."""
    WEBHOOKS_RECEIVED.labels(integration_id, "unverifiable_now").inc()
    log.warning("webhook_verification_unavailable", integration=integration_id, reason=str(exc))
    return Problem(503, "Verification unavailable, retry later")


def _malformed(integration_id: str, exc: MalformedWebhook) -> Problem:
    WEBHOOKS_RECEIVED.labels(integration_id, "bad_request").inc()
    return Problem(400, "Malformed webhook", str(exc))


def _unreadable(integration_id: str, exc: BaseException) -> Problem:
    WEBHOOKS_RECEIVED.labels(integration_id, "bad_request").inc()
    log.error("webhook_unreadable", integration=integration_id, error=type(exc).__name__)
    return Problem(400, "Malformed webhook")


async def _complete(pool: asyncpg.Pool, adapter: AnyAdapter, payment: PaymentRef) -> str:
    try:
        return await service.complete_approved(pool, adapter, payment)
    except Exception as exc:  # the poller completes it later
        log.warning("completion_failed", integration=adapter.integration_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"


def add_routes(app: web.Application) -> None:
    app[COMPLETIONS_KEY] = set()
    app[LIMITER_KEY] = SlidingWindowLimiter(VERIFICATION_CALLS_PER_WINDOW, VERIFICATION_WINDOW_S, max_keys=1000)
    app.router.add_post("/webhooks/{integration_id}", receive_webhook)
