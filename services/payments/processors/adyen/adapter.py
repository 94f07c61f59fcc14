"""Adapter for Adyen: Pay by Link for the checkout, standard notifications for the outcome.

Wire format (details and sources in ``wire.py``):
- ``POST {api}/v72/paymentLinks`` with ``X-API-Key`` and ``Idempotency-Key: <our reference>``; JSON
  ``{amount: {value (Adyen's minor units), currency}, merchantAccount, reference, returnUrl, description,
  shopperLocale?}``; the answer's ``id`` is the processor reference, its ``url`` the driver's redirect.
  Hosted Checkout (``/sessions`` in hosted mode) is not used: the reference marks its fields unverified.
- ``GET {api}/v72/paymentLinks/{linkId}``: ``status`` active / paymentPending → pending, completed
  (paid before v66) → succeeded, expired → expired. An expired link sends no notification: polling
  finds it.
- ``POST {api}/v72/payments/{paymentPspReference}/refunds`` with ``Idempotency-Key: <refund key>``;
  201 ``{pspReference, status: "received"}``; the outcome is a REFUND notification.
- Notifications: ``{"live": "true"|"false", "notificationItems": [{"NotificationRequestItem": {…}}, …]}``,
  each item signed on its own (``additionalData.hmacSignature``), optionally behind basic
  authentication; acknowledged with 200 ``[accepted]``. Adyen signs no timestamp: a replay is only a
  duplicate, which the event id (``pspReference:eventCode:success``) catches.

The merchant account must capture automatically (Adyen's default): an AUTHORISATION is taken as the
money being held, and Pay by Link does not capture by itself otherwise."""

from __future__ import annotations

from typing import Any, Final

from services.payments.processors.adyen import wire
from services.payments.processors.adyen.config import AdyenSettings
from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
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
    WebhookAck,
    WebhookAuth,
    WebhookRequest,
    answer_error,
    header,
    send_request,
)
from shared.money import MoneyError

# Adyen's answer to a request whose Idempotency-Key is still being processed: 422 or 409 with errorCode
# 704 "request already processed or in progress" (docs.adyen.com/development-resources/api-idempotency);
# retrying later with the same key returns the first request's answer.
IN_PROGRESS_ERROR_CODE: Final = "704"
# Besides 401/403 and 5xx (``base.answer_error``); a 409 is retried only with errorCode 704.
RETRYABLE_STATUSES: Final = frozenset({408, 429})


class AdyenAdapter(ProcessorAdapter[AdyenSettings]):
    name = "adyen"
    config_type = AdyenSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.FIELD_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency=(
            "Idempotency-Key: our payment reference on POST /paymentLinks; Adyen returns the first link "
            "for a repeated key (keys are kept at least 31 days)"
        ),
    )

    async def _call(
        self,
        method: str,
        path: str,
        label: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One API call; ``label`` names it in errors (never a header, a key or a URL with secrets)."""
        headers = {"X-API-Key": self.settings.api_key.get_secret_value(), "Accept": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        reply = await send_request(
            self.http,
            f"adyen {label}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=body,
            headers=headers,
        )
        status, answer = reply.status, reply.body
        if 200 <= status < 300:
            if not isinstance(answer, dict):
                raise ProcessorUnavailable(f"adyen answered {status} to {label} with a body that is not a JSON object")
            return answer
        error_code = answer.get("errorCode") if isinstance(answer, dict) else None
        summary = wire.error_summary(answer)
        if str(error_code) == IN_PROGRESS_ERROR_CODE and status not in (401, 403):
            raise ProcessorUnavailable(f"adyen answered {status} to {label}: {summary}")
        raise answer_error("adyen", label, status, summary, retryable=RETRYABLE_STATUSES)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            body = wire.payment_link_request(
                merchant_account=self.settings.merchant_account,
                reference=request.reference,
                amount_minor=request.amount_minor,
                currency=request.currency,
                return_url=request.return_url,
                description=request.description,
                locale=request.locale,
                method=request.method,
            )
        except MoneyError as exc:
            raise ProcessorRefused(f"adyen cannot charge this amount: {exc}") from None
        answer = await self._call(
            "POST", wire.PAYMENT_LINKS_PATH, "POST /paymentLinks", body=body, idempotency_key=request.reference
        )
        try:
            link_id, url = wire.created_link(answer)
        except ValueError as exc:
            raise ProcessorUnavailable(f"adyen answered POST /paymentLinks unreadably: {exc}") from None
        return Checkout(processor_reference=link_id, next_step=Redirect(url))

    async def verify_webhook(self, request: WebhookRequest) -> None:
        username, password = self.settings.webhook_username, self.settings.webhook_password
        if username is not None and password is not None:
            wire.verify_basic_auth(
                header(request.headers, "Authorization"), username.get_secret_value(), password.get_secret_value()
            )
        key = wire.hmac_key_bytes(self.settings.hmac_key.get_secret_value())
        if not key:
            raise InvalidSignature("no HMAC key")
        wire.verify_adyen_notification(request.body, key, live=self.settings.environment == "production")

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return wire.adyen_notification_to_events(request.body, self.settings.merchant_account)

    def webhook_ack(self) -> WebhookAck:
        return wire.ADYEN_ACK

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        link_id = payment.processor_reference
        if not link_id:
            raise ProcessorUnavailable("adyen payments are looked up by their payment link id")
        answer = await self._call("GET", f"{wire.PAYMENT_LINKS_PATH}/{link_id}", "GET /paymentLinks/{linkId}")
        try:
            return wire.payment_link_status_event(answer, link_id)
        except ValueError as exc:  # MoneyError included
            raise ProcessorUnavailable(f"adyen answered GET /paymentLinks/{{linkId}} unreadably: {exc}") from None

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        psp_reference = request.payment.ids.get("psp_reference")
        if not psp_reference:
            raise ProcessorRefused("the payment's pspReference is not known yet (it comes with the AUTHORISATION)")
        try:
            body = wire.refund_request(
                merchant_account=self.settings.merchant_account,
                amount_minor=request.amount_minor,
                currency=request.currency,
                refund_key=request.refund_key,
            )
        except (MoneyError, ValueError) as exc:
            raise ProcessorRefused(f"adyen cannot refund this: {exc}") from None
        answer = await self._call(
            "POST",
            wire.refund_path(psp_reference),
            "POST /payments/{paymentPspReference}/refunds",
            body=body,
            idempotency_key=request.refund_key,
        )
        refund_id, status = answer.get("pspReference"), answer.get("status")
        if not isinstance(refund_id, str) or not refund_id:
            raise ProcessorUnavailable("adyen answered the refund without a pspReference")
        return RefundAccepted(refund_id=refund_id, status=status if isinstance(status, str) else "received")
