"""services/crediting/store.py and consumers.py on the real database: a payment is posted once, the
same payment again changes nothing, and the same payment with other data is refused (dead-lettered
by the consumer), never posted. The ledger stays balanced and driver balances equal their postings."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from services.crediting import consumers, domain, store
from shared.messages import BadMessage, CreditApplied, Environment, PaymentSucceeded, envelope_for
from tests import factories
from tests.harness import Stack
from tests.integration.conftest import ScratchDb

pytestmark = [pytest.mark.broker]


@pytest.fixture
def ledger(crediting_scratch: ScratchDb) -> asyncpg.Pool:
    return crediting_scratch.pool


def paid(environment: Environment = "production", **overrides: Any) -> domain.Transfer:
    fields: dict[str, Any] = {"payment_id": uuid.uuid4(), "order_id": uuid.uuid4(), **overrides}
    return domain.topup_transfer(factories.payment_succeeded(**fields), environment)


async def record(pool: asyncpg.Pool, transfer: domain.Transfer) -> store.Recorded:
    async with pool.acquire() as conn, conn.transaction():
        return await store.record_transfer(conn, transfer, "corr-ledger")


async def postings(pool: asyncpg.Pool, transfer_id: str) -> list[tuple[str, str, int]]:
    rows = await pool.fetch(
        "SELECT account, entry_kind, amount_minor FROM postings WHERE transfer_id = $1 ORDER BY id", transfer_id
    )
    return [(r["account"], r["entry_kind"], r["amount_minor"]) for r in rows]


async def assert_ledger_consistent(pool: asyncpg.Pool) -> None:
    unbalanced = await pool.fetch(
        "SELECT transfer_id, sum(amount_minor) AS total FROM postings"
        " GROUP BY transfer_id HAVING sum(amount_minor) <> 0"
    )
    assert unbalanced == []
    assert await pool.fetchval("SELECT coalesce(sum(amount_minor), 0) FROM postings") == 0
    # Every transfer has postings, and every posting belongs to a transfer in the same currency.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.transfer_id = t.id)"
        )
        == 0
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM postings p JOIN transfers t ON t.id = p.transfer_id WHERE p.currency <> t.currency"
        )
        == 0
    )
    # A driver's stored balance is the sum of the postings to that driver's account, per currency.
    stored = {
        (domain.user_account(r["user_id"], r["environment"]), r["currency"]): r["balance_minor"]
        for r in await pool.fetch("SELECT user_id, currency, environment, balance_minor FROM user_balances")
    }
    summed = {
        (r["account"], r["currency"]): r["total"]
        for r in await pool.fetch(
            "SELECT account, currency, sum(amount_minor) AS total FROM postings"
            " WHERE account LIKE 'user:%' OR account LIKE 'test:user:%' GROUP BY account, currency"
        )
    }
    assert stored == summed


async def test_a_transfer_is_posted_once_and_moves_the_balance(ledger: asyncpg.Pool) -> None:
    transfer = paid(user_id="ledger-u1", amount_minor=2500, bonus_minor=100, fee_minor=58)
    first = await record(ledger, transfer)
    assert first == store.Recorded(created=True, balance_minor=2600)
    assert sorted(await postings(ledger, transfer.id)) == sorted(
        (p.account, p.entry_kind, p.amount_minor) for p in transfer.postings
    )
    assert await store.balance(ledger, "ledger-u1", "EUR") == 2600

    # The same payment again (a redelivery under another message id): found, nothing posted twice.
    again = await record(ledger, paid(**_event_fields(transfer)))
    assert again == store.Recorded(created=False, balance_minor=2600)
    assert len(await postings(ledger, transfer.id)) == len(transfer.postings)
    assert await store.balance(ledger, "ledger-u1", "EUR") == 2600
    assert await ledger.fetchval("SELECT count(*) FROM transfers") == 1
    await assert_ledger_consistent(ledger)


def _event_fields(transfer: domain.Transfer, **overrides: Any) -> dict[str, Any]:
    clearing = next(p.account for p in transfer.postings if p.entry_kind == "charged")
    return {
        "payment_id": transfer.payment_id,
        "order_id": transfer.order_id,
        "user_id": transfer.user_id,
        "integration_id": clearing.removeprefix("processor:"),
        "amount_minor": transfer.amount_minor,
        "bonus_minor": transfer.bonus_minor,
        "fee_minor": transfer.fee_minor,
        "currency": transfer.currency,
        **overrides,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"amount_minor": 2600},
        {"amount_minor": 2400},
        {"bonus_minor": 0},
        {"bonus_minor": 150},
        {"fee_minor": 0},
        {"fee_minor": 59},
        {"user_id": "ledger-someone-else"},
        {"order_id": uuid.UUID("33333333-3333-4333-8333-333333333333")},
        {"currency": "BGN"},
        {"integration_id": "other_integration"},
        {"environment": "test"},
    ],
    ids=lambda change: next(iter(change)) + "=" + str(next(iter(change.values()))),
)
async def test_the_same_payment_with_other_data_is_a_conflict_and_posts_nothing(
    ledger: asyncpg.Pool, change: dict[str, Any]
) -> None:
    original = paid(user_id="ledger-u2", amount_minor=2500, bonus_minor=100, fee_minor=58)
    await record(ledger, original)
    before = await ledger.fetch("SELECT * FROM postings ORDER BY id")
    balances = await ledger.fetch("SELECT user_id, currency, balance_minor FROM user_balances ORDER BY 1, 2")

    fields = _event_fields(original, **change)
    conflicting = paid(fields.pop("environment", "production"), **fields)
    assert conflicting.id == original.id
    with pytest.raises(store.TransferConflict, match=original.id):
        await record(ledger, conflicting)

    assert await ledger.fetch("SELECT * FROM postings ORDER BY id") == before
    assert await ledger.fetch("SELECT user_id, currency, balance_minor FROM user_balances ORDER BY 1, 2") == balances
    assert await ledger.fetchval("SELECT count(*) FROM transfers") == 1
    assert (await ledger.fetchrow("SELECT amount_minor, bonus_minor, fee_minor, user_id FROM transfers"))[
        "amount_minor"
    ] == 2500
    await assert_ledger_consistent(ledger)


async def test_many_transfers_keep_the_ledger_balanced_and_balances_equal_to_postings(ledger: asyncpg.Pool) -> None:
    users = ["ledger-a", "ledger-b", "ledger-c"]
    expected = dict.fromkeys(users, 0)
    cases = [(1000, 0, 0), (2500, 150, 58), (1, 1, 1), (5000, 300, 0), (700, 0, 25)]
    for i, (amount, bonus, fee) in enumerate(cases * 3):
        user = users[i % len(users)]
        transfer = paid(user_id=user, amount_minor=amount, bonus_minor=bonus, fee_minor=fee)
        assert (await record(ledger, transfer)).created
        assert not (await record(ledger, transfer)).created
        expected[user] += amount + bonus
    # Another currency is a balance of its own, and so is test money.
    await record(ledger, paid(user_id="ledger-a", amount_minor=300, bonus_minor=0, fee_minor=0, currency="BGN"))
    await record(ledger, paid("test", user_id="ledger-a", amount_minor=400, bonus_minor=50, fee_minor=5))

    assert {u: await store.balance(ledger, u, "EUR") for u in users} == expected
    assert await store.balance(ledger, "ledger-a", "BGN") == 300
    assert await store.balance(ledger, "ledger-a", "EUR", "test") == 450
    assert await ledger.fetchval("SELECT count(*) FROM transfers") == len(cases) * 3 + 2
    await assert_ledger_consistent(ledger)
    # The system accounts hold the other side: clearing = -(paid), fees and bonus what was charged.
    by_account = {
        r["account"]: r["total"]
        for r in await ledger.fetch(
            "SELECT account, sum(amount_minor) AS total FROM postings WHERE currency = 'EUR' GROUP BY account"
        )
    }
    assert by_account[domain.FEE_REVENUE_ACCOUNT] == sum(f for _, _, f in cases) * 3
    assert by_account[domain.BONUS_EXPENSE_ACCOUNT] == -sum(b for _, b, _ in cases) * 3
    assert by_account[domain.clearing_account("sandbox_demo")] == -sum(a + f for a, _, f in cases) * 3


async def test_the_consumer_credits_once_and_dead_letters_a_conflicting_payment(
    ledger: asyncpg.Pool, stack: Stack
) -> None:
    handler = consumers.payment_event_handlers(stack.settings)[PaymentSucceeded]
    event = factories.payment_succeeded(
        payment_id=uuid.uuid4(), order_id=uuid.uuid4(), user_id="ledger-consumer", integration_id="sandbox_main"
    )

    async def handle(payload: Any) -> None:
        envelope = envelope_for(payload, producer="payments", correlation_id="corr-consumer")
        async with ledger.acquire() as conn, conn.transaction():
            await handler(conn, envelope, payload)

    async def announced() -> list[tuple[str, str]]:
        rows = await ledger.fetch("SELECT routing_key, correlation_id FROM outbox ORDER BY id")
        return [(r["routing_key"], r["correlation_id"]) for r in rows]

    await handle(event)
    assert await announced() == [(CreditApplied.TYPE, "corr-consumer")]
    assert await store.balance(ledger, "ledger-consumer", "EUR") == 2600
    postings_after_first = await ledger.fetch("SELECT * FROM postings ORDER BY id")

    # The same payment under a new message id: nothing more is posted (it may be announced again).
    await handle(event)
    assert await ledger.fetch("SELECT * FROM postings ORDER BY id") == postings_after_first
    assert await store.balance(ledger, "ledger-consumer", "EUR") == 2600
    outbox_before_conflict = await announced()

    # The same payment with other amounts: BadMessage (dead-lettered at once, with the reason),
    # and nothing posted or announced.
    for change in ({"amount_minor": 2600}, {"bonus_minor": 0}, {"fee_minor": 0}, {"user_id": "ledger-other"}):
        with pytest.raises(BadMessage, match="exists with different data"):
            await handle(event.model_copy(update=change))
        assert await ledger.fetch("SELECT * FROM postings ORDER BY id") == postings_after_first
        assert await announced() == outbox_before_conflict
    assert await ledger.fetchval("SELECT count(*) FROM transfers") == 1
    assert await store.balance(ledger, "ledger-consumer", "EUR") == 2600
    assert await store.balance(ledger, "ledger-other", "EUR") == 0
    await assert_ledger_consistent(ledger)


async def test_the_consistency_check_notices_a_drifted_balance_or_an_unbalanced_transfer(ledger: asyncpg.Pool) -> None:
    # The check the tests above rely on is not vacuous: each kind of damage makes it fail.
    transfer = paid(user_id="ledger-drift")
    await record(ledger, transfer)
    await assert_ledger_consistent(ledger)
    await ledger.execute("UPDATE user_balances SET balance_minor = balance_minor + 1 WHERE user_id = 'ledger-drift'")
    with pytest.raises(AssertionError):
        await assert_ledger_consistent(ledger)
    await ledger.execute("UPDATE user_balances SET balance_minor = balance_minor - 1 WHERE user_id = 'ledger-drift'")
    await assert_ledger_consistent(ledger)
    await ledger.execute(
        "UPDATE postings SET amount_minor = amount_minor - 1 WHERE transfer_id = $1 AND entry_kind = 'charged'",
        transfer.id,
    )
    with pytest.raises(AssertionError):
        await assert_ledger_consistent(ledger)
