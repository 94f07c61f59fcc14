"""An AMPECO.CHARGE tenant as the tests (and a benchmark) see it: the Public API calls a balance
top-up integration makes, with real balances, strict request validation against the spec, webhook
notifications and switchable faults. Written from the spec, not from ``services/crediting``, so the
client and this simulator cannot share one mistake.

The spec is AMPECO.CHARGE Public API 3.110.0 (ampeco/claude-code-ampeco-public-api-skill,
``openapi-spec.json``), trimmed to the operations served here in ``ampeco_openapi.json`` beside this
file. That copy is made by :func:`write_trimmed_spec` and nothing else, reproducibly::

    python -m tests.simulators.ampeco --write-spec /work/shared/reference/ampeco-public-api-topup-excerpt.json

What is served (all under ``/public-api``, all with ``Authorization: Bearer <token>``):

- ``POST actions/users/v1.0/{user}/add-balance`` (``userAddBalance``): ``{amount, reason, app_info?}``,
  ``amount`` ``multipleOf: 0.001``, ``app_info`` ``maxLength: 2000``, ``additionalProperties: false``.
  202 "Action accepted" with no body. No idempotency key, no transaction id (spec).
- ``POST actions/users/v1.0/{user}/apply-custom-fee`` (``userApplyCustomFee``): ``{amount, description,
  paymentMethodId?}``; with no payment method it takes the balance and "if the balance is insufficient,
  would reject the action" (spec): 400 "User has insufficient balance".
- ``GET resources/users/v1.0/{user}``, ``GET resources/settings/v1.0``,
  ``GET resources/currencies/v2.0/{currency}``, ``GET``/``POST notifications/v2.0``.
- ``POST oauth/token``: RFC 6749 §4.4 client credentials (not in 3.110.0; newer AMPECO docs describe it).

Every request is validated against the spec: path parameters (``user`` is an integer), request bodies
(required, types, ``additionalProperties``, ``maxLength``, ``enum``, ``format: uri``, ``nullable``;
``readOnly`` properties are not required in requests), and ``multipleOf`` checked EXACTLY on the
decimal text (JSON is parsed with ``parse_float=Decimal``; a float check would reject 25.1 because
25.1 / 0.001 = 25100.000000000004). A request the spec rejects gets AMPECO's 422
``{"message", "errors": {field: [..]}}`` and a readable line in ``spec_violations``.

Balance changes send ``userBalance.changed`` (the POST notifications/v2.0 callback schema) to each
subscription: compact JSON, ``X-Signature`` = HMAC-SHA256 of the raw body keyed with the token that
created the subscription (spec: "using the access token that was used when creating the
notification"), hex by default, ``X-Timestamp`` ISO-8601 with microseconds in Zulu, ``X-Tenant``.
They go out from background tasks, retried on a non-2xx answer or an unreachable receiver (spec:
"will be retried a number of times"), so one may well arrive before the API answer that caused it.

Faults (see :data:`CALL_FAULTS` and :data:`NOTIFICATION_FAULTS`) are queued per call with
:meth:`AmpecoSimulator.next_faults` or drawn from a seeded mix with
:meth:`AmpecoSimulator.set_fault_mix`; every fault that happened is counted in ``fault_counts`` /
``notification_fault_counts``.

Run as a process for a benchmark (no faults, answers at once; the token is read from the named
environment variable, never from the command line)::

    python -m tests.simulators.ampeco --port 8123 --api-token-env AMPECO_TOKEN --users 1..500 [--no-notifications]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import struct
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import aiohttp
import iso4217
import jsonschema
import jsonschema.validators
from aiohttp import web
from multidict import CIMultiDict

# --------------------------------------------------------------------------------------------------
# The spec copy
# --------------------------------------------------------------------------------------------------

SPEC_PATH = Path(__file__).with_name("ampeco_openapi.json")
SPEC_NOTE = (
    "Trimmed copy of AMPECO.CHARGE Public API 3.110.0, from ampeco/claude-code-ampeco-public-api-skill "
    "openapi-spec.json: only the operations tests/simulators/ampeco.py serves and the userBalance.changed "
    "callback. Made by tests.simulators.ampeco.write_trimmed_spec; do not edit by hand."
)
API = "/public-api"
ADD_BALANCE = API + "/actions/users/v1.0/{user}/add-balance"
CUSTOM_FEE = API + "/actions/users/v1.0/{user}/apply-custom-fee"
USER = API + "/resources/users/v1.0/{user}"
SETTINGS = API + "/resources/settings/v1.0"
CURRENCY = API + "/resources/currencies/v2.0/{currency}"
NOTIFICATIONS = API + "/notifications/v2.0"
OAUTH_TOKEN = API + "/oauth/token"
BALANCE_CHANGED = "userBalance.changed"

# path -> the methods kept from it (path-level ``parameters`` are always kept).
KEPT_OPERATIONS: dict[str, tuple[str, ...]] = {
    ADD_BALANCE: ("post",),
    CUSTOM_FEE: ("post",),
    USER: ("get",),
    SETTINGS: ("get",),
    CURRENCY: ("get",),
    NOTIFICATIONS: ("get", "post"),
}
KEPT_CALLBACKS = (BALANCE_CHANGED,)


def trim_spec(full: Mapping[str, Any]) -> dict[str, Any]:
    """The served operations of the full (or excerpt) spec, with only the kept callbacks."""
    paths: dict[str, Any] = {}
    for path, methods in KEPT_OPERATIONS.items():
        item = full["paths"][path]
        kept: dict[str, Any] = {k: v for k, v in item.items() if k == "parameters"}
        for method in methods:
            operation = dict(item[method])
            if "callbacks" in operation:
                operation["callbacks"] = {k: operation["callbacks"][k] for k in KEPT_CALLBACKS}
            kept[method] = operation
        paths[path] = kept
    trimmed = {
        "x-note": SPEC_NOTE,
        "openapi": full["openapi"],
        "info": {k: v for k, v in full["info"].items() if k in ("title", "version")},
        "servers": full["servers"],
        "security": full["security"],
        "paths": paths,
        "components": {"securitySchemes": full["components"]["securitySchemes"]},
    }
    if "$ref" in json.dumps(trimmed):
        raise ValueError("the trimmed spec has a $ref; this simulator does not resolve them")
    return trimmed


def write_trimmed_spec(source: Path, dest: Path = SPEC_PATH) -> None:
    """(Re)writes ``ampeco_openapi.json`` from the spec at ``source``. Floats round-trip through their
    shortest repr, so ``0.001`` is written as ``0.001``."""
    full = json.loads(source.read_text(encoding="utf-8"))
    dest.write_text(json.dumps(trim_spec(full), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# JSON with exact decimals
# --------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(raw: bytes | str) -> Any:
    """JSON with every non-integer number as a Decimal (never a float); NaN/Infinity are refused."""
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a JSON number")
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        raise TypeError("no floats here: money is Decimal")
    elif isinstance(value, str):
        out.append(json.dumps(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def dumps_exact(value: Any) -> bytes:
    """Compact JSON (no spaces), Decimals written as plain JSON numbers (``25.1``, never ``2.51E+1``)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Spec validation
