"""SQL for payments and processor events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclasses_field

import asyncpg

from services.payments.domain import NEVER_POLLED, PaymentStatus, ReturnState, ReviewDecision
from services.payments.processors.base import EventKind, PaymentRef, ProcessorEvent
from shared.db import Connection, record_to
from shared.messages import Environment


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    order_id: uuid.UUID
    user_id: str
    integration_id: str
    processor: str
    method: str
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    charge_minor: int
    currency: str
    status: PaymentStatus
    processor_reference: str | None
    redirect_url: str | None
    correlation_id: str
    environment: Environment
    processor_ids: Mapping[str, str] = dataclasses_field(default_factory=dict)
    returned_minor: int = 0

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Payment:
        return record_to(cls, row, status=PaymentStatus(row["status"]), processor_ids=json.loads(row["processor_ids"]))

    @property
    def ref(self) -> PaymentRef:
        """Every id we know of this payment, as the adapter takes it."""
        return PaymentRef(str(self.id), self.processor_reference, dict(self.processor_ids))


async def insert_payment(conn: Connection, payment: Payment) -> Payment:
    """Insert ``payment`` unless one exists for its order; returns the stored one either way."""
    row = await conn.fetchrow(
        "INSERT INTO payments (id, order_id, user_id, integration_id, processor, method, amount_minor,"
        " bonus_minor, fee_minor, charge_minor, currency, status, correlation_id, environment)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING *",
        payment.id,
        payment.order_id,
        payment.user_id,
        payment.integration_id,
        payment.processor,
        payment.method,
        payment.amount_minor,
        payment.bonus_minor,
        payment.fee_minor,
        payment.charge_minor,
        payment.currency,
        payment.status,
        payment.correlation_id,
        payment.environment,
    )
    if row is None:
        row = await conn.fetchrow("SELECT * FROM payments WHERE order_id = $1", payment.order_id)
    assert row is not None
    return Payment.from_row(row)


async def record_checkout(
    conn: Connection | asyncpg.Pool, payment_id: uuid.UUID, reference: str, redirect_url: str | None
) -> None:
    await conn.execute(
        "UPDATE payments SET processor_reference = $2, redirect_url = $3, updated_at = now(),"
        " status = CASE WHEN status = 'created' THEN 'pending' ELSE status END WHERE id = $1",
        payment_id,
        reference,
        redirect_url,
    )


async def insert_event(
    conn: Connection, integration_id: str, event: ProcessorEvent, body: bytes | None
) -> tuple[int, ProcessorEvent] | None:
    """Store a processor event; None if this event id was already received and dealt with. An event
    stored earlier and kept for later (its payment not known yet, or not ready for it) is returned
    again, locked, as it was stored: a redelivery is looked at anew but never changes what was kept."""
    event_row_id: int | None = await conn.fetchval(
        "INSERT INTO processor_events (integration_id, event_id, processor_reference, merchant_reference,"
        " payment_ids, kind, body, amount_minor, currency, reason, cause_id)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (integration_id, event_id) DO NOTHING RETURNING id",
        integration_id,
        event.event_id,
        event.payment.processor_reference,
        event.payment.merchant_reference,
        json.dumps(dict(event.payment.ids)),
        event.kind,
        body,
        event.amount_minor,
        event.currency,
        event.reason,
        event.cause_id,
    )
    if event_row_id is not None:
        return event_row_id, event
    row = await conn.fetchrow(
        "SELECT * FROM processor_events WHERE integration_id = $1 AND event_id = $2"
        " AND outcome = 'unknown_payment' FOR UPDATE",
        integration_id,
        event.event_id,
    )
    return (row["id"], _stored_event(row)) if row is not None else None


def _stored_event(row: asyncpg.Record) -> ProcessorEvent:
    return ProcessorEvent(
        event_id=row["event_id"],
        payment=PaymentRef(row["merchant_reference"], row["processor_reference"], json.loads(row["payment_ids"])),
        kind=EventKind(row["kind"]),
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        reason=row["reason"],
        cause_id=row["cause_id"],
    )


async def hold_event_for(conn: Connection, event_row_id: int, payment_id: uuid.UUID) -> None:
    """An event kept for later names its payment, so that what readies the payment for it (an
    operator's review, money coming back) can have it looked at again at once."""
    await conn.execute("UPDATE processor_events SET payment_id = $2 WHERE id = $1", event_row_id, payment_id)


async def look_again_at_events_of(conn: Connection, payment_id: uuid.UUID) -> None:
    """The payment's events kept for later (or given up on) are looked at again now, afresh."""
    await conn.execute(
        "UPDATE processor_events SET outcome = 'unknown_payment', next_reexamine_at = now(), reexamine_attempts = 0"
        " WHERE payment_id = $1 AND outcome IN ('unknown_payment', 'unmatched')",
        payment_id,
    )


async def mark_event(conn: Connection, event_row_id: int, payment_id: uuid.UUID | None, outcome: str) -> None:
    await conn.execute(
        "UPDATE processor_events SET payment_id = $2, outcome = $3, next_reexamine_at = NULL WHERE id = $1",
        event_row_id,
        payment_id,
        outcome,
    )


async def mark_event_unknown(conn: Connection, event_row_id: int, next_in_s: float | None) -> int:
    """One more look found no payment: look again in ``next_in_s``, or give up (``unmatched``, kept
    for the record). Returns how many looks have found nothing."""
    attempts: int = await conn.fetchval(
        "UPDATE processor_events SET reexamine_attempts = reexamine_attempts + 1,"
        " outcome = CASE WHEN $2::float8 IS NULL THEN 'unmatched' ELSE 'unknown_payment' END,"
        " next_reexamine_at = now() + make_interval(secs => $2::float8)"
        " WHERE id = $1 RETURNING reexamine_attempts",
        event_row_id,
        next_in_s,
    )
    return attempts


@dataclass(frozen=True)
class UnknownEvent:
    """A stored event whose payment was not found, due for another look."""

    row_id: int
    integration_id: str
    event: ProcessorEvent
    attempts: int
    age_s: float


async def claim_unknown_events(conn: Connection, limit: int) -> list[UnknownEvent]:
    """Within the caller's transaction: due unmatched events, locked (other replicas skip them)."""
    rows = await conn.fetch(
        "SELECT *, extract(epoch FROM now() - received_at)::float8 AS age_s FROM processor_events"
        " WHERE outcome = 'unknown_payment' AND next_reexamine_at <= now()"
        " ORDER BY next_reexamine_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [
        UnknownEvent(
            row_id=row["id"],
            integration_id=row["integration_id"],
            event=_stored_event(row),
            attempts=row["reexamine_attempts"],
            age_s=row["age_s"],
        )
        for row in rows
    ]


class ConflictingReferences(Exception):
    """The ids an event names belong to different payments: it is applied to none of them."""


async def lock_payment_for_event(conn: Connection, integration_id: str, ref: PaymentRef) -> Payment | None:
    """The integration's payment an event names, locked: by the reference we gave the processor, or by
    any id of the processor's (its reference at checkout, or one learned from an earlier event).
    :class:`ConflictingReferences` when they name different payments."""
    payment_id = _as_uuid(ref.merchant_reference)
    processor_ids = [i for i in (ref.processor_reference, *ref.ids.values()) if i]
    # Found and locked in one round trip (the webhook's transaction is on the hot path); in id order,
    # so that two events naming the same payments never lock them in opposite orders.
    rows = await conn.fetch(
        "WITH named AS (SELECT id FROM payments WHERE integration_id = $1"
        "  AND (id = $2 OR processor_reference = ANY($3::text[]))"
        " UNION SELECT payment_id FROM payment_processor_ids WHERE integration_id = $1"
        "  AND processor_id = ANY($3::text[]))"
        " SELECT * FROM payments WHERE id IN (SELECT id FROM named) ORDER BY id FOR UPDATE",
        integration_id,
        payment_id,
        processor_ids,
    )
    if len(rows) > 1:
        raise ConflictingReferences(f"the event names {len(rows)} payments")
    return Payment.from_row(rows[0]) if rows else None


def _as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def remember_processor_ids(conn: Connection, payment: Payment, ref: PaymentRef) -> list[str]:
    """Keep the processor's ids an event names, so later events (and refunds) can use them. An id
    already known is never replaced: returns the kinds an event stated otherwise (for the log)."""
    learned = {kind: value for kind, value in ref.ids.items() if kind not in payment.processor_ids}
    differing = [kind for kind, value in ref.ids.items() if payment.processor_ids.get(kind, value) != value]
    agreed = [value for kind, value in ref.ids.items() if kind not in differing]
    aliases = [i for i in (ref.processor_reference, *agreed) if i and i != payment.processor_reference]
    if learned:
        await conn.execute(
            "UPDATE payments SET processor_ids = processor_ids || $2::jsonb WHERE id = $1",
            payment.id,
            json.dumps(learned),
        )
    if aliases:
        await conn.executemany(
            "INSERT INTO payment_processor_ids (integration_id, processor_id, payment_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            [(payment.integration_id, alias, payment.id) for alias in sorted(set(aliases))],
        )
    return differing


async def lock_payment(conn: Connection, payment_id: uuid.UUID) -> Payment | None:
    row = await conn.fetchrow("SELECT * FROM payments WHERE id = $1 FOR UPDATE", payment_id)
    return Payment.from_row(row) if row else None


async def set_status(conn: Connection, payment_id: uuid.UUID, status: PaymentStatus, reason: str | None) -> None:
    """Move the payment; its poll schedule starts afresh (or ends, for a status never polled)."""
    await conn.execute(
        "UPDATE payments SET status = $2, status_reason = $3, updated_at = now(),"
        " poll_attempts = 0, poll_failures = 0, last_poll_error = NULL,"
        " next_poll_at = CASE WHEN $4 THEN NULL ELSE now() END,"
        " succeeded_at = CASE WHEN $2 = 'succeeded' THEN now() ELSE succeeded_at END"
        " WHERE id = $1",
        payment_id,
        status,
        reason,
        status in NEVER_POLLED,
    )


# --- polling --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollCandidate:
    payment: Payment
    since_change_s: float
    poll_attempts: int


async def claim_due_polls(
    pool: asyncpg.Pool, integration_id: str, poll_after_s: float, limit: int, lease_s: float
) -> list[PollCandidate]:
    """Claim the integration's payments due for a poll, in one short statement: ``next_poll_at``
    moves ``lease_s`` ahead, so other replicas skip them while this one asks the processor."""
    rows = await pool.fetch(
        "UPDATE payments p SET next_poll_at = now() + make_interval(secs => $4)"
        " FROM (SELECT id FROM payments WHERE integration_id = $1 AND next_poll_at <= now()"
        "       AND updated_at <= now() - make_interval(secs => $2)"
        "       ORDER BY next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED) due"
        " WHERE p.id = due.id"
        " RETURNING p.*, extract(epoch FROM now() - p.updated_at)::float8 AS since_change_s",
        integration_id,
        poll_after_s,
        limit,
        lease_s,
    )
    return [PollCandidate(Payment.from_row(r), r["since_change_s"], r["poll_attempts"]) for r in rows]


async def record_poll(
    pool: asyncpg.Pool,
    payment_id: uuid.UUID,
    status: PaymentStatus,
    *,
    attempts: int,
    next_in_s: float | None,
    error: str | None = None,
) -> None:
    """After a poll that changed nothing: the next one in ``next_in_s`` (None: never), and the error
    if the processor could not answer. A payment that moved meanwhile is left to its new schedule."""
    await pool.execute(
        "UPDATE payments SET poll_attempts = $3, next_poll_at = now() + make_interval(secs => $4::float8),"
        " poll_failures = CASE WHEN $5::text IS NULL THEN 0 ELSE poll_failures + 1 END,"
        " last_poll_error = $5 WHERE id = $1 AND status = $2",
        payment_id,
        status,
        attempts,
        next_in_s,
        error,
    )


@dataclass(frozen=True)
class OpenPayments:
    count: int
    oldest_age_s: float


async def open_payments_by_integration(pool: asyncpg.Pool) -> dict[str, OpenPayments]:
    rows = await pool.fetch(
        "SELECT integration_id, count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age"
        " FROM payments WHERE status IN ('created', 'pending', 'approved') GROUP BY 1"
    )
    return {row["integration_id"]: OpenPayments(row["n"], row["age"]) for row in rows}


# --- the credit safety net ------------------------------------------------------------------------


@dataclass(frozen=True)
class Uncredited:
    payment: Payment
    announce_count: int


async def claim_uncredited(conn: Connection, sweep_after_s: float, limit: int) -> list[Uncredited]:
    """Within the caller's transaction: succeeded payments still not credited whose next
    announcement is due, locked (other replicas skip them)."""
    rows = await conn.fetch(
        "SELECT * FROM payments WHERE status = 'succeeded' AND credited_at IS NULL"
        " AND coalesce(next_announce_at, succeeded_at + make_interval(secs => $1)) <= now()"
        " ORDER BY succeeded_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        sweep_after_s,
        limit,
    )
    return [Uncredited(Payment.from_row(row), row["announce_count"]) for row in rows]


async def record_announcement(conn: Connection, payment_id: uuid.UUID, announce_count: int, next_in_s: float) -> None:
    await conn.execute(
        "UPDATE payments SET announce_count = $2, next_announce_at = now() + make_interval(secs => $3::float8)"
        " WHERE id = $1",
        payment_id,
        announce_count,
        next_in_s,
    )


async def mark_credited(conn: Connection, payment_id: uuid.UUID) -> bool:
    """True the first time: the ledger has credited this payment."""
    result = await conn.execute(
        "UPDATE payments SET credited_at = now() WHERE id = $1 AND credited_at IS NULL", payment_id
    )
    return bool(result == "UPDATE 1")


async def uncredited_by_integration(pool: asyncpg.Pool, older_than_s: float) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT integration_id, count(*) AS n FROM payments WHERE status = 'succeeded' AND credited_at IS NULL"
        " AND succeeded_at < now() - make_interval(secs => $1) GROUP BY 1",
        older_than_s,
    )
    return {row["integration_id"]: row["n"] for row in rows}


