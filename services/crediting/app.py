"""Crediting: consumes payment events, keeps the double-entry ledger, serves balances."""

from __future__ import annotations

from services.crediting import api, consumers
from shared.amqp import CREDITING_QUEUE, IdempotentConsumer, trusted_publishers
from shared.messages import PaymentSucceeded
from shared.runtime import Runtime

NAME = "crediting"


async def build(runtime: Runtime) -> None:
    api.add_routes(runtime.app)
    consumer = IdempotentConsumer(
        NAME, CREDITING_QUEUE, runtime.pool, {PaymentSucceeded: consumers.payment_succeeded_handler(runtime.settings)},
        publishers=trusted_publishers(runtime.settings.amqp),
        user=runtime.broker_user,
    )
    await consumer.start(runtime.connection, runtime.settings.amqp.prefetch)
    runtime.add_consumer(consumer)
