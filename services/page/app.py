"""Page: the driver-facing top-up page and its JSON API; owns top-up orders."""

from __future__ import annotations

from services.page import api, consumers, pages
from shared.amqp import PAGE_QUEUE, IdempotentConsumer, RpcClient
from shared.messages import CreditApplied, PaymentFailed, PaymentSucceeded
from shared.runtime import Runtime

NAME = "page"


async def build(runtime: Runtime) -> None:
    rpc = RpcClient(runtime.settings.amqp)
    runtime.on_cleanup(rpc.close)
    runtime.app[api.RPC_KEY] = rpc
    api.add_routes(runtime.app)
    pages.add_routes(runtime.app)
    consumer = IdempotentConsumer(
        NAME,
        PAGE_QUEUE,
        runtime.pool,
        {
            PaymentSucceeded: consumers.on_payment_succeeded,
            PaymentFailed: consumers.on_payment_failed,
            CreditApplied: consumers.on_credit_applied,
        },
    )
    await consumer.start(runtime.connection, runtime.settings.amqp.prefetch)
