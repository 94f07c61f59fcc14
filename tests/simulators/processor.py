"""What every processor simulator offers the conformance suite (``tests/conformance/``).

A simulator is an aiohttp server reproducing one processor's documented API and webhooks
(``../shared/reference/processors.md``), written independently of the adapter, so that the two cannot
share one mistake. It keeps its own state (payments, refunds, disputes), signs and delivers webhooks
the way the processor does, and misbehaves on request: duplicates, reordering, lost webhooks, slow or
failing API calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from services.payments.processors.base import Checkout, WebhookRequest

# What the driver does at the processor: pays, declines (card refused, cancels the phone prompt, …),
# or lets the checkout expire.
Outcome = Literal["succeeded", "declined", "expired"]


@dataclass
class WebhookFaults:
    """How the simulator delivers its webhooks from now on."""

    copies: int = 1  # each webhook is sent this many times
    hold: bool = False  # keep webhooks until ``release()``, which sends them newest first
    drop: bool = False  # never send them (lost webhooks: polling must heal)


CreateFault = Literal["error_500", "timeout_after_create"]


class ProcessorSimulator(Protocol):
    processor: str  # the adapter's ``name``
    faults: WebhookFaults
    # Where webhooks go (payments' ``POST /webhooks/{integration_id}``). Processors that take the
    # callback URL per request (M-Pesa's CallBackURL) use the request's.
    webhook_url: str | None

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""

    async def close(self) -> None: ...

    @property
    def base_url(self) -> str:
        """The integration's ``api_base_url``."""

    def settings(self) -> dict[str, Any]:
        """The processor's own non-secret settings for ``[integrations.<id>]`` (besides ``processor``,
        ``methods`` and ``api_base_url``), e.g. ``{"merchant_account": "…"}``."""

    def secrets(self) -> dict[str, str]:
        """The integration's secrets by key (``EVTOPUP__INTEGRATIONS__<ID>__<KEY>``)."""

    def fail_next_create(self, fault: CreateFault) -> None:
        """The next create call fails: a 500 before anything is created, or the payment is created and
        the answer comes only after the client has given up."""

    def created_payments(self) -> int:
        """How many payments (checkouts, sessions, links, orders, prompts) the processor holds: the
        conformance suite checks that a retried create never makes a second chargeable one."""

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        """The driver acts at the processor on the checkout ``create_checkout`` returned (follows its
        redirect, or answers the phone prompt). Afterwards the processor's state reflects it and its
        webhooks are delivered according to ``faults``. PayPal: "succeeded" approves the order; the
        capture is the adapter's to make."""

    async def release(self) -> None:
        """Send the webhooks held so far, newest first (``faults.hold``)."""

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        """A chargeback on a paid payment; returns the dispute id. Sends the processor's webhook."""

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        """The dispute ends: won (by the operator: money returned) or lost. Sends the webhook."""

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        """A webhook the processor would send for the payment's outcome (for a payment it holds),
        signed (where the processor signs) as if sent ``age_s`` seconds ago; not sent. The suite
        tampers with it: the body, the signature, the secret, the whitespace."""

    def with_other_secret(self) -> ProcessorSimulator:
        """A view of this simulator whose ``signed_webhook`` signs with a different secret (or, for a
        processor that verifies through its API, one that the API does not recognise)."""