# --------------------------------------------------------------------------------------------------

_SUBSCHEMA_MAPS = ("properties", "patternProperties")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not")


def openapi_to_json_schema(node: Any, *, request: bool) -> Any:
    """An OpenAPI 3.0 schema object as JSON Schema draft 4: ``nullable: true`` admits null, and
    ``readOnly`` (in requests) / ``writeOnly`` (in responses) properties are not required (OpenAPI
    3.0.3 §4.7.25: "required will take effect on the response only")."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: openapi_to_json_schema(s, request=request) for name, s in value.items()}
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [openapi_to_json_schema(s, request=request) for s in value]
        elif key in _SUBSCHEMA_ONE and isinstance(value, dict):
            out[key] = openapi_to_json_schema(value, request=request)
        elif key in ("nullable", "readOnly", "writeOnly", "example", "discriminator", "xml", "deprecated"):
            continue
        else:
            out[key] = value
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    hidden = "readOnly" if request else "writeOnly"
    properties = node.get("properties")
    if isinstance(properties, dict) and "required" in out:
        skip = {name for name, s in properties.items() if isinstance(s, dict) and s.get(hidden) is True}
        required = [name for name in out["required"] if name not in skip]
        if required:
            out["required"] = required
        else:
            del out["required"]
    return out


def _stripped_exponent(value: Decimal) -> int:
    """The exponent of ``value`` without trailing zeros, exactly (``normalize`` would round to the
    context precision)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    index = len(digits)
    while exponent < 0 and index > 1 and digits[index - 1] == 0:
        index -= 1
        exponent += 1
    return exponent


def exact_multiple_of(value: int | Decimal, divisor: int | Decimal) -> bool:
    """``value`` is a whole multiple of ``divisor``, computed exactly on the decimal values."""
    value_d, divisor_d = Decimal(value), Decimal(divisor)
    if not value_d.is_finite():
        return False
    _, divisor_digits, divisor_exponent = divisor_d.as_tuple()
    if divisor_digits == (1,) and isinstance(divisor_exponent, int):  # a power of ten: 0.001, 1, 100
        return value_d == 0 or _stripped_exponent(value_d) >= divisor_exponent
    return (Fraction(value_d) / Fraction(divisor_d)).denominator == 1


def _multiple_of_keyword(
    validator: Any, divisor: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterable[jsonschema.ValidationError]:
    if not validator.is_type(instance, "number") or isinstance(instance, float):
        if isinstance(instance, float):  # never happens with loads_exact; a float is refused outright
            yield jsonschema.ValidationError(f"{instance!r} is a float, not an exact decimal")
        return
    if not exact_multiple_of(instance, divisor):
        yield jsonschema.ValidationError(f"{instance} is not a multiple of {divisor}")


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc) and " " not in value


# Draft 4 (what OpenAPI 3.0 schemas are a dialect of) with ``multipleOf`` computed exactly.
_ExactValidator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft4Validator, {"multipleOf": _multiple_of_keyword}
)


def _field_errors(error: jsonschema.ValidationError, prefix: str) -> list[tuple[str, str]]:
    """Laravel-style (field, message) pairs for one jsonschema error."""
    path = ".".join(str(p) for p in error.absolute_path)
    here = f"{prefix}{path}" if path else prefix.rstrip(".") or "body"
    child = f"{prefix}{path}." if path else prefix
    instance = error.instance
    keyword_value: Any = error.validator_value
    schema: Any = error.schema
    if error.validator == "required" and isinstance(instance, dict):
        return [
            (f"{child}{name}", f"The {child}{name} field is required.")
            for name in keyword_value
            if name not in instance
        ]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(schema.get("properties", {}))
        return [
            (f"{child}{name}", f"The {child}{name} field is not allowed (additionalProperties: false).")
            for name in instance
            if name not in allowed
        ]
    if error.validator == "type":
        return [(here, f"The {here} field must be of type {error.validator_value}.")]
    if error.validator == "maxLength":
        return [(here, f"The {here} field must not be greater than {error.validator_value} characters.")]
    if error.validator == "multipleOf":
        return [(here, f"The {here} field must be a multiple of {error.validator_value}.")]
    if error.validator == "enum":
        return [(here, f"The selected {here} is invalid.")]
    return [(here, f"The {here} field is invalid: {error.message}")]


