"""The one interface every processor adapter implements (version 2), and the normalized types it speaks.

An adapter converts at the edge: amounts in and out are integer minor units plus currency, whatever
the processor's wire format (minor-unit integers, decimal strings, whole shillings). Everything a
processor does lives in its own package under ``services/payments/processors/<name>/``: its typed
configuration, wire types, client and webhook checks; the package registers one adapter class.

Shapes the interface has to carry, because processors differ:
- Verification is async and sees the whole request (method, path, query, headers, raw body, peer):
  PayPal verifies through an API call, M-Pesa signs nothing (its callback is confirmed by querying
  M-Pesa), Adyen signs fields of each item of a batch, Stripe signs the raw body with a timestamp.
- A checkout's next step is a redirect, or a prompt on the driver's phone (M-Pesa's STK push).
- A payment is found by the reference we gave the processor as it echoes it back, or by one of the
  processor's ids (a payment may gain ids as it goes: Stripe's payment intent, PayPal's capture).
- Some processors need a second call once the driver approved (PayPal's capture).
- Money can come back: refunds (several, partial) and disputes (opened, won, lost)."""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp

from shared.settings import IntegrationSettings, ServiceSettings


class EventKind(StrEnum):
    PENDING = "pending"  # the driver is paying (or the checkout exists)
    APPROVED = "approved"  # the driver approved; we must complete it (capture) before it is paid
    SUCCEEDED = "succeeded"  # the processor holds the money
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"  # one refund (full or partial) is confirmed: money went back to the driver
    REFUND_FAILED = "refund_failed"  # a refund confirmed earlier did not go through after all
    DISPUTE_OPENED = "dispute_opened"  # a chargeback: the processor has withdrawn the amount
    DISPUTE_WON = "dispute_won"  # the operator won: the amount is returned
    DISPUTE_LOST = "dispute_lost"  # the driver won: the amount stays withdrawn


MONEY_BACK = frozenset({EventKind.REFUNDED, EventKind.REFUND_FAILED})
DISPUTES = frozenset({EventKind.DISPUTE_OPENED, EventKind.DISPUTE_WON, EventKind.DISPUTE_LOST})


@dataclass(frozen=True)
class PaymentRef:
    """How an event (or a status answer) names its payment: ``merchant_reference`` is the reference we
    gave the processor (``CheckoutRequest.reference``) as it echoes it back; ``processor_reference``
    is the id the processor returned at checkout (``Checkout.processor_reference``); ``ids`` are more
    ids of the same payment the processor uses in later events (e.g. ``{"payment_intent": "pi_…"}``,
    ``{"capture": "…"}``), which payments remembers, so any of them finds the payment later."""

    merchant_reference: str | None = None
    processor_reference: str | None = None
    ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessorEvent:
    """A processor's statement about one payment, normalized.

    ``event_id`` is the deduplication key, unique per integration: the same statement delivered again
    has the same id; a different statement has a different one. ``amount_minor``/``currency``: for
    payment kinds the amount charged; for refunds and disputes the amount of that refund or dispute.
    ``cause_id``: the processor's id of the refund or dispute (required for those kinds)."""

    event_id: str
    payment: PaymentRef
    kind: EventKind
    amount_minor: int | None
    currency: str | None
    reason: str | None = None
    cause_id: str | None = None

    def __post_init__(self) -> None:
        # Whatever an adapter read, an amount a bigint cannot hold (or below zero) is unreadable (400),
        # never a database error (500) that the processor would retry for days.
        if self.amount_minor is not None and not 0 <= self.amount_minor <= MAX_AMOUNT_MINOR:
            raise MalformedWebhook(f"amount {self.amount_minor} is out of range")


# What payments' bigint columns hold.
MAX_AMOUNT_MINOR = 2**63 - 1


@dataclass(frozen=True)
class WebhookRequest:
    """The whole request a processor sent to ``POST /webhooks/{integration_id}``, untouched."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive (a CIMultiDictProxy at runtime)
    body: bytes
    peer: str | None
    received_at_s: float


@dataclass(frozen=True)
class WebhookAck:
    """What the processor must read back to stop retrying (Adyen: ``[accepted]``; Daraja: JSON)."""

    status: int = 200
    body: bytes = b'{"received":true}'
    content_type: str = "application/json"


@dataclass(frozen=True)
class CheckoutRequest:
    payment_id: uuid.UUID
    order_id: uuid.UUID
    reference: str  # what the processor echoes back (``PaymentRef.merchant_reference``): str(payment_id)
    amount_minor: int  # what the driver is charged
    currency: str
    method: str
    return_url: str  # where the driver comes back to after a redirect
    webhook_url: str  # POST /webhooks/{integration_id} on payments' public URL (M-Pesa's CallBackURL)
    description: str
    locale: str | None = None
    phone: str | None = None  # E.164 digits without "+", for processors that prompt the driver's phone


@dataclass(frozen=True)
class Redirect:
    """Send the driver to the processor's hosted page."""

    url: str


