"""Benchmark: N sandbox top-ups from signed webhook to credited balance, through the three services
as real processes on the local PostgreSQL and RabbitMQ (in databases and a vhost of its own).

Orders and checkouts are created first (through the page API, not timed); then every payment's
signed success webhook is sent, ``--concurrency`` at a time, as a processor's burst would be, or at
a steady ``--rate`` per second to see time-to-credit below saturation. The
time-to-credit of a top-up runs from the start of its webhook request to the moment its
``credit.applied`` event reaches a queue the benchmark binds to the events exchange.

    python -m bench.topup_bench --topups 5000            # saturation: throughput
    python -m bench.topup_bench --topups 2000 --rate 100 # a steady load: time-to-credit
    python -m bench.topup_bench --csms ampeco --topups 4000 --rate 200  # credited in an AMPECO simulator

With ``--csms ampeco`` each credit is delivered to the AMPECO simulator (tests/simulators/ampeco.py,
run as a process of its own, answering at once, sending its signed notifications) for 500 users, and
the time-to-credit ends when AMPECO has confirmed the credit (``credit.applied`` waits for it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from services.cli import SERVICES
from tests.harness import REPO, Driver, ServiceProcess, fetch, free_ports, own_stack
from tests.simulators.sandbox import send_webhook, webhook_body

RESULTS_DIR = Path(__file__).parent / "results"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


BENCH_USERS = 500
TOKEN_ENV = "EVTOPUP_BENCH_AMPECO_TOKEN"


def bench_user(index: int, csms: str) -> str:
    # AMPECO's user ids are positive integers.
    return str(1 + index % BENCH_USERS) if csms == "ampeco" else f"bench-user-{index % BENCH_USERS}"


@contextlib.contextmanager
def ampeco_simulator(notifications: bool = True) -> Iterator[tuple[str, str]]:
    """The AMPECO simulator as a process of its own (so that it takes no CPU from the benchmark's
    client): its base URL and API token."""
    token = secrets.token_urlsafe(24)
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.simulators.ampeco",
            "--port",
            str(port),
            "--api-token-env",
            TOKEN_ENV,
            "--users",
            f"1..{BENCH_USERS}",
            *([] if notifications else ["--no-notifications"]),
        ],
        env={**os.environ, TOKEN_ENV: token},
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on" in line, f"the AMPECO simulator did not start: {line!r}"
        yield line.rsplit(" ", 1)[1].strip(), token
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def ampeco_overrides(base_url: str, token: str) -> dict[str, str]:
    (crediting_port,) = free_ports(1)
    return {
        "EVTOPUP__CSMS__KIND": "ampeco",
        "EVTOPUP__CSMS__BASE_URL": base_url,
        "EVTOPUP__CSMS__NOTIFICATION_URL": f"http://127.0.0.1:{crediting_port}/webhooks/ampeco",
        "EVTOPUP__CSMS__API_TOKEN": token,
        "EVTOPUP__SERVICES__CREDITING_PORT": str(crediting_port),
    }


async def create_orders(driver: Driver, count: int, concurrency: int, csms: str) -> list[str]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with semaphore:
            status, order = await driver.create_topup(bench_user(i, csms), {"package_id": "p10"})
            assert status == 201, order
            return str(order["id"])

    return await asyncio.gather(*(one(i) for i in range(count)))


async def run(topups: int, concurrency: int, rate_per_s: float | None, csms: str) -> dict[str, Any]:
    if csms != "ampeco":
        return await _run(topups, concurrency, rate_per_s, csms, {})
    with ampeco_simulator() as (base_url, token):
        return await _run(topups, concurrency, rate_per_s, csms, ampeco_overrides(base_url, token))


async def _run(
    topups: int, concurrency: int, rate_per_s: float | None, csms: str, csms_overrides: dict[str, str]
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="evtopup-bench-"))
    # The poller and the sweeper have nothing to heal here; keep them out of the measurement.
    overrides = {
        "EVTOPUP__PAYMENTS__POLL_AFTER_S": "3600",
        "EVTOPUP__PAYMENTS__SWEEP_AFTER_S": "3600",
        **csms_overrides,
    }
    try:
        async with own_stack(tmp, overrides) as stack:
            processes = {name: ServiceProcess(name, stack) for name in SERVICES}
            try:
                for process in processes.values():
                    process.start()
                for process in processes.values():
                    await process.wait_ready()
                connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}")
                async with connection, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
                    channel = await connection.channel()
                    credits_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                    await credits_queue.bind("evtopup.events", "credit.applied")
                    credited_at: dict[str, float] = {}
                    all_credited = asyncio.Event()

                    async def on_credit(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                        credited_at[json.loads(message.body)["data"]["order_id"]] = time.perf_counter()
                        if len(credited_at) >= topups:
                            all_credited.set()

                    await credits_queue.consume(on_credit, no_ack=True)

                    driver = Driver(stack, http)
                    print(f"creating {topups} orders and checkouts...", flush=True)
                    created_started = time.perf_counter()
                    order_ids = await create_orders(driver, topups, concurrency, csms)
                    create_s = time.perf_counter() - created_started
                    rows = await fetch(
                        stack.dsn("payments"),
                        "SELECT order_id, processor_reference, charge_minor FROM payments"
                        " WHERE order_id = ANY($1::uuid[])",
                        [uuid.UUID(i) for i in order_ids],
                    )
                    print(f"sending {topups} signed webhooks, {concurrency} at a time...", flush=True)
                    sent_at: dict[str, float] = {}
                    semaphore = asyncio.Semaphore(concurrency)
                    url = stack.url("payments", "/webhooks/sandbox_main")

                    async def deliver(index: int, row: Any) -> None:
                        body = webhook_body(row["processor_reference"], "succeeded", row["charge_minor"], "EUR")
                        if rate_per_s is not None:
                            await asyncio.sleep(max(0.0, started + index / rate_per_s - time.perf_counter()))
                        async with semaphore:
                            sent_at[str(row["order_id"])] = time.perf_counter()
                            status = await send_webhook(http, url, stack.webhook_secret, body)
                            assert status == 200, status

                    started = time.perf_counter()
                    await asyncio.gather(*(deliver(i, row) for i, row in enumerate(rows)))
                    webhooks_s = time.perf_counter() - started
                    await asyncio.wait_for(all_credited.wait(), timeout=max(120, topups / 10))
                    total_s = max(credited_at.values()) - started

                balances = await fetch(stack.dsn("crediting"), "SELECT sum(balance_minor) AS s FROM user_balances")
                assert balances[0]["s"] == topups * 1000, "the benchmark's money does not add up"
                latencies_ms = [(credited_at[i] - sent_at[i]) * 1000 for i in order_ids]
                return {
                    "benchmark": "topup_webhook_to_credit",
                    "csms": csms,
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "topups": topups,
                    "concurrency": concurrency,
                    "rate_per_s": rate_per_s,
                    "orders_created_per_s": round(topups / create_s, 1),
                    "webhooks_accepted_per_s": round(topups / webhooks_s, 1),
                    "credits_per_s": round(topups / total_s, 1),
                    "time_to_credit_ms_p50": round(percentile(latencies_ms, 0.50), 1),
                    "time_to_credit_ms_p95": round(percentile(latencies_ms, 0.95), 1),
                    "time_to_credit_ms_p99": round(percentile(latencies_ms, 0.99), 1),
                    "time_to_credit_ms_mean": round(statistics.fmean(latencies_ms), 1),
                }
            finally:
                for process in processes.values():
                    process.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topups", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64, help="webhooks in flight at most")
    parser.add_argument("--rate", type=float, help="send webhooks at this steady rate per second")
    parser.add_argument("--csms", choices=["ledger", "ampeco"], default="ledger", help="where balances live")
    args = parser.parse_args()
    write_result(f"topup-{args.csms}", asyncio.run(run(args.topups, args.concurrency, args.rate, args.csms)))


def write_result(name: str, result: dict[str, Any]) -> None:
    """Print a benchmark's result and keep it in ``bench/results/NAME-<time>.json``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
