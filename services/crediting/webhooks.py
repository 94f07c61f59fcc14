"""``POST /webhooks/ampeco``: AMPECO's ``userBalance.changed`` notifications, the evidence that settles
a delivery whose answer was lost. Verified on the raw body (``X-Signature``, HMAC-SHA256 keyed with the
token that created the subscription), fresh (``X-Timestamp`` within ``csms.notification_max_skew_s``),
recorded once by the body's hash: anything unsigned, forged, stale or replayed changes nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from services.crediting import service, store
from services.crediting.csms.ampeco import wire
from services.crediting.metrics import CSMS_NOTIFICATIONS
from shared.http import Problem, json_response
from shared.logging import get_logger
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings

log = get_logger(__name__)

MAX_NOTIFICATION_BYTES = 64 * 1024
# A body older than this is refused whatever its headers say: its hash may be gone from the table by
# then (retention.inbox_days bounds how long hashes are kept), so a replay could not be told apart.
MAX_BODY_AGE = timedelta(days=7)
KEYS_CACHE_S = 10.0
RELOAD_MIN_S = 1.0


class SigningKeys:
    """The subscriptions' keys, read from the database at most every few seconds (and read again
    early, at most once a second, when a signature does not verify: a replica may just have made
    a subscription)."""

    def __init__(self, static_token: str | None) -> None:
        self._static_token = static_token
        self._keys: list[str] = []
        self._read_at = -KEYS_CACHE_S

    async def get(self, pool: asyncpg.Pool) -> list[str]:
        if time.monotonic() - self._read_at >= KEYS_CACHE_S:
            stored = await store.signing_keys(pool)
            self._keys = [key if key is not None else (self._static_token or "") for key in stored]
            self._read_at = time.monotonic()
        return self._keys

    def forget(self) -> bool:
        """Read again on the next ``get``; False if the keys are not a second old."""
        if time.monotonic() - self._read_at < RELOAD_MIN_S:
            return False
        self._read_at = -KEYS_CACHE_S
        return True


SIGNING_KEYS_KEY = web.AppKey("ampeco_signing_keys", SigningKeys)


def _refuse(result: str, status: int, title: str, detail: str) -> Problem:
    CSMS_NOTIFICATIONS.labels(result).inc()
    log.warning("ampeco_notification_refused", result=result, detail=detail)
    return Problem(status, title, detail)


async def receive_ampeco_notification(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    pool = request.app[POOL_KEY]
    if request.content_length is not None and request.content_length > MAX_NOTIFICATION_BYTES:
        raise Problem(413, "Notification too large")
    # The whole body (the app's client_max_size bounds a chunked one), then its exact size.
    body = await request.read()
    if len(body) > MAX_NOTIFICATION_BYTES:
        raise Problem(413, "Notification too large")
    keys_cache = request.app[SIGNING_KEYS_KEY]
    signature = request.headers.get("X-Signature")
    verified = wire.verify_ampeco_signature(body, signature, await keys_cache.get(pool))
    if not verified and keys_cache.forget():
        verified = wire.verify_ampeco_signature(body, signature, await keys_cache.get(pool))
    if not verified:
        raise _refuse("invalid_signature", 401, "Invalid signature", "X-Signature does not verify")
    now = datetime.now(UTC)
    try:
        sent = wire.parse_timestamp(request.headers.get("X-Timestamp"))
    except wire.WireError as exc:
        raise _refuse("stale", 401, "Stale notification", f"X-Timestamp: {exc}") from None
    if not wire.timestamp_is_fresh(sent, now, settings.csms.notification_max_skew_s):
        raise _refuse("stale", 401, "Stale notification", "X-Timestamp is not within the allowed window")
    try:
        note = wire.parse_balance_notification(body)
    except (wire.WireError, RecursionError) as exc:
        raise _refuse("bad_request", 400, "Malformed notification", str(exc)) from None
    if note is None:
        CSMS_NOTIFICATIONS.labels("other_kind").inc()
        return json_response({"received": 0}, status=202)
    if now - note.occurred_at > MAX_BODY_AGE:
        raise _refuse("stale", 401, "Stale notification", "the change is older than any replay can be told apart")
    async with pool.acquire() as conn, conn.transaction():
        result = await service.receive_notification(conn, settings, note)
    CSMS_NOTIFICATIONS.labels(result).inc()
    log.info("ampeco_notification", result=result, change_type=note.type)
    return json_response({"received": 1}, status=202)


def add_routes(app: web.Application, settings: Settings) -> None:
    token = settings.csms.api_token
    app[SIGNING_KEYS_KEY] = SigningKeys(token.get_secret_value() if token is not None else None)
    app.router.add_post("/webhooks/ampeco", receive_ampeco_notification)
