"""M-Pesa Daraja's wire format (STK push, "M-Pesa Express"), as pure functions: no I/O.

Sources: ``reference/processors.md`` §6 and the Daraja portal pages for M-Pesa Express as captured in
public repositories (request/response/callback samples and the error table).

- OAuth: ``GET /oauth/v1/generate?grant_type=client_credentials`` with Basic auth
  (consumer key : consumer secret) -> ``{"access_token", "expires_in"}``; ``expires_in`` is seconds,
  a string in Daraja's answers (``"3599"``); a number is accepted too. Wrong credentials: 400
  ``{"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}``.
- STK push: ``POST /mpesa/stkpush/v1/processrequest`` (Bearer). ``Password`` is
  ``base64(BusinessShortCode + passkey + Timestamp)``, ``Timestamp`` ``YYYYMMDDHHmmss``. The timestamp
  is Kenyan time (EAT, UTC+3, no daylight saving): Daraja's docs say only "YYYYMMDDHHmmss"; the
  integration guides and SDKs build it in Africa/Nairobi time (e.g. angaze.co's Daraja guide, the
  ``date_default_timezone_set('Africa/Nairobi')`` of the common PHP samples). Only the password's
  consistency with the timestamp is documented as checked ("Wrong credentials").
  ``Amount`` is whole shillings ("Only whole numbers are supported", min 1, max 250,000 per
  transaction), ``AccountReference`` at most 12 characters, ``TransactionDesc`` at most 13.
  Answer ``{MerchantRequestID, CheckoutRequestID, ResponseCode: "0", ResponseDescription,
  CustomerMessage}``. There is no idempotency key: each push is another prompt.
- Errors: ``{"requestId", "errorCode", "errorMessage"}``: 400 ``400.002.02`` "Bad Request - Invalid X";
  404 ``404.001.03`` "Invalid Access Token"; 500 ``500.001.1001`` for request-level refusals
  ("Merchant does not exist", "Wrong credentials", "Unable to lock subscriber") and, from the query,
  "The transaction is being processed" while the prompt is open; 500 ``500.003.*`` busy/internal.
- Callback (POSTed to ``CallBackURL``, unsigned): ``{"Body": {"stkCallback": {MerchantRequestID,
  CheckoutRequestID, ResultCode, ResultDesc, CallbackMetadata?: {"Item": [{"Name", "Value"?}]}}}}``.
  ``ResultCode`` is a number in callbacks (a string in query answers; string codes such as
  ``"SFC_IC0003"`` have been seen in callbacks too). Items are read by name: ``Amount`` (``1.00`` or
  ``1``), ``MpesaReceiptNumber``, ``Balance`` (often without ``Value``), ``TransactionDate`` and
  ``PhoneNumber`` (numbers).
- STK query: ``POST /mpesa/stkpushquery/v1/query`` ``{BusinessShortCode, Password, Timestamp,
  CheckoutRequestID}`` -> ``{ResponseCode, ResponseDescription, MerchantRequestID, CheckoutRequestID,
  ResultCode, ResultDesc}``; no amount, no receipt.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, DecimalException, InvalidOperation
from typing import Any

from services.payments.processors.base import (
    Checkout,
    EventKind,
    MalformedWebhook,
    PaymentRef,
    PhonePrompt,
    ProcessorEvent,
    ProcessorRefused,
    ProcessorUnavailable,
)

CURRENCY = "KES"
# Kenya keeps East Africa Time all year: a fixed offset is exact (and needs no tz database).
NAIROBI = timezone(timedelta(hours=3), "EAT")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
MINOR_PER_SHILLING = 100  # KES has 2 decimals in ISO 4217; M-Pesa takes whole shillings
# Far above Daraja's KES 250,000 per transaction; bounds what a callback can make us compute.
MAX_CALLBACK_SHILLINGS = 10**9
ACCOUNT_REFERENCE_MAX = 12
TRANSACTION_DESC_MAX = 13
DEFAULT_TRANSACTION_DESC = "EV top-up"
OAUTH_PATH = "/oauth/v1/generate?grant_type=client_credentials"
PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
QUERY_PATH = "/mpesa/stkpushquery/v1/query"
INVALID_TOKEN = "404.001.03"  # noqa: S105 (an error code, not a credential)
# Daraja's code for request-level refusals (merchant unknown, wrong password, subscriber locked) and,
# from the query, for "The transaction is being processed".
REQUEST_REFUSED = "500.001.1001"
STILL_PROCESSING = re.compile(r"being processed", re.IGNORECASE)
SUCCESS = "0"
CANCELLED_BY_USER = "1032"
# 1037 "DS timeout user cannot be reached", 1019 "Transaction has expired".
EXPIRED_CODES = frozenset({"1037", "1019"})
# A Kenyan mobile number as Daraja takes it: 254 then 7xx or 1xx, 12 digits.
KENYAN_MSISDN = re.compile(r"^254[17][0-9]{8}$")
# Daraja's ids are like "ws_CO_191220191020363925" and "29115-34620561-1".
DARAJA_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
ERROR_CODE = re.compile(r"^[A-Za-z0-9._]{1,32}$")
ACK_BODY = b'{"ResultCode":0,"ResultDesc":"Accepted"}'


# -- amounts and request fields -------------------------------------------------------------------


def whole_shillings(amount_minor: int, currency: str) -> int:
    """The STK ``Amount`` for a charge: KES only, whole shillings only (never rounded)."""
    if currency != CURRENCY:
        raise ProcessorRefused(f"M-Pesa charges only KES, not {currency}")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise ProcessorRefused("the amount must be an integer number of minor units")
    shillings, cents = divmod(amount_minor, MINOR_PER_SHILLING)
    if cents:
        raise ProcessorRefused(f"M-Pesa charges whole shillings only: KES {Decimal(amount_minor).scaleb(-2)} has cents")
    if shillings < 1:
        raise ProcessorRefused("M-Pesa charges at least KES 1")
    return shillings


def shillings_to_minor(value: object) -> int:
    """A callback's ``Amount`` (``1.00``, ``1`` or, leniently, ``"1.00"``) in KES minor units;
    fractional shillings, zero and negative amounts are malformed."""
    if isinstance(value, bool):
        raise MalformedWebhook("Amount must be a number")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,6})?", value):
        amount = Decimal(value)
    else:
        raise MalformedWebhook("Amount must be a number")
    try:
        if not amount.is_finite() or amount != amount.to_integral_value():
            raise MalformedWebhook(f"Amount {value} is not a whole number of shillings")
    except InvalidOperation:
        raise MalformedWebhook("Amount must be a number") from None
    if amount <= 0:
        raise MalformedWebhook("Amount must be positive")
    if amount > MAX_CALLBACK_SHILLINGS:
        raise MalformedWebhook("Amount is beyond any M-Pesa transaction")
    return int(amount) * MINOR_PER_SHILLING


def kenyan_msisdn(phone: str | None) -> str:
    """The driver's number as ``PartyA``/``PhoneNumber``: ``2547XXXXXXXX`` or ``2541XXXXXXXX``."""
    if not phone:
        raise ProcessorRefused("M-Pesa needs the driver's phone number")
    if not KENYAN_MSISDN.fullmatch(phone):
        raise ProcessorRefused("M-Pesa needs a Kenyan mobile number, 254 then 7 or 1 and 8 digits")
    return phone


