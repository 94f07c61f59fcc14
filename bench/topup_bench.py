"""Benchmark: N sandbox top-ups from signed webhook to credited balance, through the three services
as real processes on the local PostgreSQL and RabbitMQ (in databases and a vhost of its own).

Orders and checkouts are created first (through the page API; their rate is reported, apart from the
rest); then every payment's signed success webhook is sent, ``--concurrency`` at a time, as a
processor's burst would be, or at a steady ``--rate`` per second to see time-to-credit below
saturation. The time-to-credit of a top-up runs from the start of its webhook request to the commit
that applies its ``credit.applied`` event in payments (``payments.credited_at``, the end of its
path); the answer time of a webhook, from the same start to its HTTP answer.

    python -m bench.topup_bench --topups 5000            # saturation: throughput
    python -m bench.topup_bench --topups 2000 --rate 100 # a steady load: time-to-credit
    python -m bench.topup_bench --csms ampeco --topups 4000 --rate 200  # credited in an AMPECO simulator
    python -m bench.topup_bench --users 10000 --preload-rows 1000000 --replicas 2

``--users`` spreads the top-ups over that many drivers; ``--preload-rows`` first fills the tables the
hot path touches with that many top-ups of history (of the same drivers, over the last six days);
``--replicas 2`` runs two processes of each service, orders created through both pages and webhooks
sent to both payments processes in turn. For the webhook phase the result has each process's CPU
time per top-up (the services, PostgreSQL, RabbitMQ, the benchmark itself, the whole machine), and
each service's resident memory after it.

With ``--csms ampeco`` each credit is delivered to the AMPECO simulator (tests/simulators/ampeco.py,
run as a process of its own, answering at once, sending its signed notifications) for the same
users, and the time-to-credit ends when AMPECO has confirmed the credit (``credit.applied`` waits
for it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from bench.profile import profiling, summarize
from services.cli import SERVICES
from shared.amqp import DEAD_LETTER_QUEUE, EVENT_QUEUE_NAMES
from tests.harness import (
    REPO,
    Driver,
    ServiceProcess,
    Stack,
    fetch,
    free_ports,
    own_stack,
    start_all,
    superuser_dsn,
)
from tests.simulators.sandbox import send_webhook, webhook_body

RESULTS_DIR = Path(__file__).parent / "results"
BENCH_USERS = 500
TOKEN_ENV = "EVTOPUP_BENCH_AMPECO_TOKEN"
# What each top-up credits: package p10 paid by card (no fee, no bonus).
CREDIT_MINOR = 1000


@dataclass(frozen=True)
class Load:
    """One benchmark run: how many top-ups, how they are sent (a burst, or ``rate_per_s``), for how
    many drivers, on how many replicas of each service, over how much history."""

    topups: int
    concurrency: int = 64
    rate_per_s: float | None = None
    csms: str = "ledger"
    users: int = BENCH_USERS
    replicas: int = 1
    preload_rows: int = 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_user(index: int, csms: str, users: int) -> str:
    # AMPECO's user ids are positive integers.
    return str(1 + index % users) if csms == "ampeco" else f"bench-user-{index % users}"


@contextlib.contextmanager
def ampeco_simulator(users: int, notifications: bool = True) -> Iterator[tuple[str, str]]:
    """The AMPECO simulator as a process of its own (so that it takes no CPU from the benchmark's
    client), knowing users 1..``users``: its base URL and API token."""
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
            f"1..{users}",
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


# --- History already there: credited top-ups, as the services themselves would have left them ------


def preload_statements(load: Load) -> dict[str, list[str]]:
    """By service: one INSERT ... SELECT FROM generate_series per table the hot path touches, row i
    being the i-th of ``load.preload_rows`` credited top-ups (ids derived from i, so the databases
    agree with each other), spread over the last six days (inside every retention period, so that
    no janitor deletes them during the run)."""
    # Numbers alone are formatted into the SQL.
    rows, users = int(load.preload_rows), int(load.users)
    # bench_user in SQL.
    user = f"(1 + i % {users})::text" if load.csms == "ampeco" else f"'bench-user-' || (i % {users})"
    series = (
        f"FROM generate_series(1, {rows}) AS i,"
        f" LATERAL (SELECT now() - interval '6 days' * (({rows} - i)::float8 / {rows}) AS ts) AS t"
    )
    ids = (
        "md5('order' || i)::uuid AS order_id, md5('payment' || i)::uuid AS payment_id,"
        " 'sbx_' || left(md5('reference' || i), 24) AS reference, 'evt_' || left(md5('event' || i), 16) AS event_id,"
        " md5('correlation' || i) AS correlation_id"
    )
    series += f", LATERAL (SELECT {ids}) AS x"

    def inbox(*types: str) -> str:
        # The same message has the same id in every service that consumed it.
        kinds = ", ".join(f"('{kind}')" for kind in types)
        return (
            "INSERT INTO inbox (message_id, message_type, received_at)"
            f" SELECT md5(kind || i)::uuid, kind, ts {series}, (VALUES {kinds}) AS k (kind)"
        )

    statements = {
        "page": [
            "INSERT INTO orders (id, user_id, idempotency_key, request_hash, package_id, amount_minor, bonus_minor,"
            " fee_minor, currency, method, integration_id, status, payment_id, redirect_url, balance_minor,"
            " correlation_id, processor_reference, paid_at, created_at, updated_at)"
            f" SELECT order_id, {user}, md5('key' || i), md5('request' || i), 'p10', {CREDIT_MINOR}, 0, 0, 'EUR',"
            " 'card', 'sandbox_main', 'credited', payment_id, 'http://127.0.0.1/sandbox/checkout/' || reference,"
            f" {CREDIT_MINOR} * (1 + (i - 1) / {users}), correlation_id, reference, ts, ts, ts {series}",
            inbox("payment.succeeded", "credit.applied"),
        ],
        "payments": [
            "INSERT INTO payments (id, order_id, user_id, integration_id, processor, method, amount_minor,"
            " bonus_minor, fee_minor, charge_minor, currency, status, processor_reference, redirect_url,"
            " correlation_id, created_at, updated_at, next_poll_at, succeeded_at, credited_at)"
            f" SELECT payment_id, order_id, {user}, 'sandbox_main', 'sandbox', 'card', {CREDIT_MINOR}, 0, 0,"
            f" {CREDIT_MINOR}, 'EUR', 'succeeded', reference, 'http://127.0.0.1/sandbox/checkout/' || reference,"
            f" correlation_id, ts, ts, NULL, ts, ts {series}",
            "INSERT INTO processor_events (integration_id, event_id, processor_reference, kind, payment_id, outcome,"
            " body, amount_minor, currency, received_at)"
            " SELECT 'sandbox_main', event_id, reference, 'succeeded', payment_id, 'moved_to_succeeded',"
            " convert_to(json_build_object('id', event_id, 'type', 'checkout.succeeded',"
            " 'created', extract(epoch FROM ts)::bigint, 'data', json_build_object('reference', reference,"
            f" 'status', 'succeeded', 'amount_minor', {CREDIT_MINOR}, 'currency', 'EUR'))::text, 'UTF8'),"
            f" {CREDIT_MINOR}, 'EUR', ts {series}",
            "INSERT INTO sandbox_checkouts (reference, integration_id, idempotency_key, amount_minor, currency,"
            " method, return_url, status, created_at)"
            f" SELECT reference, 'sandbox_main', payment_id::text, {CREDIT_MINOR}, 'EUR', 'card',"
            f" 'http://127.0.0.1/return/' || order_id, 'succeeded', ts {series}",
            inbox("credit.applied"),
        ],
        "crediting": [
            "INSERT INTO transfers (id, kind, payment_id, order_id, user_id, amount_minor, bonus_minor, fee_minor,"
            " currency, correlation_id, created_at)"
            f" SELECT 'topup:' || payment_id, 'topup', payment_id, order_id, {user}, {CREDIT_MINOR}, 0, 0, 'EUR',"
            f" correlation_id, ts {series}",
            "INSERT INTO postings (transfer_id, account, entry_kind, amount_minor, currency, created_at)"
            f" SELECT 'topup:' || payment_id, p.account, p.entry_kind, p.amount_minor, 'EUR', ts {series},"
            f" LATERAL (VALUES ('processor:sandbox_main', 'charged', -{CREDIT_MINOR}),"
            f" ('user:' || {user}, 'paid', {CREDIT_MINOR})) AS p (account, entry_kind, amount_minor)",
            "INSERT INTO user_balances (user_id, currency, balance_minor, updated_at)"
            f" SELECT {user}, 'EUR', {CREDIT_MINOR} * count(*), max(ts) {series} GROUP BY 1",
            inbox("payment.succeeded"),
        ],
    }
    if load.csms == "ampeco":
        statements["crediting"].append(
            "INSERT INTO deliveries (transfer_id, user_id, direction, amount_minor, currency, reason, app_info,"
            " state, attempts, sent_at, settled_at, settled_by, correlation_id, created_at, updated_at)"
            f" SELECT 'topup:' || payment_id, {user}, 'credit', {CREDIT_MINOR}, 'EUR', 'Balance top-up ' || order_id,"
            f" '{{}}', 'delivered', 1, ts, ts, 'response', correlation_id, ts, ts {series}"
        )
    return statements


async def preload(stack: Stack, load: Load) -> None:
    async def one(service: str, statements: list[str]) -> None:
        conn = await asyncpg.connect(superuser_dsn(stack, service), command_timeout=3600)
        try:
            for statement in statements:
                await conn.execute(statement)
            # VACUUM as well as ANALYZE: autovacuum would otherwise visit the new rows during the run.
            await conn.execute("VACUUM (ANALYZE)")
        finally:
            await conn.close()

    await asyncio.gather(*(one(service, statements) for service, statements in preload_statements(load).items()))
    # Nor should the preload's writes be checkpointed during the run.
    conn = await asyncpg.connect(superuser_dsn(stack))
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# --- What each process costs: /proc ------------------------------------------------------------------

# A client backend's title names its client ("127.0.0.1(51526)" or "[local]").
CLIENT_BACKEND = re.compile(r"\d\(\d+\)|\[local\]")


def pid_of(process: ServiceProcess) -> int:
    assert process.proc is not None, f"{process.label} was never started"
    return process.proc.pid


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid`` so far, in clock ticks; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def machine_busy_ticks() -> int:
    """The whole machine's busy time so far (neither idle nor waiting for I/O), in clock ticks."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]


