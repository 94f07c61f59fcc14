"""Use cases of the payments service: create a checkout for an order, and apply a processor event
(from a webhook or from polling) to the payment it concerns. Each state change and the event it
publishes commit in one transaction."""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from services.payments import domain, store
from services.payments.domain import PaymentStatus
from services.payments.processors.base import CheckoutRequest, ProcessorAdapter, ProcessorEvent
from shared import pricing
from shared.amqp import RpcError
from shared.db import Connection
from shared.logging import correlation_id_var, get_logger, new_correlation_id
from shared.messages import (
    CheckoutCreated,
    Contract,
    CreateCheckout,
    PaymentFailed,
    PaymentNeedsReview,
    PaymentSucceeded,
)
from shared.outbox import enqueue
from shared.settings import Settings

log = get_logger(__name__)

PRODUCER = "payments"
# A webhook that found no payment has usually raced its checkout: the re-examiner looks again soon.
UNKNOWN_FIRST_LOOK_S = 1.0


async def create_checkout(
    pool: asyncpg.Pool, adapters: dict[str, ProcessorAdapter], settings: Settings, command: CreateCheckout
) -> CheckoutCreated:
    """Price the order from this service's own configuration (never the page's numbers), record the
    payment once per order, and create it at the processor."""
    adapter = adapters.get(command.integration_id)
    if adapter is None:
        raise RpcError("unknown_integration", f"no integration {command.integration_id!r}")
    # A test integration serves only its allow-listed users: test money never reaches anyone else.
    if pricing.integration_for_user(settings, command.user_id) != command.integration_id:
        raise RpcError("wrong_integration", f"{command.integration_id} does not serve this user")
    try:
        priced = pricing.price_topup(
            command.pricing_request(), settings.amounts, adapter.settings, settings.operator.currency
        )
    except pricing.InvalidTopup as exc:
        raise RpcError("invalid_topup", f"{exc.field}: {exc.detail}") from None
    async with pool.acquire() as conn:
        payment = await store.insert_payment(
            conn,
            store.Payment(
                id=uuid.uuid4(),
                order_id=command.order_id,
                user_id=command.user_id,
                integration_id=command.integration_id,
                processor=adapter.name,
                method=priced.method,
                amount_minor=priced.amount_minor,
                bonus_minor=priced.bonus_minor,
                fee_minor=priced.fee_minor,
                charge_minor=priced.charge_minor,
                currency=priced.currency,
                status=PaymentStatus.CREATED,
                processor_reference=None,
                redirect_url=None,
                correlation_id=correlation_id_var.get() or new_correlation_id(),
                environment=adapter.settings.environment,
            ),
        )
    terms = (priced.amount_minor, priced.bonus_minor, priced.fee_minor, priced.currency, command.user_id)
    if (payment.amount_minor, payment.bonus_minor, payment.fee_minor, payment.currency, payment.user_id) != terms:
        raise RpcError("conflict", "a payment exists for this order with other terms")
    redirect_url = payment.redirect_url
    if redirect_url is None:
        # The processor call is idempotent on the payment id, so a retry after a crash here is safe.
        checkout = await adapter.create_checkout(
            CheckoutRequest(
                payment_id=payment.id,
                order_id=payment.order_id,
                amount_minor=payment.charge_minor,
                currency=payment.currency,
                method=payment.method,
                return_url=command.return_url,
                description=f"Balance top-up {payment.order_id}",
            )
        )
        await store.record_checkout(pool, payment.id, checkout.processor_reference, checkout.redirect_url)
        log.info("checkout_created", payment_id=str(payment.id), integration=payment.integration_id)
        redirect_url = checkout.redirect_url
    return CheckoutCreated(
        payment_id=payment.id,
        redirect_url=redirect_url,
        amount_minor=payment.amount_minor,
        bonus_minor=payment.bonus_minor,
        fee_minor=payment.fee_minor,
        currency=payment.currency,
    )


async def apply_processor_event(
    pool: asyncpg.Pool, integration_id: str, event: ProcessorEvent, body: bytes | None
) -> str:
    """Record ``event`` once and move its payment; returns the outcome (a metrics label). An event for
    a payment we do not know is kept and looked at again (by a redelivery, or by the re-examiner)."""
    async with pool.acquire() as conn, conn.transaction():
        event_row_id = await store.insert_event(conn, integration_id, event, body)
        if event_row_id is None:
            return "duplicate"
        outcome = await _apply_stored_event(conn, integration_id, event_row_id, event)
        if outcome == "unknown_payment":
            attempts = await store.mark_event_unknown(conn, event_row_id, UNKNOWN_FIRST_LOOK_S)
            log.warning(
                "event_for_unknown_payment", integration=integration_id, event_id=event.event_id, looks=attempts
            )
        return outcome


