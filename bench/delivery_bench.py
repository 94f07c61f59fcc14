"""Benchmark: the delivery dispatcher alone. N credits of U users are written as deliveries (with
their ledger transfers) straight into a crediting database of its own, and one dispatcher carries
them to the AMPECO simulator (a process of its own, answering at once, no notifications): how many
deliveries a second, and how long each one waits, with one call in flight per user.

    python -m bench.delivery_bench --deliveries 4000 --users 500   # across users
    python -m bench.delivery_bench --deliveries 200 --users 1      # one user: strictly one at a time
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.topup_bench import BENCH_USERS, ampeco_simulator, percentile, write_result
from services.crediting import domain, store
from services.crediting.csms.ampeco.client import AmpecoClient
from services.crediting.dispatcher import DeliveryDispatcher
from shared import db
from shared.messages import PaymentSucceeded
from shared.runtime import migration_components
from tests.harness import make_stack, scratch_dsn


async def write_deliveries(pool: Any, count: int, users: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for index in range(count):
            event = PaymentSucceeded(
                payment_id=uuid.uuid4(),
                order_id=uuid.uuid4(),
                user_id=str(1 + index % users),
                integration_id="sandbox_main",
                processor="sandbox",
                processor_reference=f"ref-{index}",
                amount_minor=1000,
                bonus_minor=0,
                fee_minor=0,
                currency="EUR",
            )
            transfer = domain.topup_transfer(event)
            await store.record_transfer(conn, transfer, f"bench-{index}")
            await store.add_delivery(conn, domain.delivery_intent(transfer, event.processor_reference), "bench")


async def run(count: int, users: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="evtopup-delivery-bench-") as tmp,
        ampeco_simulator(users, notifications=False) as (base_url, token),
    ):
        stack = make_stack(
            Path(tmp),
            {
                "EVTOPUP__CSMS__KIND": "ampeco",
                "EVTOPUP__CSMS__BASE_URL": base_url,
                "EVTOPUP__CSMS__NOTIFICATION_URL": "http://127.0.0.1:9/webhooks/ampeco",
                "EVTOPUP__CSMS__API_TOKEN": token,
            },
        )
        dsn = scratch_dsn(stack, "deliveries")
        await db.ensure_database(dsn)
        pool = await db.create_pool(dsn, 20)
        client = AmpecoClient(stack.settings.csms, "EUR")
        try:
            await db.migrate(dsn, migration_components("crediting"))
            await write_deliveries(pool, count, users)
            dispatcher = DeliveryDispatcher(stack.settings, dsn, pool, client)
            started = time.perf_counter()
            task = asyncio.get_running_loop().create_task(dispatcher.run())
            while await pool.fetchval("SELECT count(*) FROM deliveries WHERE state <> 'delivered'"):
                assert not task.done(), task
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            task.cancel()
            rows = await pool.fetch(
                "SELECT EXTRACT(EPOCH FROM settled_at - created_at)::float8 * 1000 AS ms, attempts FROM deliveries"
            )
        finally:
            await client.close()
            await pool.close()
            await db.drop_database(dsn)
    waits = [row["ms"] for row in rows]
    return {
        "benchmark": "delivery_dispatcher",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "deliveries": count,
        "users": users,
        "max_concurrent_calls": stack.settings.csms.max_concurrent_calls,
        "deliveries_per_s": round(count / elapsed, 1),
        "attempts_max": max(row["attempts"] for row in rows),
        "wait_ms_p50": round(percentile(waits, 0.5), 1),
        "wait_ms_p95": round(percentile(waits, 0.95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=4000)
    parser.add_argument("--users", type=int, default=BENCH_USERS)
    args = parser.parse_args()
    write_result("deliveries", asyncio.run(run(args.deliveries, args.users)))


if __name__ == "__main__":
    main()
