"""Payments: processor adapters, checkout RPC, webhooks, the sandbox processor, and the healing jobs:
the poller, the credit sweeper, the re-examination of unmatched events; and its retention rules."""

from __future__ import annotations

import functools

import aiohttp

from services.payments import consumers, refunds, service, store, sweeper, webhooks
from services.payments.checkout_rpc import checkout_handler
from services.payments.metrics import UNKNOWN_EVENTS_REEXAMINED
from services.payments.periodic import run_every
from services.payments.poller import gauge_loop, poll_loop
from services.payments.processors import build_adapter, build_adapters
from services.payments.processors.sandbox.hosted import SandboxProcessor
from shared.amqp import CHECKOUT_RPC_QUEUE, PAYMENTS_QUEUE, IdempotentConsumer, RpcServer, trusted_publishers
from shared.messages import CreditApplied
from shared.runtime import Runtime

NAME = "payments"


async def build(runtime: Runtime) -> None:
    settings = runtime.settings
    http = aiohttp.ClientSession()
    runtime.on_cleanup(http.close)
    adapters = build_adapters(settings, http)
    await store.mark_older_test_payments(
        runtime.pool, [i for i, integration in settings.integrations.items() if integration.environment == "test"]
    )
    runtime.app[webhooks.ADAPTERS_KEY] = adapters
    webhooks.add_routes(runtime.app)
    # The sandbox takes no money: its routes exist only in a demo deployment (the settings refuse it
    # anywhere else).
    if settings.deployment == "demo":
        sandbox = SandboxProcessor(settings, runtime.pool, http)
        sandbox.add_routes(runtime.app)
        runtime.on_cleanup(sandbox.close)
    checkouts = RpcServer(CHECKOUT_RPC_QUEUE, checkout_handler(runtime.pool, adapters, settings))
    await checkouts.start(runtime.connection)
    runtime.add_consumer(checkouts)
    pool, healing = runtime.pool, settings.payments
    credit_events = IdempotentConsumer(
        NAME,
        PAYMENTS_QUEUE,
        pool,
        {CreditApplied: consumers.on_credit_applied},
        publishers=trusted_publishers(settings.amqp),
        user=runtime.broker_user,
        # Marking a payment credited is idempotent by itself: no inbox row per top-up.
        inbox=False,
    )
    await credit_events.start(runtime.connection, settings.amqp.prefetch)
    runtime.add_consumer(credit_events)
    for integration_id in adapters:
        runtime.spawn(poll_loop(pool, adapters, integration_id, healing))
    runtime.spawn(gauge_loop(pool, adapters, healing))

    async def take_reloaded_integrations(changed: frozenset[str]) -> None:
        # The one adapters mapping is shared by the webhook routes, the checkout RPC, the poller and
        # the refund dispatcher: an added integration is served, and a changed one (credentials,
        # methods, ``active``) uses its new settings, from the next request on.
        for integration_id in sorted(changed):
            added = integration_id not in adapters
            adapters[integration_id] = build_adapter(integration_id, settings, http)
            if added:
                runtime.spawn(poll_loop(pool, adapters, integration_id, healing))

    runtime.on_reload(take_reloaded_integrations)
    runtime.spawn(
        run_every(
            "credit_sweeper", healing.sweep_interval_s, functools.partial(sweeper.reannounce_uncredited, pool, healing)
        )
    )
    runtime.spawn(
        run_every(
            "uncredited_gauge",
            healing.sweep_interval_s,
            functools.partial(sweeper.update_uncredited_gauge, pool, adapters, healing),
        )
    )

    async def reexamine_unknown_events() -> bool:
        outcomes = await service.reexamine_unknown_events(
            pool,
            healing.poll_batch,
            healing.poll_interval_s,
            healing.poll_max_backoff_s,
            {integration_id: adapter.capabilities.states_amount for integration_id, adapter in adapters.items()},
        )
        for result, count in outcomes.items():
            UNKNOWN_EVENTS_REEXAMINED.labels(result).inc(count)
        return sum(outcomes.values()) == healing.poll_batch

    runtime.spawn(run_every("unknown_event_reexaminer", healing.poll_interval_s, reexamine_unknown_events))
    runtime.spawn(
        run_every(
            "refund_dispatcher",
            healing.poll_interval_s,
            functools.partial(refunds.dispatch_refunds_once, pool, adapters),
        )
    )
    runtime.add_retention(
        "processor_event_bodies", store.FORGET_EVENT_BODIES_SQL, settings.retention.processor_event_body_days
    )
    runtime.add_retention(
        "sandbox_checkouts", store.DELETE_SANDBOX_CHECKOUTS_SQL, settings.retention.sandbox_checkout_days
    )
