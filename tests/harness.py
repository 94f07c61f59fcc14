"""Test harness: a stack of its own (databases, vhost, ports, secrets) on the real PostgreSQL and
RabbitMQ, the three services as real processes, and a driver's HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import jwt

from shared.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Stack:
    run_id: str
    config_path: Path
    env: dict[str, str]
    settings: Settings
    log_dir: Path
    vhost: str

    @property
    def launch_secret(self) -> str:
        return self.settings.launch.secret.get_secret_value()

    @property
    def webhook_secret(self) -> str:
        return self.settings.integrations["sandbox_main"].webhook_secret.get_secret_value()

    @property
    def api_token(self) -> str:
        return self.settings.crediting.api_token.get_secret_value()

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{getattr(self.settings.services, f'{service}_port')}{path}"

    def internal_url(self, service: str, path: str = "") -> str:
        """Health and metrics: the internal port, not the public one."""
        return f"http://127.0.0.1:{getattr(self.settings.services, f'{service}_internal_port')}{path}"

    def dsn(self, service: str) -> str:
        dsn: str = getattr(self.settings.databases, service)
        return dsn


SANDBOX_INTEGRATIONS = """
[integrations.sandbox_main]
processor = "sandbox"
environment = "production"
methods = ["card", "wallet"]
fees = { wallet = { fixed_minor = 25, rate_bp = 200 } }

[integrations.sandbox_trial]
processor = "sandbox"
environment = "test"
methods = ["card"]
test_users = ["tester-1"]
"""

CONFIG_TEMPLATE = """
log_level = "info"
deployment = "{deployment}"

[operator]
name = "Test CPO"
currency = "{currency}"
locales = ["en", "bg"]
default_locale = "en"
return_deep_link = "testcpo://balance"

[launch]
token_max_age_s = 900

[amounts]
min_minor = 100
max_minor = 100000
custom_allowed = true
packages = [
  {{ id = "p10", amount_minor = 1000, bonus_minor = 0 }},
  {{ id = "p25", amount_minor = 2500, bonus_minor = 150 }},
]

{integrations}

[amqp]
url = "amqp://127.0.0.1:5672/{vhost}"
username = "guest"
page_username = "{db}_page"
payments_username = "{db}_payments"
crediting_username = "{db}_crediting"
prefetch = 50
delivery_limit = 3
rpc_timeout_s = 3

[databases]
page = "postgresql://{db}_page@127.0.0.1:5432/{db}_page"
payments = "postgresql://{db}_payments@127.0.0.1:5432/{db}_payments"
crediting = "postgresql://{db}_crediting@127.0.0.1:5432/{db}_crediting"
admin = "postgresql://postgres@127.0.0.1:5432/postgres"
pool_max_size = 10

[services]
host = "127.0.0.1"
page_port = {page_port}
payments_port = {payments_port}
crediting_port = {crediting_port}
page_internal_port = {page_internal_port}
payments_internal_port = {payments_internal_port}
crediting_internal_port = {crediting_internal_port}
page_public_url = "http://127.0.0.1:{page_port}"
payments_public_url = "http://127.0.0.1:{payments_port}"
payments_internal_url = "http://127.0.0.1:{payments_port}"

[payments]
poll_interval_s = 1
poll_after_s = 3
poll_max_backoff_s = 4
sweep_after_s = 5
sweep_interval_s = 1
"""


@dataclass(frozen=True)
class Integrations:
    """A stack's processors: the ``[integrations.*]`` tables, their secrets (``EVTOPUP__…``
    variables), and the operator's currency. Anything but the sandbox runs as a production deployment."""

    toml: str
    secrets: Mapping[str, str]
    currency: str = "EUR"