def account_reference(payment_id: uuid.UUID) -> str:
    """``AccountReference`` (at most 12 characters, shown on the prompt): the payment id's first
    12 hex digits. Daraja echoes it nowhere we read; payments finds the payment by CheckoutRequestID."""
    return payment_id.hex[:ACCOUNT_REFERENCE_MAX]


def transaction_desc(description: str) -> str:
    """``TransactionDesc`` (1-13 characters): the description's letters, digits and spaces (special
    characters are reported to make Daraja refuse requests), or a fixed text."""
    cleaned = " ".join(re.sub(r"[^A-Za-z0-9 ]", " ", description).split())[:TRANSACTION_DESC_MAX].strip()
    return cleaned or DEFAULT_TRANSACTION_DESC


def daraja_timestamp(now: datetime) -> str:
    """``YYYYMMDDHHmmss`` in Kenyan time, for an aware ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(NAIROBI).strftime(TIMESTAMP_FORMAT)


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """``base64(BusinessShortCode + passkey + Timestamp)``."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def stk_push_body(
    *,
    shortcode: str,
    passkey: str,
    timestamp: str,
    transaction_type: str,
    amount_shillings: int,
    phone: str,
    party_b: str,
    callback_url: str,
    reference: str,
    description: str,
) -> dict[str, Any]:
    """The STK push request. Numbers that are identifiers travel as digit strings (as in Daraja's
    own sample for PartyA/PartyB/PhoneNumber), the amount as a JSON integer."""
    return {
        "BusinessShortCode": shortcode,
        "Password": stk_password(shortcode, passkey, timestamp),
        "Timestamp": timestamp,
        "TransactionType": transaction_type,
        "Amount": amount_shillings,
        "PartyA": phone,
        "PartyB": party_b,
        "PhoneNumber": phone,
        "CallBackURL": callback_url,
        "AccountReference": reference,
        "TransactionDesc": description,
    }