@dataclass(frozen=True)
class PhonePrompt:
    """The processor prompted the driver's phone; the page says "approve on your phone" and follows
    the payment's status."""

    message: str  # the processor's words to the driver, for the log; the page speaks its own


NextStep = Redirect | PhonePrompt


@dataclass(frozen=True)
class Checkout:
    processor_reference: str
    next_step: NextStep


@dataclass(frozen=True)
class RefundRequest:
    payment: PaymentRef  # every id payments knows of the payment
    refund_key: str  # ours, unique per refund request: the processor's idempotency key where it has one
    amount_minor: int  # of the amount charged
    currency: str
    reason: str


@dataclass(frozen=True)
class RefundAccepted:
    """The processor took the refund request. The ledger moves only on its confirmation (an event)."""

    refund_id: str
    status: str  # the processor's word (pending, succeeded, …), for the operator


class WebhookAuth(StrEnum):
    BODY_HMAC = "body_hmac"  # an HMAC over the raw body (Stripe, with a signed timestamp)
    FIELD_HMAC = "field_hmac"  # an HMAC over fields of each notification item (Adyen)
    VERIFICATION_API = "verification_api"  # the processor's API says whether it sent it (PayPal)
    STATUS_QUERY = "status_query"  # nothing signed: the payment is queried and the answer is believed (M-Pesa)


class NextStepKind(StrEnum):
    REDIRECT = "redirect"
    PHONE_PROMPT = "phone_prompt"


@dataclass(frozen=True)
class Capabilities:
    next_step: NextStepKind
    webhook_auth: WebhookAuth
    refunds: bool
    partial_refunds: bool
    disputes: bool
    status_lookup: bool
    # Seconds a signed webhook timestamp may be old; None when the processor signs no time (a replay
    # is then only a duplicate, which the event id catches).
    replay_window_s: int | None
    # Whether the processor makes a retried create return the first one (an idempotency key, or a
    # lookup by our reference). When it does not (M-Pesa), a create whose answer was lost is never
    # sent again for that payment: the driver starts a new top-up instead.
    create_is_idempotent: bool
    # How, in words (for the README and the operator).
    create_idempotency: str
    # Whether the processor vouches for the amounts it states (signed webhooks, status lookups). M-Pesa
    # does not: its query has no amount and its callback is unsigned; its push fixed the amount, which
    # the driver cannot change, so a confirmed success means paid what we asked for.
    states_amount: bool = True


class InvalidSignature(Exception):
    """The webhook is not provably from the processor: 401, and nothing is changed."""


class MalformedWebhook(Exception):
    """Authentic (or unauthenticated by design), but not a shape we can read: 400."""


class ProcessorUnavailable(Exception):
    """The processor could not be reached or answered with an error; safe to retry. Its text goes to
    logs and the payment row: it never carries a credential or a request's headers."""


class ProcessorRefused(Exception):
    """The processor refused the request for good (e.g. a refund larger than what is left)."""


ConfigT = TypeVar("ConfigT", bound=IntegrationSettings)


class ProcessorAdapter(ABC, Generic[ConfigT]):
    """One processor. ``config_type`` is the processor's own configuration (``[integrations.<id>]``),
    with its credentials named in the processor's words and typed as secrets."""

    name: ClassVar[str]
    config_type: ClassVar[type[IntegrationSettings]]
    capabilities: ClassVar[Capabilities]
    # Seconds for one API call, connection included (``send_request``'s ``timeout_s``); an adapter
    # whose processor needs another overrides it, tests shorten it.
    request_timeout_s: float = 10.0

    def __init__(
        self, integration_id: str, settings: ConfigT, services: ServiceSettings, http: aiohttp.ClientSession
    ) -> None:
        self.integration_id = integration_id
        self.settings = settings
        self.services = services
        self.http = http

    @property
    def api_base(self) -> str:
        """The processor's API (``api_base_url``, each processor's config defaulting to its real one),
        without a trailing slash: paths are appended to it."""
        base = self.settings.api_base_url
        if base is None:
            raise ProcessorUnavailable(f"{self.name}: no api_base_url is configured")
        return base.rstrip("/")

    @abstractmethod
    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Create the payment at the processor. A retry with the same request must not charge twice
        (see ``capabilities.create_idempotency``)."""

    @abstractmethod
    async def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise :class:`InvalidSignature` unless the request provably comes from the processor (or,
        for a processor that signs nothing, unless what it says is confirmed by the processor)."""

    @abstractmethod
    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        """The normalized events of a verified webhook (none for events we do not act on);
        :class:`MalformedWebhook` if unreadable."""

    def webhook_ack(self) -> WebhookAck:
        return WebhookAck()

    def stored_body(self, body: bytes) -> bytes:
        """The webhook body as kept for audit (``processor_events.body``): what a processor sends about
        the driver that we must not keep (M-Pesa: the phone number) left out."""
        return body

    @abstractmethod
    async def fetch_status(self, payment: PaymentRef) -> ProcessorEvent:
        """Ask the processor where a payment stands (heals lost webhooks). ``event_id`` is
        ``poll:<reference>:<kind>`` so that repeated answers are one event."""

    async def complete_payment(self, payment: PaymentRef, amount_minor: int, currency: str) -> ProcessorEvent:
        """Finish a payment the driver approved (PayPal's capture), idempotently. Only processors whose
        events include ``APPROVED`` implement it."""
        raise ProcessorRefused(f"{self.name} payments need no completion")

    async def refund(self, request: RefundRequest) -> RefundAccepted:
        """Ask the processor to refund, idempotently on ``request.refund_key``."""
        raise ProcessorRefused(f"{self.name} cannot refund through its API")


