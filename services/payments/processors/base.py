"""The one interface every processor adapter implements, and the normalized types it speaks.

An adapter converts at the edge: amounts in and out are integer minor units plus currency, whatever
the processor's wire format. Signature checks are pure and run on the raw request bytes."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import aiohttp

from shared.settings import IntegrationSettings, ServiceSettings


class EventKind(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ProcessorEvent:
    """A processor's statement about one payment, normalized."""

    event_id: str  # unique per integration: the deduplication key
    processor_reference: str
    kind: EventKind
    amount_minor: int | None
    currency: str | None
    reason: str | None = None


@dataclass(frozen=True)
class CheckoutRequest:
    payment_id: uuid.UUID
    order_id: uuid.UUID
    amount_minor: int  # what the driver is charged
    currency: str
    method: str
    return_url: str
    description: str


@dataclass(frozen=True)
class Checkout:
    processor_reference: str
    redirect_url: str


class InvalidSignature(Exception):
    """The webhook is not provably from the processor: 401, and nothing is changed."""


class MalformedWebhook(Exception):
    """Signed, but not a shape we can read: 400 so the processor's dashboard shows it."""


class ProcessorUnavailable(Exception):
    """The processor could not be reached or answered with an error; safe to retry."""


class ProcessorAdapter(ABC):
    name: ClassVar[str]

    def __init__(
        self,
        integration_id: str,
        settings: IntegrationSettings,
        services: ServiceSettings,
        http: aiohttp.ClientSession,
    ) -> None:
        self.integration_id = integration_id
        self.settings = settings
        self.services = services
        self.http = http

    @abstractmethod
    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Create the payment at the processor, idempotently on ``request.payment_id``."""

    @abstractmethod
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
        """Raise :class:`InvalidSignature` unless the raw ``body`` is signed by the processor."""

    @abstractmethod
    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[ProcessorEvent]:
        """The normalized events in a verified webhook; :class:`MalformedWebhook` if unreadable."""

    @abstractmethod
    async def fetch_status(self, processor_reference: str) -> ProcessorEvent:
        """Ask the processor where a payment stands: heals lost webhooks."""
