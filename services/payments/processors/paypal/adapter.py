"""Adapter for PayPal Orders v2 (wire formats in ``wire.py``).

The flow: ``create_checkout`` creates an order (``POST /v2/checkout/orders``, ``PayPal-Request-Id``
= our reference, so a retried create returns the same order) and sends the driver to PayPal's
``payer-action`` link. The driver approves there; PayPal says so with ``CHECKOUT.ORDER.APPROVED``
(the only way to learn of an approval without polling), and payments calls ``complete_payment``,
which captures the order (``PayPal-Request-Id`` = ``capture-<order id>``: a retried capture returns
the first one; an order captured under another id answers ``ORDER_ALREADY_CAPTURED``, and its capture
is read back from the order). ``PAYMENT.CAPTURE.*`` webhooks report the capture too.

Every API call carries an OAuth2 bearer token from ``POST /v1/oauth2/token`` (client credentials),
kept until shortly before it expires and fetched again once if PayPal answers 401.

Webhooks are verified by PayPal itself: ``POST /v1/notifications/verify-webhook-signature`` with the
PAYPAL-* header values, our ``webhook_id`` and the raw body spliced in verbatim. If PayPal cannot be
reached, ``verify_webhook`` raises ``ProcessorUnavailable``: the webhook handler answers 5xx and
PayPal delivers the webhook again later ("up to 25 times over 3 days").

No replay window (``replay_window_s = None``): PAYPAL-TRANSMISSION-TIME is signed, but no source
found shows that a retried delivery carries a fresh transmission time, and PayPal retries for three
days; a window would refuse a legitimate late retry. A replay of a delivery is a duplicate, which its
``WH-…`` event id catches.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import aiohttp

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
    RefundAccepted,
    RefundRequest,
    WebhookAuth,
    WebhookRequest,
    answer_error,
    send_request,
)
from services.payments.processors.paypal.config import PayPalSettings
from services.payments.processors.paypal.wire import (
    WireError,
    access_token,
    captured_order_event,
    check_request_id,
    checkout_from_order,
    create_order_body,
    order_status_event,
    parse_paypal_webhook,
    paypal_error_reason,
    refund_answer,
    refund_body,
    verification_request_body,
    verification_verdict,
)
from shared.settings import ServiceSettings

# A token is used until this long before PayPal says it expires (at most half its lifetime).
TOKEN_MARGIN_S = 60
# PayPal ids in paths: orders "^[A-Z0-9]+$", 1-36 characters (Orders v2 reference); captures alike.
PAYPAL_ID = re.compile(r"^[A-Za-z0-9]{1,36}$")
# Answers worth retrying besides 401/403 and 5xx (``base.answer_error``): the request may go through
# next time.
RETRY_STATUSES = frozenset({408, 409, 425, 429})
RETRY_ISSUES = frozenset({"PREVIOUS_REQUEST_IN_PROGRESS"})


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _paypal_id(value: str | None, what: str) -> str:
    if value is None or not PAYPAL_ID.fullmatch(value):
        raise ProcessorRefused(f"no PayPal {what} id for this payment")
    return value


class PayPalAdapter(ProcessorAdapter[PayPalSettings]):
    name = "paypal"
    config_type = PayPalSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.VERIFICATION_API,
        refunds=True,
        partial_refunds=True,
        disputes=True,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency=(
            "PayPal-Request-Id: the payment's reference; PayPal answers a repeated id with the order it "
            "created first (it keeps the id for 6 hours)"
        ),
    )

    def __init__(
        self,
        integration_id: str,
        settings: PayPalSettings,
        services: ServiceSettings,
        http: aiohttp.ClientSession,
    ) -> None:
        super().__init__(integration_id, settings, services, http)
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = asyncio.Lock()

    # ----------------------------------------------------------------------------------------------
    # HTTP
    # ----------------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[int, object]:
        """One request: the status and the JSON answer (``None`` if it is not JSON)."""
        answer = await send_request(
            self.http,
            f"paypal {method} {path}",
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            data=body,
            headers=headers,
        )
        return answer.status, answer.body

    async def _fetch_token(self) -> tuple[str, int]:
        credentials = f"{self.settings.client_id.get_secret_value()}:{self.settings.client_secret.get_secret_value()}"
        status, answer = await self._send(
            "POST",
            "/v1/oauth2/token",
            body=b"grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {base64.b64encode(credentials.encode()).decode()}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        if status in (400, 401, 403):
            raise ProcessorUnavailable(f"paypal refused the client credentials ({status})")
        if not 200 <= status < 300:
            raise ProcessorUnavailable(f"paypal answered {status} to the token request")
        try:
            return access_token(answer)
        except WireError:
            raise ProcessorUnavailable("paypal's token answer is unreadable") from None

    async def _access_token(self, stale: str | None = None) -> str:
        """The cached token, or a new one when it is about to expire or PayPal refused ``stale``."""
        async with self._token_lock:
            if self._token is None or self._token == stale or time.monotonic() >= self._token_renew_at:
                token, lifetime_s = await self._fetch_token()
                self._token = token
                self._token_renew_at = time.monotonic() + lifetime_s - min(TOKEN_MARGIN_S, lifetime_s / 2)
            return self._token

    async def _call(
        self, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, object]:
        """An API call with the bearer token; a 401 fetches a new token and tries once more."""
        token = await self._access_token()
        for attempt in range(2):
            status, answer = await self._send(
                method,
                path,
                body=body,
                headers={
                    **(headers or {}),
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
            if status != 401 or attempt:
                return status, answer
            token = await self._access_token(stale=token)
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(status: int, answer: object, what: str) -> NoReturn:
        reason = paypal_error_reason(answer)
        if reason in RETRY_ISSUES:
            raise ProcessorUnavailable(f"paypal answered {status} ({reason}) to {what}")
        raise answer_error("paypal", what, status, code=reason, retryable=RETRY_STATUSES, credential="access token")

    # ----------------------------------------------------------------------------------------------
    # The interface
    # ----------------------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        body = create_order_body(request)  # refuses an amount PayPal cannot take, before any call
        status, answer = await self._call(
            "POST",
            "/v2/checkout/orders",
            body=_json(body),
            headers={"PayPal-Request-Id": check_request_id(request.reference)},
        )
        if not 200 <= status < 300:
            self._fail(status, answer, "the order")
        try:
            return checkout_from_order(answer)
        except WireError:
            raise ProcessorUnavailable("paypal's order answer is unreadable") from None

    async def complete_payment(self, payment: PaymentRef, amount_minor: int, currency: str) -> ProcessorEvent:
        """Capture the approved order. The capture takes the order's amount (set at create); the
        event reports what PayPal captured, which payments compares with what it expects."""
        order_id = _paypal_id(payment.processor_reference, "order")
        status, answer = await self._call(
            "POST",
            f"/v2/checkout/orders/{order_id}/capture",
            headers={"PayPal-Request-Id": f"capture-{order_id}", "Prefer": "return=representation"},
        )
        if status == 422 and paypal_error_reason(answer) == "ORDER_ALREADY_CAPTURED":
            status, answer = await self._call("GET", f"/v2/checkout/orders/{order_id}")
        if not 200 <= status < 300:
            self._fail(status, answer, "the capture")
        try:
            return captured_order_event(answer)
        except WireError:
            raise ProcessorUnavailable("paypal's capture answer is unreadable") from None

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        order_id = _paypal_id(payment.processor_reference, "order")
        status, answer = await self._call("GET", f"/v2/checkout/orders/{order_id}")
        if status == 404:
            # PayPal no longer has the order: an unapproved order expires at PayPal.
            return ProcessorEvent(
                event_id=f"poll:{order_id}:{EventKind.EXPIRED}",
                payment=PaymentRef(payment.merchant_reference, order_id),
                kind=EventKind.EXPIRED,
                amount_minor=None,
                currency=None,
                reason="PayPal no longer has the order",
            )
        if not 200 <= status < 300:
            self._fail(status, answer, "the order lookup")
        try:
            return order_status_event(answer)
        except WireError:
            raise ProcessorUnavailable("paypal's order answer is unreadable") from None

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        capture_id = _paypal_id(request.payment.ids.get("capture"), "capture")
        body = refund_body(request.amount_minor, request.currency, request.reason)
        status, answer = await self._call(
            "POST",
            f"/v2/payments/captures/{capture_id}/refund",
            body=_json(body),
            headers={"PayPal-Request-Id": check_request_id(request.refund_key)},
        )
        if not 200 <= status < 300:
            self._fail(status, answer, "the refund")
        try:
            refund_id, refund_status = refund_answer(answer)
        except WireError:
            raise ProcessorUnavailable("paypal's refund answer is unreadable") from None
        return RefundAccepted(refund_id=refund_id, status=refund_status)

    async def verify_webhook(self, request: WebhookRequest) -> None:
        body = verification_request_body(request.headers, self.settings.webhook_id, request.body)
        status, answer = await self._call("POST", "/v1/notifications/verify-webhook-signature", body=body)
        if status == 400:
            # PayPal would not even check it (a header value it refuses): not provably PayPal's.
            raise InvalidSignature(f"paypal refused to verify the webhook: {paypal_error_reason(answer)}")
        if not 200 <= status < 300:
            raise ProcessorUnavailable(f"paypal answered {status} to the webhook verification")
        try:
            verification_verdict(answer)
        except WireError:
            raise ProcessorUnavailable("paypal's verification answer is unreadable") from None

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return parse_paypal_webhook(request.body)
