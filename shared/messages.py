"""Versioned message contracts. Every message travels in an :class:`Envelope`; its ``type`` is also
the routing key. Consumers ignore unknown fields; a breaking change gets a new ``version`` and the
old one stays readable until no producer sends it. Amounts are integer minor units plus currency."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from shared.logging import CORRELATION_ID_PATTERN

Environment = Literal["production", "test"]


class BadMessage(Exception):
    """A message that can never be processed: dead-lettered with this reason."""


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str]
    VERSION: ClassVar[int]


class PaymentSucceeded(Contract):
    TYPE: ClassVar[str] = "payment.succeeded"
    VERSION: ClassVar[int] = 1
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: str = Field(min_length=1)
    integration_id: str
    processor: str
    processor_reference: str
    amount_minor: StrictInt = Field(gt=0)
    bonus_minor: StrictInt = Field(ge=0)
    fee_minor: StrictInt = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # Whose money: a test integration's payments never touch a real balance.
    environment: Environment = "production"


class PaymentFailed(Contract):
    TYPE: ClassVar[str] = "payment.failed"
    VERSION: ClassVar[int] = 1
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: str = Field(min_length=1)
    integration_id: str
    # "rejected": held for review, then refunded by the operator. "needs_review" is no longer sent
    # (payment.needs_review is) but stays readable for messages already in flight.
    status: Literal["failed", "expired", "rejected", "needs_review"]
    reason: str
    environment: Environment = "production"


class PaymentNeedsReview(Contract):
    """The processor confirmed a payment for other terms than were charged: the money may have been
    taken, nothing is credited until an operator settles it."""

    TYPE: ClassVar[str] = "payment.needs_review"
    VERSION: ClassVar[int] = 1
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: str = Field(min_length=1)
    integration_id: str
    charge_minor: StrictInt = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    confirmed_amount_minor: StrictInt | None
    confirmed_currency: str | None
    reason: str
    environment: Environment = "production"


class PaymentReversed(Contract):
    """Money of a succeeded payment went back to the driver's card or wallet: a refund, or a dispute
    (chargeback). The processor confirmed it; the ledger takes the matching share of the top-up back.
    ``reversed_before_minor`` is what earlier reversals of the payment returned (of the charge), so
    that every share is computed from the same running total, in whatever order they are posted."""

    TYPE: ClassVar[str] = "payment.reversed"
    VERSION: ClassVar[int] = 1
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: str = Field(min_length=1)
    integration_id: str
    cause: Literal["refund", "dispute"]
    cause_id: str = Field(min_length=1, max_length=300)
    reversed_minor: StrictInt = Field(gt=0)
    reversed_before_minor: StrictInt = Field(ge=0)
    # The top-up the payment paid for: charged = amount + fee.
    amount_minor: StrictInt = Field(gt=0)
    bonus_minor: StrictInt = Field(ge=0)
    fee_minor: StrictInt = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    environment: Environment = "production"


class PaymentReversalUndone(Contract):
    """A reversal did not stand: the refund failed after all, or the operator won the dispute. The
    ledger undoes exactly what the reversal took."""

    TYPE: ClassVar[str] = "payment.reversal_undone"
    VERSION: ClassVar[int] = 1
    payment_id: uuid.UUID
    user_id: str = Field(min_length=1)
    integration_id: str
    cause: Literal["refund", "dispute"]
    cause_id: str = Field(min_length=1, max_length=300)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    environment: Environment = "production"


class CreditApplied(Contract):
    TYPE: ClassVar[str] = "credit.applied"
    VERSION: ClassVar[int] = 1
    transfer_id: str
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: str = Field(min_length=1)
    amount_minor: StrictInt = Field(gt=0)
    bonus_minor: StrictInt = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # The driver's balance after the credit as the CSMS reported it; None when it did not say
    # (an AMPECO partner user's balance is hidden) or said it finer than the minor unit.
    balance_minor: StrictInt | None
    environment: Environment = "production"


CONTRACTS: dict[tuple[str, int], type[Contract]] = {
    (c.TYPE, c.VERSION): c
    for c in (
        PaymentSucceeded,
        PaymentFailed,
        PaymentNeedsReview,
        PaymentReversed,
        PaymentReversalUndone,
        CreditApplied,
    )
}
# The one service that produces each contract: consumers believe a message only from its broker user.
PRODUCERS: dict[type[Contract], str] = {
    PaymentSucceeded: "payments",
    PaymentFailed: "payments",
    PaymentNeedsReview: "payments",
    PaymentReversed: "payments",
    PaymentReversalUndone: "payments",
    CreditApplied: "crediting",
}


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    correlation_id: str = Field(pattern=CORRELATION_ID_PATTERN)
    causation_id: uuid.UUID | None = None
    producer: str
    data: dict[str, Any]


def envelope_for(
    payload: Contract,
    *,
    producer: str,
    correlation_id: str,
    causation_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
) -> Envelope:
    return Envelope(
        id=message_id or uuid.uuid4(),
        type=payload.TYPE,
        version=payload.VERSION,
        occurred_at=datetime.now(UTC),
        correlation_id=correlation_id,
        causation_id=causation_id,
        producer=producer,
        data=payload.model_dump(mode="json"),
    )


def decode(body: bytes) -> tuple[Envelope, Contract]:
    """The envelope and its typed payload, or :class:`BadMessage` saying why not."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise BadMessage(f"malformed envelope: {_first_error(exc)}") from None
    contract = CONTRACTS.get((envelope.type, envelope.version))
    if contract is None:
        raise BadMessage(f"unknown message type/version {envelope.type}/v{envelope.version}")
    try:
        payload = contract.model_validate(envelope.data)
    except ValidationError as exc:
        raise BadMessage(f"malformed {envelope.type}/v{envelope.version}: {_first_error(exc)}") from None
    return envelope, payload


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"


class CreateCheckout(BaseModel):
    """RPC command, page → payments: create (or return) the checkout of one order. Idempotent on
    ``order_id``: asking again returns the same payment and redirect URL. It carries what the driver
    asked for, not a price: payments prices it from its own configuration (``shared/pricing.py``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    order_id: uuid.UUID
    user_id: str = Field(min_length=1)
    integration_id: str
    method: str
    package_id: str | None = None
    amount_minor: StrictInt | None = None
    return_url: str
    locale: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    # The driver's phone (digits, country code first), for a processor that prompts it (M-Pesa);
    # passed to the processor, never stored.
    phone: str | None = Field(default=None, pattern=r"^[1-9][0-9]{7,14}$")

    def pricing_request(self) -> dict[str, Any]:
        """The request in the shape ``shared.pricing.price_topup`` reads."""
        body: dict[str, Any] = {"method": self.method}
        if self.package_id is not None:
            body["package_id"] = self.package_id
        if self.amount_minor is not None:
            body["amount_minor"] = self.amount_minor
        return body


class CheckoutCreated(BaseModel):
    """The checkout and the terms payments charges by; the page refuses terms other than its order's."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    payment_id: uuid.UUID
    # "redirect": send the driver to ``redirect_url``; "phone_prompt": the processor prompted the
    # driver's phone, and the page follows the payment's status.
    next_step: Literal["redirect", "phone_prompt"] = "redirect"
    redirect_url: str | None
    amount_minor: StrictInt
    bonus_minor: StrictInt
    fee_minor: StrictInt
    currency: str
