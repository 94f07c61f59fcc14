"""Payments: processor adapters, checkout RPC, webhooks, the poller and the sandbox processor."""

from __future__ import annotations

import aiohttp

from services.payments import webhooks
from services.payments.checkout_rpc import checkout_handler
from services.payments.poller import run_poller
from services.payments.processors import build_adapters
from services.payments.sandbox_processor import SandboxProcessor
from shared.amqp import CHECKOUT_RPC_QUEUE, RpcServer
from shared.runtime import Runtime

NAME = "payments"


async def build(runtime: Runtime) -> None:
    settings = runtime.settings
    http = aiohttp.ClientSession()
    runtime.on_cleanup(http.close)
    adapters = build_adapters(settings, http)
    runtime.app[webhooks.ADAPTERS_KEY] = adapters
    webhooks.add_routes(runtime.app)
    # The sandbox takes no money: its routes exist only in a demo deployment (the settings refuse it
    # anywhere else).
    if settings.deployment == "demo":
        sandbox = SandboxProcessor(settings, runtime.pool, http)
        sandbox.add_routes(runtime.app)
        runtime.on_cleanup(sandbox.close)
    await RpcServer(CHECKOUT_RPC_QUEUE, checkout_handler(runtime.pool, adapters)).start(runtime.connection)
    runtime.spawn(run_poller(runtime.pool, adapters, settings.payments.poll_interval_s, settings.payments.poll_after_s))
