"""AMPECO's wire format as pure functions (AMPECO Public API 3.110.0, the excerpt in
``tests/simulators/ampeco_openapi.json``): amounts, request bodies, what an answer means, and the
``userBalance.changed`` notification with its signature. No I/O here."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime

from services.crediting.csms import CallOutcome, Delivered, Direction, Failed, NotSent, Uncertain
from shared.money import MoneyError, currency_exponent, to_major

API_PREFIX = "/public-api"
ADD_BALANCE_PATH = API_PREFIX + "/actions/users/v1.0/{user}/add-balance"
CUSTOM_FEE_PATH = API_PREFIX + "/actions/users/v1.0/{user}/apply-custom-fee"
USER_PATH = API_PREFIX + "/resources/users/v1.0/{user}"
SETTINGS_PATH = API_PREFIX + "/resources/settings/v1.0"
CURRENCY_PATH = API_PREFIX + "/resources/currencies/v2.0/{currency}"
NOTIFICATIONS_PATH = API_PREFIX + "/notifications/v2.0"
OAUTH_TOKEN_PATH = API_PREFIX + "/oauth/token"

BALANCE_CHANGED = "userBalance.changed"
# ``amount`` is ``multipleOf: 0.001``: a currency with a finer minor unit cannot be sent exactly.
MAX_DECIMALS = 3
APP_INFO_MAX = 2000
# The ``type`` an apply-custom-fee debit produces. Which type add-balance produces is undocumented:
# ``csms.credit_notification_types`` (api_top_up, add_to_balance by default). A voucher, promo code,
# the driver's own top-up or a charging session is never evidence of our call.
DEBIT_TYPES = frozenset({"custom_fee"})
# Every type an API call can produce, whichever add-balance turns out to make (for reconciling).
API_CHANGE_TYPES = frozenset({"api_top_up", "add_to_balance"}) | DEBIT_TYPES
# Rate-limit answers without a usable hint are retried after this long.
DEFAULT_RETRY_AFTER_S = 5.0


class WireError(ValueError):
    """Something AMPECO sent (or would be sent) that does not follow the documented format."""


def ampeco_amount(amount_minor: int, currency: str) -> Decimal:
    """Minor units as AMPECO's decimal amount in the tenant's base currency, exactly:
    2500 EUR -> 25.00, 2500 JPY -> 2500, 2500 KWD -> 2.500. Never through a float."""
    if amount_minor <= 0:
        raise WireError("an AMPECO amount must be positive")
    try:
        if currency_exponent(currency) > MAX_DECIMALS:
            raise WireError(f"{currency} has more decimals than AMPECO's amounts (multipleOf 0.001)")
    except MoneyError as exc:
        raise WireError(str(exc)) from None
    return to_major(amount_minor, currency)


def _json_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def change_body(direction: Direction, amount: Decimal, reason: str, app_info: str) -> bytes:
    """The JSON body of add-balance (``{amount, reason, app_info}``) or apply-custom-fee
    (``{amount, description, paymentMethodId: null}``: null takes it from the balance). The amount is
    written as the decimal itself, so no float ever rounds it."""
    if len(app_info) > APP_INFO_MAX:
        raise WireError(f"app_info is longer than {APP_INFO_MAX} characters")
    number = format(amount, "f")
    if direction == "credit":
        text = f'{{"amount":{number},"reason":{_json_string(reason)},"app_info":{_json_string(app_info)}}}'
    else:
        text = f'{{"amount":{number},"description":{_json_string(reason)},"paymentMethodId":null}}'
    return text.encode()


def change_path(direction: Direction, user_id: str) -> str:
    return (ADD_BALANCE_PATH if direction == "credit" else CUSTOM_FEE_PATH).format(user=ampeco_user(user_id))


def ampeco_user(user_id: str) -> int:
    """AMPECO user ids are positive integers (the path parameter is ``type: integer``)."""
    if not user_id.isascii() or not user_id.isdigit() or user_id.startswith("0"):
        raise WireError(f"not an AMPECO user id: {user_id!r}")
    return int(user_id)


def retry_after_s(headers: Mapping[str, str], now: datetime) -> float:
    """How long a 429 asks to wait: ``Retry-After`` (seconds or an HTTP date), else
    ``X-RateLimit-Reset`` (epoch seconds), else a default."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            seconds = float(reset) - now.timestamp()
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return DEFAULT_RETRY_AFTER_S