def stk_query_body(*, shortcode: str, passkey: str, timestamp: str, checkout_request_id: str) -> dict[str, Any]:
    return {
        "BusinessShortCode": shortcode,
        "Password": stk_password(shortcode, passkey, timestamp),
        "Timestamp": timestamp,
        "CheckoutRequestID": checkout_request_id,
    }


# -- answers ---------------------------------------------------------------------------------------


def _text(value: object, limit: int = 160) -> str:
    """A short printable rendering of a processor's words, for exception texts."""
    if not isinstance(value, str):
        return ""
    # Daraja's words are words: a long base64-like run would be an echoed credential (a Password is
    # base64 of shortcode + passkey + timestamp), so it never reaches an exception text.
    words = LONG_TOKEN.sub("***", value)
    return "".join(c for c in words if c.isprintable())[:limit].strip()


def daraja_error(body: object) -> tuple[str, str]:
    """``(errorCode, errorMessage)`` of a Daraja error body, or empty strings."""
    if not isinstance(body, Mapping):
        return "", ""
    code = body.get("errorCode")
    code_text = code if isinstance(code, str) and ERROR_CODE.fullmatch(code) else ""
    return code_text, _text(body.get("errorMessage"))


def _detail(code: str, message: str) -> str:
    """`` (<code> <message>)`` for an exception text, or nothing."""
    words = " ".join(part for part in (code, message) if part)
    return f" ({words})" if words else ""


def token_rejected(status: int, body: object) -> bool:
    """Daraja refused the access token (404 ``404.001.03``; a plain 401 from the gateway too): nothing
    behind the gateway ran, so the call can be made again with a fresh token."""
    return status == 401 or daraja_error(body)[0] == INVALID_TOKEN


def parse_token_answer(body: object) -> tuple[str, int]:
    """``(access_token, expires_in seconds)`` of the OAuth answer; ``expires_in`` is a string at
    Daraja (``"3599"``), a number is accepted."""
    if not isinstance(body, Mapping):
        raise ProcessorUnavailable("M-Pesa OAuth answered without a JSON object")
    token = body.get("access_token")
    expires = body.get("expires_in")
    if not isinstance(token, str) or not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ProcessorUnavailable("M-Pesa OAuth answered without an access_token")
    if isinstance(expires, str) and re.fullmatch(r"[0-9]{1,9}", expires.strip()):
        expires_s = int(expires.strip())
    elif isinstance(expires, int) and not isinstance(expires, bool) and 0 <= expires < 10**9:
        expires_s = expires
    else:
        raise ProcessorUnavailable("M-Pesa OAuth answered without a usable expires_in")
    return token, expires_s


def oauth_failure(status: int, body: object) -> Exception:
    """What a non-2xx OAuth answer means: a 4xx is a refusal of the consumer key and secret."""
    code, message = daraja_error(body)
    if 400 <= status < 500:
        return ProcessorRefused(f"M-Pesa refused the consumer key and secret: {status}{_detail(code, message)}")
    return ProcessorUnavailable(f"M-Pesa answered {status} to the OAuth token request{_detail(code, '')}")


