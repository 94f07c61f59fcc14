"""The user lookup the page calls over RabbitMQ: does the CSMS know this user, and in which locale
does the user's app run (open launches, and signed ones whose token names no language we offer).

With ``"balance": true`` the reply also carries the user's balance before paying (``balance_minor``
in the operator's currency, null when it cannot be told exactly), for the page's form, and only when
the page takes signed launches (``launch.mode = "signed"``): in open mode anyone can type an id, so
a balance is never part of the answer, whatever the request asks."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import asyncpg

from services.crediting import domain, store
from services.crediting.csms import Csms, CsmsUnavailable, UnknownUser, UserRefused
from shared import pricing
from shared.amqp import RpcError, RpcHandler
from shared.metrics import RPC_REQUESTS
from shared.money import MoneyError, from_major
from shared.settings import Settings


def user_lookup_handler(csms: Csms, settings: Settings, pool: asyncpg.Pool | None = None) -> RpcHandler:
    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        user_id = request.get("user_id")
        if not isinstance(user_id, str) or re.fullmatch(settings.user_id_pattern, user_id) is None:
            raise ValueError("user_id is not a user id of this CSMS")
        try:
            user = await csms.read_user(user_id)
        except UnknownUser:
            RPC_REQUESTS.labels("server", "unknown_user").inc()
            return {"user_id": user_id, "exists": False, "locale": None}
        except (CsmsUnavailable, UserRefused) as exc:
            RPC_REQUESTS.labels("server", "csms_unavailable").inc()
            raise RpcError("csms_unavailable", exc.reason) from None
        RPC_REQUESTS.labels("server", "ok").inc()
        reply: dict[str, Any] = {"user_id": user_id, "exists": True, "locale": user.locale}
        if request.get("balance") is True and settings.launch.mode == "signed":
            reply["balance_minor"] = await _balance_minor(settings, pool, user_id, user.balance)
            reply["currency"] = settings.operator.currency
        return reply

    return handle


async def _balance_minor(
    settings: Settings, pool: asyncpg.Pool | None, user_id: str, csms_balance: Decimal | None
) -> int | None:
    """The balance the driver's top-up would add to: test money lives in the ledger's test accounts
    (and with the built-in ledger every balance does); real money with AMPECO is AMPECO's balance,
    when AMPECO tells it and it is a whole number of minor units."""
    currency = settings.operator.currency
    environment = settings.integrations[pricing.integration_for_user(settings, user_id)].environment
    if domain.confirmed_in_ledger(settings.csms.kind, environment) and pool is not None:
        return await store.balance(pool, user_id, currency, environment)
    if csms_balance is None:
        return None
    try:
        return from_major(csms_balance, currency)
    except MoneyError:
        return None
