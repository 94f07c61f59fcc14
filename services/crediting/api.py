"""Crediting's HTTP API: driver balances and ledger entries, behind a bearer token."""

from __future__ import annotations

import hmac

from aiohttp import web

from services.crediting import store
from shared.http import Problem, json_response
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings

ENTRIES_LIMIT_MAX = 500


def _authorize(request: web.Request) -> Settings:
    settings = request.app[SETTINGS_KEY]
    expected = f"Bearer {settings.crediting.api_token.get_secret_value()}".encode()
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise Problem(401, "Unauthorized", "a valid bearer token is required")
    return settings


async def get_balance(request: web.Request) -> web.Response:
    settings = _authorize(request)
    user_id = request.match_info["user_id"]
    currency = settings.operator.currency
    balance_minor = await store.balance(request.app[POOL_KEY], user_id, currency)
    return json_response({"user_id": user_id, "balance_minor": balance_minor, "currency": currency})


async def get_entries(request: web.Request) -> web.Response:
    settings = _authorize(request)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise Problem(400, "Bad query", "limit must be an integer") from None
    if not 1 <= limit <= ENTRIES_LIMIT_MAX:
        raise Problem(400, "Bad query", f"limit must be between 1 and {ENTRIES_LIMIT_MAX}")
    user_id = request.match_info["user_id"]
    rows = await store.entries(request.app[POOL_KEY], user_id, settings.operator.currency, limit)
    return json_response({"user_id": user_id, "entries": rows})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/users/{user_id}/balance", get_balance)
    app.router.add_get("/api/v1/users/{user_id}/entries", get_entries)