# An adapter of whichever processor, as the payments service holds them.
AnyAdapter = ProcessorAdapter[Any]

VerifiedT = TypeVar("VerifiedT")


class VerifiedHandover(Generic[VerifiedT]):
    """What ``verify_webhook`` fetched to confirm a webhook (a payment, an invoice, the events),
    handed to ``parse_webhook`` of the same request: a processor confirmed through its API (Mollie,
    Xendit, Mercado Pago) is asked once per webhook. Keyed by the request object, which payments
    passes to both; bounded, oldest out first, for requests whose parse never came (refused later)."""

    def __init__(self, kept: int = 256) -> None:
        self._kept: OrderedDict[int, tuple[WebhookRequest, VerifiedT]] = OrderedDict()
        self._max = kept

    def keep(self, request: WebhookRequest, verified: VerifiedT) -> None:
        self._kept[id(request)] = (request, verified)
        while len(self._kept) > self._max:
            self._kept.popitem(last=False)

    def take(self, request: WebhookRequest) -> VerifiedT | None:
        """What was kept for this very request (None: fetch again), once."""
        kept = self._kept.pop(id(request), None)
        return kept[1] if kept is not None and kept[0] is request else None


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON answer; None when there is none or it is not JSON


async def send_request(
    http: aiohttp.ClientSession, what: str, method: str, url: str, *, timeout_s: float, **request: Any
) -> Answer:
    """One call to a processor's API, whatever it answers. A transport failure (refused, reset,
    timed out) is :class:`ProcessorUnavailable` naming only ``what`` and the exception's kind: an
    aiohttp error's repr carries the request's headers, and with them the credentials, into logs,
    the payment row and the page's RPC error."""
    try:
        async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout_s), **request) as response:
            status = response.status
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ProcessorUnavailable(f"{what} failed: {type(exc).__name__}") from None
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        body = None
    return Answer(status, body)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in ``headers``, whatever the case: at runtime the mapping is
    case-insensitive (``WebhookRequest.headers``), a plain dict (tests, tools) is searched."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


# What stands in an error text where a secret was.
REDACTED = "[redacted]"
# How much of a processor's words an exception carries.
MESSAGE_MAX = 200


def redact(
    text: str, secrets: Iterable[str], shape: re.Pattern[str] | None = None, limit: int | None = MESSAGE_MAX
) -> str:
    """``text`` (a processor's words, bound for an exception: logs, the payment row) with every one of
    ``secrets`` (the integration's credentials, as configured) and anything matching ``shape`` (what
    the processor's credentials look like, masked or not: a processor may quote a key it was sent)
    replaced by ``[redacted]``, then cut at ``limit`` characters (``None``: not cut)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    if shape is not None:
        text = shape.sub(REDACTED, text)
    return text if limit is None else text[:limit]


# Answers worth retrying besides 401/403 and 5xx: a concurrent request under the same idempotency
# key (409), rate limited (429).
RETRYABLE = frozenset({409, 429})


def answer_error(
    processor: str,
    what: str,
    status: int,
    detail: str = "",
    *,
    code: str | None = None,
    retryable: Collection[int] = RETRYABLE,
    credential: str = "API key",
) -> ProcessorUnavailable | ProcessorRefused:
    """The exception (for the caller to raise) of a processor's answer ``status``, not a 2xx, to the
    call named ``what``. ``code`` is the processor's error code and ``detail`` its message, both
    redacted already (:func:`redact`): the adapter reads its processor's error body.

    - 401/403: the ``credential`` is wrong or lacks a permission, which the operator fixes, after
      which the same call goes through: :class:`ProcessorUnavailable`, never with the processor's
      words (they may quote the key).
    - a status in ``retryable``, any 5xx, or a status below 400 (a redirect left unfollowed):
      :class:`ProcessorUnavailable`, named by ``code`` if there is one, else by ``detail``.
    - any other 4xx: :class:`ProcessorRefused`, with ``code`` and ``detail``."""
    if status in (401, 403):
        return ProcessorUnavailable(f"{processor} refused the {credential} for {what}: {status}")
    words = f": {detail}" if detail else ""
    if status in retryable or status >= 500 or status < 400:
        if code:
            return ProcessorUnavailable(f"{processor} answered {status} ({code}) to {what}")
        return ProcessorUnavailable(f"{processor} answered {status} to {what}{words}")
    coded = f" {code}" if code else ""
    return ProcessorRefused(f"{processor} refused {what} ({status}{coded}){words}")
