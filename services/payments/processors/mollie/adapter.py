"""Adapter for Mollie: Payments API v2 (hosted checkout, redirect) and classic webhooks.

Wire format: ``wire.py``. The talking:

- ``POST {api}/v2/payments`` (``Authorization: Bearer <api key>``, ``Idempotency-Key: <our reference>``:
  Mollie replays the first answer for 24 hours, so a create whose answer was lost is simply made again).
  The payment's ``id`` (``tr_…``) is the processor reference; the driver goes to ``_links.checkout``.
- Webhooks are ``id=tr_…`` and nothing else, unsigned by design. ``verify_webhook`` fetches the payment
  (``GET /v2/payments/{id}?embed=refunds,chargebacks``) with the integration's key: an id Mollie does not
  know for this key (404) is refused (401), since no webhook of Mollie's names one; Mollie unreachable
  is ``ProcessorUnavailable`` (payments answers 503, Mollie retries). What the webhook "says" is then
  only what the fetched payment says, read by ``parse_webhook``: its status, and the outcome of every
  refund and chargeback it has (Mollie calls the payment's webhook for those too). A payment without
  our reference in its metadata is not ours: no events, and a 200 so that Mollie stops.
- The fetch made by ``verify_webhook`` is handed to ``parse_webhook`` for the same request object (the
  webhook endpoint passes one object to both); any other request is fetched again.
- ``fetch_status`` is the same fetch; refunds go to ``POST /v2/payments/{id}/refunds`` with
  ``Idempotency-Key: <refund key>``.

Errors: a transport failure, a timeout, 401/403 (the key), 409 (the same idempotency key still being
processed), 429 and 5xx are :class:`ProcessorUnavailable`; any other 4xx is :class:`ProcessorRefused` with
Mollie's title and detail, credentials cut out. Neither ever carries the key or a request's headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
    Redirect,
    RefundAccepted,
    RefundRequest,
    VerifiedHandover,
    WebhookAuth,
    WebhookRequest,
    answer_error,
    redact,
    send_request,
)
from services.payments.processors.mollie import wire
from services.payments.processors.mollie.config import MollieSettings
from shared.money import MoneyError
from shared.settings import ServiceSettings


class PaymentNotFound(ProcessorRefused):
    """Mollie does not know the payment (404), for this API key."""


class MollieAdapter(ProcessorAdapter[MollieSettings]):
    name = "mollie"
    config_type = MollieSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.STATUS_QUERY,
        refunds=True,
        partial_refunds=True,
        disputes=True,  # chargebacks, and their reversal (a dispute won); Mollie never states one lost
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency=(
            "Idempotency-Key: the payment's reference; Mollie answers a retry within 24 hours with the payment"
            " it created first (an unpaid duplicate after that would only expire)"
        ),
    )

    def __init__(
        self, integration_id: str, settings: MollieSettings, services: ServiceSettings, http: aiohttp.ClientSession
    ) -> None:
        super().__init__(integration_id, settings, services, http)
        self._handover = VerifiedHandover[wire.MolliePayment]()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        payload: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}", "Accept": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        # The path as logged: never a payment's id in a metric-like label, but it is not secret either.
        what = f"mollie {method} {path}"
        answer = await send_request(
            self.http,
            what,
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=dict(payload) if payload is not None else None,
            params=dict(query) if query is not None else None,
            headers=headers,
            allow_redirects=False,
        )
        status = answer.status
        if 200 <= status < 300:
            if not isinstance(answer.body, dict):
                raise ProcessorUnavailable(f"{what} failed: the answer is not a JSON object")
            return answer.body
        # 409: the same idempotency key still being processed.
        words = redact(wire.parse_error(answer.body).words(), [self.settings.api_key.get_secret_value()])
        if status == 404:
            raise PaymentNotFound(f"mollie answered 404 (no such object) to {method} {path}: {words}".rstrip(": "))
        raise answer_error("mollie", f"{method} {path}", status, words)

    @staticmethod
    def _payment(body: Mapping[str, Any]) -> wire.MolliePayment:
        try:
            return wire.MolliePayment.from_json(body)
        except ValueError as exc:  # WireError, MoneyError
            raise ProcessorUnavailable(f"mollie answered an unreadable payment: {exc}") from None

    async def _fetch(self, payment_id: str) -> wire.MolliePayment:
        if not wire.PAYMENT_ID.fullmatch(payment_id):
            raise ProcessorRefused("mollie payments are looked up by their id (tr_…)")
        body = await self._call(
            "GET", f"{wire.PAYMENTS_PATH}/{quote(payment_id, safe='')}", query={"embed": wire.EMBED}
        )
        payment = self._payment(body)
        if payment.id != payment_id:
            raise ProcessorUnavailable(f"mollie answered payment {payment.id} when asked for {payment_id}")
        return payment

    # -- the interface -----------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            payload = wire.create_payment_body(request)
        except MoneyError as exc:
            raise ProcessorRefused(f"mollie cannot charge this amount: {exc}") from None
        body = await self._call("POST", wire.PAYMENTS_PATH, payload=payload, idempotency_key=request.reference)
        payment = self._payment(body)
        if (payment.amount_minor, payment.currency) != (request.amount_minor, request.currency):
            raise ProcessorRefused(
                f"mollie payment {payment.id} is for {payment.amount_minor} {payment.currency},"
                f" not {request.amount_minor} {request.currency}"
            )
        if payment.reference != request.reference:
            raise ProcessorUnavailable(f"mollie payment {payment.id} does not carry our reference")
        if payment.checkout_url is None:
            raise ProcessorUnavailable(f"mollie payment {payment.id} has no checkout link (status {payment.status})")
        return Checkout(processor_reference=payment.id, next_step=Redirect(payment.checkout_url))

    async def verify_webhook(self, request: WebhookRequest) -> None:
        try:
            payment_id = wire.webhook_payment_id(request.body)
        except MalformedWebhook as exc:
            # Nothing is signed, so a body that names no payment cannot be confirmed by anyone.
            raise InvalidSignature(f"not a Mollie webhook, nothing to confirm: {exc}") from None
        try:
            payment = await self._fetch(payment_id)
        except PaymentNotFound:
            raise InvalidSignature("mollie does not know the payment this webhook names") from None
        except ProcessorRefused as exc:
            raise InvalidSignature(f"mollie would not confirm this webhook: {exc}") from None
        self._handover.keep(request, payment)

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        payment = self._handover.take(request)
        if payment is None:
            payment_id = wire.webhook_payment_id(request.body)
            try:
                payment = await self._fetch(payment_id)
            except ProcessorRefused as exc:
                raise MalformedWebhook(f"mollie does not confirm this webhook: {exc}") from None
        return wire.payment_events(payment)

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        if payment.processor_reference is None:
            raise ProcessorRefused("mollie payments are looked up by their id (tr_…)")
        fetched = await self._fetch(payment.processor_reference)
        if payment.merchant_reference is not None and fetched.reference != payment.merchant_reference:
            raise ProcessorRefused(f"mollie payment {fetched.id} carries another reference than ours")
        return wire.poll_event(fetched)

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        payment_id = request.payment.processor_reference
        if payment_id is None or not wire.PAYMENT_ID.fullmatch(payment_id):
            raise ProcessorRefused("mollie refunds need the payment's id (tr_…)")
        try:
            payload = wire.create_refund_body(request)
        except MoneyError as exc:
            raise ProcessorRefused(f"mollie cannot refund this amount: {exc}") from None
        # Mollie keeps an Idempotency-Key for 24 hours only: a retry after that (Mollie unreachable
        # for a day after taking the first request, payments stopped meanwhile) would refund again.
        # The refund key is in each refund's metadata, so a refund made for it already is that one.
        for made in (await self._fetch(payment_id)).refunds:
            if made.refund_key == request.refund_key:
                return RefundAccepted(refund_id=made.id, status=made.status)
        path = f"{wire.PAYMENTS_PATH}/{quote(payment_id, safe='')}/refunds"
        body = await self._call("POST", path, payload=payload, idempotency_key=request.refund_key)
        try:
            refund = wire.MollieRefund.from_json(body)
        except ValueError as exc:
            raise ProcessorUnavailable(f"mollie answered an unreadable refund: {exc}") from None
        return RefundAccepted(refund_id=refund.id, status=refund.status)