def _message(body: bytes) -> str:
    """AMPECO's error ``message`` (and the fields ``errors`` names), short and safe to log."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    message = str(data.get("message", ""))[:200]
    errors = data.get("errors")
    if isinstance(errors, dict) and errors:
        message += f" (fields: {', '.join(sorted(str(k) for k in errors)[:10])})"
    return message


def change_outcome(
    status: int, body: bytes, headers: Mapping[str, str], now: datetime, *, can_refresh_token: bool
) -> CallOutcome:
    """What an answer to add-balance or apply-custom-fee means. 202: delivered. 429: not applied,
    after the rate limit. 401: not applied; with OAuth the caller refreshes its token and tries once
    more, with a static token it stops. 400/403/404/422: refused for good. 5xx (or anything else):
    the action may have been applied, so uncertain."""
    if status == 202:
        return Delivered()
    if status == 429:
        return NotSent("rate limited (429)", retry_after_s=retry_after_s(headers, now))
    if status == 401:
        reason = "token refused (401)" + ("" if can_refresh_token else ": the static API token is not valid")
        return NotSent(reason, unauthorized=True)
    if status in (400, 403, 404, 409, 422):
        message = _message(body)
        insufficient = status == 400 and "insufficient" in message.lower()
        return Failed(f"{status} {message}".strip(), insufficient_balance=insufficient)
    return Uncertain(f"HTTP {status}")


def verify_ampeco_signature(body: bytes, signature: str | None, keys: Iterable[str]) -> bool:
    """``X-Signature`` is the HMAC-SHA256 of the raw body keyed with the token that created the
    subscription; AMPECO does not say hex or base64, so either is accepted (compared in constant
    time against every key we hold)."""
    if not signature:
        return False
    given = signature.strip()
    candidates: list[bytes] = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(given))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(given, validate=True))
    for key in keys:
        if not key:
            continue
        expected = hmac.new(key.encode(), body, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return True
    return False


def parse_timestamp(value: str | None) -> datetime:
    """An ISO-8601 timestamp (AMPECO's ``X-Timestamp`` has microseconds and a ``Z``), as UTC."""
    if not value:
        raise WireError("timestamp missing")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WireError(f"not an ISO-8601 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise WireError("timestamp without a time zone")
    return parsed.astimezone(UTC)


def timestamp_is_fresh(sent: datetime, now: datetime, max_skew_s: float) -> bool:
    return abs((now - sent).total_seconds()) <= max_skew_s


@dataclass(frozen=True)
class BalanceNotification:
    """A ``userBalance.changed`` notification: one change of one user's balance."""

    user_id: str
    credit: Decimal
    debit: Decimal
    updated_balance: Decimal
    currency: str
    type: str
    transaction_id: int | None
    occurred_at: datetime

    def matches(self, direction: Direction, amount: Decimal, credit_types: Iterable[str]) -> bool:
        """Whether this change is what our credit (or debit) of ``amount`` would have produced."""
        if direction == "credit":
            return self.type in credit_types and self.credit == amount and self.debit == 0
        return self.type in DEBIT_TYPES and self.debit == amount and self.credit == 0

    @property
    def identity(self) -> str:
        """What makes two deliveries of a notification the same change, however AMPECO serialises
        it again on a retry: a duplicate or a replay has the same identity."""
        return json.dumps(
            [
                self.user_id,
                str(self.credit),
                str(self.debit),
                str(self.updated_balance),
                self.currency,
                self.type,
                self.transaction_id,
                self.occurred_at.isoformat(),
            ]
        )


def _decimal(data: Mapping[str, object], key: str) -> Decimal:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise WireError(f"{key} must be a number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise WireError(f"{key} must be a number") from None
    if not number.is_finite():
        raise WireError(f"{key} must be a finite number")
    return number


def parse_balance_notification(body: bytes) -> BalanceNotification | None:
    """The notification in ``body``; None for another kind of notification (acknowledged and
    ignored); :class:`WireError` when it does not follow the callback schema."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise WireError("body is not JSON") from None
    if not isinstance(data, dict):
        raise WireError("body is not a JSON object")
    if data.get("notification") != BALANCE_CHANGED:
        return None
    user = data.get("userId")
    if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
        raise WireError("userId must be a positive integer")
    currency = data.get("currency")
    if not isinstance(currency, str) or len(currency) != 3:
        raise WireError("currency must be a 3-letter code")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise WireError("type must be a string")
    transaction_id = data.get("transactionId")
    if transaction_id is not None and (isinstance(transaction_id, bool) or not isinstance(transaction_id, int)):
        raise WireError("transactionId must be an integer or null")
    timestamp = data.get("timestamp")
    return BalanceNotification(
        user_id=str(user),
        credit=_decimal(data, "credit"),
        debit=_decimal(data, "debit"),
        updated_balance=_decimal(data, "updatedBalance"),
        currency=currency,
        type=kind,
        transaction_id=transaction_id,
        occurred_at=parse_timestamp(timestamp if isinstance(timestamp, str) else None),
    )


def user_locale_and_balance(body: bytes) -> tuple[str | None, Decimal | None]:
    """The ``locale`` and ``balance`` of a ``GET users/v1.0/{user}`` answer (``balance`` is left
    out for a partner's user without "addUserBalance" permission)."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise WireError("user answer is not JSON") from None
    user = data.get("data") if isinstance(data, dict) else None
    if not isinstance(user, dict):
        raise WireError("user answer has no data object")
    locale = user.get("locale")
    balance = _decimal(user, "balance") if "balance" in user and user["balance"] is not None else None
    return (locale if isinstance(locale, str) and locale else None), balance
