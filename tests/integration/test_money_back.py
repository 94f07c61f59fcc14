"""services/payments/service.py on a real payments database: refunds and disputes, however their
events come (copies under other event ids, out of order, while the payment is held for review, more
than is left until something is given back), each announce the money they move exactly once; and an
event whose ids name two payments moves neither."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from services.payments import review, service, store
from services.payments.domain import PaymentStatus, ReviewDecision
from services.payments.processors.base import EventKind, PaymentRef, ProcessorEvent
from tests.integration.conftest import ScratchDb

pytestmark = pytest.mark.broker

INTEGRATION = "stripe_main"
CHARGE = 10_000


async def paid_payment(pool: asyncpg.Pool, status: PaymentStatus = PaymentStatus.SUCCEEDED) -> store.Payment:
    payment_id = uuid.uuid4()
    async with pool.acquire() as conn:
        payment = await store.insert_payment(
            conn,
            store.Payment(
                id=payment_id,
                order_id=uuid.uuid4(),
                user_id="42",
                integration_id=INTEGRATION,
                processor="stripe",
                method="card",
                amount_minor=CHARGE,
                bonus_minor=500,
                fee_minor=0,
                charge_minor=CHARGE,
                currency="EUR",
                status=status,
                processor_reference=None,
                redirect_url=None,
                correlation_id="test-correlation",
                environment="production",
            ),
        )
        await store.record_checkout(conn, payment.id, f"cs_{payment_id.hex[:12]}", "https://pay.example/x")
        stored = await store.lock_payment(conn, payment.id)
    assert stored is not None and stored.processor_reference is not None
    return stored


def money_back(
    payment: store.Payment, kind: EventKind, cause_id: str, event_id: str, amount: int = CHARGE
) -> ProcessorEvent:
    return ProcessorEvent(
        event_id=event_id,
        payment=PaymentRef(merchant_reference=str(payment.id)),
        kind=kind,
        amount_minor=amount,
        currency="EUR",
        cause_id=cause_id,
    )


async def announced(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT routing_key, body FROM outbox ORDER BY id")
    return [(row["routing_key"], json.loads(row["body"])["data"]["cause_id"]) for row in rows]


async def apply(pool: asyncpg.Pool, event: ProcessorEvent) -> str:
    return await service.apply_processor_event(pool, INTEGRATION, event, None)


async def reexamine(pool: asyncpg.Pool) -> dict[str, int]:
    await pool.execute("UPDATE processor_events SET next_reexamine_at = now() WHERE outcome = 'unknown_payment'")
    return await service.reexamine_unknown_events(pool, 50, 1.0, 4.0, {INTEGRATION: True})


async def test_one_refund_told_by_several_events_takes_the_money_once(payments_scratch: ScratchDb) -> None:
    pool = payments_scratch.pool
    payment = await paid_payment(pool)
    for event_id in ("evt_created", "evt_updated", "evt_updated", "evt_charge_refunded"):
        await apply(pool, money_back(payment, EventKind.REFUNDED, "re_1", event_id, 4000))
    assert await announced(pool) == [("payment.reversed", "re_1")]
    assert await pool.fetchval("SELECT returned_minor FROM payments WHERE id = $1", payment.id) == 4000


async def test_a_refund_beyond_what_is_left_waits_until_a_won_dispute_gives_money_back(
    payments_scratch: ScratchDb,
) -> None:
    pool = payments_scratch.pool
    payment = await paid_payment(pool)
    assert await apply(pool, money_back(payment, EventKind.DISPUTE_OPENED, "du_1", "e1")) == "accepted"
    assert await apply(pool, money_back(payment, EventKind.REFUNDED, "re_1", "e2")) == "exceeds_charge"
    assert await announced(pool) == [("payment.reversed", "du_1")]
    await apply(pool, money_back(payment, EventKind.DISPUTE_WON, "du_1", "e3"))
    assert await reexamine(pool) == {"matched": 1}
    assert await announced(pool) == [
        ("payment.reversed", "du_1"),
        ("payment.reversal_undone", "du_1"),
        ("payment.reversed", "re_1"),
    ]
    assert await pool.fetchval("SELECT returned_minor FROM payments WHERE id = $1", payment.id) == CHARGE


async def test_a_chargeback_during_review_applies_once_the_operator_credits(payments_scratch: ScratchDb) -> None:
    pool = payments_scratch.pool
    payment = await paid_payment(pool, PaymentStatus.NEEDS_REVIEW)
    assert await apply(pool, money_back(payment, EventKind.DISPUTE_OPENED, "du_9", "e1")) == "awaiting_success"
    assert await announced(pool) == []
    await review.settle(pool, payment.id, ReviewDecision.CREDIT, "ops", "the processor confirmed it by phone")
    await pool.execute("DELETE FROM outbox")  # the review's own payment.succeeded
    assert await service.reexamine_unknown_events(pool, 50, 1.0, 4.0, {INTEGRATION: True}) == {"matched": 1}
    assert await announced(pool) == [("payment.reversed", "du_9")]


async def test_an_event_whose_ids_name_two_payments_moves_neither(payments_scratch: ScratchDb) -> None:
    pool = payments_scratch.pool
    mine, theirs = await paid_payment(pool), await paid_payment(pool)
    forged = ProcessorEvent(
        event_id="e-two",
        payment=PaymentRef(merchant_reference=str(mine.id), processor_reference=theirs.processor_reference),
        kind=EventKind.REFUNDED,
        amount_minor=1000,
        currency="EUR",
        cause_id="re_x",
    )
    assert await apply(pool, forged) == "conflicting_references"
    assert await announced(pool) == []
    rows = await pool.fetch("SELECT returned_minor FROM payments ORDER BY id")
    assert [r["returned_minor"] for r in rows] == [0, 0]


async def test_an_id_once_learned_is_never_replaced_nor_given_to_another(payments_scratch: ScratchDb) -> None:
    pool = payments_scratch.pool
    payment = await paid_payment(pool, PaymentStatus.PENDING)
    first = ProcessorEvent(
        "e1", PaymentRef(str(payment.id), ids={"payment_intent": "pi_real"}), EventKind.PENDING, CHARGE, "EUR"
    )
    other = ProcessorEvent(
        "e2", PaymentRef(str(payment.id), ids={"payment_intent": "pi_other"}), EventKind.PENDING, CHARGE, "EUR"
    )
    await apply(pool, first)
    await apply(pool, other)
    ids = json.loads(await pool.fetchval("SELECT processor_ids FROM payments WHERE id = $1", payment.id))
    assert ids == {"payment_intent": "pi_real"}
    aliases = {r["processor_id"] for r in await pool.fetch("SELECT processor_id FROM payment_processor_ids")}
    assert aliases == {"pi_real"}


async def test_a_success_from_a_processor_that_vouches_for_no_amount_is_for_what_we_asked(
    payments_scratch: ScratchDb,
) -> None:
    pool = payments_scratch.pool
    payment = await paid_payment(pool, PaymentStatus.PENDING)
    confirmed = ProcessorEvent(
        "ws_1:0", PaymentRef(processor_reference=payment.processor_reference), EventKind.SUCCEEDED, None, "EUR"
    )
    await service.apply_processor_event(pool, INTEGRATION, confirmed, None, states_amount=False)
    assert await pool.fetchval("SELECT status FROM payments WHERE id = $1", payment.id) == "succeeded"
    unvouched = await paid_payment(pool, PaymentStatus.PENDING)
    bare = ProcessorEvent(
        "x:0", PaymentRef(processor_reference=unvouched.processor_reference), EventKind.SUCCEEDED, None, "EUR"
    )
    await apply(pool, bare)
    assert await pool.fetchval("SELECT status FROM payments WHERE id = $1", unvouched.id) == "needs_review"
