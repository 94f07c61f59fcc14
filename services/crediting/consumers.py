"""Consumes payment events and posts them to the ledger, once per payment."""

from __future__ import annotations

from datetime import UTC, datetime

from services.crediting import domain, store
from shared.db import Connection
from shared.logging import get_logger
from shared.messages import BadMessage, CreditApplied, Envelope, PaymentSucceeded
from shared.metrics import CREDIT_LATENCY, CREDITS_APPLIED
from shared.outbox import enqueue

log = get_logger(__name__)


async def on_payment_succeeded(conn: Connection, envelope: Envelope, event: PaymentSucceeded) -> None:
    transfer = domain.topup_transfer(event)
    try:
        recorded = await store.record_transfer(conn, transfer, envelope.correlation_id)
    except store.TransferConflict as exc:
        raise BadMessage(str(exc)) from None
    if not recorded.created:
        # The same payment announced again under a new message id: already credited, nothing to do.
        log.info("credit_already_applied", transfer_id=transfer.id)
        return
    await enqueue(
        conn,
        CreditApplied(
            transfer_id=transfer.id,
            payment_id=event.payment_id,
            order_id=event.order_id,
            user_id=event.user_id,
            amount_minor=event.amount_minor,
            bonus_minor=event.bonus_minor,
            currency=event.currency,
            balance_minor=recorded.balance_minor,
        ),
        producer="crediting",
        correlation_id=envelope.correlation_id,
        causation_id=envelope.id,
    )
    CREDITS_APPLIED.labels(event.currency).inc()
    CREDIT_LATENCY.observe(max(0.0, (datetime.now(UTC) - envelope.occurred_at).total_seconds()))
    log.info("credit_applied", transfer_id=transfer.id, user_credit_minor=transfer.user_credit_minor)
