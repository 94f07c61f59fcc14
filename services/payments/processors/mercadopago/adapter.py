"""Adapter for Mercado Pago: Checkout Pro preferences (hosted page, redirect), signed webhooks whose
events are read from the API, refunds and chargebacks.

Wire format (``wire.py``; processors.md §7):

- ``POST {api}/checkout/preferences`` (``Authorization: Bearer <access_token>``, ``X-Idempotency-Key:
  <our reference>``): one item of the top-up amount, ``external_reference`` = our reference,
  ``notification_url`` = our webhook URL, an expiry, the payment types of our method. The
  preference's ``id`` is the processor reference; the driver goes to its ``init_point`` (production)
  or ``sandbox_init_point`` (a test integration).
- The driver's payment is another object with its own id, made when the driver pays (Pix starts
  ``pending``/``pending_waiting_transfer``; a card is ``approved`` or ``rejected`` at once; the
  driver may try again on the same preference). Webhooks name it (``type=payment``, ``data.id``);
  polling finds it by ``GET /v1/payments/search?external_reference=<reference>``; events name it as
  ``ids["payment"]`` once it took the money, and refunds go to it.
- Webhooks: ``x-signature`` (HMAC-SHA256 over ``id:<data.id>;request-id:<x-request-id>;ts:<ts>;``) is
  checked, then the notified payment (or chargeback, then its payments) is fetched and its state
  mapped; the body carries no state. That fetch happens in ``verify_webhook``, so that an API that
  cannot be reached answers 503 (Mercado Pago retries); it is kept for ``parse_webhook`` of the same
  request. Notifications of other topics (``merchant_order``, IPN ``?topic=…&id=…`` copies, claims, …)
  are acknowledged and ignored: the Webhooks ``payment`` and ``topic_chargebacks_wh`` topics say it all.
- ``POST {api}/v1/payments/{id}/refunds`` with the amount, ``X-Idempotency-Key: <refund key>``; the
  refund's outcome arrives with the payment's next notification (``refunds[]``).
- Chargebacks are the payment's ``charged_back`` status: ``in_process`` opens, ``settled`` is lost,
  ``reimbursed`` is won.

Errors: a transport failure, a timeout, 401/403 (the token), 409 (idempotency conflict), 423 (key
locked), 424, 429 and 5xx are :class:`ProcessorUnavailable`; any other 4xx is
:class:`ProcessorRefused` with Mercado Pago's error code and (redacted) message. Neither ever carries
the token, request headers or an aiohttp error's repr."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
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
    header,
    redact,
    send_request,
)
from services.payments.processors.mercadopago import wire
from services.payments.processors.mercadopago.config import MercadoPagoSettings
from shared.money import MoneyError
from shared.settings import ServiceSettings

_CREDENTIAL = re.compile(r"\b(?:APP_USR|TEST)-[A-Za-z0-9_*-]+")
# Besides 401/403 and 5xx: an idempotency conflict (409), a key locked (423), 424, rate limited (429).
_RETRYABLE = frozenset({409, 423, 424, 429})


class NotFound(ProcessorRefused):
    """Mercado Pago has no such object (404)."""


def _unreadable(what: str, exc: Exception) -> ProcessorUnavailable:
    return ProcessorUnavailable(f"mercadopago answered an unreadable {what}: {exc}")


class MercadoPagoAdapter(ProcessorAdapter[MercadoPagoSettings]):
    name = "mercadopago"
    config_type = MercadoPagoSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.FIELD_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        # Mercado Pago signs a ts but documents no tolerance (the SDK checks none by default), nor
        # whether retries are signed afresh; a replay only makes us fetch the payment's state again.
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency=(
            "X-Idempotency-Key: the payment's reference, so a retried create answers the preference made"
            " first; and a preference whose answer was lost cannot be paid anyway: the driver only ever"
            " gets the init_point of the answer payments received"
        ),
    )

    def __init__(
        self,
        integration_id: str,
        settings: MercadoPagoSettings,
        services: ServiceSettings,
        http: aiohttp.ClientSession,
    ) -> None:
        super().__init__(integration_id, settings, services, http)
        self._handover = VerifiedHandover[list[ProcessorEvent]]()

    # -- HTTP --------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        what: str | None = None,
    ) -> dict[str, Any]:
        what = what or f"{method} {path}"
        headers = {"Authorization": f"Bearer {self.settings.access_token.get_secret_value()}"}
        if idempotency_key is not None:
            headers[wire.IDEMPOTENCY_HEADER] = wire.idempotency_key(idempotency_key)
        if body is not None:
            headers["Content-Type"] = "application/json"
        answer = await send_request(
            self.http,
            f"mercadopago {what}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            data=wire.json_bytes(body) if body is not None else None,
            params=list(query) if query is not None else None,
            headers=headers,
            allow_redirects=False,
        )
        status = answer.status
        if 200 <= status < 300:
            if not isinstance(answer.body, dict):
                raise ProcessorUnavailable(f"mercadopago {what} failed: the answer is not a JSON object")
            return answer.body
        error = wire.parse_error(answer.body)
        secrets = [self.settings.access_token.get_secret_value()]
        message = redact(error.message or "", secrets, _CREDENTIAL)
        if status == 404:
            raise NotFound(f"mercadopago has no such object ({what}): {message}")
        code = redact(error.error or "no error code", secrets, _CREDENTIAL)
        raise answer_error(
            "mercadopago", what, status, message, code=code, retryable=_RETRYABLE, credential="access token"
        )

    async def _payment(self, payment_id: str) -> wire.Payment:
        body = await self._call("GET", f"{wire.PAYMENTS_PATH}/{quote(payment_id, safe='')}", what="GET payment")
        try:
            return wire.Payment.from_json(body)
        except ValueError as exc:  # WireError, MoneyError
            raise _unreadable("payment", exc) from None

    async def _search(self, reference: str) -> list[wire.Payment]:
        body = await self._call(
            "GET",
            wire.PAYMENTS_SEARCH_PATH,
            query=[("external_reference", reference), ("sort", "date_created"), ("criteria", "desc")],
            what="payment search",
        )
        try:
            return wire.parse_search(body)
        except ValueError as exc:
            raise _unreadable("payment search", exc) from None

    async def _preference(self, preference_id: str) -> wire.Preference:
        body = await self._call(
            "GET", f"{wire.PREFERENCES_PATH}/{quote(preference_id, safe='')}", what="GET preference"
        )
        try:
            return wire.Preference.from_json(body)
        except ValueError as exc:
            raise _unreadable("preference", exc) from None

    # -- checkout ----------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        expires_at = datetime.now(UTC) + timedelta(minutes=self.settings.checkout_ttl_minutes)
        try:
            body = wire.preference_body(request, expires_at)
        except MoneyError as exc:
            raise ProcessorRefused(f"mercadopago cannot charge this amount: {exc}") from None
        answer = await self._call(
            "POST", wire.PREFERENCES_PATH, body=body, idempotency_key=request.reference, what="create preference"
        )
        try:
            preference = wire.Preference.from_json(answer)
        except ValueError as exc:
            raise _unreadable("preference", exc) from None
        if preference.external_reference not in (None, request.reference):
            raise ProcessorRefused(f"mercadopago preference {preference.id} is for another reference")
        if preference.amount_minor is not None and (preference.amount_minor, preference.currency) != (
            request.amount_minor,
            request.currency,
        ):
            raise ProcessorRefused(
                f"mercadopago preference {preference.id} is for {preference.amount_minor} {preference.currency},"
                f" not {request.amount_minor} {request.currency}"
            )
        test = self.settings.environment == "test"
        url = (preference.sandbox_init_point or preference.init_point) if test else preference.init_point
        if url is None:
            raise ProcessorUnavailable(f"mercadopago preference {preference.id} has no init_point")
        return Checkout(processor_reference=preference.id, next_step=Redirect(url))

    # -- webhooks ----------------------------------------------------------------------------------

    async def _events_of(self, notification: wire.Notification) -> list[ProcessorEvent]:
        """The events of the notified resource's current state; none when Mercado Pago has no such
        resource (e.g. the dashboard's "Simulate" button, which sends a made-up id)."""
        try:
            if notification.topic == wire.PAYMENT_TOPIC:
                payments = [await self._payment(notification.resource_id)]
            else:
                body = await self._call(
                    "GET",
                    f"{wire.CHARGEBACKS_PATH}/{quote(notification.resource_id, safe='')}",
                    what="GET chargeback",
                )
                try:
                    chargeback = wire.Chargeback.from_json(body)
                except ValueError as exc:
                    raise _unreadable("chargeback", exc) from None
                payments = [await self._payment(payment_id) for payment_id in chargeback.payments]
        except NotFound:
            return []
        events: list[ProcessorEvent] = []
        for payment in payments:
            try:
                events.extend(wire.payment_events(payment))
            except ValueError as exc:
                raise _unreadable("payment", exc) from None
        return events

    async def verify_webhook(self, request: WebhookRequest) -> None:
        notification = wire.acted_notification(request.query, request.body)
        if notification is None:
            return  # acknowledged and ignored: nothing is done with it
        wire.verify_signature(
            self.settings.webhook_secret.get_secret_value(),
            header(request.headers, wire.SIGNATURE_HEADER),
            header(request.headers, wire.REQUEST_ID_HEADER),
            notification.resource_id,
        )
        wire.check_body_agrees(notification, request.body)
        try:
            events = await self._events_of(notification)
        except ProcessorRefused:
            return  # parse_webhook asks again and says why
        self._handover.keep(request, events)

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        try:
            notification = wire.acted_notification(request.query, request.body)
        except InvalidSignature as exc:
            raise MalformedWebhook(str(exc)) from None
        if notification is None:
            return []
        wire.parse_notification_body(request.body)
        kept = self._handover.take(request)
        if kept is not None:
            return kept
        try:
            return await self._events_of(notification)
        except ProcessorRefused as exc:
            raise MalformedWebhook(f"mercadopago refused to show the notified {notification.topic}: {exc}") from None

    # -- polling and refunds -----------------------------------------------------------------------

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        reference = payment.merchant_reference
        if not reference:
            raise ProcessorRefused("mercadopago payments are looked up by our reference (external_reference)")
        payments = await self._search(reference)
        expired = False
        ours = [p for p in payments if p.external_reference == reference]
        if payment.processor_reference and not any(p.taken or p.status in wire.PENDING_STATUSES for p in ours):
            expired = (await self._preference(payment.processor_reference)).expired_at(datetime.now(UTC))
        try:
            return wire.status_event(reference, payments, expired)
        except ValueError as exc:
            raise _unreadable("payment search", exc) from None

    async def _taken_payment_id(self, payment: PaymentRef) -> str:
        known = payment.ids.get("payment")
        if known:
            return known
        if not payment.merchant_reference:
            raise ProcessorRefused("mercadopago: the payment has no reference to find it by")
        # Not yet learnt from an event: the search knows it once the driver has paid.
        taken = [p for p in await self._search(payment.merchant_reference) if p.taken]
        if not taken:
            raise ProcessorRefused("mercadopago: no payment of this reference took the money, nothing to refund")
        return taken[0].id

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        payment_id = await self._taken_payment_id(request.payment)
        try:
            body = wire.refund_body(request.amount_minor, request.currency)
        except MoneyError as exc:
            raise ProcessorRefused(f"mercadopago cannot refund this amount: {exc}") from None
        answer = await self._call(
            "POST",
            f"{wire.PAYMENTS_PATH}/{quote(payment_id, safe='')}/refunds",
            body=body,
            idempotency_key=request.refund_key,
            what="create refund",
        )
        try:
            refund = wire.Refund.from_json(answer)
        except ValueError as exc:
            raise _unreadable("refund", exc) from None
        return RefundAccepted(refund_id=refund.id, status=refund.status or "unknown")