# --- operator review ------------------------------------------------------------------------------


async def payments_in_review(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT id, order_id, user_id, integration_id, processor_reference, amount_minor, bonus_minor, fee_minor,"
        " charge_minor, currency, status_reason, updated_at FROM payments WHERE status = 'needs_review'"
        " ORDER BY updated_at LIMIT $1",
        limit,
    )
    return list(rows)


async def insert_review(
    conn: Connection, payment_id: uuid.UUID, decision: ReviewDecision, decided_by: str, note: str
) -> None:
    await conn.execute(
        "INSERT INTO payment_reviews (payment_id, decision, decided_by, note) VALUES ($1, $2, $3, $4)",
        payment_id,
        decision,
        decided_by,
        note,
    )


async def get_review(conn: Connection, payment_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM payment_reviews WHERE payment_id = $1", payment_id)
    return row


# --- retention ------------------------------------------------------------------------------------


# Retention rules for the runtime's janitor: $1 the cutoff, $2 the batch size. The parsed event stays.
FORGET_EVENT_BODIES_SQL = (
    "UPDATE processor_events SET body = NULL WHERE id IN (SELECT id FROM processor_events"
    " WHERE body IS NOT NULL AND received_at < $1 LIMIT $2)"
)
DELETE_SANDBOX_CHECKOUTS_SQL = (
    "DELETE FROM sandbox_checkouts WHERE reference IN (SELECT reference FROM sandbox_checkouts"
    " WHERE created_at < $1 LIMIT $2)"
)


async def mark_older_test_payments(pool: asyncpg.Pool, test_integrations: list[str]) -> int:
    """Payments made before payments recorded an environment (migration 003) took its default,
    production: those of integrations configured as test are test money. Idempotent; returns how
    many it corrected."""
    result: str = await pool.execute(
        "UPDATE payments SET environment = 'test' WHERE environment = 'production' AND integration_id = ANY($1)"
        " AND created_at < (SELECT applied_at FROM schema_migrations WHERE component = 'payments' AND version = 3)",
        test_integrations,
    )
    return int(result.split()[-1])


# --- money coming back: refunds and disputes ------------------------------------------------------


@dataclass(frozen=True)
class PaymentReturn:
    state: ReturnState
    debited: bool
    debits: int
    amount_minor: int


async def lock_return(conn: Connection, integration_id: str, cause: str, cause_id: str) -> PaymentReturn | None:
    row = await conn.fetchrow(
        "SELECT state, debited, debits, amount_minor FROM payment_returns"
        " WHERE integration_id = $1 AND cause = $2 AND cause_id = $3 FOR UPDATE",
        integration_id,
        cause,
        cause_id,
    )
    return PaymentReturn(ReturnState(row["state"]), row["debited"], row["debits"], row["amount_minor"]) if row else None


async def save_return(
    conn: Connection,
    integration_id: str,
    cause: str,
    cause_id: str,
    payment_id: uuid.UUID,
    state: ReturnState,
    amount_minor: int,
    debited: bool,
    debits: int,
) -> None:
    await conn.execute(
        "INSERT INTO payment_returns"
        " (integration_id, cause, cause_id, payment_id, state, amount_minor, debited, debits)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (integration_id, cause, cause_id) DO UPDATE"
        " SET state = $5, debited = $7, debits = $8, updated_at = now()",
        integration_id,
        cause,
        cause_id,
        payment_id,
        state,
        amount_minor,
        debited,
        debits,
    )


async def add_returned(conn: Connection, payment_id: uuid.UUID, delta_minor: int) -> int:
    """Move the payment's returned total by ``delta_minor``; returns the total before."""
    before: int = await conn.fetchval(
        "UPDATE payments SET returned_minor = returned_minor + $2, updated_at = updated_at WHERE id = $1"
        " RETURNING returned_minor - $2",
        payment_id,
        delta_minor,
    )
    return before


# --- refund requests ------------------------------------------------------------------------------


async def open_refund_requests_minor(conn: Connection, payment_id: uuid.UUID) -> int:
    """Refunds asked for and not yet confirmed by the processor (nor refused)."""
    total: int = await conn.fetchval(
        "SELECT coalesce(sum(amount_minor), 0)::bigint FROM refund_requests"
        " WHERE payment_id = $1 AND state IN ('requested', 'accepted')",
        payment_id,
    )
    return total


async def confirm_refund_requests(conn: Connection, payment_id: uuid.UUID) -> None:
    """Refund requests whose refund the processor has confirmed (by event) are no longer open."""
    await conn.execute(
        "UPDATE refund_requests r SET state = 'confirmed', updated_at = now() FROM payment_returns t"
        " WHERE r.payment_id = $1 AND r.state = 'accepted' AND t.payment_id = r.payment_id"
        " AND t.cause = 'refund' AND t.cause_id = r.processor_refund_id",
        payment_id,
    )


async def insert_refund_request(
    conn: Connection, payment: Payment, amount_minor: int, requested_by: str, why: str
) -> uuid.UUID:
    request_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO refund_requests (id, payment_id, amount_minor, currency, requested_by, why)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        request_id,
        payment.id,
        amount_minor,
        payment.currency,
        requested_by,
        why,
    )
    return request_id