class SpecValidator:
    """Compiled validators for the served operations of ``ampeco_openapi.json`` (built once)."""

    def __init__(self, spec_path: Path = SPEC_PATH) -> None:
        self.spec: dict[str, Any] = loads_exact(spec_path.read_bytes())
        self._bodies: dict[tuple[str, str], tuple[Any, frozenset[str]]] = {}
        self._responses: dict[tuple[str, str, int], Any] = {}
        self._parameters: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for path, item in self.spec["paths"].items():
            shared = list(item.get("parameters", []))
            for method, operation in item.items():
                if method == "parameters":
                    continue
                self._parameters[(method, path)] = shared + list(operation.get("parameters", []))
                body = operation.get("requestBody")
                if body is not None:
                    schema = openapi_to_json_schema(body["content"]["application/json"]["schema"], request=True)
                    _ExactValidator.check_schema(schema)
                    self._bodies[(method, path)] = (
                        _ExactValidator(schema, format_checker=_FORMATS),
                        frozenset(body["content"]),
                    )
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {}).get("application/json")
                    if content is not None:
                        schema = openapi_to_json_schema(content["schema"], request=False)
                        self._responses[(method, path, int(status))] = _ExactValidator(schema)
                for name, callback in operation.get("callbacks", {}).items():
                    for cb_item in callback.values():
                        cb_schema = cb_item["post"]["requestBody"]["content"]["application/json"]["schema"]
                        self._responses[("callback", name, 0)] = _ExactValidator(
                            openapi_to_json_schema(cb_schema, request=False)
                        )

    def parameters(self, method: str, path: str, where: str) -> list[dict[str, Any]]:
        return [p for p in self._parameters[(method, path)] if p["in"] == where]

    def body_media_types(self, method: str, path: str) -> frozenset[str]:
        return self._bodies[(method, path)][1]

    def body_errors(self, method: str, path: str, body: Any, prefix: str = "") -> list[tuple[str, str]]:
        validator = self._bodies[(method, path)][0]
        found: list[tuple[str, str]] = []
        for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
            found.extend(_field_errors(error, prefix))
        return found

    def parameter_errors(self, method: str, path: str, where: str, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """Path or query parameters as strings, checked against their schema after the coercion a URL
        allows (an ``integer`` must be an optionally signed run of digits)."""
        found: list[tuple[str, str]] = []
        for parameter in self.parameters(method, path, where):
            name = parameter["name"]
            if name not in values:
                if parameter.get("required"):
                    found.append((name, f"The {name} parameter is required."))
                continue
            raw = values[name]
            schema = parameter.get("schema", {})
            kind = schema.get("type")
            value: Any = raw
            if kind == "integer":
                if not re.fullmatch(r"-?[0-9]+", raw):
                    found.append((name, f"The {name} must be an integer."))
                    continue
                value = int(raw)
            elif kind == "boolean":
                if raw not in ("true", "false", "1", "0"):
                    found.append((name, f"The {name} field must be true or false."))
                    continue
                value = raw in ("true", "1")
            elif kind != "string":
                continue  # deepObject arrays (``include``) are not checked
            for error in _ExactValidator(openapi_to_json_schema(schema, request=True)).iter_errors(value):
                found.append((name, f"The {name} parameter is invalid: {error.message}"))
        return found

    def response_errors(self, method: str, path: str, status: int, body: Any) -> list[str] | None:
        """Problems of a JSON answer against the documented one; None when the spec documents no
        JSON body for that status."""
        validator = self._responses.get((method, path, status))
        if validator is None:
            return None
        return [f"{'.'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in validator.iter_errors(body)]

    def callback_errors(self, name: str, body: Any) -> list[str]:
        validator = self._responses[("callback", name, 0)]
        return [f"{'.'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in validator.iter_errors(body)]


_SPEC_CACHE: dict[Path, SpecValidator] = {}


def spec_validator(path: Path = SPEC_PATH) -> SpecValidator:
    """The compiled spec, cached per process."""
    if path not in _SPEC_CACHE:
        _SPEC_CACHE[path] = SpecValidator(path)
    return _SPEC_CACHE[path]


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------

Fault = Literal[
    "ok",
    "hang_after_apply",
    "reset_after_apply",
    "error_5xx_before",
    "error_5xx_after",
    "slow",
    "rate_limited",
    "error_422",
]
CALL_FAULTS: tuple[str, ...] = get_args(Fault)
"""Per-call faults of add-balance and apply-custom-fee (``"ok"`` is the explicit no-fault). The spec gives
these calls no idempotency key and answers 202 with no body (no transaction id), so an answer lost after
the action was applied cannot be asked about: the "after apply" faults model exactly that.

- ``hang_after_apply``: the balance changes, then no answer ever comes (sleeps ``hang_s``, far past any
  client timeout; cancelled at stop). Models AMPECO applying the action and the answer being lost in a
  stalled proxy or worker: the client's timeout is NOT evidence that nothing happened.
- ``reset_after_apply``: the balance changes, then the TCP connection is reset (``SO_LINGER 0`` +
  abort) without an answer. The client sees a disconnect (``ServerDisconnectedError`` / ``ClientOSError``).
- ``error_5xx_before``: 500, 502 (an HTML page, as a load balancer sends) or 503, nothing applied.
- ``error_5xx_after``: the balance changes, then 500: the action happened although the answer says error.
- ``slow``: applied and answered 202 after a delay drawn from ``slow_delay_s``.
- ``rate_limited``: 429 with ``Retry-After`` as if the limit were hit (spec: 429 "Too many requests ...
  check the rate limit headers X-RateLimit-*"); nothing applied.
- ``error_422``: the spec's 422 "The payload you provided is invalid" for a valid request (e.g. a
  tenant-side rule); nothing applied, and not recorded as a spec violation.
"""
RANDOM_CALL_FAULTS = (
    "hang_after_apply",
    "reset_after_apply",
    "error_5xx_before",
    "error_5xx_after",
    "slow",
    "rate_limited",
    "error_422",
)

NotificationFault = Literal["delay", "duplicate", "reorder", "lose", "wrong_key"]
NOTIFICATION_FAULTS: tuple[str, ...] = get_args(NotificationFault)
"""Faults of ``userBalance.changed`` deliveries (the spec only promises retries and rate limits, so a
receiver must cope with all of these):

- ``delay``: sent after a random delay from ``notification_delay_s`` (evidence arrives late).
- ``duplicate``: the same body and headers delivered twice (at-least-once delivery).
- ``reorder``: held back and sent right after the next notification for the same subscription (or after
  ``reorder_hold_s`` if none comes).
- ``lose``: never sent (a receiver must not depend on notifications to settle a credit).
- ``wrong_key``: signed with another key (a forged or misrouted notification; must be refused).
"""

CallKind = Literal["add-balance", "apply-custom-fee"]


@dataclass
class AppliedCall:
    """One add-balance or apply-custom-fee call that changed a balance."""

    user_id: int
    kind: CallKind
    amount: Decimal
    reason: str  # ``reason`` of add-balance, ``description`` of apply-custom-fee
    app_info: str | None
    at: datetime
    balance_after: Decimal
    fault: str | None
    transaction_id: int | None


@dataclass
class RecordedRequest:
    """A request as the simulator received it; ``status`` is None when it was never answered (hang,
    reset) or is still in flight."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: CIMultiDict[str]
    at: datetime
    status: int | None = None
    fault: str | None = None


@dataclass
class SentNotification:
    """One delivery attempt of a notification; ``status`` None when the receiver was unreachable."""

    subscription_id: int
    url: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    status: int | None
    error: str | None
    fault: str | None
    at: datetime

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Subscription:
    """A ``POST notifications/v2.0`` webhook subscription; ``token`` is its HMAC key."""

    id: int
    notifications: list[str]
    callback_url: str
    token: str
    created_at: datetime
    held: _Outgoing | None = None
    held_timer: asyncio.TimerHandle | None = None


@dataclass
class SimUser:
    id: int
    balance: Decimal
    locale: str
    hide_balance: bool
    email: str
    created_at: datetime
    updated_at: datetime


@dataclass
class _Outgoing:
    subscription: Subscription
    body: bytes
    headers: dict[str, str]
    fault: str | None


@dataclass
class _Window:
    started: float
    count: int = 0


@dataclass
class _CallState:
    """What the middleware learnt about a request, for its handler."""

    raw: bytes
    record: RecordedRequest
    parsed: Any = None
    parse_error: str | None = None
    token: str = ""


_STATE = web.RequestKey("ampeco_simulator_call", _CallState)


@dataclass
class _IssuedToken:
    client_id: str
    expires_at: float


# Headers recorded with each request (lower case).
RECORDED_HEADERS = frozenset(
    {"authorization", "content-type", "accept", "user-agent", "x-request-id", "traceparent", "idempotency-key"}
)
# Status codes of ``error_5xx_before``.
ERROR_5XX_STATUSES = (500, 502, 503)
# AMPECO's own id of a currency (not the ISO numeric code); any stable integer will do.
DEFAULT_CURRENCY_ID = 3
_PREFIXES = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
_NUMERIC_FALLBACK = {"BGN": ("975", "Bulgarian Lev")}  # withdrawn from ISO 4217 List One in 2026


def _now() -> datetime:
    return datetime.now(UTC)


def iso_micro_z(moment: datetime) -> str:
    """``2026-11-27T15:04:05.123456Z``: ISO-8601 with microseconds in Zulu (the X-Timestamp format)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _currency_info(currency: str) -> tuple[str, str]:
    """ISO 4217 numeric code and name, from the ``iso4217`` package's table (the dev extra)."""
    entry = iso4217.raw_table.get(currency)
    if entry is None:
        return _NUMERIC_FALLBACK.get(currency, ("000", currency))
    return f"{int(str(entry['CcyNbr'])):03d}", str(entry["CcyNm"])


def _laravel_422(errors: Sequence[tuple[str, str]]) -> dict[str, Any]:
    grouped: dict[str, list[str]] = {}
    for name, message in errors:
        grouped.setdefault(name, []).append(message)
    first = errors[0][1]
    more = len(errors) - 1
    message = first if not more else f"{first} (and {more} more error{'s' if more > 1 else ''})"
    return {"message": message, "errors": grouped}


# --------------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------------


class AmpecoSimulator:
    """An AMPECO.CHARGE tenant on ``127.0.0.1``: see the module docstring for what it serves.

    Public state a test reads: ``requests``, ``spec_violations``, ``response_violations`` (only with
    ``check_responses=True``: answers of the simulator itself that break the spec), ``applied`` /
    ``custom_fees`` (per user id), ``fault_counts``, ``notification_fault_counts``,
    ``notifications_sent`` (one entry per delivery attempt), ``notifications_lost``, ``subscriptions``.
    Tunables a test may set at any time: ``token_ttl_s``, ``hang_s``, ``slow_delay_s``,
    ``notification_attempts``, ``notification_backoff_s``, ``notification_delay_s``, ``reorder_hold_s``,
    ``signature_encoding``, ``on_applied``.
    """

    def __init__(
        self,
        api_token: str,
        *,
        oauth_clients: Mapping[str, str] | None = None,
        base_currency: str = "EUR",
        currency_decimal: int = 2,
        currency_id: int = DEFAULT_CURRENCY_ID,
        token_ttl_s: float = 3600.0,
        tenant: str = "tenant-1",
        notifications: bool = True,
        record: bool = True,
        check_responses: bool = False,
        signature_encoding: Literal["hex", "base64"] = "hex",
        hang_s: float = 3600.0,
        slow_delay_s: tuple[float, float] = (0.2, 1.5),
        notification_attempts: int = 4,
        notification_backoff_s: Sequence[float] = (0.05, 0.2, 0.5),
        notification_timeout_s: float = 5.0,
        notification_delay_s: tuple[float, float] = (0.05, 0.5),
        reorder_hold_s: float = 1.0,
        rate_limit: int = 1_000_000,
        rate_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        spec_path: Path = SPEC_PATH,
    ) -> None:
        self.tenant = tenant
        self.base_currency = base_currency
        self.currency_decimal = currency_decimal
        self.currency_id = currency_id
        self.token_ttl_s = token_ttl_s
        self.notifications_enabled = notifications
        self.record = record
        self.check_responses = check_responses
        self.signature_encoding: Literal["hex", "base64"] = signature_encoding
        self.hang_s = hang_s
        self.slow_delay_s = slow_delay_s
        self.notification_attempts = notification_attempts
        self.notification_backoff_s = tuple(notification_backoff_s)
        self.notification_timeout_s = notification_timeout_s
        self.notification_delay_s = notification_delay_s
        self.reorder_hold_s = reorder_hold_s
        self.clock = clock
        self.on_applied: Callable[[AppliedCall], None] | None = None

        self.requests: list[RecordedRequest] = []
        self.spec_violations: list[str] = []
        self.response_violations: list[str] = []
        self.applied: defaultdict[int, list[AppliedCall]] = defaultdict(list)
        self.custom_fees: defaultdict[int, list[AppliedCall]] = defaultdict(list)
        self.fault_counts: Counter[str] = Counter()
        self.notification_fault_counts: Counter[str] = Counter()
        self.notifications_sent: list[SentNotification] = []
        self.notifications_lost: list[bytes] = []
        self.subscriptions: list[Subscription] = []
        self.apply_count = 0

        self._spec = spec_validator(spec_path)
        self._users: dict[int, SimUser] = {}
        self.api_token = api_token
        self._static_tokens: set[str] = {api_token}
        self._oauth_clients = dict(oauth_clients or {})
        self._issued: dict[str, _IssuedToken] = {}
        self._rate_limit = rate_limit
        self._rate_window_s = rate_window_s
        self._windows: dict[str, _Window] = {}
        self._queued_faults: defaultdict[int | None, list[str]] = defaultdict(list)
        self._fault_mix: list[tuple[str, float]] = []
        self._fault_rng = random.Random(0)
        self._queued_notification_faults: list[str] = []
        self._notification_mix: list[tuple[str, float]] = []
        self._notification_rng = random.Random(0)
        self._next_subscription_id = 1
        self._next_transaction_id = 50_001
        self._settings_updated = _now()
        self._applied_waiters: list[tuple[int, int, asyncio.Future[AppliedCall]]] = []
        self._pending_notifications = 0
        self._notifications_idle = asyncio.Event()
        self._notifications_idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hanging: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._base_url: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(ADD_BALANCE, self._add_balance)
        app.router.add_post(CUSTOM_FEE, self._apply_custom_fee)
        app.router.add_get(USER, self._get_user, allow_head=False)
        app.router.add_get(SETTINGS, self._get_settings, allow_head=False)
        app.router.add_get(CURRENCY, self._get_currency, allow_head=False)
        app.router.add_get(NOTIFICATIONS, self._list_notifications, allow_head=False)
        app.router.add_post(NOTIFICATIONS, self._subscribe)
        app.router.add_post(OAUTH_TOKEN, self._oauth_token)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Binds ``host:port`` (a free port by default); returns the base URL ``http://host:port``."""
        self._http = aiohttp.ClientSession()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self._base_url = f"http://{host}:{bound}"
        return self._base_url

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not started")
        return self._base_url

    async def stop(self) -> None:
        """Cancels hanging calls and pending notifications, then closes the server."""
        for sub in self.subscriptions:
            if sub.held_timer is not None:
                sub.held_timer.cancel()
        for task in [*self._hanging, *self._tasks]:
            task.cancel()
        for task in [*self._hanging, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---- tenant data -----------------------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        balance: Decimal = Decimal("0"),
        *,
        locale: str = "en-GB",
        hide_balance: bool = False,
        email: str | None = None,
    ) -> SimUser:
        """A driver account. ``hide_balance`` models a user of a Partner without the "addUserBalance"
        permission: the user resource then has no ``balance`` (spec, User / Read)."""
        if not isinstance(balance, Decimal):
            raise TypeError("balance must be a Decimal")
        now = _now()
        user = SimUser(user_id, balance, locale, hide_balance, email or f"driver{user_id}@example.test", now, now)
        self._users[user_id] = user
        return user

    def balance(self, user_id: int) -> Decimal:
        return self._users[user_id].balance

    def add_api_token(self, token: str) -> None:
        """Another long-lived Back Office API token (e.g. a second subscription key)."""
        self._static_tokens.add(token)

    def revoke_token(self, token: str) -> None:
        self._static_tokens.discard(token)
        self._issued.pop(token, None)

    def expire_tokens(self) -> None:
        """Every OAuth access token issued so far expires now."""
        for issued in self._issued.values():
            issued.expires_at = -math.inf

    def rate_limit(self, limit: int, window_s: float = 60.0) -> None:
        """At most ``limit`` API calls per token per fixed window of ``window_s`` seconds."""
        self._rate_limit = limit
        self._rate_window_s = window_s
        self._windows.clear()

    def subscribe(self, callback_url: str, token: str | None = None) -> Subscription:
        """A ``userBalance.changed`` webhook subscription made directly (as if through the API with
        ``token``, by default the API token)."""
        key = token if token is not None else self.api_token
        sub = Subscription(self._next_subscription_id, [BALANCE_CHANGED], callback_url, key, _now())
        self._next_subscription_id += 1
        self.subscriptions.append(sub)
        return sub

    # ---- faults ----------------------------------------------------------------------------------

    def next_faults(self, user_id: int | None, faults: Iterable[Fault | str]) -> None:
        """Queues faults for the next add-balance / apply-custom-fee calls: for ``user_id`` (its queue
        is used first), or for any user with None. ``"ok"`` lets one call through unharmed."""
        for fault in faults:
            if fault not in CALL_FAULTS:
                raise ValueError(f"unknown fault {fault!r}; known: {CALL_FAULTS}")
            self._queued_faults[user_id].append(fault)

    def set_fault_mix(self, mix: Mapping[str, float], seed: int | None = None) -> None:
        """Each call without a queued fault gets fault F with probability ``mix[F]`` (seeded, so a soak
        is reproducible); an empty mix switches random faults off."""
        self._fault_mix = self._checked_mix(mix, RANDOM_CALL_FAULTS)
        self._fault_rng = random.Random(seed)

    def clear_faults(self) -> None:
        self._queued_faults.clear()
        self._fault_mix = []
        self._queued_notification_faults.clear()
        self._notification_mix = []

    def next_notification_faults(self, faults: Iterable[NotificationFault | str]) -> None:
        """Queues one fault per next notification (per subscription it is sent to)."""
        for fault in faults:
            if fault not in NOTIFICATION_FAULTS:
                raise ValueError(f"unknown notification fault {fault!r}; known: {NOTIFICATION_FAULTS}")
            self._queued_notification_faults.append(fault)

    def set_notification_fault_mix(self, mix: Mapping[str, float], seed: int | None = None) -> None:
        self._notification_mix = self._checked_mix(mix, NOTIFICATION_FAULTS)
        self._notification_rng = random.Random(seed)

    @staticmethod
    def _checked_mix(mix: Mapping[str, float], known: Sequence[str]) -> list[tuple[str, float]]:
        for name, rate in mix.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {tuple(known)}")
            if not 0 <= rate <= 1:
                raise ValueError(f"rate of {name} must be within [0, 1]")
        if sum(mix.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        return [(name, rate) for name, rate in mix.items() if rate > 0]

    @staticmethod
    def _draw(mix: list[tuple[str, float]], rng: random.Random) -> str | None:
        if not mix:
            return None
        roll = rng.random()
        for name, rate in mix:
            if roll < rate:
                return name
            roll -= rate
        return None

    def _take_fault(self, user_id: int) -> str | None:
        for key in (user_id, None):
            queue = self._queued_faults.get(key)
            if queue:
                fault = queue.pop(0)
                return None if fault == "ok" else fault
        return self._draw(self._fault_mix, self._fault_rng)

    # ---- waiting ---------------------------------------------------------------------------------

    async def wait_applied(self, user_id: int, count: int = 1, timeout: float = 5.0) -> AppliedCall:
        """Until ``user_id`` has at least ``count`` applied add-balance calls; returns the count-th.
        With ``next_faults(user, ["hang_after_apply"])`` this is "the call is in flight and applied"."""

        calls = self.applied[user_id]
        if len(calls) >= count:
            return calls[count - 1]
        future: asyncio.Future[AppliedCall] = asyncio.get_running_loop().create_future()
        waiter = (user_id, count, future)
        self._applied_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._applied_waiters.remove(waiter)

    async def wait_notifications_idle(self, timeout: float = 10.0) -> None:
        """Until no notification is pending, held back, delayed or being retried."""
        async with asyncio.timeout(timeout):
            await self._notifications_idle.wait()

    # ---- HTTP plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read() if request.can_read_body else b""
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            body=None,
            headers=CIMultiDict(
                (k, "Basic ***" if v.lower().startswith("basic ") else v)  # never keep a client secret
                for k, v in request.headers.items()
                if k.lower() in RECORDED_HEADERS
            ),
            at=_now(),
        )
        state = request[_STATE] = _CallState(raw, record)
        if self.record:
            self.requests.append(record)
        if request.path == OAUTH_TOKEN:
            response: web.StreamResponse = await handler(request)
            record.status = response.status
            return response
        if raw:
            try:
                record.body = state.parsed = loads_exact(raw)
            except ValueError as exc:
                state.parse_error = str(exc)
                record.body = raw.decode("utf-8", "replace")
        token = self._authenticate(request)
        if token is None:
            response = self._json(401, {"message": "Unauthenticated."})
            record.status = 401
            return response
        state.token = token
        limited, headers = self._count_call(token)
        if limited:
            response = self._json(429, {"message": "Too Many Attempts."})
        else:
            response = await handler(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        # A hung or reset call was never answered, whatever the handler returned.
        record.status = None if record.fault in ("hang_after_apply", "reset_after_apply") else response.status
        return response

    def _authenticate(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if token in self._static_tokens:
            return token
        issued = self._issued.get(token)
        if issued is None or self.clock() >= issued.expires_at:
            return None
        return token

    def _count_call(self, token: str) -> tuple[bool, dict[str, str]]:
        """Fixed-window rate limit per token; the headers for the answer."""
        now = self.clock()
        window = self._windows.get(token)
        if window is None or now - window.started >= self._rate_window_s:
            window = self._windows[token] = _Window(now)
        window.count += 1
        headers = {
            "X-RateLimit-Limit": str(self._rate_limit),
            "X-RateLimit-Remaining": str(max(0, self._rate_limit - window.count)),
        }
        if window.count <= self._rate_limit:
            return False, headers
        retry_after = max(1, math.ceil(window.started + self._rate_window_s - now))
        headers["Retry-After"] = str(retry_after)
        headers["X-RateLimit-Reset"] = str(int(time.time()) + retry_after)
        return True, headers

    def _json(self, status: int, payload: Any, operation: tuple[str, str] | None = None) -> web.Response:
        body = dumps_exact(payload)
        if self.check_responses and operation is not None:
            problems = self._spec.response_errors(operation[0], operation[1], status, loads_exact(body))
            for problem in problems or ():
                self.response_violations.append(f"{operation[0].upper()} {operation[1]} -> {status}: {problem}")
        return web.Response(status=status, body=body, content_type="application/json")

    def _violation(self, request: web.Request, errors: Sequence[tuple[str, str]]) -> web.Response:
        for name, message in errors:
            self.spec_violations.append(f"{request.method} {request.path}: {name}: {message}")
        return self._json(422, _laravel_422(errors))

    def _checked(
        self, request: web.Request, operation: tuple[str, str], *, body: bool
    ) -> tuple[dict[str, int], Any] | web.Response:
        """Path parameters (as ints) and the parsed body of a spec-valid request, or its 422."""
        method, path = operation
        errors = self._spec.parameter_errors(method, path, "path", request.match_info)
        errors += self._spec.parameter_errors(method, path, "query", request.query)
        if errors:
            return self._violation(request, errors)
        params = {p["name"]: int(request.match_info[p["name"]]) for p in self._spec.parameters(method, path, "path")}
        if not body:
            return params, None
        media = request.content_type
        if media not in self._spec.body_media_types(method, path):
            return self._violation(request, [("body", f"The body must be application/json, not {media!r}.")])
        state = request[_STATE]
        if state.parse_error is not None or not state.raw:
            problem = state.parse_error or "the body is empty"
            return self._violation(request, [("body", f"The body is not JSON: {problem}")])
        parsed = state.parsed
        errors = self._spec.body_errors(method, path, parsed)
        if errors:
            return self._violation(request, errors)
        return params, parsed

    async def _unknown(self, request: web.Request) -> web.Response:
        known = [path for path in KEPT_OPERATIONS if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), request.path)]
        if known:
            message = f"The {request.method} method is not supported for route {request.path}."
            self.spec_violations.append(f"{request.method} {request.path}: no such operation in the spec")
            return self._json(405, {"message": message})
        self.spec_violations.append(f"{request.method} {request.path}: no such path in the spec")
        return self._json(404, {"message": "Not found."})

    # ---- OAuth -----------------------------------------------------------------------------------

    async def _oauth_token(self, request: web.Request) -> web.Response:
        """RFC 6749 §4.4 client credentials; client authentication by HTTP Basic (§2.3.1, the
        form-urlencoded id and secret) or by ``client_id``/``client_secret`` in the body."""
        record = request[_STATE].record
        raw = request[_STATE].raw
        if request.content_type != "application/x-www-form-urlencoded":
            self.spec_violations.append(
                f"POST {OAUTH_TOKEN}: RFC 6749 §4.4.2: the body must be application/x-www-form-urlencoded,"
                f" not {request.content_type!r}"
            )
            return self._oauth_error(400, "invalid_request", "The request must be form-encoded.")
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        record.body = {k: ("***" if k == "client_secret" else v) for k, v in form.items()}
        basic: tuple[str, str] | None = None
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return self._oauth_error(401, "invalid_client", "Malformed Basic credentials.", basic=True)
            client_id, _, client_secret = decoded.partition(":")
            basic = (unquote_plus(client_id), unquote_plus(client_secret))
        in_body = "client_id" in form or "client_secret" in form
        if basic is not None and in_body:
            self.spec_violations.append(f"POST {OAUTH_TOKEN}: RFC 6749 §2.3: more than one client authentication")
            return self._oauth_error(400, "invalid_request", "Use one client authentication method.")
        grant = form.get("grant_type")
        if grant is None:
            self.spec_violations.append(f"POST {OAUTH_TOKEN}: RFC 6749 §4.4.2: grant_type is required")
            return self._oauth_error(400, "invalid_request", "The grant_type parameter is required.")
        if grant != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type", f"Grant type {grant!r} is not supported.")
        client_id, client_secret = (
            basic if basic is not None else (form.get("client_id", ""), form.get("client_secret", ""))
        )
        expected = self._oauth_clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), client_secret.encode()):
            return self._oauth_error(401, "invalid_client", "Client authentication failed.", basic=basic is not None)
        token = secrets.token_urlsafe(32)
        self._issued[token] = _IssuedToken(client_id, self.clock() + self.token_ttl_s)
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": max(1, math.ceil(self.token_ttl_s))}
        response = self._json(200, payload)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def _oauth_error(self, status: int, error: str, description: str, *, basic: bool = False) -> web.Response:
        response = self._json(status, {"error": error, "error_description": description})
        if status == 401 and basic:
            response.headers["WWW-Authenticate"] = 'Basic realm="ampeco"'
        response.headers["Cache-Control"] = "no-store"
        return response

    # ---- actions ---------------------------------------------------------------------------------

    def _user_or_404(self, user_id: int, operation: tuple[str, str]) -> SimUser | web.Response:
        user = self._users.get(user_id)
        if user is None:
            return self._json(404, {"message": f"No query results for user {user_id}."}, operation)
        return user

    async def _add_balance(self, request: web.Request) -> web.StreamResponse:
        """``userAddBalance``: 202 with no body; the balance grows by ``amount``."""
        operation = ("post", ADD_BALANCE)
        checked = self._checked(request, operation, body=True)
        if isinstance(checked, web.Response):
            return checked
        params, body = checked
        user = self._user_or_404(params["user"], operation)
        if isinstance(user, web.Response):
            return user
        amount = Decimal(body["amount"])
        return await self._run_action(
            request, operation, user, "add-balance", amount, str(body["reason"]), body.get("app_info")
        )

    async def _apply_custom_fee(self, request: web.Request) -> web.StreamResponse:
        """``userApplyCustomFee``: with no payment method it takes the balance; 400 if too small."""
        operation = ("post", CUSTOM_FEE)
        checked = self._checked(request, operation, body=True)
        if isinstance(checked, web.Response):
            return checked
        params, body = checked
        user = self._user_or_404(params["user"], operation)
        if isinstance(user, web.Response):
            return user
        if body.get("paymentMethodId") is not None:
            # Valid per the spec, but this tenant knows no payment methods.
            return self._json(
                422,
                _laravel_422([("paymentMethodId", "The selected payment method id is invalid.")]),
                operation,
            )
        amount = Decimal(body["amount"])
        return await self._run_action(
            request, operation, user, "apply-custom-fee", amount, str(body["description"]), None
        )

    async def _run_action(
        self,
        request: web.Request,
        operation: tuple[str, str],
        user: SimUser,
        kind: CallKind,
        amount: Decimal,
        reason: str,
        app_info: str | None,
    ) -> web.StreamResponse:
        record = request[_STATE].record
        fault = self._take_fault(user.id)
        if fault in ("rate_limited", "error_422", "error_5xx_before", "slow"):
            self._fault_happened(record, fault)
        if fault == "rate_limited":
            response = self._json(429, {"message": "Too Many Attempts."}, operation)
            response.headers["Retry-After"] = "1"
            response.headers["X-RateLimit-Reset"] = str(int(time.time()) + 1)
            response.headers["X-RateLimit-Remaining"] = "0"
            return response
        if fault == "error_422":
            return self._json(422, _laravel_422([("amount", "The amount could not be processed.")]), operation)
        if fault == "error_5xx_before":
            return self._server_error(self._fault_rng.choice(ERROR_5XX_STATUSES))
        if fault == "slow":
            low, high = self.slow_delay_s
            await asyncio.sleep(self._fault_rng.uniform(low, high))
        if kind == "apply-custom-fee" and user.balance < amount:
            return self._json(400, {"message": "User has insufficient balance"})
        try:
            self._apply(user, kind, amount, reason, app_info, fault)
        except InvalidOperation:
            return self._json(422, _laravel_422([("amount", "The amount is out of range.")]), operation)
        if fault in ("hang_after_apply", "reset_after_apply", "error_5xx_after"):
            self._fault_happened(record, fault)  # only now: a refused call is not a fault that happened
        if fault == "hang_after_apply":
            task = asyncio.current_task()
            assert task is not None
            self._hanging.add(task)
            try:
                await asyncio.sleep(self.hang_s)
            finally:
                self._hanging.discard(task)
            self._reset(request)
            return web.Response(status=202)
        if fault == "reset_after_apply":
            self._reset(request)
            return web.Response(status=202)  # never written: the transport is gone
        if fault == "error_5xx_after":
            return self._server_error(500)
        return web.Response(status=202)

    def _fault_happened(self, record: RecordedRequest, fault: str) -> None:
        record.fault = fault
        self.fault_counts[fault] += 1

    def _reset(self, request: web.Request) -> None:
        """Resets the TCP connection (RST, no answer): ``SO_LINGER`` 0, then abort."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _server_error(self, status: int) -> web.Response:
        if status == 502:
            # What a load balancer in front of the tenant answers: HTML, not JSON.
            html = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(status=502, text=html, content_type="text/html")
        if status == 503:
            return self._json(503, {"message": "Service Unavailable"})
        return self._json(status, {"message": "Server Error"})

    def _apply(
        self, user: SimUser, kind: CallKind, amount: Decimal, reason: str, app_info: str | None, fault: str | None
    ) -> AppliedCall:
        with localcontext() as ctx:
            ctx.prec = 200
            ctx.traps[InvalidOperation] = True
            ctx.traps[Inexact] = True
            try:
                new_balance = user.balance + amount if kind == "add-balance" else user.balance - amount
            except Inexact:
                raise InvalidOperation("the balance cannot hold this amount exactly") from None
        now = _now()
        user.balance = new_balance
        user.updated_at = now
        self.apply_count += 1
        transaction_id = None
        if kind == "apply-custom-fee":
            transaction_id = self._next_transaction_id
            self._next_transaction_id += 1
        call = AppliedCall(user.id, kind, amount, reason, app_info, now, new_balance, fault, transaction_id)
        if self.record:
            (self.applied if kind == "add-balance" else self.custom_fees)[user.id].append(call)
        if kind == "add-balance" and self._applied_waiters:
            self._wake_applied_waiters(user.id)
        if self.on_applied is not None:
            self.on_applied(call)
        self._emit_balance_changed(
            user,
            debit=amount if kind == "apply-custom-fee" else Decimal("0"),
            credit=amount if kind == "add-balance" else Decimal("0"),
            change_type="api_top_up" if kind == "add-balance" else "custom_fee",
            transaction_id=transaction_id,
            at=now,
        )
        return call

    def _wake_applied_waiters(self, user_id: int) -> None:
        calls = self.applied[user_id]
        for waiter_user, count, future in self._applied_waiters:
            if waiter_user == user_id and len(calls) >= count and not future.done():
                future.set_result(calls[count - 1])

    # ---- resources -------------------------------------------------------------------------------

    async def _get_user(self, request: web.Request) -> web.Response:
        operation = ("get", USER)
        checked = self._checked(request, operation, body=False)
        if isinstance(checked, web.Response):
            return checked
        user = self._user_or_404(checked[0]["user"], operation)
        if isinstance(user, web.Response):
            return user
        data: dict[str, Any] = {
            "id": str(user.id),  # the spec types it as a string
            "email": user.email,
            "emailVerified": None,
            "requirePasswordReset": False,
            "firstName": None,
            "middleName": None,
            "lastName": None,
            "phone": None,
            "country": None,
            "locale": user.locale,
        }
        if not user.hide_balance:
            data["balance"] = user.balance
        data.update(
            {
                "status": "enabled",
                "userGroupIds": [],
                "externalId": None,
                "subscriptionId": None,
                "options": {"sessionsAllowed": "single_session"},
                "lastUpdatedAt": iso_micro_z(user.updated_at),
                "createdAt": iso_micro_z(user.created_at),
                "createdBy": "mobile_api",
                "receiveNewsAndPromotions": False,
            }
        )
        return self._json(200, {"data": data}, operation)

    async def _get_settings(self, request: web.Request) -> web.Response:
        operation = ("get", SETTINGS)
        checked = self._checked(request, operation, body=False)
        if isinstance(checked, web.Response):
            return checked
        updated = iso_micro_z(self._settings_updated)
        data = {
            "baseCurrency": {"id": self.currency_id, "lastUpdatedAt": updated},
            "defaultTax": {
                "id": 1,
                "enableMultiTaxSupport": False,
                "taxInformationNotInInvoicesAndReceipts": False,
                "lastUpdatedAt": updated,
            },
        }
        return self._json(200, {"data": data}, operation)

    async def _get_currency(self, request: web.Request) -> web.Response:
        operation = ("get", CURRENCY)
        checked = self._checked(request, operation, body=False)
        if isinstance(checked, web.Response):
            return checked
        if checked[0]["currency"] != self.currency_id:
            return self._json(404, {"message": f"No query results for currency {checked[0]['currency']}."}, operation)
        code = self.base_currency
        numeric, name = _currency_info(code)
        prefix = _PREFIXES.get(code)
        payload = {
            "id": self.currency_id,
            "name": f"{code} ({name})",
            "alphabeticCode": code,
            "numericCode": numeric,
            "prefix": prefix,
            "suffix": None if prefix else f" {code}",
            "decimal": self.currency_decimal,
            "unitPriceAndCalculationsDecimal": 4,
            "enableUseOfMinorCurrencyUnit": False,
            "minorUnitSign": None,
        }
        return self._json(200, payload, operation)

    # ---- notifications: subscriptions --------------------------------------------------------------

    def _subscription_json(self, sub: Subscription) -> dict[str, Any]:
        return {
            "id": sub.id,
            "via": "webhook",
            "notifications": list(sub.notifications),
            "webhook": {"callbackUrl": sub.callback_url},
        }

    async def _list_notifications(self, request: web.Request) -> web.Response:
        operation = ("get", NOTIFICATIONS)
        checked = self._checked(request, operation, body=False)
        if isinstance(checked, web.Response):
            return checked
        per_page = int(request.query.get("per_page", "100"))
        first = f"{self.base_url}{NOTIFICATIONS}?per_page={per_page}"
        payload = {
            "data": [self._subscription_json(sub) for sub in self.subscriptions[:per_page]],
            "links": {"first": first, "last": None, "prev": None, "next": None},
            "meta": {
                "path": f"{self.base_url}{NOTIFICATIONS}",
                "per_page": per_page,
                "next_cursor": None,
                "prev_cursor": None,
            },
        }
        return self._json(200, payload, operation)

    async def _subscribe(self, request: web.Request) -> web.Response:
        operation = ("post", NOTIFICATIONS)
        checked = self._checked(request, operation, body=True)
        if isinstance(checked, web.Response):
            return checked
        body = checked[1]
        if body["via"] == "webhook" and "webhook" not in body:
            # The schema's description: "Only present and required in case via = webhook".
            return self._violation(request, [("webhook", "The webhook field is required when via is webhook.")])
        if body["via"] != "webhook":
            return self._json(422, _laravel_422([("via", "This tenant only delivers webhooks.")]), operation)
        sub = Subscription(
            self._next_subscription_id,
            list(body["notifications"]),
            body["webhook"]["callbackUrl"],
            request[_STATE].token,
            _now(),
        )
        self._next_subscription_id += 1
        self.subscriptions.append(sub)
        return self._json(201, {"data": self._subscription_json(sub)}, operation)

    # ---- notifications: delivery -------------------------------------------------------------------

    def _emit_balance_changed(
        self,
        user: SimUser,
        *,
        debit: Decimal,
        credit: Decimal,
        change_type: str,
        transaction_id: int | None,
        at: datetime,
    ) -> None:
        if not self.notifications_enabled:
            return
        targets = [s for s in self.subscriptions if BALANCE_CHANGED in s.notifications]
        if not targets:
            return
        payload = {
            "notification": BALANCE_CHANGED,
            "debit": debit,
            "credit": credit,
            "updatedBalance": user.balance,
            "userId": user.id,
            "currency": self.base_currency,
            "type": change_type,
            "transactionId": transaction_id,
            "timestamp": iso_micro_z(at),
            "lastUpdatedAt": iso_micro_z(user.updated_at),
        }
        body = dumps_exact(payload)
        if self.check_responses:
            for problem in self._spec.callback_errors(BALANCE_CHANGED, loads_exact(body)):
                self.response_violations.append(f"callback {BALANCE_CHANGED}: {problem}")
        for sub in targets:
            self._dispatch(sub, body)

    def sign(self, body: bytes, key: str) -> str:
        digest = hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest()
        return base64.b64encode(digest).decode() if self.signature_encoding == "base64" else digest.hex()

    def _take_notification_fault(self) -> str | None:
        if self._queued_notification_faults:
            return self._queued_notification_faults.pop(0)
        return self._draw(self._notification_mix, self._notification_rng)

    def _dispatch(self, sub: Subscription, body: bytes) -> None:
        fault = self._take_notification_fault()
        if fault is not None:
            self.notification_fault_counts[fault] += 1
        if fault == "lose":
            self.notifications_lost.append(body)
            return
        key = sub.token if fault != "wrong_key" else "wrong-" + secrets.token_hex(16)
        headers = {
            "Content-Type": "application/json",
            "X-Signature": self.sign(body, key),
            "X-Timestamp": iso_micro_z(_now()),
            "X-Tenant": self.tenant,
        }
        out = _Outgoing(sub, body, headers, fault)
        self._pending_add(1)
        if fault == "reorder" and sub.held is None:
            sub.held = out
            sub.held_timer = asyncio.get_running_loop().call_later(self.reorder_hold_s, self._release_held, sub, out)
            return
        held = self._take_held(sub)
        self._spawn(self._send_sequence(out, held))

    def _take_held(self, sub: Subscription) -> _Outgoing | None:
        held, sub.held = sub.held, None
        if sub.held_timer is not None:
            sub.held_timer.cancel()
            sub.held_timer = None
        return held

    def _release_held(self, sub: Subscription, out: _Outgoing) -> None:
        if sub.held is out:
            self._take_held(sub)
            self._spawn(self._send_sequence(out, None))

    async def _send_sequence(self, out: _Outgoing, held: _Outgoing | None) -> None:
        try:
            if out.fault == "delay":
                await asyncio.sleep(self._notification_rng.uniform(*self.notification_delay_s))
            await self._deliver(out)
            if out.fault == "duplicate":
                await self._deliver(out)
        finally:
            self._pending_add(-1)
        if held is not None:
            try:
                await self._deliver(held)
            finally:
                self._pending_add(-1)

    async def _deliver(self, out: _Outgoing) -> bool:
        """POSTs one notification, retrying a non-2xx answer or an unreachable receiver."""
        assert self._http is not None
        sub = out.subscription
        timeout = aiohttp.ClientTimeout(total=self.notification_timeout_s)
        for attempt in range(1, self.notification_attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                async with self._http.post(
                    sub.callback_url, data=out.body, headers=out.headers, timeout=timeout
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            sent = SentNotification(
                sub.id, sub.callback_url, out.body, dict(out.headers), attempt, status, error, out.fault, _now()
            )
            if self.record:
                self.notifications_sent.append(sent)
            if sent.delivered:
                return True
            if attempt < self.notification_attempts and self.notification_backoff_s:
                await asyncio.sleep(self.notification_backoff_s[min(attempt - 1, len(self.notification_backoff_s) - 1)])
        return False

    def _pending_add(self, delta: int) -> None:
        self._pending_notifications += delta
        if self._pending_notifications == 0:
            self._notifications_idle.set()
        else:
            self._notifications_idle.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --------------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------------


def parse_user_ids(text: str) -> list[int]:
    """``1..500`` or ``1,2,10..20``."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if ".." in part:
            low, high = (int(x) for x in part.split("..", 1))
            ids.extend(range(low, high + 1))
        elif part:
            ids.append(int(part))
    return ids


async def _serve(args: argparse.Namespace, token: str, oauth: dict[str, str]) -> dict[str, Any]:
    sim = AmpecoSimulator(
        token,
        oauth_clients=oauth,
        base_currency=args.base_currency,
        currency_decimal=args.currency_decimal,
        tenant=args.tenant,
        notifications=not args.no_notifications,
        record=False,
        rate_limit=args.rate_limit,
    )
    for user_id in parse_user_ids(args.users):
        sim.add_user(user_id, Decimal(args.balance))
    url = await sim.start(port=args.port, host=args.host)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    print(f"ampeco-simulator listening on {url}", flush=True)
    try:
        await stopped.wait()
    finally:
        await sim.stop()
    total = sum((sim.balance(u) for u in parse_user_ids(args.users)), Decimal("0"))
    return {"applied_calls": sim.apply_count, "total_balance": str(total)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.simulators.ampeco", description="An AMPECO.CHARGE Public API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-token-env", help="name of the environment variable holding the API token")
    parser.add_argument("--oauth-client-id", help="an OAuth client id (its secret from --oauth-secret-env)")
    parser.add_argument("--oauth-secret-env", help="name of the environment variable holding the client secret")
    parser.add_argument("--users", default="1..500", help="user ids, e.g. 1..500 or 1,5,10..20")
    parser.add_argument("--balance", default="0", help="every user's starting balance (decimal)")
    parser.add_argument("--base-currency", default="EUR")
    parser.add_argument("--currency-decimal", type=int, default=2)
    parser.add_argument("--tenant", default="tenant-1")
    parser.add_argument("--rate-limit", type=int, default=1_000_000, help="calls per token per 60 s")
    parser.add_argument("--no-notifications", action="store_true")
    parser.add_argument(
        "--write-spec",
        type=Path,
        metavar="SOURCE",
        help="rewrite ampeco_openapi.json from the full or excerpt spec at SOURCE, then exit",
    )
    args = parser.parse_args(argv)
    if args.write_spec is not None:
        write_trimmed_spec(args.write_spec)
        print(f"wrote {SPEC_PATH}")
        return 0
    if not args.api_token_env or not os.environ.get(args.api_token_env):
        parser.error("--api-token-env must name a set environment variable")
    oauth: dict[str, str] = {}
    if args.oauth_client_id:
        secret = os.environ.get(args.oauth_secret_env or "")
        if not secret:
            parser.error("--oauth-client-id needs --oauth-secret-env naming a set environment variable")
        oauth[args.oauth_client_id] = secret
    summary = asyncio.run(_serve(args, os.environ[args.api_token_env], oauth))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
