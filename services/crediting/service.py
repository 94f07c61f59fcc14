"""Crediting's use cases, each in the caller's transaction: post a paid top-up, post an operator's
correction, take a CSMS notification as evidence, and announce a credit once the CSMS holds it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from services.crediting import domain, store
from services.crediting.csms.ampeco import wire
from services.crediting.metrics import DELIVERIES_SETTLED
from shared.db import Connection
from shared.logging import get_logger
from shared.messages import CreditApplied, Environment, PaymentReversalUndone, PaymentReversed, PaymentSucceeded
from shared.metrics import CREDIT_LATENCY, CREDITS_APPLIED
from shared.money import MoneyError, from_major
from shared.outbox import enqueue
from shared.settings import Settings

log = get_logger(__name__)
# Notifications are matched to deliveries sent within this long (a notification lost for good must
# not hold a user's later ones forever).
MATCH_WINDOW_S = 86_400.0


def _balance_minor(balance: Decimal | None, currency: str) -> int | None:
    if balance is None:
        return None
    try:
        return from_major(balance, currency)
    except MoneyError:
        return None


async def announce_credit(
    conn: Connection, transfer: domain.Transfer, balance_minor: int | None, correlation_id: str
) -> None:
    """``credit.applied`` for a top-up the CSMS now holds (what the page shows as credited)."""
    if transfer.kind != domain.TOPUP or transfer.payment_id is None or transfer.order_id is None:
        return
    await enqueue(
        conn,
        CreditApplied(
            transfer_id=transfer.id,
            payment_id=transfer.payment_id,
            order_id=transfer.order_id,
            user_id=transfer.user_id,
            amount_minor=transfer.amount_minor,
            bonus_minor=transfer.bonus_minor,
            currency=transfer.currency,
            balance_minor=balance_minor,
            environment=transfer.environment,
        ),
        producer="crediting",
        correlation_id=correlation_id,
    )


async def credit_topup(
    conn: Connection,
    settings: Settings,
    event: PaymentSucceeded,
    environment: Environment,
    correlation_id: str,
    occurred_at: datetime,
) -> None:
    """Post a paid top-up once. With the built-in ledger (or test money) that is the credit;
    otherwise a delivery to the CSMS is recorded with it, and ``credit.applied`` waits for the CSMS.
    A payment announced again gets ``credit.applied`` again once delivered, never a second posting."""
    transfer = domain.topup_transfer(event, environment)
    recorded = await store.record_transfer(conn, transfer, correlation_id)
    in_ledger = domain.confirmed_in_ledger(settings.csms.kind, environment)
    if recorded.created:
        CREDITS_APPLIED.labels(event.currency, environment).inc()
        if in_ledger:
            CREDIT_LATENCY.observe(max(0.0, (datetime.now(UTC) - occurred_at).total_seconds()))
        log.info("credit_applied", transfer_id=transfer.id, user_credit_minor=transfer.user_credit_minor)
    else:
        log.info("credit_already_applied", transfer_id=transfer.id)
    if in_ledger:
        await announce_credit(conn, transfer, recorded.balance_minor, correlation_id)
        return
    if recorded.created:
        intent = domain.delivery_intent(transfer, event.processor_reference)
        await store.add_delivery(conn, intent, correlation_id)
        return
    delivery = await store.delivery_of_transfer(conn, transfer.id)
    if delivery is not None and delivery["state"] == "delivered":
        await announce_credit(
            conn, transfer, _balance_minor(delivery["balance_after"], transfer.currency), correlation_id
        )


async def post_payment_reversal(
    conn: Connection, settings: Settings, event: PaymentReversed, environment: Environment, correlation_id: str
) -> None:
    """Post once the share of a top-up that a refund or dispute took back, off what the driver's
    balance holds now (the rest a receivable), and deliver the debit to the CSMS like any change."""
    reversal_id = domain.payment_reversal_id(event)
    if await store.transfer_exists(conn, reversal_id):
        log.info("reversal_already_posted", transfer_id=reversal_id)
        return
    available = await store.lock_balance(conn, event.user_id, event.currency, environment)
    transfer = domain.payment_reversal_transfer(
        event,
        environment,
        available,
        settings.amounts.bonus_on_refund,
        emptied=await store.transfer_exists(conn, domain.undo_id(reversal_id)),
    )
    await _post_with_delivery(conn, settings, transfer, correlation_id)
    owed = -sum(p.amount_minor for p in transfer.postings if p.entry_kind == "owed")
    log.info(
        "payment_reversal_posted", transfer_id=transfer.id, taken_minor=-transfer.user_credit_minor, owed_minor=owed
    )


async def undo_payment_reversal(
    conn: Connection, settings: Settings, event: PaymentReversalUndone, environment: Environment, correlation_id: str
) -> None:
    """Undo once a reversal that did not stand, exactly as it was posted (see ``domain.undo_transfer``)."""
    reversal_id = domain.payment_reversal_id(event)
    if await store.transfer_exists(conn, domain.undo_id(reversal_id)):
        return
    original = await store.load_transfer(conn, reversal_id) if await store.transfer_exists(conn, reversal_id) else None
    shortfalls = await store.transfers_with_prefix(conn, domain.shortfall_prefix(reversal_id))
    transfer = domain.undo_transfer(event, environment, original, shortfalls)
    await _post_with_delivery(conn, settings, transfer, correlation_id)
    log.info("payment_reversal_undone", transfer_id=transfer.id, returned_minor=transfer.user_credit_minor)


async def _post_with_delivery(
    conn: Connection, settings: Settings, transfer: domain.Transfer, correlation_id: str
) -> None:
    await store.record_transfer(conn, transfer, correlation_id)
    if transfer.user_credit_minor and not domain.confirmed_in_ledger(settings.csms.kind, transfer.environment):
        await store.add_delivery(conn, domain.delivery_intent(transfer), correlation_id)


async def cap_reversal_debit(
    pool: asyncpg.Pool, delivery_id: int, attempt: int, transfer_id: str, cap_minor: int, balance: Decimal
) -> int | None:
    """Before a reversal's debit goes to the CSMS: it takes only ``cap_minor`` (what the balance
    holds), the rest is posted as owed; with nothing to take, the delivery is settled without a
    call. One transaction, guarded by the attempt. Returns what to debit (0: nothing, settled), or
    None if the lease was lost meanwhile."""
    async with pool.acquire() as conn, conn.transaction():
        was_minor = await conn.fetchval(
            "SELECT amount_minor FROM deliveries WHERE id = $1 AND attempts = $2 AND state = 'sending' FOR UPDATE",
            delivery_id,
            attempt,
        )
        if was_minor is None:
            return None
        reversal = await store.load_transfer(conn, transfer_id)
        if await store.transfer_exists(conn, domain.undo_id(transfer_id)):
            # Undone already: its undo gives back all of the reversal, so the debit goes as it is
            # (the CSMS may refuse it for want of balance: then it waits for the operator).
            return int(was_minor)
        if cap_minor > 0:  # with nothing to take the row keeps its amount: it is settled without a call
            await conn.execute(
                "UPDATE deliveries SET amount_minor = $2, updated_at = now() WHERE id = $1", delivery_id, cap_minor
            )
        shortfall = was_minor - cap_minor
        await store.record_transfer(conn, domain.shortfall_transfer(reversal, shortfall, attempt), "reversal-shortfall")
        if cap_minor == 0:
            await store.settle_delivered(
                conn,
                delivery_id,
                "balance",
                balance,
                attempt=attempt,
                actor="dispatcher",
                why="nothing left on the balance to take back: all of it is owed",
            )
        log.warning("reversal_debit_capped", delivery_id=delivery_id, taken_minor=cap_minor, owed_minor=shortfall)
        return cap_minor


async def settle_delivered(
    conn: Connection,
    delivery_id: int,
    settled_by: str,
    balance_after: Decimal | None,
    *,
    attempt: int | None = None,
    actor: str | None = None,
    why: str = "",
) -> bool:
    """The delivery is applied in the CSMS: recorded (audited unless it was the call's own answer)
    and announced. False if it had been settled already."""
    row = await store.settle_delivered(
        conn, delivery_id, settled_by, balance_after, attempt=attempt, actor=actor, why=why
    )
    if row is None:
        return False
    DELIVERIES_SETTLED.labels(settled_by).inc()
    transfer = await store.load_transfer(conn, row["transfer_id"])
    if row["direction"] == "credit" and transfer.payment_id is not None:
        created_at: datetime = await conn.fetchval("SELECT created_at FROM transfers WHERE id = $1", transfer.id)
        CREDIT_LATENCY.observe(max(0.0, (datetime.now(UTC) - created_at).total_seconds()))
    await announce_credit(conn, transfer, _balance_minor(balance_after, transfer.currency), row["correlation_id"])
    log.info("delivery_settled", delivery_id=delivery_id, settled_by=settled_by, transfer_id=transfer.id)
    return True


async def post_adjustment(
    pool: asyncpg.Pool, settings: Settings, user_id: str, amount_minor: int, reason: str, actor: str
) -> tuple[domain.Transfer, int | None]:
    """An operator's audited correction of a driver's balance, through the same path as a top-up:
    a ledger transfer and, for an external CSMS, a delivery. Returns the transfer and the delivery id."""
    transfer = domain.adjustment_transfer(user_id, amount_minor, settings.operator.currency, reason, actor)
    async with pool.acquire() as conn, conn.transaction():
        try:
            await store.record_transfer(conn, transfer, f"adjust-{transfer.id.split(':', 1)[1][:8]}")
        except asyncpg.CheckViolationError:
            raise store.InsufficientBalance(f"the ledger holds less than {-amount_minor} for user {user_id}") from None
        if domain.confirmed_in_ledger(settings.csms.kind, domain.PRODUCTION):
            return transfer, None
        intent = domain.delivery_intent(transfer)
        delivery_id = await store.add_delivery(conn, intent, "adjust")
        await store.audit(conn, delivery_id, "adjust", "none", "pending", actor, reason)
        return transfer, delivery_id


async def abandon_delivery(conn: Connection, delivery_id: int, actor: str, why: str) -> None:
    """A failed delivery the operator gives up on: abandoned, and its transfer reversed in the
    ledger, so that the ledger mirrors what the CSMS holds. (A paid top-up abandoned this way is
    the operator's to refund at the processor.)"""
    row = await conn.fetchrow(
        "UPDATE deliveries SET state = 'abandoned', settled_at = now(), updated_at = now()"
        " WHERE id = $1 AND state = 'failed' RETURNING transfer_id",
        delivery_id,
    )
    if row is None:
        raise domain.RefusedAction("only a failed delivery can be abandoned")
    original = await store.load_transfer(conn, row["transfer_id"])
    await store.record_transfer(conn, domain.reversal_transfer(original, actor, why), f"abandon-{delivery_id}")
    await store.audit(conn, delivery_id, "abandoned", "failed", "abandoned", actor, why)


async def receive_notification(conn: Connection, settings: Settings, note: wire.BalanceNotification) -> str:
    """A verified ``userBalance.changed``: stored once (a duplicate or replay changes nothing) and
    matched to the delivery it is the evidence of, settling that delivery if its answer was lost.
    Returns what happened, for the log."""
    # One user's notifications are matched one at a time (two must never take the same delivery).
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ampeco-user:' || $1))", note.user_id)
    notification_id = await store.record_notification(conn, hashlib.sha256(note.identity.encode()).digest(), note)
    if notification_id is None:
        return "duplicate"
    if note.currency != settings.operator.currency:
        log.warning("ampeco_notification_other_currency", currency=note.currency)
        return "other_currency"
    if note.credit > 0 and note.debit == 0:
        change = domain.ObservedChange("credit", note.credit, note.occurred_at)
    elif note.debit > 0 and note.credit == 0:
        change = domain.ObservedChange("debit", note.debit, note.occurred_at)
    else:
        return "no_change"
    if not note.matches(change.direction, change.amount, settings.csms.credit_notification_types):
        return "not_ours"
    candidates = await store.unmatched_sent_deliveries(conn, note.user_id, MATCH_WINDOW_S)
    sent = [
        domain.SentDelivery(
            row["id"], row["direction"], wire.ampeco_amount(row["amount_minor"], row["currency"]), row["sent_at"]
        )
        for row in candidates
    ]
    delivery_id = domain.assign_notification(change, sent)
    if delivery_id is None:
        return "unmatched"
    await store.match_notification(conn, notification_id, delivery_id)
    state = next(row["state"] for row in candidates if row["id"] == delivery_id)
    if state == "uncertain":
        await settle_delivered(
            conn,
            delivery_id,
            "notification",
            note.updated_balance,
            actor="evidence",
            why=f"userBalance.changed {change.direction} {change.amount} at {note.occurred_at.isoformat()}",
        )
        return "settled"
    return "matched"
