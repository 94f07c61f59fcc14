"""Safaricom M-Pesa Daraja (STK push, "M-Pesa Express") as the tests see it: an aiohttp server with
Daraja's OAuth, STK push and STK query, a phone prompt held as state until :meth:`MpesaSimulator.act`,
and the stkCallback POSTed to the push's ``CallBackURL``. Written from ``reference/processors.md`` §6
and the Daraja portal pages for M-Pesa Express (as captured in public repositories), not from
``services/payments/processors/mpesa``, so the adapter and this simulator cannot share one mistake.

What is served:

- ``GET /oauth/v1/generate?grant_type=client_credentials`` with ``Authorization: Basic
  base64(consumer_key:consumer_secret)`` -> 200 ``{"access_token", "expires_in": "3599"}`` (a string, as
  Daraja sends it). Another grant type: 400 ``400.008.02`` "Invalid grant type passed"; wrong or
  missing credentials: 400 ``400.008.01`` "Invalid Authentication passed".
- ``POST /mpesa/stkpush/v1/processrequest`` (Bearer). An unknown or expired token: 404 ``404.001.03``
  "Invalid Access Token" (Daraja's error table gives HTTP 404 for it). A body that is not
  ``application/json``: 400 "Bad Request - Invalid BusinessShortCode" (Daraja's FAQ: that is what a
  missing Content-Type gets). Every field is checked: 400 ``400.002.02`` "Bad Request - Invalid <Field>"
  (BusinessShortCode 5-7 digits; Timestamp ``YYYYMMDDHHmmss``; TransactionType; Amount a whole number
  of shillings from 1 to 250,000, as a JSON integer or digit string; PartyA/PhoneNumber 2547/2541 and 8
  digits; PartyB 5-7 digits; CallBackURL http(s); AccountReference 1-12 characters; TransactionDesc,
  the one optional field, 1-13). Another shortcode: 500 ``500.001.1001`` "Merchant does not exist"; a
  Password that is not ``base64(shortcode + passkey + Timestamp)``: 500 ``500.001.1001`` "Wrong
  credentials". Then the prompt is open: 200 ``{MerchantRequestID, CheckoutRequestID, ResponseCode: "0",
  ResponseDescription, CustomerMessage}``. No idempotency: the same request again is a second prompt.
  The Timestamp's clock is not checked (no source says Daraja does): it is recorded in ``pushes``.
- ``POST /mpesa/stkpushquery/v1/query`` (Bearer; BusinessShortCode, Password, Timestamp,
  CheckoutRequestID checked as above). An open prompt: 500 ``{"requestId": <CheckoutRequestID>,
  "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}``
  (safaricom/LNMOnlineAndroidSample#13). An unknown CheckoutRequestID: 500 ``500.001.1001`` "The
  transaction does not exist" (the exact words are not documented: decided here). A decided prompt:
  200 ``{ResponseCode: "0", ResponseDescription, MerchantRequestID, CheckoutRequestID, ResultCode,
  ResultDesc}`` with ResultCode a string, as Daraja answers it.

The driver (:meth:`act`): "succeeded" -> ResultCode 0 with CallbackMetadata ``Amount`` (``12.00``),
``MpesaReceiptNumber``, ``Balance`` without a Value, ``TransactionDate`` and ``PhoneNumber`` as numbers;
"declined" -> 1032 "Request cancelled by user"; "expired" -> 1037 "DS timeout user cannot be reached".
Callbacks are unsigned JSON POSTs to the push's CallBackURL (or ``webhook_url`` when set), retried on
a non-2xx answer or an unreachable receiver after 0.2 s, 0.5 s and 1 s (Safaricom publishes no retry
schedule; third parties report duplicates and lost callbacks, so both are faults here). ``faults.drop``
loses them (the query still answers the truth), ``copies`` duplicates them, ``hold`` keeps them until
:meth:`release`, which sends them newest first.

M-Pesa STK has no refunds and no disputes: :meth:`open_dispute` and :meth:`settle_dispute` raise.

:meth:`signed_webhook` is the callback Daraja would send (nothing is signed). For a prompt still
open it first decides the prompt that way, without sending anything, so that Daraja's query agrees
(as after a lost callback). :meth:`with_other_secret` returns a view whose callbacks claim the
opposite of what Daraja holds: M-Pesa has no secret to get wrong, a forger can POST any body, and only
the STK query tells the truth.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from services.payments.processors.base import Checkout, WebhookRequest
from tests.simulators.processor import (
    CreateFault,
    OnHost,
    Outcome,
    SimulatorHost,
    WebhookFaults,
    post_webhook,
    with_retries,
)

# East Africa Time, UTC+3 all year.
EAT = timezone(timedelta(hours=3))
SANDBOX_SHORTCODE = "174379"
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MAX_AMOUNT_KES = 250_000
SHORTCODE = re.compile(r"^[0-9]{5,7}$")
MSISDN = re.compile(r"^254[17][0-9]{8}$")
TIMESTAMP = re.compile(r"^[0-9]{14}$")
DIGITS = re.compile(r"^[0-9]+$")
RESULTS: dict[str, tuple[int, str]] = {
    "succeeded": (0, "The service request is processed successfully."),
    "declined": (1032, "Request cancelled by user"),
    "expired": (1037, "DS timeout user cannot be reached"),
}
# What a forger claims: the other side of success/failure.
OPPOSITE: dict[str, Outcome] = {"succeeded": "declined", "declined": "succeeded", "expired": "succeeded"}


@dataclass
class Prompt:
    """One STK push: the prompt on the driver's phone, then its result."""

    checkout_request_id: str
    merchant_request_id: str
    amount_kes: int
    phone: str
    callback_url: str
    account_reference: str
    outcome: Literal["succeeded", "declined", "expired"] | None = None
    receipt: str | None = None
    transaction_date: int | None = None


