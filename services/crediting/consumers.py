"""Consumes payment events and posts each to the ledger once (with its delivery to the CSMS)."""

from __future__ import annotations

import structlog

from services.crediting import domain, service, store
from shared.amqp import MessageHandler
from shared.db import Connection
from shared.messages import BadMessage, Envelope, PaymentSucceeded
from shared.settings import Settings


def payment_succeeded_handler(settings: Settings) -> MessageHandler:
    async def on_payment_succeeded(conn: Connection, envelope: Envelope, event: PaymentSucceeded) -> None:
        try:
            environment = domain.credit_environment(event, settings.integrations, settings.csms.user_id_pattern)
        except domain.RefusedCredit as exc:
            raise BadMessage(str(exc)) from None
        with structlog.contextvars.bound_contextvars(environment=environment):
            try:
                await service.credit_topup(
                    conn, settings, event, environment, envelope.correlation_id, envelope.occurred_at
                )
            except store.TransferConflict as exc:
                raise BadMessage(str(exc)) from None

    return on_payment_succeeded
