"""Test harness: a stack of its own (databases, vhost, ports, secrets) on the real PostgreSQL and
RabbitMQ, the three services as real processes, and a driver's HTTP client."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


CONFIG_TEMPLATE = """
log_level = "info"
deployment = "demo"

[operator]
name = "Test CPO"
currency = "EUR"
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

[integrations.sandbox_main]
processor = "sandbox"
environment = "production"
methods = ["card", "wallet"]
fees = {{ wallet = {{ fixed_minor = 25, rate_bp = 200 }} }}

[integrations.sandbox_trial]
processor = "sandbox"
environment = "test"
methods = ["card"]
test_users = ["tester-1"]

[amqp]
url = "amqp://127.0.0.1:5672/{vhost}"
username = "guest"
prefetch = 50
delivery_limit = 3
rpc_timeout_s = 3

[databases]
page = "postgresql://postgres@127.0.0.1:5432/{db}_page"
payments = "postgresql://postgres@127.0.0.1:5432/{db}_payments"
crediting = "postgresql://postgres@127.0.0.1:5432/{db}_crediting"
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


def make_stack(tmp: Path) -> Stack:
    run_id = f"{os.getpid()}_{secrets.token_hex(3)}"
    vhost = f"evtopup_test_{run_id}"
    page_port, payments_port, crediting_port, page_internal, payments_internal, crediting_internal = free_ports(6)
    config_path = tmp / "evtopup.toml"
    config_path.write_text(
        CONFIG_TEMPLATE.format(
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
        "EVTOPUP__INTEGRATIONS__SANDBOX_MAIN__API_KEY": secrets.token_urlsafe(32),
        "EVTOPUP__INTEGRATIONS__SANDBOX_MAIN__WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "EVTOPUP__INTEGRATIONS__SANDBOX_TRIAL__API_KEY": secrets.token_urlsafe(32),
        "EVTOPUP__INTEGRATIONS__SANDBOX_TRIAL__WEBHOOK_SECRET": secrets.token_urlsafe(32),
    }
    settings = load_settings(config_path, env)
    log_dir = tmp / "logs"
    log_dir.mkdir()
    return Stack(run_id, config_path, env, settings, log_dir, vhost)


@dataclass
class ServiceProcess:
    name: str
    stack: Stack
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.stack.log_dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--config", str(self.stack.config_path), "run", self.name],
            env={**os.environ, **self.stack.env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited: {self.logs()}"
                try:
                    async with http.get(self.stack.internal_url(self.name, "/readyz")) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout_s}s: {self.logs()}")

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
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None

    def logs(self) -> str:
        path = self.stack.log_dir / f"{self.name}.{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@dataclass
class Driver:
    """A driver's view: launch tokens, the page's API, the sandbox's hosted page, balances."""

    stack: Stack
    http: aiohttp.ClientSession

    def token(self, user_id: str, locale: str = "en", ttl_s: int = 600, now_s: int | None = None) -> str:
        now_s = int(time.time()) if now_s is None else now_s
        return jwt.encode(
            {"sub": user_id, "locale": locale, "iat": now_s, "exp": now_s + ttl_s},
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
            self.stack.url("page", "/api/v1/topups"),
            json=None if data is not None else body,
            data=data,
            headers=headers,
        ) as response:
            return response.status, await response.json(content_type=None)

    async def get_topup(self, user_id: str, order_id: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(
            self.stack.url("page", f"/api/v1/topups/{order_id}"),
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


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()