@dataclass
class Delivery:
    """One POST attempt of a callback: the answer's status, or the error's kind."""

    url: str
    body: bytes
    status: int | None
    error: str | None = None


@dataclass
class _Outgoing:
    url: str
    body: bytes


@dataclass
class _State:
    prompts: dict[str, Prompt] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry


def _now_eat() -> datetime:
    return datetime.now(UTC).astimezone(EAT)


def _daraja_id() -> str:
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(90_000_000) + 10_000_000}-1"


def _receipt() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "Q" + "".join(secrets.choice(alphabet) for _ in range(9))


def _error(status: int, code: str, message: str, request_id: str | None = None) -> web.Response:
    return web.json_response(
        {"requestId": request_id or _daraja_id(), "errorCode": code, "errorMessage": message}, status=status
    )


def _bad_request(field_name: str) -> web.Response:
    return _error(400, "400.002.02", f"Bad Request - Invalid {field_name}")


def _as_digits(value: object) -> str | None:
    """A Daraja "Numeric" field: a JSON integer or a digit string (its own samples use both)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and DIGITS.fullmatch(value):
        return value
    return None


def expected_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """base64(Shortcode + Passkey + Timestamp), Daraja's STK password."""
    return base64.b64encode((shortcode + passkey + timestamp).encode("utf-8")).decode("ascii")


