"""Adapter for Xendit Invoices: a hosted invoice page (redirect), the invoice callback, the Refund API.

Wire format: ``wire.py``. What this adds is the talking, and two decisions:

**A create is made idempotent by our reference.** Xendit documents no idempotency key for invoices:
the SDKs generated from its OpenAPI specs send none on ``POST /v2/invoices`` (xendit-python
``invoice_api.py`` and xendit-node ``docs/Invoice.md`` give ``idempotency-key`` only to the Refund API
and to reads), and ``external_id`` is not unique at Xendit (processors.md §8.a: "dedupe on
external_id"). So ``create_checkout`` first asks ``GET /v2/invoices?external_id=<reference>``: an
invoice already made for this payment (the answer to the first attempt was lost) is returned again,
not made twice. After a create it asks once more, because a first attempt still in flight at Xendit
can land after the lookup: of the invoices for one reference the oldest payable one (a paid one if
any) is kept and every other payable one is expired at once (``POST /invoices/{id}/expire!``), so
there is never a second invoice that can be paid, whichever attempt's answer payments keeps. What
stays open: two creates for one payment running at the very same moment could each see only itself
(payments makes one create per request, and a driver's retry comes after the first timed out).

**A callback is believed only as Xendit's API states it.** The ``x-callback-token`` header is one
static token per account, not a signature: whoever learns it, or captures a callback, can post any
body, as often and as late as they like. It is compared in constant time (a wrong one is refused
before anything else), then the invoice (or refund) is fetched (``GET /v2/invoices/{id}``,
``GET /refunds/{id}``) and the callback is accepted only if Xendit says the same; the events are
built from the fetched object, never from the body: a replay is the same event again (deduplicated
by its id) and a tampered amount is never read. Hence ``WebhookAuth.STATUS_QUERY``: the state is
queried and Xendit's answer believed; the token only keeps strangers from making us query. When
Xendit cannot be asked, the callback gets a 503 (Xendit retries a non-2xx answer; a callback lost to
a timeout, which Xendit does not retry, is healed by payments' polling through ``fetch_status``).

Errors: a transport failure, a timeout, 401/403 (the key), 409, 429 and 5xx are
:class:`ProcessorUnavailable`; any other 4xx is :class:`ProcessorRefused` with Xendit's
``error_code`` and (redacted) message. Neither ever carries the key, the token or request headers."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
from services.payments.processors.xendit import wire
from services.payments.processors.xendit.config import XenditSettings
from shared.money import MoneyError

_CREDENTIAL = re.compile(r"xnd_(?:production|development|public_production|public_development)_[A-Za-z0-9_*]*")


class _NotFound(ProcessorRefused):
    """Xendit knows no such object (404)."""


class XenditAdapter(ProcessorAdapter[XenditSettings]):
    name = "xendit"
    config_type = XenditSettings
    capabilities = Capabilities(
        next_step=NextStepKind.REDIRECT,
        webhook_auth=WebhookAuth.STATUS_QUERY,
        refunds=True,
        partial_refunds=True,
        # Xendit documents no dispute API or callback for invoices (chargebacks on cards are handled
        # in its dashboard): nothing here could learn of one.
        disputes=False,
        status_lookup=True,
        replay_window_s=None,
        create_is_idempotent=True,
        create_idempotency=(
            "by our reference: Xendit has no idempotency key for invoices, so the adapter first looks the "
            "payment's invoice up by external_id (GET /v2/invoices?external_id=…) and returns it if one was "
            "made; after a create it looks again and expires any younger payable duplicate at once, so a "
            "retried create never leaves two invoices that can be paid"
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handover = VerifiedHandover[wire.XenditInvoice | wire.XenditRefund]()

    # -- HTTP --------------------------------------------------------------------------------------

    def _basic(self) -> str:
        key = self.settings.secret_key.get_secret_value()
        return base64.b64encode(f"{key}:".encode()).decode("ascii")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        payload: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        call = f"{method} {path.split('?', 1)[0]}"
        what = f"xendit {call}"
        headers = {"Authorization": f"Basic {self._basic()}", "Accept": "application/json"}
        if idempotency_key is not None:
            headers[wire.REFUND_IDEMPOTENCY_HEADER] = idempotency_key
        answer = await send_request(
            self.http,
            what,
            method,
            f"{self.api_base}{path}",
            timeout_s=self.request_timeout_s,
            json=payload,
            params=query,
            headers=headers,
            allow_redirects=False,
        )
        status = answer.status
        if 200 <= status < 300:
            return answer.body
        code, message = wire.error_of(answer.body)
        secrets = [
            self.settings.secret_key.get_secret_value(),
            self.settings.callback_token.get_secret_value(),
            self._basic(),
        ]
        shown = redact(code or "no error code", secrets, _CREDENTIAL)
        if status == 404:
            raise _NotFound(f"{what}: Xendit has no such object ({shown})")
        raise answer_error("xendit", call, status, redact(message or "", secrets, _CREDENTIAL), code=shown)

    @staticmethod
    def _read(kind: type[wire.XenditInvoice] | type[wire.XenditRefund], body: object, what: str) -> Any:
        try:
            return kind.from_json(body)
        except ValueError as exc:  # WireError, MoneyError
            raise ProcessorUnavailable(f"xendit answered an unreadable {what}: {exc}") from None

    async def _get_invoice(self, invoice_id: str) -> wire.XenditInvoice:
        if not wire.XENDIT_ID.fullmatch(invoice_id):
            raise ProcessorRefused("xendit payments are looked up by their invoice id")
        body = await self._call("GET", f"{wire.INVOICES_PATH}/{quote(invoice_id, safe='')}")
        invoice: wire.XenditInvoice = self._read(wire.XenditInvoice, body, "invoice")
        if invoice.id != invoice_id:
            raise ProcessorUnavailable("xendit answered with another invoice than the one asked for")
        return invoice

    async def _invoices_of(self, reference: str) -> list[wire.XenditInvoice]:
        body = await self._call("GET", wire.INVOICES_PATH, query={"external_id": reference})
        try:
            invoices = wire.invoice_list(body)
        except ValueError as exc:
            raise ProcessorUnavailable(f"xendit answered an unreadable invoice list: {exc}") from None
        # The list is a search: keep only exact matches.
        return [invoice for invoice in invoices if invoice.external_id == reference]

    async def _get_refund(self, refund_id: str) -> wire.XenditRefund:
        if not wire.XENDIT_ID.fullmatch(refund_id):
            raise ProcessorRefused("xendit refunds are looked up by their id")
        body = await self._call("GET", f"{wire.REFUNDS_PATH}/{quote(refund_id, safe='')}")
        refund: wire.XenditRefund = self._read(wire.XenditRefund, body, "refund")
        if refund.id != refund_id:
            raise ProcessorUnavailable("xendit answered with another refund than the one asked for")
        return refund

    # -- creating ----------------------------------------------------------------------------------

    async def _one_invoice(
        self, reference: str, created: wire.XenditInvoice | None = None
    ) -> wire.XenditInvoice | None:
        """The one invoice kept for ``reference`` (see the module docstring), the others expired."""
        invoices = await self._invoices_of(reference)
        if created is not None and all(invoice.id != created.id for invoice in invoices):
            invoices.append(created)  # the search may not show it yet
        keeper, duplicates = wire.keep_one(invoices)
        for duplicate in duplicates:
            # A 404: no longer pending (it expired on its own), nothing left to pay on it.
            with contextlib.suppress(_NotFound):
                await self._call("POST", f"/invoices/{quote(duplicate.id, safe='')}/expire!")
        return keeper

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            payload = wire.invoice_body(request, self.settings.invoice_duration_s)
        except ValueError as exc:  # MoneyError, an unknown method
            raise ProcessorRefused(f"xendit cannot charge this: {exc}") from None
        invoice = await self._one_invoice(request.reference)
        if invoice is None:
            body = await self._call("POST", wire.INVOICES_PATH, payload=payload)
            created: wire.XenditInvoice = self._read(wire.XenditInvoice, body, "invoice")
            invoice = await self._one_invoice(request.reference, created)
            assert invoice is not None  # ``created`` is live, or another one is
        if (invoice.amount_minor, invoice.currency) != (request.amount_minor, request.currency):
            raise ProcessorRefused(
                f"xendit invoice {invoice.id} for this payment is for {invoice.amount_minor} {invoice.currency},"
                f" not {request.amount_minor} {request.currency}"
            )
        if invoice.invoice_url is None:
            raise ProcessorUnavailable(f"xendit invoice {invoice.id} has no invoice_url")
        return Checkout(processor_reference=invoice.id, next_step=Redirect(invoice.invoice_url))

    # -- callbacks ---------------------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        token = self.settings.callback_token.get_secret_value()
        if not wire.token_valid(token, header(request.headers, wire.CALLBACK_TOKEN_HEADER)):
            raise InvalidSignature("x-callback-token is missing or wrong")
        try:
            callback = wire.parse_callback(request.body)
        except MalformedWebhook:
            # Nothing to confirm, and nothing is believed from it: parse_webhook refuses it (400).
            # Never raised from here: payments answers only InvalidSignature, ProcessorUnavailable and
            # unreadable input of verify_webhook, so a MalformedWebhook here would be a 500.
            return
        try:
            if isinstance(callback, wire.InvoiceCallback):
                invoice = await self._get_invoice(callback.invoice_id)
                if not wire.invoice_callback_confirmed(callback, invoice):
                    raise InvalidSignature(f"Xendit does not confirm this callback (the invoice is {invoice.status})")
                self._handover.keep(request, invoice)
            elif isinstance(callback, wire.RefundCallback):
                refund = await self._get_refund(callback.refund_id)
                if not wire.refund_callback_confirmed(callback, refund):
                    raise InvalidSignature(f"Xendit does not confirm this callback (the refund is {refund.status})")
                self._handover.keep(request, refund)
        except ProcessorRefused as exc:  # no such invoice or refund (or an id we would not ask for)
            raise InvalidSignature(f"Xendit does not confirm this callback: {exc}") from None
        # Another product's callback (a virtual account's, a payout's…): nothing is believed from it.

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        callback = wire.parse_callback(request.body)
        if isinstance(callback, wire.OtherCallback):
            return []
        confirmed = self._handover.take(request)
        if isinstance(callback, wire.InvoiceCallback):
            invoice = confirmed if isinstance(confirmed, wire.XenditInvoice) else None
            if invoice is None or invoice.id != callback.invoice_id:
                invoice = await self._fetch_for_parse(self._get_invoice(callback.invoice_id))
            return [wire.invoice_event(invoice, poll=False)]
        refund = confirmed if isinstance(confirmed, wire.XenditRefund) else None
        if refund is None or refund.id != callback.refund_id:
            refund = await self._fetch_for_parse(self._get_refund(callback.refund_id))
        return wire.refund_events(refund)

    @staticmethod
    async def _fetch_for_parse(fetch: Any) -> Any:
        try:
            return await fetch
        except ProcessorRefused as exc:
            raise MalformedWebhook(f"the callback names nothing Xendit knows: {exc}") from None

    # -- status and refunds ------------------------------------------------------------------------

    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        if payment.processor_reference:
            invoice = await self._get_invoice(payment.processor_reference)
        elif payment.merchant_reference:
            invoices = await self._invoices_of(payment.merchant_reference)
            keeper, _ = wire.keep_one(invoices)
            if keeper is None:
                if not invoices:
                    raise ProcessorRefused("xendit has no invoice for this payment")
                keeper = invoices[-1]  # all expired
            invoice = keeper
        else:
            raise ProcessorRefused("xendit payments are looked up by their invoice id or external_id")
        return wire.invoice_event(invoice, poll=True)

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        invoice_id = request.payment.processor_reference
        if not invoice_id or not wire.XENDIT_ID.fullmatch(invoice_id):
            raise ProcessorRefused("xendit refunds need the payment's invoice id")
        try:
            payload = wire.refund_body(invoice_id, request)
        except MoneyError as exc:
            raise ProcessorRefused(f"xendit cannot refund this amount: {exc}") from None
        body = await self._call("POST", wire.REFUNDS_PATH, payload=payload, idempotency_key=request.refund_key)
        refund: wire.XenditRefund = self._read(wire.XenditRefund, body, "refund")
        return RefundAccepted(refund_id=refund.id, status=refund.status)
