"""Crediting's HTTP API: driver balances and ledger entries, behind a bearer token."""

from __future__ import annotations

import hmac

from aiohttp import web

from services.crediting import store
from shared.http import NO_STORE, Problem, json_response
from shared.messages import Environment
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings

ENTRIES_LIMIT_MAX = 500
ENVIRONMENTS: dict[str, Environment] = {"production": "production", "test": "test"}


def _authorize(request: web.Request) -> Settings:
    settings = request.app[SETTINGS_KEY]
    expected = f"Bearer {settings.crediting.api_token.get_secret_value()}".encode()
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise Problem(401, "Unauthorized", "a valid bearer token is required")
    return settings


def _environment(request: web.Request) -> Environment:
    """Real balances unless ``?environment=test`` asks for a tester's test money."""
    environment = ENVIRONMENTS.get(request.query.get("environment", "production"))
    if environment is None:
        raise Problem(400, "Bad query", "environment must be production or test")
    return environment


async def get_balance(request: web.Request) -> web.Response:
    settings = _authorize(request)
    user_id = request.match_info["user_id"]
    currency = settings.operator.currency
    environment = _environment(request)
    balance_minor = await store.balance(request.app[POOL_KEY], user_id, currency, environment)
    return json_response(
        {"user_id": user_id, "balance_minor": balance_minor, "currency": currency, "environment": environment},
        headers=NO_STORE,
    )


async def get_entries(request: web.Request) -> web.Response:
    settings = _authorize(request)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise Problem(400, "Bad query", "limit must be an integer") from None
    if not 1 <= limit <= ENTRIES_LIMIT_MAX:
        raise Problem(400, "Bad query", f"limit must be between 1 and {ENTRIES_LIMIT_MAX}")
    user_id = request.match_info["user_id"]
    environment = _environment(request)
    rows = await store.entries(request.app[POOL_KEY], user_id, settings.operator.currency, limit, environment)
    return json_response({"user_id": user_id, "environment": environment, "entries": rows}, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/users/{user_id}/balance", get_balance)
    app.router.add_get("/api/v1/users/{user_id}/entries", get_entries)