class MpesaSimulator(OnHost):
    processor = "mpesa"

    def __init__(
        self,
        *,
        shortcode: str = SANDBOX_SHORTCODE,
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        token_lifetime_s: int = 3599,
        callback_backoff_s: Sequence[float] = (0.2, 0.5, 1.0),
        create_delay_s: float = 11.0,
    ) -> None:
        self.shortcode = shortcode
        self.transaction_type = transaction_type
        self.party_b = party_b
        self.consumer_key = secrets.token_urlsafe(36)
        self.consumer_secret = secrets.token_urlsafe(24)
        self.passkey = secrets.token_hex(32)
        self.token_lifetime_s = token_lifetime_s
        self.callback_backoff_s = tuple(callback_backoff_s)
        # How late the answer to a push comes with the "timeout_after_create" fault.
        self.create_delay_s = create_delay_s
        self.faults = WebhookFaults()
        self.webhook_url: str | None = None
        self._state = _State()
        # What happened, for the tests to assert on.
        self.oauth_calls = 0
        self.push_calls = 0  # STK push requests that reached the endpoint, accepted or not
        self.pushes: list[dict[str, Any]] = []  # the accepted push bodies, as received
        self.query_calls = 0
        self.deliveries: list[Delivery] = []
        self.dropped: list[bytes] = []
        self._held: list[_Outgoing] = []
        self._create_fault: CreateFault | None = None
        self._host = SimulatorHost()

    # -- lifecycle ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/oauth/v1/generate", self._oauth)
        app.router.add_post("/mpesa/stkpush/v1/processrequest", self._push)
        app.router.add_post("/mpesa/stkpushquery/v1/query", self._query)
        return app

    async def start(self) -> None:
        await self._host.start(self.app(), shutdown_timeout=0.5)

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"shortcode": self.shortcode, "transaction_type": self.transaction_type}
        if self.party_b is not None:
            settings["party_b"] = self.party_b
        return settings

    def secrets(self) -> dict[str, str]:
        return {"consumer_key": self.consumer_key, "consumer_secret": self.consumer_secret, "passkey": self.passkey}

    # -- OAuth -------------------------------------------------------------------------------------

    def _credentials_ok(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme != "Basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, sep, secret = decoded.partition(":")
        expected = f"{self.consumer_key}:{self.consumer_secret}"
        return bool(sep) and hmac.compare_digest(f"{key}:{secret}".encode(), expected.encode())

    async def _oauth(self, request: web.Request) -> web.Response:
        self.oauth_calls += 1
        if request.query.get("grant_type") != "client_credentials":
            return _error(400, "400.008.02", "Invalid grant type passed")
        if not self._credentials_ok(request.headers.get("Authorization", "")):
            return _error(400, "400.008.01", "Invalid Authentication passed")
        token = secrets.token_urlsafe(21)
        self._state.tokens[token] = time.monotonic() + self.token_lifetime_s
        return web.json_response({"access_token": token, "expires_in": str(self.token_lifetime_s)})

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (as when it expires early)."""
        self._state.tokens.clear()

    def _bearer_ok(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._state.tokens.get(token)
        return scheme == "Bearer" and expiry is not None and time.monotonic() < expiry

    async def _json_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        if request.content_type != "application/json":
            return _bad_request("BusinessShortCode")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "400.002.02", "Bad Request - Invalid JSON")
        if not isinstance(body, dict):
            return _error(400, "400.002.02", "Bad Request - Invalid JSON")
        return body

    def _check_password(self, body: Mapping[str, Any]) -> web.Response | None:
        """BusinessShortCode, Timestamp and Password, as both endpoints check them."""
        shortcode = _as_digits(body.get("BusinessShortCode"))
        if shortcode is None or not SHORTCODE.fullmatch(shortcode):
            return _bad_request("BusinessShortCode")
        timestamp = body.get("Timestamp")
        if not isinstance(timestamp, str) or not TIMESTAMP.fullmatch(timestamp):
            return _bad_request("Timestamp")
        try:
            datetime.strptime(timestamp, "%Y%m%d%H%M%S")
        except ValueError:
            return _bad_request("Timestamp")
        password = body.get("Password")
        if not isinstance(password, str) or not password:
            return _bad_request("Password")
        if shortcode != self.shortcode:
            return _error(500, "500.001.1001", "Merchant does not exist")
        expected = expected_password(shortcode, self.passkey, timestamp)
        if not hmac.compare_digest(password.encode(), expected.encode()):
            return _error(500, "500.001.1001", "Wrong credentials")
        return None

    # -- STK push ----------------------------------------------------------------------------------

    def fail_next_create(self, fault: CreateFault) -> None:
        self._create_fault = fault

    def created_payments(self) -> int:
        return len(self._state.prompts)

    async def _push(self, request: web.Request) -> web.Response:
        self.push_calls += 1
        if not self._bearer_ok(request):
            return _error(404, "404.001.03", "Invalid Access Token")
        fault, self._create_fault = self._create_fault, None
        if fault == "error_500":
            return _error(500, "500.003.1001", "Internal Server Error")
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        refused = self._validate_push(body)
        if refused is not None:
            return refused
        prompt = Prompt(
            checkout_request_id=f"ws_CO_{_now_eat():%d%m%Y%H%M%S}{secrets.randbelow(10**10):010d}",
            merchant_request_id=_daraja_id(),
            amount_kes=int(_as_digits(body["Amount"]) or 0),
            phone=str(_as_digits(body["PhoneNumber"])),
            callback_url=body["CallBackURL"],
            account_reference=body["AccountReference"],
        )
        self._state.prompts[prompt.checkout_request_id] = prompt
        self.pushes.append(body)
        answer = {
            "MerchantRequestID": prompt.merchant_request_id,
            "CheckoutRequestID": prompt.checkout_request_id,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        }
        if fault == "timeout_after_create":
            await asyncio.sleep(self.create_delay_s)
        return web.json_response(answer)

    def _validate_push(self, body: Mapping[str, Any]) -> web.Response | None:
        # Field checks first (400), then who is asking (500.001.1001), as Daraja's error table orders them.
        if body.get("TransactionType") not in TRANSACTION_TYPES:
            return _bad_request("TransactionType")
        amount = body.get("Amount")
        amount_digits = _as_digits(amount)
        if amount_digits is None or not 1 <= int(amount_digits) <= MAX_AMOUNT_KES:
            # Floats and decimal strings too: "Only whole numbers are supported".
            return _bad_request("Amount")
        for name in ("PartyA", "PhoneNumber"):
            number = _as_digits(body.get(name))
            if number is None or not MSISDN.fullmatch(number):
                return _bad_request(name)
        party_b = _as_digits(body.get("PartyB"))
        if party_b is None or not SHORTCODE.fullmatch(party_b):
            return _bad_request("PartyB")
        callback = body.get("CallBackURL")
        if (
            not isinstance(callback, str)
            or urlsplit(callback).scheme not in ("http", "https")
            or not urlsplit(callback).netloc
        ):
            return _bad_request("CallBackURL")
        reference = body.get("AccountReference")
        if not isinstance(reference, str) or not 1 <= len(reference) <= 12:
            return _bad_request("AccountReference")
        if "TransactionDesc" in body:
            desc = body["TransactionDesc"]
            if not isinstance(desc, str) or not 1 <= len(desc) <= 13:
                return _bad_request("TransactionDesc")
        return self._check_password(body)

    # -- STK query ---------------------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.Response:
        self.query_calls += 1
        if not self._bearer_ok(request):
            return _error(404, "404.001.03", "Invalid Access Token")
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        checkout_id = body.get("CheckoutRequestID")
        if not isinstance(checkout_id, str) or not checkout_id:
            return _bad_request("CheckoutRequestID")
        refused = self._check_password(body)
        if refused is not None:
            return refused
        prompt = self._state.prompts.get(checkout_id)
        if prompt is None:
            return _error(500, "500.001.1001", "The transaction does not exist")
        if prompt.outcome is None:
            return _error(500, "500.001.1001", "The transaction is being processed", request_id=checkout_id)
        code, desc = RESULTS[prompt.outcome]
        return web.json_response(
            {
                "ResponseCode": "0",
                "ResponseDescription": "The service request has been accepted successsfully",
                "MerchantRequestID": prompt.merchant_request_id,
                "CheckoutRequestID": prompt.checkout_request_id,
                "ResultCode": str(code),
                "ResultDesc": desc,
            }
        )

    # -- the driver and the callbacks --------------------------------------------------------------

    def prompt(self, checkout_request_id: str) -> Prompt:
        return self._state.prompts[checkout_request_id]

    def _decide(self, prompt: Prompt, outcome: Outcome) -> None:
        if prompt.outcome is not None:
            raise ValueError(f"the prompt {prompt.checkout_request_id} was already answered: {prompt.outcome}")
        prompt.outcome = outcome
        if outcome == "succeeded":
            prompt.receipt = _receipt()
            prompt.transaction_date = int(f"{_now_eat():%Y%m%d%H%M%S}")

    def callback_body(self, prompt: Prompt, claimed: Outcome, *, age_s: int = 0) -> bytes:
        """The stkCallback Daraja sends for the prompt, saying ``claimed``."""
        code, desc = RESULTS[claimed]
        callback: dict[str, Any] = {
            "MerchantRequestID": prompt.merchant_request_id,
            "CheckoutRequestID": prompt.checkout_request_id,
            "ResultCode": code,
            "ResultDesc": desc,
        }
        if claimed == "succeeded":
            when = _now_eat() - timedelta(seconds=age_s)
            callback["CallbackMetadata"] = {
                "Item": [
                    {"Name": "Amount", "Value": "__AMOUNT__"},
                    {"Name": "MpesaReceiptNumber", "Value": prompt.receipt or _receipt()},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": prompt.transaction_date or int(f"{when:%Y%m%d%H%M%S}")},
                    {"Name": "PhoneNumber", "Value": int(prompt.phone)},
                ]
            }
        text = json.dumps({"Body": {"stkCallback": callback}})
        # Daraja writes the amount as a decimal number, 1.00 (the captured callbacks in the reference).
        return text.replace('"__AMOUNT__"', f"{prompt.amount_kes}.00").encode()

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        prompt = self._state.prompts[checkout.processor_reference]
        self._decide(prompt, outcome)
        self._dispatch(_Outgoing(self.webhook_url or prompt.callback_url, self.callback_body(prompt, outcome)))

    def _dispatch(self, out: _Outgoing) -> None:
        if self.faults.drop:
            self.dropped.append(out.body)
            return
        copies = max(1, self.faults.copies)
        if self.faults.hold:
            self._held.extend([out] * copies)
            return
        self._host.tasks.spawn(self._deliver_copies(out, copies))

    async def _deliver_copies(self, out: _Outgoing, copies: int) -> None:
        for _ in range(copies):
            await self._deliver(out)

    async def _deliver(self, out: _Outgoing) -> bool:
        """POSTs one callback, retrying a non-2xx answer or an unreachable receiver."""
        http = self._host.http
        assert http is not None, "start() first"

        async def attempt(_: int) -> bool:
            answer = await post_webhook(http, out.url, out.body, {"Content-Type": "application/json"}, 10)
            self.deliveries.append(Delivery(out.url, out.body, answer.status, answer.error))
            return answer.accepted

        return await with_retries(attempt, self.callback_backoff_s)

    async def release(self) -> None:
        held, self._held = self._held, []
        for out in reversed(held):
            await self._deliver(out)

    # -- what M-Pesa STK does not have -------------------------------------------------------------

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        raise NotImplementedError("M-Pesa STK has no disputes")

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        raise NotImplementedError("M-Pesa STK has no disputes")

    # -- callbacks not sent ------------------------------------------------------------------------

    def _webhook_request(self, prompt: Prompt, body: bytes) -> WebhookRequest:
        url = urlsplit(self.webhook_url or prompt.callback_url)
        headers = CIMultiDictProxy(
            CIMultiDict({"Host": url.netloc, "Content-Type": "application/json", "Content-Length": str(len(body))})
        )
        return WebhookRequest(
            method="POST",
            path=url.path or "/",
            query={},
            headers=headers,
            body=body,
            peer="127.0.0.1",
            received_at_s=time.time(),
        )

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        prompt = self._state.prompts[processor_reference]
        if prompt.outcome is None:
            self._decide(prompt, outcome)
        return self._webhook_request(prompt, self.callback_body(prompt, outcome, age_s=age_s))

    def with_other_secret(self) -> ForgedCallbacks:
        return ForgedCallbacks(self)


class ForgedCallbacks(MpesaSimulator):
    """The simulator as a forger sees it: its callbacks claim the opposite of what Daraja holds
    (M-Pesa signs nothing, so a forger can send any body; only the STK query tells the truth).
    Everything else is the simulator itself: the view shares its state (the same instance dict)."""

    def __init__(self, simulator: MpesaSimulator) -> None:
        self.__dict__ = simulator.__dict__

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        prompt = self.prompt(processor_reference)
        if prompt.outcome is None:
            self._decide(prompt, OPPOSITE[outcome])
        assert prompt.outcome is not None
        return self._webhook_request(prompt, self.callback_body(prompt, OPPOSITE[prompt.outcome], age_s=age_s))

    def with_other_secret(self) -> ForgedCallbacks:
        return self
