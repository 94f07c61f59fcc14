"""Heals payments whose webhook never came: asks the processor about payments left pending and
applies the answer through the same path as a webhook."""

from __future__ import annotations

import asyncio

import asyncpg

from services.payments import service, store
from services.payments.processors.base import EventKind, ProcessorAdapter, ProcessorUnavailable
from shared.logging import get_logger
from shared.metrics import PAYMENTS_PENDING

log = get_logger(__name__)

POLL_BATCH = 100


async def poll_once(pool: asyncpg.Pool, adapters: dict[str, ProcessorAdapter], older_than_s: float) -> int:
    """Poll one batch of stale pending payments; returns how many changed."""
    changed = 0
    for payment in await store.open_payments(pool, older_than_s, POLL_BATCH):
        adapter = adapters.get(payment.integration_id)
        if adapter is None or payment.processor_reference is None:
            continue
        try:
            event = await adapter.fetch_status(payment.processor_reference)
        except ProcessorUnavailable as exc:
            log.warning("poll_failed", payment_id=str(payment.id), error=str(exc))
            continue
        if event.kind is EventKind.PENDING:
            await store.touch(pool, payment.id)  # the driver is still paying: look again later
            continue
        await service.apply_processor_event(pool, payment.integration_id, event, None)
        changed += 1
    for integration_id in adapters:
        PAYMENTS_PENDING.labels(integration_id).set(0)
    for integration_id, count in (await store.count_open(pool)).items():
        PAYMENTS_PENDING.labels(integration_id).set(count)
    return changed


async def run_poller(
    pool: asyncpg.Pool, adapters: dict[str, ProcessorAdapter], interval_s: float, older_than_s: float
) -> None:
    while True:
        try:
            await poll_once(pool, adapters, older_than_s)
        except Exception as exc:  # the poller must outlive any one failure; it heals what others lose
            log.warning("poller_failed", error=repr(exc))
        await asyncio.sleep(interval_s)