def make_stack(
    tmp: Path, overrides: Mapping[str, str] | None = None, integrations: Integrations | None = None
) -> Stack:
    """A stack's config and secrets; ``overrides`` are more ``EVTOPUP__...`` variables for its services;
    ``integrations`` replaces the sandbox's."""
    run_id = f"{os.getpid()}_{secrets.token_hex(3)}"
    vhost = f"evtopup_test_{run_id}"
    page_port, payments_port, crediting_port, page_internal, payments_internal, crediting_internal = free_ports(6)
    config_path = tmp / "evtopup.toml"
    config_path.write_text(
        CONFIG_TEMPLATE.format(
            deployment="demo" if integrations is None else "production",
            currency="EUR" if integrations is None else integrations.currency,
            integrations=SANDBOX_INTEGRATIONS if integrations is None else integrations.toml,
            vhost=vhost,
            db=f"evtopup_test_{run_id}",
            page_port=page_port,
            payments_port=payments_port,
            crediting_port=crediting_port,
            page_internal_port=page_internal,
            payments_internal_port=payments_internal,
            crediting_internal_port=crediting_internal,
        )
    )
    env = {
        "EVTOPUP__LAUNCH__SECRET": secrets.token_urlsafe(32),
        "EVTOPUP__CREDITING__API_TOKEN": secrets.token_urlsafe(32),
        "EVTOPUP__AMQP__PASSWORD": "guest",
        # Each service's own broker user, allowed only its own queues and exchanges.
        "EVTOPUP__AMQP__PAGE_PASSWORD": secrets.token_urlsafe(24),
        "EVTOPUP__AMQP__PAYMENTS_PASSWORD": secrets.token_urlsafe(24),
        "EVTOPUP__AMQP__CREDITING_PASSWORD": secrets.token_urlsafe(24),
    }
    if integrations is None:
        env.update(
            {
                "EVTOPUP__INTEGRATIONS__SANDBOX_MAIN__API_KEY": secrets.token_urlsafe(32),
                "EVTOPUP__INTEGRATIONS__SANDBOX_MAIN__WEBHOOK_SECRET": secrets.token_urlsafe(32),
                "EVTOPUP__INTEGRATIONS__SANDBOX_TRIAL__API_KEY": secrets.token_urlsafe(32),
                "EVTOPUP__INTEGRATIONS__SANDBOX_TRIAL__WEBHOOK_SECRET": secrets.token_urlsafe(32),
            }
        )
    else:
        env.update(integrations.secrets)
    env.update(overrides or {})
    settings = load_settings(config_path, env)
    log_dir = tmp / "logs"
    log_dir.mkdir()
    return Stack(run_id, config_path, env, settings, log_dir, vhost)


# Log events worth counting in a test's summary, whatever their level.
TELLING_EVENTS = frozenset({"credit_applied", "credit_already_applied", "checkout_created", "order_status_changed"})


