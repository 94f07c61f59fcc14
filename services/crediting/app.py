"""Crediting: consumes payment events, keeps the double-entry ledger, serves balances, and delivers
each credit to the CSMS the balances live in (the built-in ledger, or AMPECO)."""

from __future__ import annotations

import asyncpg

from services.crediting import api, consumers, webhooks
from services.crediting.csms import Csms
from services.crediting.csms.ampeco.client import AmpecoClient
from services.crediting.csms.ampeco.tenant import prepare_tenant
from services.crediting.csms.ledger import LedgerCsms
from services.crediting.dispatcher import DeliveryDispatcher
from services.crediting.user_rpc import user_lookup_handler
from shared.amqp import CREDITING_QUEUE, CSMS_USER_RPC_QUEUE, IdempotentConsumer, RpcServer, trusted_publishers
from shared.logging import get_logger
from shared.runtime import Runtime, service_dsn
from shared.settings import Settings

NAME = "crediting"
# userBalance.changed bodies are kept at least this long: a replay must find its hash.
NOTIFICATION_MIN_RETENTION_DAYS = 8.0
NOTIFICATION_RETENTION_SQL = (
    "DELETE FROM csms_notifications WHERE id IN (SELECT id FROM csms_notifications WHERE received_at < $1 LIMIT $2)"
)

log = get_logger(__name__)


def build_csms(settings: Settings, pool: asyncpg.Pool) -> Csms:
    if settings.csms.kind == "ampeco":
        return AmpecoClient(settings.csms, settings.operator.currency)
    return LedgerCsms(pool, settings.operator.currency)


async def build(runtime: Runtime) -> None:
    settings = runtime.settings
    csms = build_csms(settings, runtime.pool)
    runtime.on_cleanup(csms.close)
    if isinstance(csms, AmpecoClient):
        log.info("ampeco_tenant_ready", result=await prepare_tenant(csms, runtime.pool, settings))
        webhooks.add_routes(runtime.app, settings)
        dispatcher = DeliveryDispatcher(settings, service_dsn(settings, NAME), runtime.pool, csms)
        runtime.spawn(dispatcher.run())
        runtime.add_retention(
            "csms_notifications",
            NOTIFICATION_RETENTION_SQL,
            max(settings.retention.inbox_days, NOTIFICATION_MIN_RETENTION_DAYS),
        )
    api.add_routes(runtime.app)
    consumer = IdempotentConsumer(
        NAME,
        CREDITING_QUEUE,
        runtime.pool,
        consumers.payment_event_handlers(settings),
        publishers=trusted_publishers(settings.amqp),
        user=runtime.broker_user,
    )
    await consumer.start(runtime.connection, settings.amqp.prefetch)
    runtime.add_consumer(consumer)
    users = RpcServer(CSMS_USER_RPC_QUEUE, user_lookup_handler(csms, settings, runtime.pool))
    await users.start(runtime.connection)
    runtime.add_consumer(users)
