"""What must hold in the AMPECO tenant before a credit is sent, checked at crediting's start and by
``evtopup setup``: its base currency is ours, and a ``userBalance.changed`` subscription to our
``notification_url`` exists, with the token that created it kept as its signatures' key."""

from __future__ import annotations

import asyncpg

from services.crediting import store
from services.crediting.csms.ampeco import wire
from services.crediting.csms.ampeco.client import AmpecoClient
from shared.db import Connection
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)


class TenantMismatch(Exception):
    """The tenant cannot take our credits as configured (a one-line reason)."""


def _is_ours(subscription: dict[str, object], url: str) -> bool:
    webhook = subscription.get("webhook")
    notifications = subscription.get("notifications")
    return (
        subscription.get("via") == "webhook"
        and isinstance(webhook, dict)
        and webhook.get("callbackUrl") == url
        and isinstance(notifications, list)
        and wire.BALANCE_CHANGED in notifications
    )


# Held while the subscription is looked for and made: two replicas starting at once make one.
SUBSCRIBE_LOCK = 0x65_76_74_6F_70_75_70  # "evtopup"


async def prepare_tenant(client: AmpecoClient, pool: asyncpg.Pool, settings: Settings) -> str:
    """Check the currency and make sure of the subscription; says what it did."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", SUBSCRIBE_LOCK)
        try:
            return await _prepare(client, conn, settings)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SUBSCRIBE_LOCK)


async def _prepare(client: AmpecoClient, conn: Connection, settings: Settings) -> str:
    currency = await client.base_currency()
    if currency != settings.operator.currency:
        raise TenantMismatch(
            f"csms: the AMPECO tenant's base currency is {currency}, but operator.currency is"
            f" {settings.operator.currency}: balances would be credited in the wrong currency"
        )
    url = settings.csms.notification_url
    assert url is not None
    ours = [s for s in await client.subscriptions() if _is_ours(s, url)]
    known = await store.known_subscriptions(conn)
    if any(str(s.get("id")) in known for s in ours):
        return "subscription present"
    static = settings.csms.api_token is not None
    if ours and static:
        # Made earlier with the static token (by us, before our database knew it): that token signs.
        await store.save_subscription(conn, str(ours[0].get("id")), url, None)
        return "subscription adopted"
    subscription_id, key = await client.subscribe(url)
    # The static token is never copied into the database (None stands for it); an OAuth access
    # token that made a subscription is kept, as AMPECO signs with it after it expires.
    await store.save_subscription(conn, subscription_id, url, None if static else key)
    log.info("ampeco_subscription_created", subscription_id=subscription_id)
    return "subscription created"
