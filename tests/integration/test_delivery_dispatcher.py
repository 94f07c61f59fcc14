"""services/crediting/dispatcher.py on the real database against the AMPECO simulator: two dispatchers
share the work with never two calls of one user at once, each delivery applied once; and rows left
behind by a dispatcher that died mid-call are picked up the right way (sent: uncertain, then settled
by evidence; never sent: simply sent)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio

from services.crediting import domain, store
from services.crediting.csms.ampeco.client import AmpecoClient
from services.crediting.dispatcher import DeliveryDispatcher
from shared.messages import PaymentSucceeded
from shared.settings import Settings
from tests.harness import Stack, eventually
from tests.integration.conftest import ScratchDb
from tests.simulators.ampeco import AmpecoSimulator

pytestmark = pytest.mark.broker

TOKEN = "dispatcher-test-" + uuid.uuid4().hex
USERS = range(1, 21)
CALL_S = 0.15


@dataclass
class Setup:
    dsn: str
    pool: asyncpg.Pool
    sim: AmpecoSimulator
    settings: Settings


@pytest_asyncio.fixture
async def setup(stack: Stack, crediting_scratch: ScratchDb) -> AsyncIterator[Setup]:
    sim = AmpecoSimulator(api_token=TOKEN, notifications=False, slow_delay_s=(CALL_S, CALL_S))
    base_url = await sim.start()
    for user_id in USERS:
        sim.add_user(user_id)
    csms = stack.settings.csms.model_validate(
        {
            "kind": "ampeco",
            "base_url": base_url,
            "notification_url": "http://127.0.0.1:9/webhooks/ampeco",
            "api_token": TOKEN,
            "request_timeout_s": 2,
            "not_applied_after_s": 1,
            "uncertain_resolve_after_s": 30,
            "evidence_interval_s": 0.2,
        }
    )
    settings = stack.settings.model_copy(update={"csms": csms})
    try:
        yield Setup(crediting_scratch.dsn, crediting_scratch.pool, sim, settings)
    finally:
        await sim.stop()
    assert sim.spec_violations == []


def payment_succeeded(user_id: int, amount_minor: int) -> PaymentSucceeded:
    """A sandbox payment of ``amount_minor`` EUR cents by the user, no bonus, no fee."""
    return PaymentSucceeded(
        payment_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id=str(user_id),
        integration_id="sandbox_main",
        processor="sandbox",
        processor_reference="ref",
        amount_minor=amount_minor,
        bonus_minor=0,
        fee_minor=0,
        currency="EUR",
    )


async def write_credits(pool: asyncpg.Pool, per_user: int) -> list[str]:
    transfers = []
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(per_user):
            for user_id in USERS:
                transfer = domain.topup_transfer(payment_succeeded(user_id, 1000))
                await store.record_transfer(conn, transfer, "test")
                await store.add_delivery(conn, domain.delivery_intent(transfer), "test")
                transfers.append(transfer.id)
    return transfers


async def all_delivered(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM deliveries WHERE state <> 'delivered'")


async def test_two_dispatchers_never_call_for_one_user_at_once(setup: Setup) -> None:
    setup.sim.set_fault_mix({"slow": 1.0}, seed=1)  # every call takes CALL_S, so overlaps would show
    await write_credits(setup.pool, per_user=4)
    clients = [AmpecoClient(setup.settings.csms, "EUR") for _ in range(2)]
    dispatchers = [DeliveryDispatcher(setup.settings, setup.dsn, setup.pool, client) for client in clients]
    tasks = [asyncio.get_running_loop().create_task(d.run()) for d in dispatchers]
    try:
        await eventually(lambda: all_delivered(setup.pool), 60, "not everything was delivered")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
    for user_id in USERS:
        calls = [r for r in setup.sim.requests if r.method == "POST" and r.path.endswith(f"/{user_id}/add-balance")]
        assert len(calls) == 4 and setup.sim.balance(user_id) == Decimal("40.00")
        starts = sorted(r.at for r in calls)
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
        assert min(gaps) >= CALL_S * 0.9, f"user {user_id}: calls overlapped ({gaps})"
    # Nothing was sent twice.
    attempts = await setup.pool.fetchval("SELECT max(attempts) FROM deliveries")
    assert attempts == 1


async def test_rows_a_dead_dispatcher_left_behind(setup: Setup) -> None:
    """One row was claimed and sent (its call applied, the answer never written), one claimed and
    never sent; both leases have run out."""
    sent_transfer, unsent_transfer = (await write_credits(setup.pool, per_user=1))[:2]
    sent_user = await setup.pool.fetchval("SELECT user_id FROM deliveries WHERE transfer_id = $1", sent_transfer)
    unsent_user = await setup.pool.fetchval("SELECT user_id FROM deliveries WHERE transfer_id = $1", unsent_transfer)
    # The first call happened (AMPECO applied it: 5.00 before, 15.00 now) from a dispatcher that died.
    await setup.pool.execute(
        "UPDATE deliveries SET state = 'sending', attempts = 1, sent_at = now() - interval '5 seconds',"
        " balance_before = 5.00, lease_until = now() - interval '1 second' WHERE transfer_id = $1",
        sent_transfer,
    )
    setup.sim.add_user(int(sent_user), Decimal("15.00"))
    await setup.pool.execute(
        "UPDATE deliveries SET state = 'sending', attempts = 1, lease_until = now() - interval '1 second'"
        " WHERE transfer_id = $1",
        unsent_transfer,
    )
    client = AmpecoClient(setup.settings.csms, "EUR")
    dispatcher = DeliveryDispatcher(setup.settings, setup.dsn, setup.pool, client)
    task = asyncio.get_running_loop().create_task(dispatcher.run())
    try:
        await eventually(lambda: all_delivered(setup.pool), 30, "not everything was delivered")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    rows = {
        r["transfer_id"]: r for r in await setup.pool.fetch("SELECT transfer_id, settled_by, attempts FROM deliveries")
    }
    # The sent one is never sent again: the balance (5.00 before, 15.00 now) shows it applied.
    assert (rows[sent_transfer]["settled_by"], rows[sent_transfer]["attempts"]) == ("balance", 1)
    assert [r for r in setup.sim.requests if r.path.endswith(f"/{sent_user}/add-balance")] == []
    # The one never sent is simply sent.
    assert (rows[unsent_transfer]["settled_by"], rows[unsent_transfer]["attempts"]) == ("response", 2)
    assert setup.sim.balance(int(unsent_user)) == Decimal("10.00")


async def test_a_chargeback_takes_only_what_the_ampeco_balance_holds_and_the_rest_is_owed(setup: Setup) -> None:
    """The driver spent most of a top-up in AMPECO (the ledger mirrors only what we sent), then the
    payment is charged back: AMPECO's balance is debited what it holds, never below zero, and the
    rest is recorded as owed; a driver with nothing left is debited nothing at all."""
    from services.crediting import service
    from shared.messages import PaymentReversed

    async with setup.pool.acquire() as conn, conn.transaction():
        for user_id in (1, 2):
            paid = payment_succeeded(user_id, 2500)
            topup = domain.topup_transfer(paid)
            await store.record_transfer(conn, topup, "test")
            reversed_ = PaymentReversed(
                payment_id=paid.payment_id,
                order_id=paid.order_id,
                user_id=str(user_id),
                integration_id="sandbox_main",
                cause="dispute",
                cause_id=f"du_{user_id}",
                reversed_minor=2500,
                reversed_before_minor=0,
                amount_minor=2500,
                bonus_minor=0,
                fee_minor=0,
                currency="EUR",
            )
            await service.post_payment_reversal(conn, setup.settings, reversed_, "production", "test")
    setup.sim.add_user(1, Decimal("7.00"))  # spent 18.00 of the 25.00
    setup.sim.add_user(2, Decimal("0.00"))  # spent all of it
    client = AmpecoClient(setup.settings.csms, "EUR")
    dispatcher = DeliveryDispatcher(setup.settings, setup.dsn, setup.pool, client)
    task = asyncio.get_running_loop().create_task(dispatcher.run())
    try:
        await eventually(lambda: all_delivered(setup.pool), 30, "the chargebacks were not delivered")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert (setup.sim.balance(1), setup.sim.balance(2)) == (Decimal("0.00"), Decimal("0.00"))
    debits = [r for r in setup.sim.requests if r.method == "POST" and "apply-custom-fee" in r.path]
    assert [r.path.rsplit("/", 2)[-2] for r in debits] == ["1"]
    owed = {
        row["account"]: row["s"]
        for row in await setup.pool.fetch(
            "SELECT account, sum(amount_minor) AS s FROM postings WHERE account LIKE 'receivable:%' GROUP BY 1"
        )
    }
    assert owed == {domain.receivable_account("1"): -1800, domain.receivable_account("2"): -2500}
    # The ledger mirrors what was sent to AMPECO (the top-up, less the debit it took), not what the
    # driver spent there.
    assert [await store.balance(setup.pool, str(u), "EUR") for u in (1, 2)] == [1800, 2500]
    assert await setup.pool.fetchval("SELECT sum(amount_minor) FROM postings") == 0
