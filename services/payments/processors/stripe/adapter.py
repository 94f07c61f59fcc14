"""Adapter for Stripe: Checkout Sessions (hosted page, redirect) and webhooks.

Wire format (``wire.py``; processors.md §1):

- ``POST {api}/v1/checkout/sessions``, form-encoded, ``Authorization: Bearer <secret_key>``,
  ``Idempotency-Key: <our reference>``: one line item of the top-up amount, ``client_reference_id`` =
  our reference, the reference also in the PaymentIntent's metadata. The session's ``id`` (``cs_…``)
  is the processor reference; the driver is redirected to its ``url``.
- ``GET {api}/v1/checkout/sessions/{id}?expand[]=payment_intent``: ``status`` open | complete | expired,
  ``payment_status`` paid | unpaid | no_payment_required, and the PaymentIntent's ``status``.
- ``POST {api}/v1/refunds``: ``payment_intent``, ``amount``, ``metadata[refund_key]``;
  ``Idempotency-Key: <refund key>``.
- Webhooks: ``Stripe-Signature: t=…,v1=…`` over ``"<t>.<raw body>"`` (``whsec_…`` secret), 300 s
  tolerance. The endpoint must send ``wire.HANDLED_EVENTS``: ``checkout.session.completed``,
  ``checkout.session.async_payment_succeeded``, ``checkout.session.async_payment_failed``,
  ``checkout.session.expired``, ``payment_intent.payment_failed``, ``refund.created``,
  ``refund.updated``, ``refund.failed``, ``charge.dispute.created``, ``charge.dispute.funds_withdrawn``,
  ``charge.dispute.closed``; others are acknowledged and ignored.

Events (``wire.stripe_event_to_processor_events``): session events name the payment by our reference
(``client_reference_id``), the session id and its PaymentIntent; a declined card
(``payment_intent.payment_failed``) by the reference in the PaymentIntent's metadata; refunds and
disputes by their PaymentIntent and charge. Payment events keep Stripe's ``evt_…`` id; a refund's or
dispute's outcome is keyed ``<re_…|du_…>:<kind>``, because Stripe states one outcome in several
events. Objects that are not ours (no metadata of ours, or a currency evtopup never charges in) are
ignored rather than refused, so Stripe does not retry them and disable the endpoint.

Errors: a transport failure, a timeout, 401/403 (the key), 409 (a concurrent request with the same
idempotency key), 429 and 5xx are :class:`ProcessorUnavailable`; any other 4xx is
:class:`ProcessorRefused` with Stripe's error code and (redacted) message. Neither ever carries the
key, request headers or an aiohttp error's repr."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
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
from services.payments.processors.stripe.config import StripeSettings
from services.payments.processors.stripe.wire import (
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_S,
    STRIPE_API_VERSION,
    StripeCheckoutSession,
    StripeRefund,
    checkout_session_form,
    parse_stripe_error,
    refund_form,
    session_status_kind,
    stripe_event_to_processor_events,
    verify_stripe_signature,
)
from shared.money import MoneyError

# Anything shaped like a Stripe credential, masked or not, is cut from error texts (Stripe's 401
# message quotes the key it got, masked but for its last characters).
_CREDENTIAL = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")
_SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")


class StripeAdapter(ProcessorAdapter[StripeSettings]):
    name = "stripe"
    config_type = StripeSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.BODY_HMAC,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=SIGNATURE_TOLERANCE_S,
        create_is_idempotent=True,
        create_idempotency=(
            "Idempotency-Key: the payment's reference; Stripe answers a retry with the session it created"
            " first (keys are kept at least 24 hours)"
        ),
    )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        form: Sequence[tuple[str, str]] | None = None,
        query: Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {
            "Authorization": f"Bearer {self.settings.secret_key.get_secret_value()}",
            "Stripe-Version": STRIPE_API_VERSION,
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        answer = await send_request(
            self.http,
            f"stripe {method} {path}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            data=list(form) if form is not None else None,
            params=list(query) if query is not None else None,
            headers=headers,
            allow_redirects=False,
        )
        status = answer.status
        if 200 <= status < 300:
            if not isinstance(answer.body, dict):
                raise ProcessorUnavailable(f"stripe {method} {path} failed: the answer is not a JSON object")
            return answer.body
        # 409: a concurrent request with the same key; 401/403 never quote Stripe's message (it
        # quotes part of the key).
        error = parse_stripe_error(answer.body)
        secrets = [self.settings.secret_key.get_secret_value()]
        failure = answer_error(
            "stripe",
            f"{method} {path}",
            status,
            redact(error.message or "", secrets, _CREDENTIAL),
            code=redact(error.code or error.type or "no error code", secrets, _CREDENTIAL),
        )
        if isinstance(failure, ProcessorRefused) and error.type == "idempotency_error":
            raise ProcessorRefused(f"stripe: idempotency key reused with other parameters on {path}")
        raise failure

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            form = checkout_session_form(request)
        except MoneyError as exc:
            raise ProcessorRefused(f"stripe cannot charge this amount: {exc}") from None
        body = await self._call("POST", "/v1/checkout/sessions", form=form, idempotency_key=request.reference)
        session = self._session(body)
        if (session.amount_minor, session.currency) != (request.amount_minor, request.currency):
            raise ProcessorRefused(
                f"stripe session {session.id} is for {session.amount_minor} {session.currency},"
                f" not {request.amount_minor} {request.currency}"
            )
        if session.url is None:
            raise ProcessorUnavailable(f"stripe session {session.id} has no url (status {session.status})")
        return Checkout(processor_reference=session.id, next_step=Redirect(session.url))

    @staticmethod
    def _session(body: Mapping[str, Any]) -> StripeCheckoutSession:
        try:
            return StripeCheckoutSession.from_json(body)
        except ValueError as exc:  # WireError, MoneyError
            raise ProcessorUnavailable(f"stripe answered an unreadable Checkout Session: {exc}") from None

    async def _retrieve_session(self, session_id: str | None) -> StripeCheckoutSession:
        if session_id is None or not _SESSION_ID.fullmatch(session_id):
            raise ProcessorRefused("stripe payments are looked up by their Checkout Session id (cs_…)")
        body = await self._call(
            "GET", f"/v1/checkout/sessions/{quote(session_id, safe='')}", query=[("expand[]", "payment_intent")]
        )
        return self._session(body)

    async def verify_webhook(self, request: WebhookRequest) -> None:
        verify_stripe_signature(
            self.settings.webhook_secret.get_secret_value(),
            header(request.headers, SIGNATURE_HEADER),
            request.body,
            request.received_at_s,
        )

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return stripe_event_to_processor_events(request.body)

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        session = await self._retrieve_session(payment.processor_reference)
        try:
            kind = session_status_kind(session)
        except ValueError as exc:
            raise ProcessorUnavailable(f"stripe session {session.id}: {exc}") from None
        return ProcessorEvent(
            event_id=f"poll:{session.id}:{kind}",
            payment=session.payment,
            kind=kind,
            amount_minor=session.amount_minor,
            currency=session.currency,
        )

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        payment_intent = request.payment.ids.get("payment_intent")
        if not payment_intent:
            # Not yet learnt from an event: the session knows it once the driver has paid.
            payment_intent = (await self._retrieve_session(request.payment.processor_reference)).payment_intent
            if payment_intent is None:
                raise ProcessorRefused("stripe: the payment has no PaymentIntent, nothing was charged")
        try:
            form = refund_form(payment_intent, request)
        except MoneyError as exc:
            raise ProcessorRefused(f"stripe cannot refund this amount: {exc}") from None
        body = await self._call("POST", "/v1/refunds", form=form, idempotency_key=request.refund_key)
        try:
            refund = StripeRefund.from_json(body)
        except ValueError as exc:
            raise ProcessorUnavailable(f"stripe answered an unreadable refund: {exc}") from None
        return RefundAccepted(refund_id=refund.id, status=refund.status or "unknown")
