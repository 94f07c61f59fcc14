"""Consumes payment events and posts each to the ledger once (with its delivery to the CSMS): paid
top-ups, and money that went back from a payment (refunds, disputes) and reversals undone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from services.crediting import domain, service, store
from shared.amqp import MessageHandler
from shared.db import Connection
from shared.messages import (
    BadMessage,
    Contract,
    Envelope,
    Environment,
    PaymentReversalUndone,
    PaymentReversed,
    PaymentSucceeded,
)
from shared.settings import Settings

Posting = Callable[[Connection, Settings, Any, Environment, Envelope], Awaitable[None]]


def payment_event_handlers(settings: Settings) -> dict[type[Contract], MessageHandler]:
    return {
        PaymentSucceeded: _handler(
            settings,
            lambda conn, s, e, env, envelope: service.credit_topup(
                conn, s, e, env, envelope.correlation_id, envelope.occurred_at
            ),
        ),
        PaymentReversed: _handler(
            settings,
            lambda conn, s, e, env, envelope: service.post_payment_reversal(conn, s, e, env, envelope.correlation_id),
        ),
        PaymentReversalUndone: _handler(
            settings,
            lambda conn, s, e, env, envelope: service.undo_payment_reversal(conn, s, e, env, envelope.correlation_id),
        ),
    }


def _handler(settings: Settings, post: Posting) -> MessageHandler:
    """Checks the event may touch this ledger at all (its environment, from this service's own
    configuration), then posts it; a refusal or a conflicting transfer is dead-lettered with why."""

    async def handle(conn: Connection, envelope: Envelope, event: Any) -> None:
        try:
            environment = domain.credit_environment(event, settings.integrations, settings.csms.user_id_pattern)
        except domain.RefusedCredit as exc:
            raise BadMessage(str(exc)) from None
        with structlog.contextvars.bound_contextvars(environment=environment):
            try:
                await post(conn, settings, event, environment, envelope)
            except (store.TransferConflict, domain.RefusedCredit) as exc:
                raise BadMessage(str(exc)) from None

    return handle
