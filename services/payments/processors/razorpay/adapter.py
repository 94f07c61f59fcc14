"""Adapter for Razorpay: Payment Links (hosted page, redirect) and webhooks.

Wire format (``wire.py``; processors.md §5):

- ``POST {api}/v1/payment_links``, JSON, HTTP Basic ``key_id:key_secret``: a Standard link for the
  amount (integer, smallest unit), ``reference_id`` = our reference, ``callback_url`` = the return URL
  with ``callback_method: "get"``, ``expire_by`` (``link_expiry_s`` ahead), limited to the driver's
  method by ``options.checkout.method``. The link's ``id`` (``plink_…``) is the processor reference;
  the driver is redirected to its ``short_url``.
- Create idempotency: Razorpay has no idempotency header for links, but refuses a second link with a
  ``reference_id`` already used (400). When a create is refused with a 400, the adapter asks
  ``GET {api}/v1/payment_links?reference_id=<reference>`` (the filter of the official Java SDK's
  fetch-all example on razorpay.com/docs/api/payments/payment-links/fetch-all-standard) and, if a
  link with our reference is there, answers with it: a create whose answer was lost, sent again, finds
  the first link instead of making a second. The refusal's wording is not relied on [UNVERIFIED:
  Razorpay's exact message for a duplicate reference_id is not in its pages].
- ``GET {api}/v1/payment_links/{id}``: ``status`` created | partially_paid → pending, paid → succeeded,
  expired | cancelled → expired; ``order_id`` and ``payments`` (the captured one's id, for refunds).
- ``POST {api}/v1/payments/{pay_id}/refund`` with ``X-Refund-Idempotency: <refund key>``: "you can
  safely retry the transaction using the same idempotency key without risk of double-refund"
  (razorpay.com/docs/api/refunds/normal-refunds-idempotent); 409 while the first is in progress.
- Webhooks: ``X-Razorpay-Signature`` = hex HMAC-SHA256(webhook secret, raw body), no timestamp
  signed (a replay is a duplicate, which the event key catches). The webhook must send
  ``wire.HANDLED_EVENTS``: ``payment_link.paid``, ``payment_link.expired``, ``payment_link.cancelled``,
  ``payment.captured``, ``payment.failed``, ``refund.created``, ``refund.processed``, ``refund.failed``,
  ``payment.dispute.created``, ``payment.dispute.won``, ``payment.dispute.lost``,
  ``payment.dispute.closed``; others are acknowledged and ignored.

Errors: a transport failure, a timeout, 401/403 (the keys), 409 (a refund with the same key in
progress), 429 and 5xx are :class:`ProcessorUnavailable`; any other 4xx is :class:`ProcessorRefused`
with Razorpay's error code and description. Neither ever carries a key, a request header or an
aiohttp error's repr."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
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
from services.payments.processors.razorpay import wire
from services.payments.processors.razorpay.config import RazorpaySettings
from shared.money import MoneyError

# Anything shaped like a Razorpay key id is cut from error texts.
_CREDENTIAL = re.compile(r"\brzp_(?:live|test)_[A-Za-z0-9]+")
_LINK_ID = re.compile(r"plink_[A-Za-z0-9]{1,40}")
_PAYMENT_ID = re.compile(r"pay_[A-Za-z0-9]{1,40}")


class _Refused(Exception):
    """A 4xx other than the retryable ones (internal to the adapter): the caller decides whether
    ``refusal`` is the answer (a 400 on create may be our reference, taken by an earlier try)."""

    def __init__(self, status: int, refusal: ProcessorRefused) -> None:
        super().__init__(status)
        self.status = status
        self.refusal = refusal


class RazorpayAdapter(ProcessorAdapter[RazorpaySettings]):
    name = "razorpay"
    config_type = RazorpaySettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.BODY_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency=(
            "reference_id: the payment's reference; Razorpay refuses a second Payment Link with the same"
            " reference_id, and the adapter then fetches the first one by reference_id and answers with it"
        ),
    )

    def _basic_auth(self) -> str:
        pair = f"{self.settings.key_id.get_secret_value()}:{self.settings.key_secret.get_secret_value()}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    async def _call(
        self,
        method: str,
        path: str,
        label: str,
        *,
        body: dict[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call; ``label`` names it in errors (never a header, a key or an id we were given).
        A refusal (4xx but 401/403/409/429) is raised as :class:`_Refused` for the caller to raise."""
        answer = await send_request(
            self.http,
            f"razorpay {label}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=body,
            params=dict(query) if query is not None else None,
            headers={"Accept": "application/json", "Authorization": self._basic_auth(), **(headers or {})},
            allow_redirects=False,
        )
        status = answer.status
        if 200 <= status < 300:
            if not isinstance(answer.body, dict):
                raise ProcessorUnavailable(f"razorpay {label} failed: the answer is not a JSON object")
            return answer.body
        error = wire.parse_error(answer.body)
        secrets = [self.settings.key_id.get_secret_value(), self.settings.key_secret.get_secret_value()]
        failure = answer_error(
            "razorpay",
            label,
            status,
            redact(error.description or "", secrets, _CREDENTIAL),
            code=redact(error.code or "no code", secrets, _CREDENTIAL),
            credential="API keys",
        )
        if isinstance(failure, ProcessorRefused):
            raise _Refused(status, failure)
        raise failure

    # --- checkout ---------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            body = wire.payment_link_request(request, expire_by=int(time.time()) + self.settings.link_expiry_s)
        except MoneyError as exc:
            raise ProcessorRefused(f"razorpay cannot charge this amount: {exc}") from None
        except ValueError as exc:  # WireError: a method no link can be limited to
            raise ProcessorRefused(f"razorpay: {exc}") from None
        label = "POST /v1/payment_links"
        try:
            answer = await self._call("POST", wire.PAYMENT_LINKS_PATH, label, body=body)
            link = self._link(answer, label)
        except _Refused as refused:
            if refused.status != 400:
                raise refused.refusal from None
            # Perhaps our reference is taken: by the link an earlier try made, whose answer was lost.
            existing = await self._link_with_reference(request.reference)
            if existing is None:
                raise refused.refusal from None
            link = existing
        if link.reference_id != request.reference:
            raise ProcessorUnavailable(f"razorpay link {link.id} does not carry our reference")
        if (link.amount_minor, link.currency) != (request.amount_minor, request.currency):
            raise ProcessorRefused(
                f"razorpay link {link.id} is for {link.amount_minor} {link.currency},"
                f" not {request.amount_minor} {request.currency}"
            )
        if link.short_url is None:
            raise ProcessorUnavailable(f"razorpay link {link.id} has no short_url (status {link.status})")
        return Checkout(processor_reference=link.id, next_step=Redirect(link.short_url))

    async def _link_with_reference(self, reference: str) -> wire.RazorpayPaymentLink | None:
        label = "GET /v1/payment_links?reference_id"
        try:
            answer = await self._call("GET", wire.PAYMENT_LINKS_PATH, label, query={"reference_id": reference})
        except _Refused as refused:
            raise refused.refusal from None
        try:
            links = wire.links_with_reference(answer, reference)
        except ValueError as exc:
            raise ProcessorUnavailable(f"razorpay answered {label} unreadably: {exc}") from None
        return links[0] if links else None

    @staticmethod
    def _link(body: Mapping[str, Any], label: str) -> wire.RazorpayPaymentLink:
        try:
            return wire.RazorpayPaymentLink.from_json(body)
        except ValueError as exc:  # WireError, MoneyError
            raise ProcessorUnavailable(f"razorpay answered {label} with an unreadable link: {exc}") from None

    async def _fetch_link(self, link_id: str | None) -> wire.RazorpayPaymentLink:
        if link_id is None or not _LINK_ID.fullmatch(link_id):
            raise ProcessorRefused("razorpay payments are looked up by their Payment Link id (plink_…)")
        label = "GET /v1/payment_links/{id}"
        try:
            answer = await self._call("GET", f"{wire.PAYMENT_LINKS_PATH}/{quote(link_id, safe='')}", label)
        except _Refused as refused:
            raise refused.refusal from None
        return self._link(answer, label)

    # --- webhooks ---------------------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        secrets = [self.settings.webhook_secret.get_secret_value()]
        if self.settings.previous_webhook_secret is not None:
            secrets.append(self.settings.previous_webhook_secret.get_secret_value())
        if not any(secrets):
            raise InvalidSignature("no webhook secret")
        wire.verify_razorpay_signature(request.body, header(request.headers, wire.SIGNATURE_HEADER), secrets)

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return wire.razorpay_event_to_processor_events(request.body)

    def stored_body(self, body: bytes) -> bytes:
        return wire.body_without_driver(body)

    # --- polling ----------------------------------------------------------------------------------

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        link = await self._fetch_link(payment.processor_reference)
        try:
            kind = wire.link_status_kind(link)
        except ValueError as exc:
            raise ProcessorUnavailable(f"razorpay link {link.id}: {exc}") from None
        amount = link.amount_paid_minor if kind is EventKind.SUCCEEDED else link.amount_minor
        return ProcessorEvent(
            event_id=f"poll:{link.id}:{kind}",
            payment=link.payment,
            kind=kind,
            amount_minor=amount,
            currency=link.currency,
        )

    # --- refunds ----------------------------------------------------------------------------------

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        payment_id = request.payment.ids.get("payment")
        if not payment_id:
            # Not yet learnt from an event: the link lists its captured payment once paid.
            payment_id = (await self._fetch_link(request.payment.processor_reference)).captured_payment
            if payment_id is None:
                raise ProcessorRefused("razorpay: the payment link has no captured payment, nothing was charged")
        if not _PAYMENT_ID.fullmatch(payment_id):
            raise ProcessorRefused("razorpay: the payment id is not a pay_… id")
        try:
            body = wire.refund_request(
                request.amount_minor, request.currency, request.payment.merchant_reference, request.refund_key
            )
        except ValueError as exc:  # MoneyError, WireError
            raise ProcessorRefused(f"razorpay cannot refund this: {exc}") from None
        label = "POST /v1/payments/{id}/refund"
        try:
            answer = await self._call(
                "POST",
                f"/v1/payments/{payment_id}/refund",
                label,
                body=body,
                headers={wire.REFUND_IDEMPOTENCY_HEADER: request.refund_key},
            )
        except _Refused as refused:
            raise refused.refusal from None
        try:
            refund = wire.RazorpayRefund.from_json(answer)
        except ValueError as exc:
            raise ProcessorUnavailable(f"razorpay answered {label} with an unreadable refund: {exc}") from None
        return RefundAccepted(refund_id=refund.id, status=refund.status)