def _code(value: object) -> str | None:
    """A ResultCode/ResponseCode as text: numbers in callbacks, strings in query answers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and ERROR_CODE.fullmatch(value.strip()):
        return value.strip()
    return None


def parse_push_answer(status: int, body: object) -> Checkout:
    """The checkout of an STK push answer, or why there is none. A 4xx and Daraja's request-level
    refusals (``500.001.1001``) are refusals (no prompt was sent); other failures may have prompted the
    driver and are ``ProcessorUnavailable`` (payments never pushes again for that payment)."""
    if 200 <= status < 300:
        if not isinstance(body, Mapping):
            raise ProcessorUnavailable(f"M-Pesa answered {status} to the STK push without a JSON object")
        response_code = _code(body.get("ResponseCode"))
        checkout_id = body.get("CheckoutRequestID")
        if response_code == SUCCESS and isinstance(checkout_id, str) and DARAJA_ID.fullmatch(checkout_id):
            message = _text(body.get("CustomerMessage")) or "Success. Request accepted for processing"
            return Checkout(processor_reference=checkout_id, next_step=PhonePrompt(message))
        if response_code is not None and response_code != SUCCESS:
            reason = _text(body.get("ResponseDescription")) or _text(body.get("errorMessage")) or response_code
            raise ProcessorRefused(f"M-Pesa refused the STK push: {reason}")
        raise ProcessorUnavailable(f"M-Pesa answered {status} to the STK push without a CheckoutRequestID")
    code, message = daraja_error(body)
    if 400 <= status < 500 or (status == 500 and code == REQUEST_REFUSED):
        raise ProcessorRefused(f"M-Pesa refused the STK push: {status}{_detail(code, message)}")
    raise ProcessorUnavailable(f"M-Pesa answered {status} to the STK push{_detail(code, message)}")


@dataclass(frozen=True)
class StkQueryResult:
    """Where Daraja says an STK push stands: still processing (the prompt is open), or its result."""

    checkout_request_id: str
    processing: bool
    merchant_request_id: str | None = None
    result_code: str | None = None
    result_desc: str | None = None


def parse_query_answer(checkout_request_id: str, status: int, body: object) -> StkQueryResult:
    """An STK query answer. While the prompt is open Daraja answers an error, ``500.001.1001`` "The
    transaction is being processed" (safaricom/LNMOnlineAndroidSample#13); that is "processing", not
    a failure. Other errors: a 4xx is a refusal, anything else unavailable."""
    if 200 <= status < 300 and isinstance(body, Mapping):
        result_code = _code(body.get("ResultCode"))
        answered_id = body.get("CheckoutRequestID")
        if _code(body.get("ResponseCode")) == SUCCESS and result_code is not None:
            if answered_id is not None and answered_id != checkout_request_id:
                raise ProcessorUnavailable("M-Pesa answered the STK query for another CheckoutRequestID")
            merchant = body.get("MerchantRequestID")
            return StkQueryResult(
                checkout_request_id=checkout_request_id,
                processing=False,
                merchant_request_id=merchant if isinstance(merchant, str) else None,
                result_code=result_code,
                result_desc=_text(body.get("ResultDesc")) or None,
            )
    code, message = daraja_error(body)
    if code == REQUEST_REFUSED and STILL_PROCESSING.search(message):
        return StkQueryResult(checkout_request_id=checkout_request_id, processing=True)
    if 200 <= status < 300:
        raise ProcessorUnavailable(f"M-Pesa answered {status} to the STK query without a result")
    if 400 <= status < 500:
        raise ProcessorRefused(f"M-Pesa refused the STK query: {status}{_detail(code, message)}")
    raise ProcessorUnavailable(f"M-Pesa answered {status} to the STK query{_detail(code, message)}")


# -- callbacks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StkCallback:
    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    # Only on success (ResultCode 0): the metadata items.
    amount_minor: int | None = None
    receipt: str | None = None
    transaction_date: str | None = None
    phone: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    # UnicodeDecodeError is a ValueError; "1e9999999999999999999" overflows Decimal (DecimalException).
    except (ValueError, RecursionError, DecimalException):
        raise MalformedWebhook("body is not JSON") from None


def _required_id(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not DARAJA_ID.fullmatch(value):
        raise MalformedWebhook(f"{key} must be a Daraja id")
    return value


def _items(metadata: object) -> dict[str, object]:
    """``CallbackMetadata.Item`` by name (order is not guaranteed; an item may lack ``Value``)."""
    if not isinstance(metadata, Mapping):
        raise MalformedWebhook("a successful callback needs CallbackMetadata")
    items = metadata.get("Item")
    if not isinstance(items, list):
        raise MalformedWebhook("CallbackMetadata.Item must be a list")
    by_name: dict[str, object] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("Name"), str):
            raise MalformedWebhook("each CallbackMetadata item needs a Name")
        name = item["Name"]
        if name in by_name:
            raise MalformedWebhook(f"CallbackMetadata names {name} twice")
        by_name[name] = item.get("Value")
    return by_name


def _digits(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return value
    return None


def parse_stk_callback(body: bytes) -> StkCallback:
    """The STK callback in ``body``; :class:`MalformedWebhook` for anything else."""
    payload = _load_json(body)
    if not isinstance(payload, Mapping) or not isinstance(payload.get("Body"), Mapping):
        raise MalformedWebhook("not an STK callback: no Body")
    callback = payload["Body"].get("stkCallback")
    if not isinstance(callback, Mapping):
        raise MalformedWebhook("not an STK callback: no Body.stkCallback")
    result_code = _code(callback.get("ResultCode"))
    if result_code is None:
        raise MalformedWebhook("ResultCode must be a number or a code")
    result_desc = callback.get("ResultDesc")
    parsed = StkCallback(
        merchant_request_id=_required_id(callback, "MerchantRequestID"),
        checkout_request_id=_required_id(callback, "CheckoutRequestID"),
        result_code=result_code,
        result_desc=_text(result_desc) if isinstance(result_desc, str) else "",
    )
    if result_code != SUCCESS:
        return parsed
    items = _items(callback.get("CallbackMetadata"))
    if "Amount" not in items:
        raise MalformedWebhook("a successful callback needs its Amount")
    receipt = items.get("MpesaReceiptNumber")
    if not isinstance(receipt, str) or not DARAJA_ID.fullmatch(receipt):
        raise MalformedWebhook("a successful callback needs its MpesaReceiptNumber")
    return StkCallback(
        merchant_request_id=parsed.merchant_request_id,
        checkout_request_id=parsed.checkout_request_id,
        result_code=result_code,
        result_desc=parsed.result_desc,
        amount_minor=shillings_to_minor(items["Amount"]),
        receipt=receipt,
        transaction_date=_digits(items.get("TransactionDate")),
        phone=_digits(items.get("PhoneNumber")),
    )


def result_kind(result_code: str) -> EventKind:
    """0 paid; 1032 cancelled by the driver; 1037/1019 timed out or expired; anything else failed
    (1 insufficient funds, 2001 wrong PIN, 1001 subscriber busy, SFC_IC0003, ...)."""
    if result_code == SUCCESS:
        return EventKind.SUCCEEDED
    if result_code in EXPIRED_CODES:
        return EventKind.EXPIRED
    return EventKind.FAILED


def stk_callback_events(callback: StkCallback) -> list[ProcessorEvent]:
    """The event of a (confirmed) callback; its id is ``<CheckoutRequestID>:<ResultCode>``, the same
    for every delivery of it (Daraja sends no event id). Only the outcome is confirmed (by the STK
    query): the callback's Amount and receipt are anyone's words, so the event states no amount
    (payments takes the one our push asked for: ``capabilities.states_amount``) and names the
    payment by its CheckoutRequestID alone."""
    kind = result_kind(callback.result_code)
    succeeded = kind is EventKind.SUCCEEDED
    return [
        ProcessorEvent(
            event_id=f"{callback.checkout_request_id}:{callback.result_code}",
            payment=PaymentRef(processor_reference=callback.checkout_request_id),
            kind=kind,
            amount_minor=None,
            currency=CURRENCY,
            reason=None if succeeded else (callback.result_desc or f"ResultCode {callback.result_code}"),
        )
    ]


def parse_stk_webhook(body: bytes) -> list[ProcessorEvent]:
    return stk_callback_events(parse_stk_callback(body))


def callback_without_phone(body: bytes) -> bytes:
    """The callback as kept for audit: the driver's phone number (``PhoneNumber`` item) left out."""
    try:
        data = _load_json(body)
        items = data["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    except (MalformedWebhook, KeyError, TypeError):
        return body if b"PhoneNumber" not in body else b""
    if not isinstance(items, list):
        return b""
    data["Body"]["stkCallback"]["CallbackMetadata"]["Item"] = [
        item for item in items if not (isinstance(item, dict) and item.get("Name") == "PhoneNumber")
    ]
    return json.dumps(data, default=str, separators=(",", ":")).encode()


def query_event(result: StkQueryResult) -> ProcessorEvent:
    """``fetch_status``'s answer from a query. The query carries no amount: ``amount_minor`` is None
    even for a success (Daraja charged what the push asked, which only payments knows)."""
    code = None if result.processing else result.result_code
    kind = EventKind.PENDING if code is None else result_kind(code)
    reference = result.checkout_request_id
    failed = kind not in (EventKind.PENDING, EventKind.SUCCEEDED)
    return ProcessorEvent(
        event_id=f"poll:{reference}:{kind}",
        payment=PaymentRef(processor_reference=reference),
        kind=kind,
        amount_minor=None,
        currency=CURRENCY,
        reason=(result.result_desc or f"ResultCode {result.result_code}") if failed else None,
    )


def callback_confirmed(callback: StkCallback, result: StkQueryResult) -> bool:
    """Whether Daraja's query confirms what the callback says: same payment (CheckoutRequestID and,
    when the query names it, MerchantRequestID) and the same side of success/failure. A failure
    code differing from the query's (1037 vs 1032) is still a failure; an open prompt confirms
    nothing."""
    if result.processing or result.result_code is None:
        return False
    if result.checkout_request_id != callback.checkout_request_id:
        return False
    if result.merchant_request_id is not None and result.merchant_request_id != callback.merchant_request_id:
        return False
    return (callback.result_code == SUCCESS) == (result.result_code == SUCCESS)


def peer_allowed(peer: str | None, allowed: Iterable[str]) -> bool:
    """Whether the TCP peer is in the allow-list (addresses or networks)."""
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowed)


def utc_now() -> datetime:
    return datetime.now(UTC)
