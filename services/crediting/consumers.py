"""Consumes payment events and posts them to the ledger, once per payment."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from services.crediting import domain, store
from shared.amqp import MessageHandler
from shared.db import Connection
from shared.logging import get_logger
from shared.messages import BadMessage, CreditApplied, Envelope, Environment, PaymentSucceeded
from shared.metrics import CREDIT_LATENCY, CREDITS_APPLIED
from shared.outbox import enqueue
from shared.settings import Settings

log = get_logger(__name__)


def payment_succeeded_handler(settings: Settings) -> MessageHandler:
    async def on_payment_succeeded(conn: Connection, envelope: Envelope, event: PaymentSucceeded) -> None:
        try:
            environment = domain.credit_environment(event, settings.integrations)
        except domain.RefusedCredit as exc:
            raise BadMessage(str(exc)) from None
        with structlog.contextvars.bound_contextvars(environment=environment):
            await credit_topup(conn, envelope, event, environment)

    return on_payment_succeeded


async def credit_topup(
    conn: Connection, envelope: Envelope, event: PaymentSucceeded, environment: Environment
) -> None:
    transfer = domain.topup_transfer(event, environment)
    try:
        recorded = await store.record_transfer(conn, transfer, envelope.correlation_id)
    except store.TransferConflict as exc:
        raise BadMessage(str(exc)) from None
    if recorded.created:
        CREDITS_APPLIED.labels(event.currency, environment).inc()
        CREDIT_LATENCY.observe(max(0.0, (datetime.now(UTC) - envelope.occurred_at).total_seconds()))
        log.info("credit_applied", transfer_id=transfer.id, user_credit_minor=transfer.user_credit_minor)
    else:
        # The same payment announced again (a redelivery or payments' sweeper): never a second
        # posting, but credit.applied again, in case the first one was lost on its way.
        log.info("credit_already_applied", transfer_id=transfer.id)
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
            environment=environment,
        ),
        producer="crediting",
        correlation_id=envelope.correlation_id,
        causation_id=envelope.id,
    )