def server_pids(databases: list[str]) -> dict[str, list[int]]:
    """PostgreSQL's processes (but the client backends of other databases than ``databases``: a
    benchmark or test of someone else's on the same server) and RabbitMQ's (shared, all of it)."""
    groups: dict[str, list[int]] = {"postgres": [], "rabbitmq": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            title = (entry / "cmdline").read_text(errors="replace") if comm == "postgres" else ""
        except OSError:
            continue
        if comm == "beam.smp":
            groups["rabbitmq"].append(int(entry.name))
        elif comm == "postgres" and (any(db in title for db in databases) or not CLIENT_BACKEND.search(title)):
            groups["postgres"].append(int(entry.name))
    return groups


def cpu_snapshot(processes: list[ServiceProcess], databases: list[str]) -> dict[str, dict[int, int]]:
    """CPU ticks so far by process (pid) of each group: each service process by its label, postgres,
    rabbitmq, bench (this process), and machine (under pid 0: /proc/stat)."""
    groups = {process.label: [pid_of(process)] for process in processes}
    groups |= server_pids(databases)
    groups["bench"] = [os.getpid()]
    snapshot = {label: {pid: cpu_ticks(pid) for pid in pids} for label, pids in groups.items()}
    snapshot["machine"] = {0: machine_busy_ticks()}
    return snapshot


def cpu_ms_per_topup(
    before: dict[str, dict[int, int]], after: dict[str, dict[int, int]], topups: int
) -> dict[str, float]:
    # A process started meanwhile counts whole; one that ended meanwhile is lost (the services' pools
    # keep their connections, so their backends last the run).
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return {
        label: round(sum(ticks - before[label].get(pid, 0) for pid, ticks in pids.items()) * tick_ms / topups, 3)
        for label, pids in after.items()
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise AssertionError(f"process {pid} has no VmRSS")


# --- The run ---------------------------------------------------------------------------------------


async def create_orders(drivers: list[Driver], load: Load) -> list[str]:
    semaphore = asyncio.Semaphore(load.concurrency)

    async def one(i: int) -> str:
        async with semaphore:
            driver = drivers[i % len(drivers)]
            status, order = await driver.create_topup(bench_user(i, load.csms, load.users), {"package_id": "p10"})
            assert status == 201, order
            return str(order["id"])

    return await asyncio.gather(*(one(i) for i in range(load.topups)))


async def run(load: Load, profile_dir: Path | None = None) -> dict[str, Any]:
    """One run on a stack of its own."""
    if load.csms != "ampeco":
        async with bench_stack() as stack:
            return await measure(stack, load, profile_dir)
    with ampeco_simulator(load.users) as (base_url, token):
        async with bench_stack(ampeco_overrides(base_url, token)) as stack:
            return await measure(stack, load, profile_dir)


@contextlib.asynccontextmanager
async def bench_stack(csms_overrides: dict[str, str] | None = None) -> AsyncIterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="evtopup-bench-"))
    # The poller and the sweeper have nothing to heal here; keep them out of the measurement.
    overrides = {
        "EVTOPUP__PAYMENTS__POLL_AFTER_S": "3600",
        "EVTOPUP__PAYMENTS__SWEEP_AFTER_S": "3600",
        **(csms_overrides or {}),
    }
    try:
        async with own_stack(tmp, overrides) as stack:
            yield stack
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def reset(stack: Stack) -> None:
    """``stack`` as ``evtopup setup`` left it, for another run (making a new stack takes about 20 s
    of rabbitmqctl): every table emptied but the migrations' record, every event queue and the dead
    letters purged. Its services must be stopped."""
    for service in SERVICES:
        conn = await asyncpg.connect(superuser_dsn(stack, service))
        try:
            tables = await conn.fetch(
                "SELECT quote_ident(tablename) AS name FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            )
            await conn.execute(f"TRUNCATE {', '.join(row['name'] for row in tables)} RESTART IDENTITY")
        finally:
            await conn.close()
    async with await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}") as connection:
        channel = await connection.channel()
        for name in (*EVENT_QUEUE_NAMES, DEAD_LETTER_QUEUE):
            await (await channel.get_queue(name)).purge()


