"""Page: the driver-facing top-up page and its JSON API; owns top-up orders."""

from __future__ import annotations

from services.page import api, consumers, events, history, pages
from services.page.i18n import override_problems, uncompiled_locales
from services.page.open_launch import LaunchLimits
from shared.amqp import PAGE_QUEUE, IdempotentConsumer, RpcClient, trusted_publishers
from shared.http import compression_middleware
from shared.messages import CreditApplied, PaymentFailed, PaymentNeedsReview, PaymentSucceeded
from shared.runtime import Runtime
from shared.settings import ConfigError

NAME = "page"


async def build(runtime: Runtime) -> None:
    operator = runtime.settings.operator
    uncompiled = uncompiled_locales(operator.locales, operator.translations_dir)
    if uncompiled:
        raise ConfigError(f"operator.locales: no compiled catalogue for {uncompiled}: run `make catalogs`")
    problems = override_problems(operator.translations_dir)
    if problems:
        raise ConfigError(f"operator.translations_dir: {'; '.join(problems[:5])}")
    # The driver is on a phone, often on a slow network: HTML, CSS and scripts go compressed.
    runtime.app.middlewares.append(compression_middleware())
    rpc = RpcClient(runtime.settings.amqp, NAME)
    runtime.on_cleanup(rpc.close)
    runtime.app[api.RPC_KEY] = rpc
    runtime.app[pages.LIMITS_KEY] = LaunchLimits.default()
    api.add_routes(runtime.app, runtime.settings.launch.mode)
    pages.add_routes(runtime.app)
    history.attach(runtime)
    # One LISTEN connection for the return pages' live status (GET /topup/{id}/events).
    events.attach(runtime)
    consumer = IdempotentConsumer(
        NAME,
        PAGE_QUEUE,
        runtime.pool,
        {
            PaymentSucceeded: consumers.on_payment_succeeded,
            PaymentFailed: consumers.on_payment_failed,
            PaymentNeedsReview: consumers.on_payment_needs_review,
            CreditApplied: consumers.on_credit_applied,
        },
        publishers=trusted_publishers(runtime.settings.amqp),
        user=runtime.broker_user,
    )
    await consumer.start(runtime.connection, runtime.settings.amqp.prefetch)
    runtime.add_consumer(consumer)
