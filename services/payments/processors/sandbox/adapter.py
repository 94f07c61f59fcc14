"""Adapter for the built-in sandbox processor.

Wire format (what ``hosted.py`` implements on the processor side):
- ``POST {api}/sandbox/api/v1/checkouts`` with ``Authorization: Bearer <api_key>`` and
  ``Idempotency-Key``; JSON ``{"amount_minor", "currency", "method", "return_url", "metadata"}``;
  201 ``{"reference", "hosted_url", "status"}``. The same key returns the same checkout.
- ``GET {api}/sandbox/api/v1/checkouts/{reference}``: ``{"reference", "status", "amount_minor", "currency"}``.
- Webhook: JSON ``{"id": "evt_…", "type": "checkout.succeeded|checkout.failed|checkout.expired",
  "created": <unix s>, "data": {"reference", "status", "amount_minor", "currency"}}`` with header
  ``Sandbox-Signature: t=<unix s>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<raw body>")>``;
  timestamps older or newer than 300 s are refused (replay protection).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from services.payments.processors.base import (
    Capabilities,
    Checkout,
    CheckoutRequest,
    EventKind,
    InvalidSignature,
    MalformedWebhook,
    NextStepKind,
    PaymentRef,
    ProcessorAdapter,
    ProcessorEvent,
    ProcessorUnavailable,
    Redirect,
    WebhookAuth,
    WebhookRequest,
    send_request,
)
from services.payments.processors.sandbox.config import SandboxSettings

SIGNATURE_HEADER = "Sandbox-Signature"
TOLERANCE_S = 300
TIMESTAMP = re.compile(r"[0-9]{1,12}")
EVENT_KINDS = {
    "checkout.succeeded": EventKind.SUCCEEDED,
    "checkout.failed": EventKind.FAILED,
    "checkout.expired": EventKind.EXPIRED,
}
STATUS_KINDS = {
    "pending": EventKind.PENDING,
    "succeeded": EventKind.SUCCEEDED,
    "failed": EventKind.FAILED,
    "expired": EventKind.EXPIRED,
}


def sign_sandbox_payload(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Sandbox-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_sandbox_signature(secret: str, header: str | None, body: bytes, now_s: float) -> None:
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    # Unix seconds: 1-12 ASCII digits. Anything else is no timestamp; a huge one would overflow the
    # float comparison below, where this function promises InvalidSignature.
    raw_timestamp = fields.get("t", [""])[0]
    if not TIMESTAMP.fullmatch(raw_timestamp):
        raise InvalidSignature("signature header has no valid timestamp")
    timestamp = int(raw_timestamp)
    if abs(now_s - timestamp) > TOLERANCE_S:
        raise InvalidSignature("signature timestamp outside the tolerance")
    expected = sign_sandbox_payload(secret, body, timestamp).split("v1=", 1)[1]
    # Several v1 values are allowed while a secret is being rotated.
    candidates = [c.encode(errors="surrogateescape") for c in fields.get("v1", [])]
    if not any(hmac.compare_digest(expected.encode(), candidate) for candidate in candidates):
        raise InvalidSignature("signature does not match")


def _require(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedWebhook(f"{key} must be a {kind.__name__}")
    return value


class SandboxAdapter(ProcessorAdapter[SandboxSettings]):
    name = "sandbox"
    config_type = SandboxSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.BODY_HMAC,
        refunds=False,
        partial_refunds=False,
        disputes=False,
        status_lookup=True,
        replay_window_s=TOLERANCE_S,
        create_is_idempotent=True,
        create_idempotency="Idempotency-Key: the payment id; the same key returns the same checkout",
    )

    @property
    def api_base(self) -> str:
        # The demo's simulated processor is payments itself unless pointed elsewhere.
        return (self.settings.api_base_url or self.services.payments_internal_url).rstrip("/")

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}"}

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        what = f"sandbox {method} {path}"
        answer = await send_request(
            self.http, what, method, f"{self.api_base}{path}", timeout_s=self.request_timeout_s, **kwargs
        )
        if answer.status >= 300:
            raise ProcessorUnavailable(f"sandbox answered {answer.status} to {method} {path}")
        if not isinstance(answer.body, dict):
            raise ProcessorUnavailable(f"{what} failed: the answer is not a JSON object")
        return answer.body

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        body = await self._call(
            "POST",
            "/sandbox/api/v1/checkouts",
            json={
                "amount_minor": request.amount_minor,
                "currency": request.currency,
                "method": request.method,
                "return_url": request.return_url,
                "metadata": {"payment_id": str(request.payment_id), "order_id": str(request.order_id)},
            },
            headers={**self._auth, "Idempotency-Key": str(request.payment_id)},
        )
        return Checkout(processor_reference=str(body["reference"]), next_step=Redirect(str(body["hosted_url"])))

    async def verify_webhook(self, request: WebhookRequest) -> None:
        verify_sandbox_signature(
            self.settings.webhook_secret.get_secret_value(),
            request.headers.get(SIGNATURE_HEADER),
            request.body,
            request.received_at_s,
        )

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        return parse_sandbox_webhook(request.body)

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        reference = payment.processor_reference
        if reference is None:
            raise ProcessorUnavailable("sandbox payments are looked up by their reference")
        body = await self._call("GET", f"/sandbox/api/v1/checkouts/{reference}", headers=self._auth)
        kind = STATUS_KINDS.get(str(body.get("status")))
        if kind is None:
            raise ProcessorUnavailable(f"sandbox reported unknown status {body.get('status')!r}")
        return ProcessorEvent(
            event_id=f"poll:{reference}:{kind}",
            payment=PaymentRef(processor_reference=reference),
            kind=kind,
            amount_minor=int(body["amount_minor"]),
            currency=str(body["currency"]),
        )


def parse_sandbox_webhook(body: bytes) -> list[ProcessorEvent]:
    """The event of a (verified) sandbox webhook."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise MalformedWebhook("body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedWebhook("body must be a JSON object")
    event_type = payload.get("type")
    kind = EVENT_KINDS.get(event_type) if isinstance(event_type, str) else None
    if kind is None:
        raise MalformedWebhook(f"unknown event type {payload.get('type')!r}")
    data = _require(payload, "data", dict)
    return [
        ProcessorEvent(
            event_id=_require(payload, "id", str),
            payment=PaymentRef(processor_reference=_require(data, "reference", str)),
            kind=kind,
            amount_minor=_require(data, "amount_minor", int),
            currency=_require(data, "currency", str),
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
        )
    ]