async def wait_credited(stack: Stack, order_ids: list[uuid.UUID], timeout_s: float) -> dict[str, float]:
    """When each order's payment was credited (payments' ``credited_at``: credit.applied applied,
    the end of the top-up's path), once all are. Read from the database, as the floor reads its
    own commits, rather than from a queue of the benchmark's that would add to the broker's work."""
    conn = await asyncpg.connect(stack.dsn("payments"))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await conn.fetch(
                "SELECT order_id, credited_at FROM payments WHERE order_id = ANY($1::uuid[])"
                " AND credited_at IS NOT NULL",
                order_ids,
            )
            if len(rows) == len(order_ids):
                return {str(row["order_id"]): row["credited_at"].timestamp() for row in rows}
            assert time.monotonic() < deadline, f"{len(order_ids) - len(rows)} top-ups never credited"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def measure(stack: Stack, load: Load, profile_dir: Path | None = None) -> dict[str, Any]:
    """One run on ``stack``, whose tables are empty: its own service processes, stopped at the end.
    With ``profile_dir``, each service is profiled during the webhook phase (bench/profile.py)."""
    topups = load.topups
    preload_s = 0.0
    if load.preload_rows:
        print(f"preloading {load.preload_rows} top-ups of history...", flush=True)
        preload_started = time.perf_counter()
        await preload(stack, load)
        preload_s = time.perf_counter() - preload_started
    processes = [
        *(ServiceProcess(name, stack) for name in SERVICES),
        *(ServiceProcess.replica(name, stack, i) for i in range(2, load.replicas + 1) for name in SERVICES),
    ]
    databases = [stack.dsn(name).rsplit("/", 1)[1] for name in SERVICES]
    try:
        await start_all(processes)
        connector = aiohttp.TCPConnector(limit=load.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            drivers = [Driver(stack, http, process.url()) for process in processes if process.name == "page"]
            print(f"creating {topups} orders and checkouts...", flush=True)
            created_started = time.perf_counter()
            order_ids = await create_orders(drivers, load)
            create_s = time.perf_counter() - created_started
            order_uuids = [uuid.UUID(i) for i in order_ids]
            rows = await fetch(
                stack.dsn("payments"),
                "SELECT order_id, processor_reference, charge_minor FROM payments WHERE order_id = ANY($1::uuid[])",
                order_uuids,
            )
            balances_sql = "SELECT coalesce(sum(balance_minor), 0)::bigint AS s FROM user_balances"
            balances_before = (await fetch(stack.dsn("crediting"), balances_sql))[0]["s"]
            print(f"sending {topups} signed webhooks, {load.concurrency} at a time...", flush=True)
            sent_at: dict[str, float] = {}
            answered_at: dict[str, float] = {}
            semaphore = asyncio.Semaphore(load.concurrency)
            urls = [p.url("/webhooks/sandbox_main") for p in processes if p.name == "payments"]

            async def deliver(index: int, row: Any) -> None:
                body = webhook_body(row["processor_reference"], "succeeded", row["charge_minor"], "EUR")
                order_id = str(row["order_id"])
                if load.rate_per_s is not None:
                    await asyncio.sleep(max(0.0, started + index / load.rate_per_s - time.time()))
                async with semaphore:
                    sent_at[order_id] = time.time()
                    status = await send_webhook(http, urls[index % len(urls)], stack.webhook_secret, body)
                    answered_at[order_id] = time.time()
                    assert status == 200, status

            pids = {process.label: pid_of(process) for process in processes}
            profiler = profiling(pids, profile_dir) if profile_dir else contextlib.nullcontext()
            cpu_before = cpu_snapshot(processes, databases)
            with profiler:
                started = time.time()
                await asyncio.gather(*(deliver(i, row) for i, row in enumerate(rows)))
                webhooks_s = time.time() - started
                credited_at = await wait_credited(stack, order_uuids, timeout_s=max(120, topups / 10))
            cpu_after = cpu_snapshot(processes, databases)
            total_s = max(credited_at.values()) - started
            rss = {process.label: rss_mb(pid_of(process)) for process in processes}

        balances_after = (await fetch(stack.dsn("crediting"), balances_sql))[0]["s"]
        transfers = await fetch(
            stack.dsn("crediting"),
            "SELECT count(*) AS n FROM transfers WHERE order_id = ANY($1::uuid[])",
            order_uuids,
        )
        credited_minor = balances_after - balances_before
        latencies_ms = [(credited_at[i] - sent_at[i]) * 1000 for i in order_ids]
        answers_ms = [(answered_at[i] - sent_at[i]) * 1000 for i in order_ids]
        return {
            "benchmark": "topup_webhook_to_credit",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            **asdict(load),
            "preload_s": round(preload_s, 1),
            "orders_created_per_s": round(topups / create_s, 1),
            "webhooks_accepted_per_s": round(topups / webhooks_s, 1),
            "credits_per_s": round(topups / total_s, 1),
            "time_to_credit_ms_p50": round(percentile(latencies_ms, 0.50), 1),
            "time_to_credit_ms_p95": round(percentile(latencies_ms, 0.95), 1),
            "time_to_credit_ms_p99": round(percentile(latencies_ms, 0.99), 1),
            "time_to_credit_ms_mean": round(statistics.fmean(latencies_ms), 1),
            "webhook_answer_ms_p50": round(percentile(answers_ms, 0.50), 1),
            "webhook_answer_ms_p99": round(percentile(answers_ms, 0.99), 1),
            "cpu_ms_per_topup": cpu_ms_per_topup(cpu_before, cpu_after, topups),
            "rss_mb": rss,
            "expected_minor": topups * CREDIT_MINOR,
            "credited_minor": credited_minor,
            "transfers": transfers[0]["n"],
            "money_ok": credited_minor == topups * CREDIT_MINOR and transfers[0]["n"] == topups,
            **({"profile": {label: summarize(profile_dir / f"{label}.txt") for label in pids}} if profile_dir else {}),
        }
    finally:
        for process in processes:
            process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topups", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64, help="webhooks in flight at most")
    parser.add_argument("--rate", type=float, help="send webhooks at this steady rate per second")
    parser.add_argument("--csms", choices=["ledger", "ampeco"], default="ledger", help="where balances live")
    parser.add_argument("--users", type=int, default=BENCH_USERS, help="drivers the top-ups are spread over")
    parser.add_argument("--replicas", type=int, default=1, help="processes of each service")
    parser.add_argument("--preload-rows", type=int, default=0, help="top-ups of history in the tables first")
    parser.add_argument("--profile", type=Path, help="py-spy each service into this folder (bench/profile.py)")
    args = parser.parse_args()
    load = Load(args.topups, args.concurrency, args.rate, args.csms, args.users, args.replicas, args.preload_rows)
    result = asyncio.run(run(load, args.profile))
    write_result(f"topup-{args.csms}", result)
    if not result["money_ok"]:
        sys.exit("the benchmark's money does not add up")


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Keep a result in ``bench/results/NAME-<time>.json``; its path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def write_result(name: str, result: dict[str, Any]) -> None:
    """Print a benchmark's result and keep it (:func:`save_result`)."""
    print(json.dumps(result, indent=2))
    print(f"written to {save_result(name, result)}")


if __name__ == "__main__":
    main()
