"""Adapter for Paystack: a transaction initialized on Paystack's hosted checkout (redirect), signed
webhooks, verify for polling, refunds and disputes.

Wire format (``wire.py``; processors.md §4). What this adds is the talking:

- ``POST {api}/transaction/initialize`` (``Authorization: Bearer <secret key>``, JSON) with our
  reference; the driver is redirected to ``data.authorization_url``. The processor reference is the
  reference (Paystack echoes ours).
- Creates are not idempotent in the sense payments needs: Paystack takes no idempotency key, and a
  second initialize with the same reference is refused ("Duplicate Transaction Reference": issue
  threads of laravel-paystack #89/#106, drupal.org node 3539432, where a retry after an abandoned
  attempt gets it), so a retry can never make a second chargeable transaction, but nothing returns
  the first one's authorization URL either (verify has no access code or URL). So each create is
  sent once (``create_is_idempotent`` False): when its answer is lost, payments never asks again
  for that payment and the driver starts a new top-up, whose new reference is a new transaction;
  the first stays unpaid (the driver never saw its page). A duplicate answer is refused outright.
- ``GET {api}/transaction/verify/{reference}`` for polling (``wire.transaction_kind``).
- Webhooks: ``x-paystack-signature``, hex HMAC-SHA512 of the raw body keyed with the secret key. No
  timestamp is signed (``replay_window_s`` None: a replay is the same statement again, which its
  id deduplicates). Paystack sends no event when a checkout is abandoned or a card declined: the
  poller learns those from verify.
- Refund webhooks name the transaction, not the refund (no refund id in Paystack's samples), so
  ``parse_webhook`` reads the transaction (verify) and its refunds (``GET /refund?transaction=``)
  and states each refund's outcome under the refund's own id: two refunds of the same amount stay
  two. When Paystack cannot be asked, the webhook is not acknowledged (``ProcessorUnavailable``)
  and Paystack sends it again.
- Refunds: ``POST /refund`` takes no idempotency key either. Our refund key goes into the refund's
  ``merchant_note``; before refunding, the transaction's refunds are listed, and a refund carrying
  the key is returned instead of refunding again (a retry after a lost answer). Paystack also
  refuses a refund beyond what is left of the transaction.

Errors: a transport failure, a timeout, 401/403 (the key), 409, 429 and 5xx are
:class:`ProcessorUnavailable`; any other 4xx is :class:`ProcessorRefused` with Paystack's message
(redacted). Neither ever carries the key, request headers or an aiohttp error's repr."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
    EventKind,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    ProcessorAdapter,
    ProcessorEvent,
    ProcessorRefused,
    ProcessorUnavailable,
    Redirect,
    RefundAccepted,
    RefundRequest,
    WebhookAuth,
    WebhookRequest,
    answer_error,
    header,
    redact,
    send_request,
)
from services.payments.processors.paystack import wire
from services.payments.processors.paystack.config import PaystackSettings
from shared.money import MoneyError

# Anything shaped like a Paystack key, in an error text, is cut.
_CREDENTIAL = re.compile(r"\b(?:sk|pk)_(?:live|test)_[A-Za-z0-9_*]+")
# Refunds of one transaction, listed in one page (a top-up has a handful at most).
REFUND_PAGE = 100


class PaystackAdapter(ProcessorAdapter[PaystackSettings]):
    name = "paystack"
    config_type = PaystackSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.BODY_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=False,
        create_idempotency=(
            "the payment's reference: Paystack refuses a second initialize of a reference"
            ' ("Duplicate Transaction Reference"), so a retry never makes a second chargeable transaction,'
            " but it cannot return the first one's checkout URL. Each create is sent once; when its answer"
            " is lost, the driver starts a new top-up (a new reference)."
        ),
    )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        query: Sequence[tuple[str, str]] | None = None,
        what: str | None = None,
    ) -> Any:
        """``data`` of a successful answer; the error as ProcessorUnavailable/ProcessorRefused."""
        what = what or f"paystack {method} {path}"
        answer = await send_request(
            self.http,
            what,
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=dict(json_body) if json_body is not None else None,
            params=list(query) if query is not None else None,
            headers={"Authorization": f"Bearer {self.settings.secret_key.get_secret_value()}"},
            allow_redirects=False,
        )
        status = answer.status
        envelope = wire.parse_answer(answer.body)
        if 200 <= status < 300:
            if not envelope.ok:
                raise ProcessorUnavailable(f"{what} failed: the answer is not a successful Paystack answer")
            return envelope.data
        message = redact(envelope.message or "no message", [self.settings.secret_key.get_secret_value()], _CREDENTIAL)
        raise answer_error("paystack", what, status, message, credential="secret key")

    # -- checkout ------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            body = wire.initialize_body(request, self.settings.customer_email)
        except ValueError as exc:  # MoneyError, WireError
            raise ProcessorRefused(f"paystack cannot take this payment: {exc}") from None
        # Sent once: see the module docstring (a lost answer is not asked again).
        data = await self._call("POST", "/transaction/initialize", json_body=body)
        if not isinstance(data, dict):
            raise ProcessorUnavailable("paystack initialize answered no data")
        url, reference = data.get("authorization_url"), data.get("reference")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProcessorUnavailable("paystack initialize answered no authorization_url")
        if reference != request.reference:
            raise ProcessorUnavailable("paystack initialize answered another reference than ours")
        return Checkout(processor_reference=request.reference, next_step=Redirect(url))

    # -- status --------------------------------------------------------------------------------

    async def _verify(self, reference: str | None) -> wire.PaystackTransaction:
        if reference is None or not wire.REFERENCE.fullmatch(reference):
            raise ProcessorRefused("paystack payments are looked up by their reference")
        data = await self._call(
            "GET", f"/transaction/verify/{quote(reference, safe='')}", what="paystack verify transaction"
        )
        if not isinstance(data, dict):
            raise ProcessorUnavailable("paystack verify answered no transaction")
        try:
            tx = wire.PaystackTransaction.from_json(data)
        except ValueError as exc:  # WireError, MoneyError
            raise ProcessorUnavailable(f"paystack answered an unreadable transaction: {exc}") from None
        if tx.reference != reference:
            raise ProcessorUnavailable("paystack verify answered another transaction")
        return tx

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        reference = payment.processor_reference or payment.merchant_reference
        tx = await self._verify(reference)
        try:
            kind = wire.transaction_kind(tx, time.time(), self.settings.checkout_expiry_s)
        except ValueError as exc:
            raise ProcessorUnavailable(f"paystack transaction {tx.reference}: {exc}") from None
        reason = tx.gateway_response if kind is EventKind.FAILED else None
        return ProcessorEvent(f"poll:{tx.reference}:{kind}", tx.payment, kind, tx.amount_minor, tx.currency, reason)

    # -- webhooks ------------------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        wire.verify_signature(
            self.settings.secret_key.get_secret_value(), header(request.headers, wire.SIGNATURE_HEADER), request.body
        )

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        event = wire.parse_event(request.body)
        if event.event not in wire.REFUND_EVENTS:
            return wire.event_to_processor_events(event)
        notice = wire.refund_notice(event)
        if notice is None:
            return []
        try:
            tx = await self._verify(notice.transaction_reference)
        except ProcessorRefused as exc:
            # Signed by Paystack, yet Paystack does not know the transaction: nothing to act on.
            raise MalformedWebhook(f"{event.event} names a transaction Paystack does not find: {exc}") from None
        return wire.refund_events(tx, await self._refunds_of(tx.id))

    def stored_body(self, body: bytes) -> bytes:
        return wire.body_without_driver(body)

    # -- refunds -------------------------------------------------------------------------------

    async def _refunds_of(self, transaction_id: str) -> list[wire.PaystackRefund]:
        data = await self._call(
            "GET",
            "/refund",
            query=[("transaction", transaction_id), ("perPage", str(REFUND_PAGE))],
            what="paystack list refunds",
        )
        if not isinstance(data, list):
            raise ProcessorUnavailable("paystack list refunds answered no list")
        refunds = []
        for item in data:
            if not isinstance(item, dict):
                raise ProcessorUnavailable("paystack list refunds answered an unreadable refund")
            try:
                refunds.append(wire.PaystackRefund.from_json(item))
            except wire.UnsupportedCurrency:
                continue
            except ValueError as exc:
                raise ProcessorUnavailable(f"paystack answered an unreadable refund: {exc}") from None
        return refunds

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        transaction_id = request.payment.ids.get("transaction")
        if not transaction_id:
            reference = request.payment.processor_reference or request.payment.merchant_reference
            tx = await self._verify(reference)
            if tx.status not in wire.PAID_STATUSES:
                raise ProcessorRefused(f"paystack: transaction {tx.reference} is {tx.status}, nothing was charged")
            transaction_id = tx.id
        # A refund made for this key already (its answer was lost): that one, not a second.
        for refund in await self._refunds_of(transaction_id):
            if refund.made_for(request.refund_key):
                return RefundAccepted(refund_id=refund.id, status=refund.status)
        try:
            body = wire.refund_body(transaction_id, request)
        except MoneyError as exc:
            raise ProcessorRefused(f"paystack cannot refund this amount: {exc}") from None
        data = await self._call("POST", "/refund", json_body=body, what="paystack create refund")
        if not isinstance(data, dict):
            raise ProcessorUnavailable("paystack create refund answered no refund")
        try:
            refund = wire.PaystackRefund.from_json(data)
        except ValueError as exc:
            raise ProcessorUnavailable(f"paystack answered an unreadable refund: {exc}") from None
        return RefundAccepted(refund_id=refund.id, status=refund.status)
