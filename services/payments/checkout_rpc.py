"""The checkout RPC the page calls over RabbitMQ: validate, create or return the checkout."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.payments import service
from services.payments.processors.base import AnyAdapter, ProcessorUnavailable
from shared.amqp import RpcError, RpcHandler
from shared.messages import CreateCheckout
from shared.metrics import RPC_REQUESTS
from shared.settings import Settings


def checkout_handler(pool: asyncpg.Pool, adapters: dict[str, AnyAdapter], settings: Settings) -> RpcHandler:
    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        command = CreateCheckout.model_validate(request)
        try:
            created = await service.create_checkout(pool, adapters, settings, command)
        except ProcessorUnavailable as exc:
            RPC_REQUESTS.labels("server", "processor_unavailable").inc()
            raise RpcError("processor_unavailable", str(exc)) from None
        RPC_REQUESTS.labels("server", "ok").inc()
        return created.model_dump(mode="json")

    return handle
