"""Use cases of the payments service: create a checkout for an order, and apply a processor event
(from a webhook or from polling) to the payment it concerns. Each state change and the event it
publishes commit in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import asyncpg
import structlog

from services.payments import domain, store
from services.payments.domain import MoneyMove, PaymentStatus
from services.payments.metrics import MONEY_BACK_EVENTS
from services.payments.processors.base import (
    MONEY_BACK,
    AnyAdapter,
    CheckoutRequest,
    EventKind,
    PaymentRef,
    PhonePrompt,
    ProcessorEvent,
    ProcessorRefused,
    Redirect,
)
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
    PaymentReversalUndone,
    PaymentReversed,
    PaymentSucceeded,
)
from shared.outbox import enqueue
from shared.settings import Settings

log = get_logger(__name__)

PRODUCER = "payments"
# A webhook that found no payment has usually raced its checkout: the re-examiner looks again soon.
UNKNOWN_FIRST_LOOK_S = 1.0
# Outcomes of an event that is kept and applied later: its payment is not known yet; or, a refund or
# dispute, the payment's success has not arrived (or awaits an operator's review) yet, or it would take
# back more than is left until another one is given back.
LOOK_AGAIN = frozenset({"unknown_payment", "awaiting_success", "exceeds_charge"})


async def create_checkout(
    pool: asyncpg.Pool, adapters: dict[str, AnyAdapter], settings: Settings, command: CreateCheckout
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
    next_step, redirect_url = ("redirect", payment.redirect_url) if payment.redirect_url else (None, None)
    if payment.processor_reference is not None and redirect_url is None:
        next_step = "phone_prompt"  # asked again after the prompt went out: the driver has it
    if next_step is None:
        await _claim_single_create(pool, adapter, payment.id)
        try:
            checkout = await adapter.create_checkout(
                CheckoutRequest(
                    payment_id=payment.id,
                    order_id=payment.order_id,
                    reference=str(payment.id),
                    amount_minor=payment.charge_minor,
                    currency=payment.currency,
                    method=payment.method,
                    return_url=command.return_url,
                    webhook_url=f"{settings.services.payments_public_url.rstrip('/')}/webhooks/{payment.integration_id}",
                    description=f"Balance top-up {payment.order_id}",
                    locale=command.locale,
                    phone=command.phone,
                )
            )
        except ProcessorRefused as exc:
            raise RpcError("processor_refused", str(exc)) from None
        step = checkout.next_step
        redirect_url = step.url if isinstance(step, Redirect) else None
        await store.record_checkout(pool, payment.id, checkout.processor_reference, redirect_url)
        log.info("checkout_created", payment_id=str(payment.id), integration=payment.integration_id)
        next_step = "redirect" if isinstance(step, Redirect) else "phone_prompt"
        assert isinstance(step, Redirect | PhonePrompt)
    return CheckoutCreated(
        payment_id=payment.id,
        next_step=next_step,
        redirect_url=redirect_url,
        amount_minor=payment.amount_minor,
        bonus_minor=payment.bonus_minor,
        fee_minor=payment.fee_minor,
        currency=payment.currency,
    )


async def _claim_single_create(pool: asyncpg.Pool, adapter: AnyAdapter, payment_id: uuid.UUID) -> None:
    """A processor without idempotent creates (M-Pesa: each push is another prompt on the driver's
    phone) gets one create per payment: if an earlier one's answer was lost, the driver may hold a
    prompt already, so the driver starts a new top-up rather than getting a second prompt here.
    Idempotent processors are simply asked again: the same request returns the same checkout."""
    if adapter.capabilities.create_is_idempotent:
        return
    claimed = await pool.fetchval(
        "UPDATE payments SET create_attempted_at = now() WHERE id = $1 AND create_attempted_at IS NULL RETURNING true",
        payment_id,
    )
    if not claimed:
        raise RpcError("checkout_uncertain", "an earlier attempt may have reached the processor: start a new top-up")


async def apply_processor_event(
    pool: asyncpg.Pool, integration_id: str, event: ProcessorEvent, body: bytes | None, *, states_amount: bool = True
) -> str:
    """Record ``event`` once and move its payment; returns the outcome (a metrics label). An event for
    a payment we do not know (or not ready for it) is kept and looked at again (by a redelivery, or by
    the re-examiner). ``states_amount``: whether the processor vouches for the amounts it states
    (``Capabilities.states_amount``)."""
    async with pool.acquire() as conn, conn.transaction():
        stored = await store.insert_event(conn, integration_id, event, body)
        if stored is None:
            return "duplicate"
        event_row_id, event = stored
        outcome = await _apply_stored_event(conn, integration_id, event_row_id, event, states_amount)
        if outcome in LOOK_AGAIN:
            attempts = await store.mark_event_unknown(conn, event_row_id, UNKNOWN_FIRST_LOOK_S)
            log.warning(
                "event_kept_for_later", why=outcome, integration=integration_id, event_id=event.event_id, looks=attempts
            )
        return outcome


async def reexamine_unknown_events(
    pool: asyncpg.Pool, limit: int, interval_s: float, max_backoff_s: float, states_amount: Mapping[str, bool]
) -> dict[str, int]:
    """Look again for the payments of up to ``limit`` due events kept for later; returns outcome
    counts. ``states_amount``: ``Capabilities.states_amount`` by integration."""
    outcomes: dict[str, int] = {}
    async with pool.acquire() as conn, conn.transaction():
        for unknown in await store.claim_unknown_events(conn, limit):
            outcome = await _apply_stored_event(
                conn,
                unknown.integration_id,
                unknown.row_id,
                unknown.event,
                states_amount.get(unknown.integration_id, True),
            )
            if outcome in LOOK_AGAIN:
                next_in_s = domain.next_reexamination_in_s(
                    unknown.attempts + 1, unknown.age_s, interval_s, max_backoff_s
                )
                await store.mark_event_unknown(conn, unknown.row_id, next_in_s)
                outcome = "still_unknown" if next_in_s is not None else "given_up"
            else:
                outcome = "matched"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def _apply_stored_event(
    conn: Connection, integration_id: str, event_row_id: int, event: ProcessorEvent, states_amount: bool
) -> str:
    try:
        payment = await store.lock_payment_for_event(conn, integration_id, event.payment)
    except store.ConflictingReferences as exc:
        # Signed ids that belong to different payments: applied to none of them, for a person to look.
        log.error("event_names_several_payments", integration=integration_id, event_id=event.event_id, why=str(exc))
        await store.mark_event(conn, event_row_id, None, "conflicting_references")
        return "conflicting_references"
    if payment is None:
        return "unknown_payment"
    differing = await store.remember_processor_ids(conn, payment, event.payment)
    if differing:
        log.warning("event_states_other_processor_ids", payment_id=str(payment.id), kinds=differing)
    if not states_amount and event.kind in (EventKind.SUCCEEDED, EventKind.APPROVED):
        event = domain.with_requested_amount(event, payment.charge_minor, payment.currency)
    # Every log line of this payment says whose money it is.
    with structlog.contextvars.bound_contextvars(
        correlation_id=payment.correlation_id, environment=payment.environment
    ):
        if domain.is_money_back(event.kind):
            outcome = await _apply_money_back(conn, integration_id, payment, event)
            MONEY_BACK_EVENTS.labels(integration_id, outcome).inc()
            if outcome in LOOK_AGAIN:
                await store.hold_event_for(conn, event_row_id, payment.id)
                return outcome
            await store.mark_event(conn, event_row_id, payment.id, outcome)
            return "accepted"
        decision = domain.decide(payment.status, payment.charge_minor, payment.currency, event)
        if decision.new_status is None:
            await store.mark_event(conn, event_row_id, payment.id, "no_change")
            return "accepted"
        await move_payment(conn, payment, decision.new_status, decision.reason, event)
        await store.mark_event(conn, event_row_id, payment.id, f"moved_to_{decision.new_status}")
    return "accepted"


async def _apply_money_back(
    conn: Connection, integration_id: str, payment: store.Payment, event: ProcessorEvent
) -> str:
    """A refund or dispute event: recorded once per refund or dispute, and the money it moves
    announced once per move. Returns the event's outcome (``unknown_payment``: not yet, look again)."""
    if payment.status is not PaymentStatus.SUCCEEDED:
        if payment.status is PaymentStatus.REJECTED:
            return "nothing_credited"  # refunded after review: the driver was never credited
        # The success has not reached us yet (events come in any order), or an operator has yet to
        # review it: looked at again then (``review.settle`` has it looked at at once).
        return "awaiting_success"
    if not event.cause_id or event.amount_minor is None or event.amount_minor <= 0:
        log.warning("money_back_event_incomplete", event_id=event.event_id, kind=event.kind)
        return "incomplete"
    if event.currency != payment.currency:
        log.warning("money_back_other_currency", event_id=event.event_id, currency=event.currency)
        return "other_currency"
    cause = "refund" if event.kind in MONEY_BACK else "dispute"
    current = await store.lock_return(conn, integration_id, cause, event.cause_id)
    decision = domain.decide_return(current.state if current else None, bool(current and current.debited), event.kind)
    if decision.new_state is None:
        return "no_change"
    amount_minor = current.amount_minor if current else event.amount_minor
    debits = current.debits if current else 0
    debited = bool(current and current.debited)
    if decision.move is MoneyMove.TAKE:
        if payment.returned_minor + amount_minor > payment.charge_minor:
            log.warning(
                "money_back_exceeds_charge",
                payment_id=str(payment.id),
                cause_id=event.cause_id,
                returned_minor=payment.returned_minor,
                amount_minor=amount_minor,
            )
            return "exceeds_charge"
        before = await store.add_returned(conn, payment.id, amount_minor)
        debits, debited = debits + 1, True
        await enqueue(
            conn,
            PaymentReversed(
                payment_id=payment.id,
                order_id=payment.order_id,
                user_id=payment.user_id,
                integration_id=payment.integration_id,
                cause=cause,
                cause_id=_reversal_id(event.cause_id, debits),
                reversed_minor=amount_minor,
                reversed_before_minor=before,
                amount_minor=payment.amount_minor,
                bonus_minor=payment.bonus_minor,
                fee_minor=payment.fee_minor,
                currency=payment.currency,
                environment=payment.environment,
            ),
            producer=PRODUCER,
            correlation_id=payment.correlation_id,
        )
    elif decision.move is MoneyMove.GIVE_BACK:
        await store.add_returned(conn, payment.id, -amount_minor)
        debited = False
        # What would have taken back more than was left may fit now.
        await store.look_again_at_events_of(conn, payment.id)
        await enqueue(
            conn,
            PaymentReversalUndone(
                payment_id=payment.id,
                user_id=payment.user_id,
                integration_id=payment.integration_id,
                cause=cause,
                cause_id=_reversal_id(event.cause_id, debits),
                currency=payment.currency,
                environment=payment.environment,
            ),
            producer=PRODUCER,
            correlation_id=payment.correlation_id,
        )
    await store.save_return(
        conn, integration_id, cause, event.cause_id, payment.id, decision.new_state, amount_minor, debited, debits
    )
    if cause == "refund":
        await store.confirm_refund_requests(conn, payment.id)
    log.info(
        "payment_money_back", payment_id=str(payment.id), cause=cause, state=decision.new_state, move=decision.move
    )
    return f"{cause}_{decision.new_state}"


def _reversal_id(cause_id: str, debits: int) -> str:
    """The ledger's key for the ``debits``-th time one refund or dispute took money back (a dispute
    charged back again after it was won takes it a second time)."""
    return cause_id if debits <= 1 else f"{cause_id}#{debits}"


async def complete_approved(pool: asyncpg.Pool, adapter: AnyAdapter, ref: PaymentRef) -> str:
    """Complete at the processor a payment the driver approved (PayPal's capture), outside any
    transaction, and apply the answer like any event. Idempotent at the processor; a crash or an error
    here leaves the payment approved, and the poller completes it. Returns the outcome."""
    async with pool.acquire() as conn, conn.transaction():
        payment = await store.lock_payment_for_event(conn, adapter.integration_id, ref)
    if payment is None or payment.status is not PaymentStatus.APPROVED:
        return "not_approved"
    event = await adapter.complete_payment(payment.ref, payment.charge_minor, payment.currency)
    return await apply_processor_event(
        pool, payment.integration_id, event, None, states_amount=adapter.capabilities.states_amount
    )


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
