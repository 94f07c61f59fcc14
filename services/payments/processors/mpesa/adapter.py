"""Adapter for Safaricom M-Pesa Daraja, STK push ("M-Pesa Express"): the driver's phone is prompted,
the result arrives as an unsigned callback, which is believed only once Daraja's STK query confirms it.

Wire format: ``wire.py``. What this adds is the talking:
- OAuth tokens are cached until shortly before they expire; a call whose token Daraja refuses
  (``404.001.03`` / 401) gets one fresh token and is made once more. That is safe for the STK push
  too: a refused token stops the request at Daraja's gateway, before any prompt.
- Otherwise the STK push is never repeated: Daraja has no idempotency key, and a second push is a
  second prompt (a second chargeable payment). Payments never pushes again for a payment whose
  answer was lost either (``create_is_idempotent`` is False).
- Callbacks carry no signature. ``verify_webhook`` checks the source address against
  ``callback_ips`` (when set), then asks the STK query whether the callback's outcome is true. Until
  Daraja has a result (the query says "The transaction is being processed") nothing can be
  confirmed: the callback is refused (401) and payments' poller heals the payment through
  ``fetch_status``. When Daraja cannot be reached the callback is refused the same way.
- The query has no amount, and the callback is anyone's words: no event states an amount
  (``amount_minor=None``), and payments takes the one our push asked for (``states_amount=False``).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp

from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
    InvalidSignature,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    ProcessorAdapter,
    ProcessorEvent,
    ProcessorRefused,
    ProcessorUnavailable,
    WebhookAck,
    WebhookAuth,
    WebhookRequest,
    redact,
    send_request,
)
from services.payments.processors.mpesa import wire
from services.payments.processors.mpesa.config import MpesaSettings
from shared.settings import ServiceSettings

# A cached token is renewed this long before Daraja says it expires (tokens live about an hour).
TOKEN_RENEW_MARGIN_S = 60.0


class MpesaAdapter(ProcessorAdapter[MpesaSettings]):
    name = "mpesa"
    config_type = MpesaSettings
    capabilities = Capabilities(
        next_step=NextStepKind.PHONE_PROMPT,
        webhook_auth=WebhookAuth.STATUS_QUERY,
        refunds=False,  # reversals are Daraja's separate Reversal API, with its own result callbacks
        partial_refunds=False,
        disputes=False,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=False,
        create_idempotency=(
            "none at Daraja: every STK push is a new prompt on the driver's phone. The adapter sends each "
            "push once (a second time only when Daraja refused its access token, so nobody was prompted), and "
            "payments never pushes again for a payment whose answer was lost: the driver starts a new top-up."
        ),
        states_amount=False,
    )

    def __init__(
        self, integration_id: str, settings: MpesaSettings, services: ServiceSettings, http: aiohttp.ClientSession
    ) -> None:
        super().__init__(integration_id, settings, services, http)
        self._token: str | None = None
        self._token_renew_at = 0.0  # time.monotonic()
        self._token_lock = asyncio.Lock()

    # -- HTTP --------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """The text without any of the integration's secrets or the current token, should a proxy or
        a confused server ever echo them into an error message (not cut: ``wire`` bounds Daraja's words)."""
        secrets = (
            self.settings.consumer_key.get_secret_value(),
            self.settings.consumer_secret.get_secret_value(),
            self.settings.passkey.get_secret_value(),
            self._basic_credentials(),
            self._token or "",
        )
        return redact(text, secrets, limit=None)

    def _basic_credentials(self) -> str:
        key = self.settings.consumer_key.get_secret_value()
        secret = self.settings.consumer_secret.get_secret_value()
        return base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")

    async def _send(self, method: str, path: str, headers: dict[str, str], payload: Any = None) -> tuple[int, Any]:
        """``(status, JSON body or None)``. Transport errors name only the exception's kind: an aiohttp
        error's repr carries the request's headers, and with them the credentials."""
        answer = await send_request(
            self.http,
            f"M-Pesa {method} {path.split('?', 1)[0]}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=payload,
            headers=headers,
        )
        return answer.status, answer.body

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_renew_at:
                return self._token
            self._token = None
            status, body = await self._send(
                "GET", wire.OAUTH_PATH, {"Authorization": f"Basic {self._basic_credentials()}"}
            )
            if not 200 <= status < 300:
                failure = wire.oauth_failure(status, body)
                raise type(failure)(self._scrub(str(failure)))
            token, expires_in_s = wire.parse_token_answer(body)
            lifetime_s = (
                expires_in_s - TOKEN_RENEW_MARGIN_S if expires_in_s > 2 * TOKEN_RENEW_MARGIN_S else expires_in_s / 2
            )
            self._token = token
            self._token_renew_at = time.monotonic() + lifetime_s
            return token

    def _forget_token(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _post(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        """A Bearer POST; once more with a fresh token if Daraja refused the token (nothing ran)."""
        token = await self._access_token()
        headers = {"Authorization": f"Bearer {token}"}
        status, body = await self._send("POST", path, headers, payload)
        if wire.token_rejected(status, body):
            self._forget_token(token)
            token = await self._access_token()
            status, body = await self._send("POST", path, {"Authorization": f"Bearer {token}"}, payload)
        return status, body

    def _password_fields(self) -> tuple[str, str, str]:
        timestamp = wire.daraja_timestamp(wire.utc_now())
        return self.settings.shortcode, self.settings.passkey.get_secret_value(), timestamp

    async def _query(self, checkout_request_id: str) -> wire.StkQueryResult:
        shortcode, passkey, timestamp = self._password_fields()
        payload = wire.stk_query_body(
            shortcode=shortcode, passkey=passkey, timestamp=timestamp, checkout_request_id=checkout_request_id
        )
        status, body = await self._post(wire.QUERY_PATH, payload)
        try:
            return wire.parse_query_answer(checkout_request_id, status, body)
        except (ProcessorRefused, ProcessorUnavailable) as exc:
            raise type(exc)(self._scrub(str(exc))) from None

    # -- the interface -----------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        amount = wire.whole_shillings(request.amount_minor, request.currency)
        phone = wire.kenyan_msisdn(request.phone)
        shortcode, passkey, timestamp = self._password_fields()
        payload = wire.stk_push_body(
            shortcode=shortcode,
            passkey=passkey,
            timestamp=timestamp,
            transaction_type=self.settings.transaction_type,
            amount_shillings=amount,
            phone=phone,
            party_b=self.settings.credit_party,
            callback_url=request.webhook_url,
            reference=wire.account_reference(request.payment_id),
            description=wire.transaction_desc(request.description),
        )
        # Sent once: a lost answer is not retried here (see the module docstring).
        status, body = await self._post(wire.PUSH_PATH, payload)
        try:
            return wire.parse_push_answer(status, body)
        except (ProcessorRefused, ProcessorUnavailable) as exc:
            raise type(exc)(self._scrub(str(exc))) from None

    async def verify_webhook(self, request: WebhookRequest) -> None:
        if self.settings.callback_ips and not wire.peer_allowed(request.peer, self.settings.callback_ips):
            raise InvalidSignature("callback from an address not in callback_ips")
        try:
            callback = wire.parse_stk_callback(request.body)
        except MalformedWebhook as exc:
            # Nothing is signed, so a body that names no payment cannot be confirmed by anyone.
            raise InvalidSignature(f"not a readable STK callback, nothing to confirm: {exc}") from None
        try:
            result = await self._query(callback.checkout_request_id)
        except (ProcessorRefused, ProcessorUnavailable) as exc:
            raise InvalidSignature(f"M-Pesa could not confirm this callback: {exc}") from None
        if result.processing:
            raise InvalidSignature(
                "M-Pesa still reports this payment as being processed: the callback is not confirmed"
            )
        if not wire.callback_confirmed(callback, result):
            raise InvalidSignature("M-Pesa does not confirm this callback")

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return wire.parse_stk_webhook(request.body)

    def webhook_ack(self) -> WebhookAck:
        return WebhookAck(200, wire.ACK_BODY, "application/json")

    def stored_body(self, body: bytes) -> bytes:
        return wire.callback_without_phone(body)

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        reference = payment.processor_reference
        if reference is None or not wire.DARAJA_ID.fullmatch(reference):
            raise ProcessorRefused("M-Pesa payments are looked up by their CheckoutRequestID")
        return wire.query_event(await self._query(reference))
