"""The credit safety net: a payment that succeeded but whose ``credit.applied`` never came back
(the event was lost, unroutable, dead-lettered...) is announced again. The ledger derives the
transfer id from the payment, so an announcement can never credit twice, and it answers a repeated
one with ``credit.applied`` again, so the sweeper converges."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from services.payments import domain, service, store
from services.payments.metrics import CREDIT_REANNOUNCED, PAYMENTS_UNCREDITED
from shared.logging import get_logger
from shared.outbox import enqueue
from shared.settings import PaymentsSettings

log = get_logger(__name__)


async def reannounce_uncredited(pool: asyncpg.Pool, settings: PaymentsSettings) -> bool:
    """Announce one batch of due uncredited successes again; True if the batch was full."""
    async with pool.acquire() as conn, conn.transaction():
        due = await store.claim_uncredited(conn, settings.sweep_after_s, settings.poll_batch)
        for uncredited in due:
            payment, count = uncredited.payment, uncredited.announce_count + 1
            next_in_s = domain.next_announce_in_s(count, settings.sweep_after_s, settings.sweep_max_backoff_s)
            await store.record_announcement(conn, payment.id, count, next_in_s)
            await enqueue(
                conn, service.succeeded_event(payment), producer=service.PRODUCER, correlation_id=payment.correlation_id
            )
            log.warning("credit_reannounced", payment_id=str(payment.id), announcements=count)
    CREDIT_REANNOUNCED.inc(len(due))
    return len(due) == settings.poll_batch


async def update_uncredited_gauge(
    pool: asyncpg.Pool, integration_ids: Iterable[str], settings: PaymentsSettings
) -> bool:
    uncredited = await store.uncredited_by_integration(pool, settings.sweep_after_s)
    for integration_id in {*integration_ids, *uncredited}:
        PAYMENTS_UNCREDITED.labels(integration_id).set(uncredited.get(integration_id, 0))
    return False
