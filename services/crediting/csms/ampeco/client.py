"""AMPECO's public API over HTTP: the CSMS interface (read a user, credit, debit) and the few tenant
calls setup needs, authenticated with a static bearer token or OAuth client credentials.

Which failures may have changed a balance is decided here: a connection that was never made (refused,
DNS, connect timeout) changed nothing; a timeout or reset after the request was written, or a 5xx,
may have (``Uncertain``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from services.crediting.csms import (
    BalanceChange,
    CallOutcome,
    CsmsUnavailable,
    CsmsUser,
    NotSent,
    Uncertain,
    UnknownUser,
    UserRefused,
)
from services.crediting.csms.ampeco import wire
from shared.logging import get_logger
from shared.settings import CsmsSettings

log = get_logger(__name__)

# A connection that cannot be made within this long was never a request (so never uncertain).
CONNECT_TIMEOUT_CAP_S = 5.0
# An OAuth token is replaced this long before it expires.
TOKEN_REFRESH_MARGIN_S = 30.0
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class _TokenSource:
    """The bearer for each call: the static API token, or an OAuth access token exchanged at
    ``POST /public-api/oauth/token`` (RFC 6749 §4.4) and exchanged again on expiry or a 401."""

    def __init__(self, settings: CsmsSettings, http: aiohttp.ClientSession, base_url: str) -> None:
        self._static = settings.api_token.get_secret_value() if settings.api_token is not None else None
        self._client_id = settings.client_id
        self._client_secret = settings.client_secret
        self._http = http
        self._url = base_url + wire.OAUTH_TOKEN_PATH
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def can_refresh(self) -> bool:
        return self._static is None

    async def token(self, within_s: float) -> str:
        """The bearer to send now; waiting (for another call's exchange too) at most ``within_s``,
        so that a call never goes out later than its dispatcher can answer for."""
        if self._static is not None:
            return self._static
        try:
            async with asyncio.timeout(within_s):
                async with self._lock:
                    if self._token is None or time.monotonic() >= self._expires_at - TOKEN_REFRESH_MARGIN_S:
                        await self._exchange()
                    assert self._token is not None
                    return self._token
        except TimeoutError:
            raise CsmsUnavailable("no OAuth token in time") from None

    async def refresh(self, refused: str, within_s: float) -> None:
        """After a 401 for ``refused``: a new token, unless another call already replaced it."""
        try:
            async with asyncio.timeout(within_s):
                async with self._lock:
                    if self._token == refused:
                        await self._exchange()
        except TimeoutError:
            raise CsmsUnavailable("no OAuth token in time", unauthorized=True) from None

    async def _exchange(self) -> None:
        assert self._client_id is not None and self._client_secret is not None
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        try:
            async with self._http.post(self._url, data=form, headers={"Accept": "application/json"}) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise CsmsUnavailable(f"OAuth token exchange failed: {type(exc).__name__}") from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            refused = f"OAuth token exchange refused: HTTP {status} {error or ''}".strip()
            raise CsmsUnavailable(refused, unauthorized=True)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 3600.0
        self._token = body["access_token"]
        self._expires_at = time.monotonic() + lifetime
        log.info("ampeco_token_exchanged", expires_in_s=lifetime)


class AmpecoClient:
    kind = "ampeco"

    def __init__(self, settings: CsmsSettings, currency: str, http: aiohttp.ClientSession | None = None) -> None:
        assert settings.base_url is not None
        self.settings = settings
        self.currency = currency
        self.base_url = settings.base_url.rstrip("/")
        timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_s, connect=min(CONNECT_TIMEOUT_CAP_S, settings.request_timeout_s / 2)
        )
        self._own_http = http is None
        self.http = http or aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=settings.max_concurrent_calls * 2)
        )
        self.tokens = _TokenSource(settings, self.http, self.base_url)

    async def close(self) -> None:
        if self._own_http:
            await self.http.close()

    async def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, Mapping[str, str], str]:
        # The token is had before anything is sent (bounded), the request within its own timeout.
        token = await self.tokens.token(self.settings.request_timeout_s)
        headers = {**JSON_HEADERS, "Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.base_url + path, data=body, headers=headers) as response:
            return response.status, await response.read(), dict(response.headers), token

    async def _read(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        """A call that changes no balance: a failure is only :class:`CsmsUnavailable`; a 401 with
        OAuth is answered with a new token and one more try."""
        for attempt in range(2):
            try:
                status, payload, headers, token = await self._send(method, path, body)
            except CsmsUnavailable:
                raise
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise CsmsUnavailable(f"{method} {path.split('/')[3]}: {type(exc).__name__}") from None
            if status == 401 and self.tokens.can_refresh and attempt == 0:
                await self.tokens.refresh(token, self.settings.request_timeout_s)
                continue
            if status == 429:
                wait_s = wire.retry_after_s(headers, datetime.now(UTC))
                raise CsmsUnavailable("rate limited (429)", retry_after_s=wait_s)
            if status == 401:
                raise CsmsUnavailable("token refused (401)", unauthorized=True)
            return status, payload, token
        raise AssertionError("unreachable")

    async def read_user(self, user_id: str) -> CsmsUser:
        status, payload, _ = await self._read("GET", wire.USER_PATH.format(user=wire.ampeco_user(user_id)))
        if status == 404:
            raise UnknownUser(user_id)
        if status in (400, 403, 422):
            raise UserRefused(f"reading the user answered HTTP {status}")
        if status != 200:
            raise CsmsUnavailable(f"reading a user answered HTTP {status}")
        try:
            locale, balance = wire.user_locale_and_balance(payload)
        except wire.WireError as exc:
            raise CsmsUnavailable(f"reading a user: {exc}") from None
        return CsmsUser(user_id=user_id, locale=locale, balance=balance)

    async def credit(self, change: BalanceChange) -> CallOutcome:
        return await self._change(change)

    async def debit(self, change: BalanceChange) -> CallOutcome:
        return await self._change(change)

    async def _change(self, change: BalanceChange) -> CallOutcome:
        amount = wire.ampeco_amount(change.amount_minor, change.currency)
        body = wire.change_body(change.direction, amount, change.reason, change.app_info)
        path = wire.change_path(change.direction, change.user_id)
        for attempt in range(2):
            try:
                status, payload, headers, token = await self._send("POST", path, body)
            except CsmsUnavailable as exc:
                return NotSent(exc.reason, retry_after_s=exc.retry_after_s, unauthorized=exc.unauthorized)
            except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
                # The connection was never made: no request reached AMPECO.
                return NotSent(f"not connected: {type(exc).__name__}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Written, then no answer (timeout, reset, broken answer): it may have been applied.
                return Uncertain(f"no answer: {type(exc).__name__}")
            outcome = wire.change_outcome(
                status, payload, headers, datetime.now(UTC), can_refresh_token=self.tokens.can_refresh
            )
            if isinstance(outcome, NotSent) and outcome.unauthorized and self.tokens.can_refresh and attempt == 0:
                # A 401 applied nothing: one more try with a fresh token is safe.
                try:
                    await self.tokens.refresh(token, self.settings.request_timeout_s)
                except CsmsUnavailable as exc:
                    return NotSent(exc.reason, unauthorized=True)
                continue
            return outcome
        raise AssertionError("unreachable")

    async def base_currency(self) -> str:
        """The ISO code of the tenant's base currency (settings → currencies)."""
        status, payload, _ = await self._read("GET", wire.SETTINGS_PATH)
        settings = _json_object(status, payload, "settings")
        data = settings.get("data")
        base = data.get("baseCurrency") if isinstance(data, dict) else None
        currency_id = base.get("id") if isinstance(base, dict) else None
        if isinstance(currency_id, bool) or not isinstance(currency_id, int):
            raise CsmsUnavailable("the tenant's settings name no base currency")
        status, payload, _ = await self._read("GET", wire.CURRENCY_PATH.format(currency=currency_id))
        code = _json_object(status, payload, "currency").get("alphabeticCode")
        if not isinstance(code, str):
            raise CsmsUnavailable("the tenant's base currency has no alphabeticCode")
        return code

    async def subscriptions(self) -> list[dict[str, Any]]:
        status, payload, _ = await self._read("GET", wire.NOTIFICATIONS_PATH + "?per_page=100")
        data = _json_object(status, payload, "notifications").get("data")
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    async def subscribe(self, callback_url: str) -> tuple[str, str]:
        """Subscribe ``callback_url`` to ``userBalance.changed``; the subscription's id and the token
        that created it (AMPECO signs its notifications with that token)."""
        body = {"via": "webhook", "notifications": [wire.BALANCE_CHANGED], "webhook": {"callbackUrl": callback_url}}
        status, payload, token = await self._read("POST", wire.NOTIFICATIONS_PATH, json.dumps(body).encode())
        if status not in (200, 201):
            raise CsmsUnavailable(f"subscribing to notifications answered HTTP {status}")
        data = _json_object(status, payload, "subscription").get("data")
        subscription_id = data.get("id") if isinstance(data, dict) else None
        if subscription_id is None:
            raise CsmsUnavailable("the new subscription has no id")
        return str(subscription_id), token


def _json_object(status: int, payload: bytes, what: str) -> dict[str, Any]:
    if status not in (200, 201):
        raise CsmsUnavailable(f"reading {what} answered HTTP {status}")
    try:
        data = json.loads(payload)
    except ValueError:
        raise CsmsUnavailable(f"{what}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise CsmsUnavailable(f"{what}: the answer is not a JSON object")
    return data
