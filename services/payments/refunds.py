"""Refunds an operator asks for: the request is recorded as an intent (``evtopup refund``), and the
refund dispatcher carries it to the processor outside any transaction, with the request's id as the
processor's idempotency key, so a crash or a lost answer is simply asked again. The ledger moves only
when the processor confirms the refund with its event, never on the request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from services.payments import domain, store
from services.payments.domain import PaymentStatus
from services.payments.metrics import REFUND_REQUESTS
from services.payments.processors.base import (
    AnyAdapter,
    ProcessorRefused,
    ProcessorUnavailable,
    RefundRequest,
)
from shared.logging import get_logger

log = get_logger(__name__)

# A request the processor could not take is asked again after this (doubling, capped).
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 600.0
REFUND_CALL_TIMEOUT_S = 30.0
BATCH = 20


class RefundRefused(Exception):
    """The refund cannot be asked for (unknown order, not paid, nothing left, no refunds at this
    processor); the message says why."""


@dataclass(frozen=True)
class RefundAsked:
    request_id: uuid.UUID
    payment_id: uuid.UUID
    amount_minor: int
    currency: str


async def request_refund(
    pool: asyncpg.Pool,
    registry: Mapping[str, type[AnyAdapter]],
    order_id: uuid.UUID,
    amount_minor: int | None,
    requested_by: str,
    why: str,
) -> RefundAsked:
    """Record an operator's refund of ``amount_minor`` (of what the driver was charged; None: all that
    is left) for the order's payment. ``registry`` (adapter classes by processor) tells whether its
    processor refunds, and whether in part."""
    if not requested_by.strip() or not why.strip():
        raise RefundRefused("a refund needs who asks (--by) and why (--why)")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM payments WHERE order_id = $1 FOR UPDATE", order_id)
        if row is None:
            raise RefundRefused(f"no payment for order {order_id}")
        payment = store.Payment.from_row(row)
        adapter = registry.get(payment.processor)
        if adapter is None or not adapter.capabilities.refunds:
            raise RefundRefused(f"{payment.processor} payments cannot be refunded through its API")
        if payment.status is not PaymentStatus.SUCCEEDED:
            raise RefundRefused(f"the payment is {payment.status.value}: only a succeeded payment is refunded")
        left = domain.refundable_minor(
            payment.charge_minor, payment.returned_minor, await store.open_refund_requests_minor(conn, payment.id)
        )
        amount = left if amount_minor is None else amount_minor
        if amount <= 0 or amount > left:
            raise RefundRefused(f"{left} {payment.currency} (minor units) is left to refund; asked {amount}")
        if amount != payment.charge_minor - payment.returned_minor and not adapter.capabilities.partial_refunds:
            raise RefundRefused(f"{payment.processor} refunds only the whole amount")
        request_id = await store.insert_refund_request(conn, payment, amount, requested_by.strip(), why.strip())
    log.info("refund_requested", payment_id=str(payment.id), request_id=str(request_id), amount_minor=amount)
    return RefundAsked(request_id, payment.id, amount, payment.currency)


async def dispatch_refunds_once(pool: asyncpg.Pool, adapters: dict[str, AnyAdapter]) -> bool:
    """Carry due refund requests to their processors; True if the batch was full."""
    requests = await store.claim_refund_requests(pool, BATCH, REFUND_CALL_TIMEOUT_S * 2)
    await asyncio.gather(*(_dispatch(pool, adapters, request) for request in requests))
    return len(requests) == BATCH


async def _dispatch(pool: asyncpg.Pool, adapters: dict[str, AnyAdapter], request: store.RefundRequest) -> None:
    payment = request.payment
    adapter = adapters.get(payment.integration_id)
    if adapter is None:
        retry_in_s = domain.doubling_backoff_s(request.attempts - 1, RETRY_FIRST_S, RETRY_MAX_S)
        await store.record_refund_answer(
            pool, request.id, "requested", error="integration not configured here", retry_in_s=retry_in_s
        )
        return
    try:
        accepted = await asyncio.wait_for(
            adapter.refund(
                RefundRequest(
                    payment=payment.ref,
                    refund_key=str(request.id),
                    amount_minor=request.amount_minor,
                    currency=payment.currency,
                    reason=request.why,
                )
            ),
            REFUND_CALL_TIMEOUT_S,
        )
    except ProcessorRefused as exc:
        REFUND_REQUESTS.labels(payment.integration_id, "refused").inc()
        log.warning("refund_refused", request_id=str(request.id), error=str(exc))
        await store.record_refund_answer(pool, request.id, "refused", error=str(exc)[:500])
        return
    except (ProcessorUnavailable, TimeoutError) as exc:
        REFUND_REQUESTS.labels(payment.integration_id, "retry").inc()
        retry_in_s = domain.doubling_backoff_s(request.attempts - 1, RETRY_FIRST_S, RETRY_MAX_S)
        await store.record_refund_answer(
            pool, request.id, "requested", error=f"{type(exc).__name__}: {exc}"[:500], retry_in_s=retry_in_s
        )
        return
    REFUND_REQUESTS.labels(payment.integration_id, "accepted").inc()
    async with pool.acquire() as conn, conn.transaction():
        await store.record_refund_answer(
            conn, request.id, "accepted", refund_id=accepted.refund_id, processor_status=accepted.status
        )
        # The processor's confirmation may have come before its answer to us.
        await store.confirm_refund_requests(conn, payment.id)
    log.info("refund_accepted", request_id=str(request.id), refund_id=accepted.refund_id, status=accepted.status)