@dataclass
class ServiceProcess:
    """One process of a service. ``ServiceProcess(name, stack)`` listens where the stack's config says;
    :meth:`replica` makes another one of the same service, against the same databases and vhost, on
    ports of its own (given to it as ``EVTOPUP__SERVICES__<NAME>_PORT`` / ``..._INTERNAL_PORT``)."""

    name: str
    stack: Stack
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    replica_index: int = 1
    port: int | None = None
    internal_port: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def replica(cls, name: str, stack: Stack, index: int = 2, env: dict[str, str] | None = None) -> ServiceProcess:
        """Replica ``index`` (≥ 2) of ``name`` on free ports. A page or payments replica also serves its
        own public URLs (return pages, the sandbox's hosted page and webhooks), as if behind a host of
        its own, so that the work a driver or the processor starts on it stays on it."""
        assert index >= 2, "replica 1 is the stack's own process: ServiceProcess(name, stack)"
        port, internal_port = free_ports(2)
        return cls(name, stack, replica_index=index, port=port, internal_port=internal_port, extra_env=dict(env or {}))

    @property
    def label(self) -> str:
        """``crediting`` for the stack's own process, ``crediting-2`` for a second replica."""
        return self.name if self.replica_index == 1 else f"{self.name}-{self.replica_index}"

    def url(self, path: str = "") -> str:
        if self.port is None:
            return self.stack.url(self.name, path)
        return f"http://127.0.0.1:{self.port}{path}"

    def internal_url(self, path: str = "") -> str:
        if self.internal_port is None:
            return self.stack.internal_url(self.name, path)
        return f"http://127.0.0.1:{self.internal_port}{path}"

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.stack.env}
        prefix = f"EVTOPUP__SERVICES__{self.name.upper()}"
        if self.port is not None:
            env[f"{prefix}_PORT"] = str(self.port)
            if self.name == "page":
                env["EVTOPUP__SERVICES__PAGE_PUBLIC_URL"] = self.url()
            elif self.name == "payments":
                env["EVTOPUP__SERVICES__PAYMENTS_PUBLIC_URL"] = self.url()
                env["EVTOPUP__SERVICES__PAYMENTS_INTERNAL_URL"] = self.url()
        if self.internal_port is not None:
            env[f"{prefix}_INTERNAL_PORT"] = str(self.internal_port)
        env.update(self.extra_env)
        return env

    def _log_path(self, start: int) -> Path:
        return self.stack.log_dir / f"{self.label}.{start}.log"

    def start(self) -> None:
        self.starts += 1
        log = open(self._log_path(self.starts), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--config", str(self.stack.config_path), "run", self.name],
            env=self.environment(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"{self.label} exited: {self.logs()}"
                try:
                    async with http.get(self.internal_url("/readyz")) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.label} not ready in {timeout_s}s: {self.logs()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.label} did not stop on SIGTERM") from None

    def logs(self) -> str:
        """The end of the current run's log (for failure messages)."""
        path = self._log_path(self.starts)
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def all_logs(self) -> str:
        """Every run's whole log, oldest first (this process was maybe killed and started again)."""
        return "".join(
            self._log_path(start).read_text(errors="replace")
            for start in range(1, self.starts + 1)
            if self._log_path(start).exists()
        )

    def log_records(self) -> list[dict[str, Any]]:
        """Every run's JSON log lines, parsed (other lines skipped)."""
        records = []
        for line in self.all_logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of every run whose ``event`` is ``event``."""
        return [record for record in self.log_records() if record.get("event") == event]

    async def metric(self, name: str) -> float:
        """The sum of every sample of the Prometheus metric ``name`` this process serves now."""
        async with aiohttp.ClientSession() as http, http.get(self.internal_url("/metrics")) as response:
            assert response.status == 200, await response.text()
            text = await response.text()
        total = 0.0
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == name or sample.startswith(name + "{"):
                total += float(value)
        return total

    def log_summary(self) -> dict[str, int]:
        """How many log lines of each event at warning level or above, and of a few telling ones."""
        counts: dict[str, int] = {}
        for record in self.log_records():
            event = str(record.get("event"))
            if record.get("level") in ("warning", "error", "critical") or event in TELLING_EVENTS:
                counts[event] = counts.get(event, 0) + 1
        return counts


@dataclass
class Driver:
    """A driver's view: launch tokens, the page's API, the sandbox's hosted page, balances."""

    stack: Stack
    http: aiohttp.ClientSession
    # Another page replica's base URL (ServiceProcess.url()); the stack's own page by default.
    page_url: str | None = None

    def page(self, path: str = "") -> str:
        return f"{self.page_url}{path}" if self.page_url else self.stack.url("page", path)

    def token(self, user_id: str, locale: str = "en", ttl_s: int = 600, now_s: int | None = None) -> str:
        now_s = int(time.time()) if now_s is None else now_s
        # A fresh jti each time: the page exchanges a launch token for a session only once.
        return jwt.encode(
            {"sub": user_id, "locale": locale, "iat": now_s, "exp": now_s + ttl_s, "jti": uuid.uuid4().hex},
            self.stack.launch_secret,
            algorithm="HS256",
        )

    async def create_topup(
        self, user_id: str, body: dict[str, Any] | bytes, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token(user_id)}", "Content-Type": "application/json"}
        headers["Idempotency-Key"] = key or str(uuid.uuid4())
        data = body if isinstance(body, bytes) else None
        async with self.http.post(
            self.page("/api/v1/topups"),
            json=None if data is not None else body,
            data=data,
            headers=headers,
        ) as response:
            return response.status, await response.json(content_type=None)

    async def get_topup(self, user_id: str, order_id: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(
            self.page(f"/api/v1/topups/{order_id}"),
            headers={"Authorization": f"Bearer {self.token(user_id)}"},
        ) as response:
            return response.status, await response.json(content_type=None)

    async def pay(self, redirect_url: str, outcome: str = "succeeded") -> str:
        """Press Pay (or Decline) on the sandbox's hosted page; returns where the browser goes next."""
        async with self.http.post(redirect_url, data={"outcome": outcome}, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
            return response.headers["Location"]

    async def balance(self, user_id: str) -> int:
        async with self.http.get(
            self.stack.url("crediting", f"/api/v1/users/{user_id}/balance"),
            headers={"Authorization": f"Bearer {self.stack.api_token}"},
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
            return int(body["balance_minor"])

    async def wait_status(self, user_id: str, order_id: str, status: str, timeout_s: float = 30) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            _, body = await self.get_topup(user_id, order_id)
            return body if body["status"] == status else None

        return await eventually(check, timeout_s, f"order {order_id} never became {status}")


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float, message: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(0.1)


async def retrying(action: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 60) -> T:
    """What a driver or a processor does when a service is down or slow: the same request again,
    until ``action`` returns something other than None."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await action()
            if result is not None:
                return result
        except (TimeoutError, aiohttp.ClientError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never succeeded")
        await asyncio.sleep(0.2)


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


# --- A stack of its own, faults, and the invariants every fault test ends with ---------------------

SUPERUSER = "postgres"


def superuser_dsn(stack: Stack, service: str | None = None) -> str:
    """``service``'s database (or the maintenance database) reached as the PostgreSQL superuser:
    for the tests' own checks and faults, whatever role the service itself connects as."""
    database = stack.dsn(service).rsplit("/", 1)[1].split("?")[0] if service else "postgres"
    return f"postgresql://{SUPERUSER}@127.0.0.1:5432/{database}"


def scratch_dsn(stack: Stack, label: str) -> str:
    """A database name of the stack's own for a test's scratch database, reached as the superuser."""
    return f"postgresql://{SUPERUSER}@127.0.0.1:5432/evtopup_test_{stack.run_id}_{label}_{secrets.token_hex(3)}"


@contextlib.asynccontextmanager
async def own_stack(
    tmp: Path, overrides: Mapping[str, str] | None = None, integrations: Integrations | None = None
) -> AsyncIterator[Stack]:
    """A stack nobody else's test disturbs (or that disturbs nobody), set up as an operator would:
    a vhost with evtopup's policies, each service's own broker user and database role (created by
    ``evtopup broker-users`` and ``evtopup setup``), databases and topology; all removed afterwards.
    The session ``stack`` fixture (tests/conftest.py) and the benchmark use it too."""
    from services.cli import SERVICES, setup  # the services' import graph only when a stack is made
    from shared import amqp, db
    from shared.broker_access import provision_with_rabbitmqctl

    stack = make_stack(tmp, overrides, integrations)
    rabbitmqctl("add_vhost", stack.vhost)
    users: list[str] = []
    try:
        rabbitmqctl("set_permissions", "-p", stack.vhost, "guest", ".*", ".*", ".*")
        amqp.apply_policies(stack.vhost, amqp.broker_policies(stack.settings.amqp.delivery_limit))
        users = provision_with_rabbitmqctl(stack.settings.amqp)
        await setup(stack.settings)
        yield stack
    finally:
        for service in SERVICES:
            with contextlib.suppress(Exception):
                await allow_connections(stack, service)
            await db.drop_database(stack.dsn(service), stack.settings.databases.admin)
        rabbitmqctl("delete_vhost", stack.vhost)
        for user in users:
            rabbitmqctl("delete_user", user)


async def start_all(processes: Iterable[ServiceProcess], timeout_s: float = 60) -> None:
    """Start ``processes`` together and wait until every one is ready."""
    processes = list(processes)
    for process in processes:
        process.start()
    await asyncio.gather(*(process.wait_ready(timeout_s) for process in processes))


@contextlib.asynccontextmanager
async def services_running(stack: Stack) -> AsyncIterator[list[ServiceProcess]]:
    """The three services of ``stack`` started and ready for the block, stopped after it."""
    from services.cli import SERVICES

    processes = [ServiceProcess(service, stack) for service in SERVICES]
    try:
        await start_all(processes)
        yield processes
    finally:
        for process in processes:
            process.stop()


def stop_all(processes: Iterable[ServiceProcess]) -> dict[str, int]:
    """SIGTERM each, in turn; the exit codes by label (0 is a clean stop)."""
    codes = {}
    for process in processes:
        try:
            codes[process.label] = process.stop()
        except AssertionError:
            codes[process.label] = -signal.SIGKILL
    return codes


async def refuse_connections(stack: Stack, service: str) -> None:
    """Take ``service``'s database away without stopping PostgreSQL: no new connection is allowed
    (not even the superuser's) and every open one is terminated."""
    name = superuser_dsn(stack, service).rsplit("/", 1)[1]
    conn = await asyncpg.connect(superuser_dsn(stack))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()


async def allow_connections(stack: Stack, service: str) -> None:
    name = superuser_dsn(stack, service).rsplit("/", 1)[1]
    conn = await asyncpg.connect(superuser_dsn(stack))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    finally:
        await conn.close()


async def queue_message_count(stack: Stack, queue_name: str) -> int | None:
    """Messages waiting in one of the stack's queues (a passive declare: nothing is consumed);
    None if there is no such queue."""
    import aio_pika

    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}", timeout=10)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:  # NOT_FOUND
            return None
        assert queue.declaration_result.message_count is not None
        return int(queue.declaration_result.message_count)


async def dead_letter_count(stack: Stack) -> int:
    """Messages waiting in the stack's dead-letter queue."""
    from shared.amqp import DEAD_LETTER_QUEUE

    count = await queue_message_count(stack, DEAD_LETTER_QUEUE)
    assert count is not None, f"no {DEAD_LETTER_QUEUE} queue in {stack.vhost}"
    return count


async def _has_column(dsn: str, table: str, column: str) -> bool:
    rows = await fetch(
        dsn, "SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2", table, column
    )
    return bool(rows)


async def _has_table(dsn: str, table: str) -> bool:
    return bool(await fetch(dsn, "SELECT 1 FROM information_schema.tables WHERE table_name = $1", table))


async def assert_exactly_once(
    stack: Stack,
    paid: Mapping[str, tuple[str, int]],
    declined: Iterable[str] = (),
    *,
    timeout_s: float = 120,
    currency: str = "EUR",
) -> None:
    """The invariants after a stream of top-ups, whatever happened meanwhile. ``paid`` maps each paid
    order id to (user id, what the user is to be credited: amount + bonus); ``declined`` are order ids
    never paid. Waits up to ``timeout_s`` for every paid order to be credited, then checks:
    one payment per order; one transfer per paid payment and none for a declined one; each user's
    balance is exactly the sum of their credits and of the postings to their account; every
    transfer, and so the whole ledger, sums to zero; every outbox drained (rows the relay parked
    aside excepted) and nothing deferred; nothing dead-lettered."""
    from services.crediting.domain import user_account

    paid_ids = [uuid.UUID(order_id) for order_id in paid]
    declined_ids = [uuid.UUID(order_id) for order_id in declined]
    page_dsn, payments_dsn, crediting_dsn = (superuser_dsn(stack, s) for s in ("page", "payments", "crediting"))

    async def all_credited() -> bool:
        rows = await fetch(
            page_dsn, "SELECT count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) AND status = 'credited'", paid_ids
        )
        return rows[0]["n"] == len(paid_ids)

    try:
        await eventually(all_credited, timeout_s, "")
    except AssertionError:
        rows = await fetch(
            page_dsn,
            "SELECT status, count(*) AS n FROM orders WHERE id = ANY($1::uuid[]) GROUP BY status",
            paid_ids,
        )
        raise AssertionError(
            f"not every paid top-up was credited within {timeout_s}s: {sorted((r['status'], r['n']) for r in rows)}"
        ) from None

    all_ids = paid_ids + declined_ids
    payments = await fetch(
        payments_dsn,
        "SELECT order_id, count(*) AS n, min(id::text) AS payment_id, min(status) AS status FROM payments"
        " WHERE order_id = ANY($1::uuid[]) GROUP BY order_id",
        all_ids,
    )
    assert {r["order_id"] for r in payments} == set(all_ids), "an order has no payment"
    assert [str(r["order_id"]) for r in payments if r["n"] != 1] == [], "an order has more than one payment"
    status_of = {str(r["order_id"]): r["status"] for r in payments}
    assert {o: s for o, s in status_of.items() if uuid.UUID(o) in set(paid_ids) and s != "succeeded"} == {}
    if declined_ids:
        rows = await fetch(
            page_dsn, "SELECT id, status FROM orders WHERE id = ANY($1::uuid[]) AND status <> 'failed'", declined_ids
        )
        assert rows == [], "a declined top-up is not failed"

    transfers = await fetch(
        crediting_dsn,
        "SELECT order_id, payment_id, count(*) OVER (PARTITION BY payment_id) AS per_payment FROM transfers"
        " WHERE order_id = ANY($1::uuid[])",
        all_ids,
    )
    per_order: dict[str, list[str]] = {}
    for row in transfers:
        per_order.setdefault(str(row["order_id"]), []).append(str(row["payment_id"]))
    assert [r["payment_id"] for r in transfers if r["per_payment"] != 1] == [], "a payment was transferred twice"
    assert {o: len(p) for o, p in per_order.items() if len(p) != 1} == {}, "an order was transferred twice"
    assert set(per_order) == {str(i) for i in paid_ids}, "a paid order has no transfer, or a declined one has one"
    payment_of = {str(r["order_id"]): r["payment_id"] for r in payments}
    assert {o: p[0] for o, p in per_order.items() if p[0] != payment_of[o]} == {}, "a transfer names another payment"

    expected: dict[str, int] = {}
    for user_id, credit in paid.values():
        expected[user_id] = expected.get(user_id, 0) + credit
    users = sorted(expected)
    balances = await fetch(
        crediting_dsn,
        "SELECT user_id, balance_minor FROM user_balances WHERE user_id = ANY($1::text[]) AND currency = $2"
        " AND environment = 'production'",
        users,
        currency,
    )
    assert {r["user_id"]: r["balance_minor"] for r in balances} == expected, "a balance is not the sum of its credits"
    postings = await fetch(
        crediting_dsn,
        "SELECT account, sum(amount_minor) AS s FROM postings WHERE account = ANY($1::text[]) AND currency = $2"
        " GROUP BY account",
        [user_account(u) for u in users],
        currency,
    )
    assert {r["account"]: r["s"] for r in postings} == {user_account(u): b for u, b in expected.items()}, (
        "a user's balance is not the sum of the postings to their account"
    )
    unbalanced = await fetch(
        crediting_dsn, "SELECT transfer_id FROM postings GROUP BY transfer_id HAVING sum(amount_minor) <> 0"
    )
    assert unbalanced == [], "a transfer does not sum to zero"
    total = await fetch(crediting_dsn, "SELECT coalesce(sum(amount_minor), 0) AS s FROM postings")
    assert total[0]["s"] == 0, "the ledger does not sum to zero"

    async def outboxes_drained() -> bool:
        for service in ("page", "payments", "crediting"):
            dsn = superuser_dsn(stack, service)
            parked = " WHERE parked_at IS NULL" if await _has_column(dsn, "outbox", "parked_at") else ""
            if (await fetch(dsn, f"SELECT count(*) AS n FROM outbox{parked}"))[0]["n"]:
                return False
        return True

    await eventually(outboxes_drained, 30, "an outbox did not drain")
    for service in ("page", "payments", "crediting"):
        dsn = superuser_dsn(stack, service)
        if await _has_table(dsn, "deferred_messages"):
            rows = await fetch(dsn, "SELECT queue, message_type, reason FROM deferred_messages")
            assert rows == [], f"{service} set messages aside: {rows[:5]}"
    assert await dead_letter_count(stack) == 0, "something was dead-lettered"
    from shared import amqp

    unroutable = getattr(amqp, "UNROUTABLE_QUEUE", None)
    if unroutable is not None:
        assert await queue_message_count(stack, unroutable) in (0, None), "an event matched no queue"