@dataclass(frozen=True)
class RefundRequest:
    id: uuid.UUID
    payment: Payment
    amount_minor: int
    why: str
    attempts: int


async def claim_refund_requests(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[RefundRequest]:
    """Due refund requests, leased (``next_attempt_at`` moves ahead) so other replicas skip them while
    this one asks the processor."""
    rows = await pool.fetch(
        "UPDATE refund_requests r SET next_attempt_at = now() + make_interval(secs => $2), attempts = attempts + 1"
        " FROM (SELECT id FROM refund_requests WHERE state = 'requested' AND next_attempt_at <= now()"
        "       ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due"
        " WHERE r.id = due.id RETURNING r.*",
        limit,
        lease_s,
    )
    requests = []
    for row in rows:
        payment_row = await pool.fetchrow("SELECT * FROM payments WHERE id = $1", row["payment_id"])
        assert payment_row is not None  # a foreign key
        requests.append(
            RefundRequest(row["id"], Payment.from_row(payment_row), row["amount_minor"], row["why"], row["attempts"])
        )
    return requests


async def record_refund_answer(
    pool: asyncpg.Pool | Connection,
    request_id: uuid.UUID,
    state: str,
    *,
    refund_id: str | None = None,
    processor_status: str | None = None,
    error: str | None = None,
    retry_in_s: float | None = None,
) -> None:
    await pool.execute(
        "UPDATE refund_requests SET state = $2, processor_refund_id = coalesce($3, processor_refund_id),"
        " processor_status = coalesce($4, processor_status), error = $5, updated_at = now(),"
        " next_attempt_at = CASE WHEN $6::float8 IS NULL THEN next_attempt_at"
        "   ELSE now() + make_interval(secs => $6::float8) END WHERE id = $1",
        request_id,
        state,
        refund_id,
        processor_status,
        error,
        retry_in_s,
    )


async def refund_request(pool: asyncpg.Pool, request_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow("SELECT * FROM refund_requests WHERE id = $1", request_id)
    return row
