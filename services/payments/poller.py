"""Heals payments whose webhook never came: asks the processor about payments left open (and about
failed or expired ones for a grace period) and applies the answer through the same path as a webhook.

Each payment has its own ``next_poll_at``, backing off while nothing changes; due payments are
claimed with ``FOR UPDATE SKIP LOCKED`` in a short statement that pushes ``next_poll_at`` ahead as a
lease, so replicas share the work and no transaction spans a processor call. Every integration has a
loop of its own, and every call a timeout, so a processor that is down delays only its own payments."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping

import asyncpg

from services.payments import domain, service, store
from services.payments.domain import PollAction
from services.payments.metrics import PAYMENTS_OLDEST_PENDING_AGE, PAYMENTS_POLLED
from services.payments.periodic import run_every
from services.payments.processors.base import AnyAdapter
from shared.logging import get_logger
from shared.metrics import PAYMENTS_PENDING
from shared.settings import PaymentsSettings

log = get_logger(__name__)

# Status lookups in flight at once, per integration.
POLL_CONCURRENCY = 10


async def poll_integration_once(
    pool: asyncpg.Pool, adapters: Mapping[str, AnyAdapter], integration_id: str, settings: PaymentsSettings
) -> bool:
    """Poll one batch of the integration's due payments; True if the batch was full. The adapter is
    looked up each time: a reload may have replaced it (new credentials)."""
    adapter = adapters[integration_id]
    lease_s = domain.poll_lease_s(
        settings.poll_call_timeout_s, settings.poll_batch, POLL_CONCURRENCY, settings.poll_interval_s
    )
    candidates = await store.claim_due_polls(
        pool, adapter.integration_id, settings.poll_after_s, settings.poll_batch, lease_s
    )
    semaphore = asyncio.Semaphore(POLL_CONCURRENCY)

    async def poll(candidate: store.PollCandidate) -> None:
        async with semaphore:
            result = await _poll_payment(pool, adapter, settings, candidate)
        PAYMENTS_POLLED.labels(adapter.integration_id, result).inc()

    await asyncio.gather(*(poll(candidate) for candidate in candidates))
    return len(candidates) == settings.poll_batch


async def _poll_payment(
    pool: asyncpg.Pool, adapter: AnyAdapter, settings: PaymentsSettings, candidate: store.PollCandidate
) -> str:
    """Poll one payment; every error is caught and recorded here, so one payment (or one processor)
    in trouble never stops the others. Returns the result (a metrics label)."""
    payment = candidate.payment
    attempts = candidate.poll_attempts + 1
    next_in_s = domain.next_poll_in_s(attempts, settings.poll_interval_s, settings.poll_max_backoff_s)
    try:
        action = domain.poll_action(
            payment.status,
            payment.processor_reference is not None,
            candidate.since_change_s,
            settings.poll_grace_s,
            settings.unconfirmed_expire_after_s,
        )
        if action is PollAction.RETIRE:
            await store.record_poll(pool, payment.id, payment.status, attempts=attempts, next_in_s=None)
            return "retired"
        if action is PollAction.WAIT:
            await store.record_poll(pool, payment.id, payment.status, attempts=attempts, next_in_s=next_in_s)
            return "waiting"
        if action is PollAction.EXPIRE_UNCONFIRMED:
            await service.expire_unconfirmed(pool, payment.id)
            return "expired_unconfirmed"
        if action is PollAction.COMPLETE:
            await asyncio.wait_for(service.complete_approved(pool, adapter, payment.ref), settings.poll_call_timeout_s)
            await store.record_poll(pool, payment.id, payment.status, attempts=attempts, next_in_s=next_in_s)
            return "completed"
        event = await asyncio.wait_for(adapter.fetch_status(payment.ref), settings.poll_call_timeout_s)
        await service.apply_processor_event(
            pool, payment.integration_id, event, None, states_amount=adapter.capabilities.states_amount
        )
        # Guarded by the status: a payment the answer moved has a fresh schedule already.
        await store.record_poll(pool, payment.id, payment.status, attempts=attempts, next_in_s=next_in_s)
        return "answered"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("poll_failed", payment_id=str(payment.id), integration=payment.integration_id, error=error)
        try:
            await store.record_poll(
                pool, payment.id, payment.status, attempts=attempts, next_in_s=next_in_s, error=error
            )
        except Exception as record_exc:  # the lease runs out and the payment is polled again
            log.warning("poll_failure_not_recorded", payment_id=str(payment.id), error=repr(record_exc))
        return "failed"


async def update_gauges(pool: asyncpg.Pool, integration_ids: Iterable[str]) -> bool:
    open_payments = await store.open_payments_by_integration(pool)
    for integration_id in {*integration_ids, *open_payments}:
        stats = open_payments.get(integration_id, store.OpenPayments(0, 0.0))
        PAYMENTS_PENDING.labels(integration_id).set(stats.count)
        PAYMENTS_OLDEST_PENDING_AGE.labels(integration_id).set(stats.oldest_age_s)
    return False


async def poll_loop(
    pool: asyncpg.Pool, adapters: Mapping[str, AnyAdapter], integration_id: str, settings: PaymentsSettings
) -> None:
    """The integration's own polling, for as long as the service runs: a draining integration (no
    longer active) is polled until its last payment settles, and then finds nothing due."""
    await run_every(
        f"poll_{integration_id}",
        settings.poll_interval_s,
        functools.partial(poll_integration_once, pool, adapters, integration_id, settings),
    )


async def gauge_loop(pool: asyncpg.Pool, adapters: Mapping[str, AnyAdapter], settings: PaymentsSettings) -> None:
    await run_every("payment_gauges", settings.poll_interval_s, functools.partial(update_gauges, pool, adapters))
