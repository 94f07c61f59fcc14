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
from shared.amqp import RpcError
from shared.db import Connection
from shared.logging import correlation_id_var, get_logger, new_correlation_id
from shared.messages import CheckoutCreated, CreateCheckout, PaymentFailed, PaymentSucceeded
from shared.outbox import enqueue

log = get_logger(__name__)

PRODUCER = "payments"


async def create_checkout(
    pool: asyncpg.Pool, adapters: dict[str, ProcessorAdapter], command: CreateCheckout
) -> CheckoutCreated:
    adapter = adapters.get(command.integration_id)
    if adapter is None:
        raise RpcError("unknown_integration", f"no integration {command.integration_id!r}")
    if command.method not in adapter.settings.methods:
        raise RpcError("unknown_method", f"{command.integration_id} does not offer {command.method!r}")
    async with pool.acquire() as conn:
        payment = await store.insert_payment(
            conn,
            store.Payment(
                id=uuid.uuid4(),
                order_id=command.order_id,
                user_id=command.user_id,
                integration_id=command.integration_id,
                processor=adapter.name,
                method=command.method,
                amount_minor=command.amount_minor,
                bonus_minor=command.bonus_minor,
                fee_minor=command.fee_minor,
                charge_minor=command.amount_minor + command.fee_minor,
                currency=command.currency,
                status=PaymentStatus.CREATED,
                processor_reference=None,
                redirect_url=None,
                correlation_id=correlation_id_var.get() or new_correlation_id(),
            ),
        )
    requested = (
        command.amount_minor,
        command.bonus_minor,
        command.fee_minor,
        command.currency,
        command.user_id,
    )
    if (
        payment.amount_minor,
        payment.bonus_minor,
        payment.fee_minor,
        payment.currency,
        payment.user_id,
    ) != requested:
        raise RpcError("conflict", "a payment exists for this order with other terms")
    if payment.redirect_url is not None:
        return CheckoutCreated(payment_id=payment.id, redirect_url=payment.redirect_url)
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
    return CheckoutCreated(payment_id=payment.id, redirect_url=checkout.redirect_url)


async def apply_processor_event(
    pool: asyncpg.Pool, integration_id: str, event: ProcessorEvent, body: bytes | None
) -> str:
    """Record ``event`` once and move its payment; returns the outcome (a metrics label)."""
    async with pool.acquire() as conn, conn.transaction():
        event_row_id = await store.insert_event(conn, integration_id, event, body)
        if event_row_id is None:
            return "duplicate"
        payment = await store.lock_payment_by_reference(conn, integration_id, event.processor_reference)
        if payment is None:
            # Kept for the record; the payment, if it is ours, is healed by polling.
            await store.mark_event(conn, event_row_id, None, "unknown_payment")
            log.warning("event_for_unknown_payment", integration=integration_id, event_id=event.event_id)
            return "unknown_payment"
        with structlog.contextvars.bound_contextvars(correlation_id=payment.correlation_id):
            decision = domain.decide(payment.status, payment.charge_minor, payment.currency, event)
            if decision.new_status is None:
                await store.mark_event(conn, event_row_id, payment.id, "no_change")
                return "accepted"
            await store.set_status(conn, payment.id, decision.new_status, decision.reason)
            await _publish_status(conn, payment, decision.new_status, decision.reason)
            await store.mark_event(conn, event_row_id, payment.id, f"moved_to_{decision.new_status}")
            log.info("payment_status_changed", payment_id=str(payment.id), status=decision.new_status)
    return "accepted"


async def _publish_status(conn: Connection, payment: store.Payment, status: PaymentStatus, reason: str | None) -> None:
    if status is PaymentStatus.SUCCEEDED:
        assert payment.processor_reference is not None
        event: PaymentSucceeded | PaymentFailed = PaymentSucceeded(
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
        )
    elif status in (PaymentStatus.FAILED, PaymentStatus.EXPIRED, PaymentStatus.NEEDS_REVIEW):
        event = PaymentFailed(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            integration_id=payment.integration_id,
            status=status.value,
            reason=reason or status.value,
        )
    else:
        return
    await enqueue(conn, event, producer=PRODUCER, correlation_id=payment.correlation_id)