async def reexamine_unknown_events(
    pool: asyncpg.Pool, limit: int, interval_s: float, max_backoff_s: float
) -> dict[str, int]:
    """Look again for the payments of up to ``limit`` due unmatched events; returns outcome counts."""
    outcomes: dict[str, int] = {}
    async with pool.acquire() as conn, conn.transaction():
        for unknown in await store.claim_unknown_events(conn, limit):
            outcome = await _apply_stored_event(conn, unknown.integration_id, unknown.row_id, unknown.event)
            if outcome == "unknown_payment":
                next_in_s = domain.next_reexamination_in_s(
                    unknown.attempts + 1, unknown.age_s, interval_s, max_backoff_s
                )
                await store.mark_event_unknown(conn, unknown.row_id, next_in_s)
                outcome = "still_unknown" if next_in_s is not None else "given_up"
            else:
                outcome = "matched"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def _apply_stored_event(conn: Connection, integration_id: str, event_row_id: int, event: ProcessorEvent) -> str:
    payment = await store.lock_payment_by_reference(conn, integration_id, event.processor_reference)
    if payment is None:
        return "unknown_payment"
    # Every log line of this payment says whose money it is.
    with structlog.contextvars.bound_contextvars(
        correlation_id=payment.correlation_id, environment=payment.environment
    ):
        decision = domain.decide(payment.status, payment.charge_minor, payment.currency, event)
        if decision.new_status is None:
            await store.mark_event(conn, event_row_id, payment.id, "no_change")
            return "accepted"
        await move_payment(conn, payment, decision.new_status, decision.reason, event)
        await store.mark_event(conn, event_row_id, payment.id, f"moved_to_{decision.new_status}")
    return "accepted"


async def expire_unconfirmed(pool: asyncpg.Pool, payment_id: uuid.UUID) -> bool:
    """Expire a payment whose checkout creation never returned (see ``domain.poll_action``)."""
    async with pool.acquire() as conn, conn.transaction():
        payment = await store.lock_payment(conn, payment_id)
        if payment is None or payment.status is not PaymentStatus.CREATED or payment.processor_reference:
            return False
        await move_payment(conn, payment, PaymentStatus.EXPIRED, "checkout creation never completed", None)
    return True


async def move_payment(
    conn: Connection, payment: store.Payment, status: PaymentStatus, reason: str | None, event: ProcessorEvent | None
) -> None:
    """Set the new status and enqueue the event announcing it, in the caller's transaction."""
    await store.set_status(conn, payment.id, status, reason)
    announcement = status_event(payment, status, reason, event)
    if announcement is not None:
        await enqueue(conn, announcement, producer=PRODUCER, correlation_id=payment.correlation_id)
    log.info("payment_status_changed", payment_id=str(payment.id), status=status)


def succeeded_event(payment: store.Payment) -> PaymentSucceeded:
    """What a succeeded payment announces: always the amounts of the order (what was charged)."""
    assert payment.processor_reference is not None
    return PaymentSucceeded(
        payment_id=payment.id,
        order_id=payment.order_id,
        user_id=payment.user_id,
        integration_id=payment.integration_id,
        processor=payment.processor,
        processor_reference=payment.processor_reference,
        amount_minor=payment.amount_minor,
        bonus_minor=payment.bonus_minor,
        fee_minor=payment.fee_minor,
        currency=payment.currency,
        environment=payment.environment,
    )


def status_event(
    payment: store.Payment, status: PaymentStatus, reason: str | None, event: ProcessorEvent | None
) -> Contract | None:
    """The message announcing ``payment`` moved to ``status`` (None: nothing to announce)."""
    if status is PaymentStatus.SUCCEEDED:
        return succeeded_event(payment)
    if status is PaymentStatus.NEEDS_REVIEW:
        return PaymentNeedsReview(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            integration_id=payment.integration_id,
            charge_minor=payment.charge_minor,
            currency=payment.currency,
            confirmed_amount_minor=event.amount_minor if event else None,
            confirmed_currency=event.currency if event else None,
            reason=reason or status.value,
            environment=payment.environment,
        )
    if status in (PaymentStatus.FAILED, PaymentStatus.EXPIRED, PaymentStatus.REJECTED):
        return PaymentFailed(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            integration_id=payment.integration_id,
            status=status.value,
            reason=reason or status.value,
            environment=payment.environment,
        )
    return None
