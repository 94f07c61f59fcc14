"""Adapter for Template: a hosted checkout page (redirect), signed webhooks, status lookups, refunds.

The calls (``wire.py`` has the formats):

- create: ``POST {api}/v1/checkouts`` with ``Idempotency-Key: <our reference>``: a retry (after a
  timeout, a 5xx, a lost answer) gets the checkout made first, never a second one. The checkout's
  ``id`` is the processor reference; the driver is redirected to its ``url``.
- status: ``GET {api}/v1/checkouts/{id}`` (heals lost webhooks).
- refund: ``POST {api}/v1/refunds`` with ``Idempotency-Key: <refund key>``; the ledger moves only
  on the refund's webhook.
- webhooks: ``Template-Signature`` over ``"<Template-Timestamp>.<raw body>"``, 300 s tolerance. The
  endpoint must send ``wire.HANDLED_EVENTS``; others are acknowledged and ignored.

Errors: a transport failure, a timeout, 401/403 (the key), 409 (a concurrent request under the same
idempotency key), 429 and 5xx are :class:`ProcessorUnavailable` (payments retries); any other 4xx is
:class:`ProcessorRefused` with the processor's error code and (redacted) message. Neither ever
carries the key, a request header or an aiohttp error's repr (``base.send_request`` sees to that)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from services.payments.processors._template import wire
from services.payments.processors._template.config import TemplateSettings
from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
    EventKind,
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
from shared.money import MoneyError

# TEMPLATE: the shapes of the processor's ids (from its object reference), checked before an id goes
# into a URL; and of its credentials, cut from any error text by ``base.redact`` (stripe: its 401
# message quotes the key).
_CHECKOUT_ID = re.compile(r"co_[A-Za-z0-9]{1,64}")
_CREDENTIAL = re.compile(r"\bsk_[A-Za-z0-9_]+")
# TEMPLATE: which answers mean "try again" (the API reference's error and rate-limit pages), besides
# 401/403 and 5xx, which ``base.answer_error`` always makes ProcessorUnavailable (its default is
# this set: mercadopago adds 423 and 424).
_RETRYABLE = frozenset({409, 429})


class TemplateAdapter(ProcessorAdapter[TemplateSettings]):
    name = "template"
    config_type = TemplateSettings
    # TEMPLATE: what the processor can do. A phone prompt: ``NextStepKind.PHONE_PROMPT`` (mpesa).
    # Webhooks signed over fields: ``WebhookAuth.FIELD_HMAC`` (adyen); checked by the processor's API:
    # ``VERIFICATION_API`` (paypal); nothing signed, confirmed by a status query: ``STATUS_QUERY``
    # (mpesa, mollie; with ``states_amount=False`` when that query states no amount: mpesa). No
    # signed timestamp: ``replay_window_s=None`` (razorpay, adyen). No idempotency at all:
    # ``create_is_idempotent=False`` (mpesa). No refunds or disputes by API: ``False`` (mpesa).
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.BODY_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=wire.SIGNATURE_TOLERANCE_S,
        create_is_idempotent=True,
        create_idempotency=(
            "Idempotency-Key: the payment's reference; a retried create is answered with the checkout made first"
        ),
    )
    # TEMPLATE: ``request_timeout_s`` (seconds for one API call, 10 from ``ProcessorAdapter``) only if
    # the processor documents its own timeouts; ``self.api_base`` is ``api_base_url`` without a
    # trailing slash.

    async def _call(
        self,
        method: str,
        path: str,
        label: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One API call; ``label`` names it in errors (never a header, a key or an id we were given)."""
        # TEMPLATE: the authentication (HTTP Basic key id:secret: razorpay; an OAuth token fetched and
        # cached first: paypal, mpesa), the body encoding (form-encoded: stripe) and any version header.
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.settings.api_key.get_secret_value()}"}
        if idempotency_key is not None:
            headers[wire.IDEMPOTENCY_HEADER] = idempotency_key
        answer = await send_request(
            self.http,
            f"{self.name} {label}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=body,
            headers=headers,
            allow_redirects=False,
        )
        status = answer.status
        if 200 <= status < 300:
            if not isinstance(answer.body, dict):
                raise ProcessorUnavailable(f"{self.name} {label} failed: the answer is not a JSON object")
            return answer.body
        # TEMPLATE: the error body is the processor's own (``wire.parse_error``); ``base.answer_error``
        # maps the status (401/403 never quote the processor's words: they may quote the key). A
        # status with its own meaning goes before it (404 as "no such object": mollie, xendit).
        error = wire.parse_error(answer.body)
        secrets = [self.settings.api_key.get_secret_value()]
        raise answer_error(
            self.name,
            label,
            status,
            redact(error.message or "", secrets, _CREDENTIAL),
            code=redact(error.code or "no error code", secrets, _CREDENTIAL),
            retryable=_RETRYABLE,
        )

    def _checkout(self, body: dict[str, Any], label: str) -> wire.TemplateCheckout:
        try:
            return wire.TemplateCheckout.from_json(body)
        except ValueError as exc:  # WireError, MoneyError
            raise ProcessorUnavailable(f"{self.name} answered {label} with an unreadable checkout: {exc}") from None

    # --- checkout ---------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            body = wire.checkout_request(request)
        except MoneyError as exc:
            raise ProcessorRefused(f"{self.name} cannot charge this amount: {exc}") from None
        except ValueError as exc:  # WireError: a method the page cannot be limited to
            raise ProcessorRefused(f"{self.name}: {exc}") from None
        label = f"POST {wire.CHECKOUTS_PATH}"
        answer = await self._call("POST", wire.CHECKOUTS_PATH, label, body=body, idempotency_key=request.reference)
        checkout = self._checkout(answer, label)
        # Never trust that the answer is the checkout we asked for: the same reference and amount.
        if checkout.reference != request.reference:
            raise ProcessorUnavailable(f"{self.name} checkout {checkout.id} does not carry our reference")
        if (checkout.amount_minor, checkout.currency) != (request.amount_minor, request.currency):
            raise ProcessorRefused(
                f"{self.name} checkout {checkout.id} is for {checkout.amount_minor} {checkout.currency},"
                f" not {request.amount_minor} {request.currency}"
            )
        if checkout.url is None:
            raise ProcessorUnavailable(f"{self.name} checkout {checkout.id} has no url (status {checkout.status})")
        # TEMPLATE: a phone prompt instead: ``Checkout(id, PhonePrompt(message))`` (mpesa).
        return Checkout(processor_reference=checkout.id, next_step=Redirect(checkout.url))

    async def _fetch_checkout(self, checkout_id: str | None) -> wire.TemplateCheckout:
        if checkout_id is None or not _CHECKOUT_ID.fullmatch(checkout_id):
            raise ProcessorRefused(f"{self.name} payments are looked up by their checkout id (co_…)")
        label = f"GET {wire.CHECKOUTS_PATH}/{{id}}"
        answer = await self._call("GET", f"{wire.CHECKOUTS_PATH}/{quote(checkout_id, safe='')}", label)
        return self._checkout(answer, label)

    # --- webhooks ---------------------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        # TEMPLATE: a processor that verifies through its API calls it here (paypal); one that signs
        # nothing queries the payment the webhook names and believes only that answer (mpesa, mollie).
        wire.verify_signature(
            self.settings.webhook_secret.get_secret_value(),
            header(request.headers, wire.TIMESTAMP_HEADER),
            header(request.headers, wire.SIGNATURE_HEADER),
            request.body,
            request.received_at_s,
        )

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return wire.event_to_processor_events(request.body)

    # TEMPLATE: ``webhook_ack`` when the processor must read a particular answer to stop retrying (adyen:
    # "[accepted]"; mpesa: a JSON result); ``stored_body`` when a webhook carries what we must not keep
    # (mpesa: the driver's phone number).

    # --- polling ----------------------------------------------------------------------------------

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        checkout = await self._fetch_checkout(payment.processor_reference)
        try:
            kind = wire.checkout_status_kind(checkout)
        except ValueError as exc:
            raise ProcessorUnavailable(f"{self.name} checkout {checkout.id}: {exc}") from None
        return ProcessorEvent(
            event_id=f"poll:{checkout.id}:{kind}",
            payment=checkout.payment,
            kind=kind,
            amount_minor=checkout.amount_minor,
            currency=checkout.currency,
            reason=checkout.failure_reason if kind is EventKind.FAILED else None,
        )

    # TEMPLATE: ``complete_payment`` when an approved payment needs our second call before it is paid
    # (paypal's capture after approval, idempotent under its own request id).

    # --- refunds ----------------------------------------------------------------------------------

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        checkout_id = request.payment.processor_reference
        if checkout_id is None or not _CHECKOUT_ID.fullmatch(checkout_id):
            raise ProcessorRefused(f"{self.name} refunds name the checkout (co_…), which the payment lacks")
        try:
            body = wire.refund_request(request, checkout_id)
        except MoneyError as exc:
            raise ProcessorRefused(f"{self.name} cannot refund this amount: {exc}") from None
        label = f"POST {wire.REFUNDS_PATH}"
        answer = await self._call("POST", wire.REFUNDS_PATH, label, body=body, idempotency_key=request.refund_key)
        try:
            refund = wire.TemplateRefund.from_json(answer)
        except ValueError as exc:
            raise ProcessorUnavailable(f"{self.name} answered {label} with an unreadable refund: {exc}") from None
        return RefundAccepted(refund_id=refund.id, status=refund.status)
