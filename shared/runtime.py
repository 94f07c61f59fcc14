"""The life of one service process: database pool, broker connection, outbox relay, retention
janitor, HTTP site, background tasks, a reload of ``[integrations]`` on SIGHUP or ``POST /reload`` (the
internal port), and a clean stop on SIGTERM or Ctrl-C: consumers cancelled and their handlers finished
first, then background tasks, the broker connection, and the pool last."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aiohttp import web

from shared import amqp, db
from shared.http import add_health_routes, service_middleware, start_site
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.retention import INBOX_RETENTION_SQL, Janitor, RetentionRule
from shared.settings import ConfigError, Settings, apply_reload, changed_integrations, reloaded_settings

log = get_logger(__name__)

POOL_KEY = web.AppKey("pool", asyncpg.Pool)
ReloadHook = Callable[[frozenset[str]], Awaitable[None]]
# How long a stop waits for the message handlers and RPCs already running to finish.
CONSUMER_STOP_TIMEOUT_S = 10.0
SETTINGS_KEY = web.AppKey("settings", Settings)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
SERVICES_DIR = Path(__file__).parent.parent / "services"


def service_dsn(settings: Settings, service: str) -> str:
    """How ``service`` reaches its own database, as its own role; a configured password joins the
    DSN here, in memory only (logs name only host and port)."""
    return db.with_password(settings.databases.dsn(service), settings.databases.password(service))


def service_port(settings: Settings, service: str) -> int:
    port: int = getattr(settings.services, f"{service}_port")
    return port


def internal_port(settings: Settings, service: str) -> int:
    """Where the service's /healthz, /readyz and /metrics are served (never exposed publicly)."""
    port: int = getattr(settings.services, f"{service}_internal_port")
    return port


def migration_components(service: str) -> dict[str, Path]:
    return {"shared": SHARED_MIGRATIONS, service: SERVICES_DIR / service / "migrations"}


class Runtime:
    """What a service's ``build`` function gets to wire its routes, consumers and tasks onto."""

    def __init__(self, name: str, settings: Settings, config_path: str | None = None) -> None:
        self.name = name
        self.settings = settings
        self.config_path = config_path  # None: $EVTOPUP_CONFIG, as at the start
        self._reload_hooks: list[ReloadHook] = []
        self._reloading = asyncio.Lock()
        self.pool: asyncpg.Pool
        self.connection: AbstractRobustConnection
        self.exchange: AbstractExchange
        self.app = web.Application(middlewares=[service_middleware(name)], client_max_size=1024**2)
        self.internal_app = web.Application(middlewares=[service_middleware(name)])
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._consumers: list[amqp.Consumer] = []
        self._janitor: Janitor

    async def start(self) -> None:
        await db.migrate(service_dsn(self.settings, self.name), migration_components(self.name))
        self.pool = await db.create_pool(service_dsn(self.settings, self.name), self.settings.databases.pool_max_size)
        self.connection = await amqp.connect_robust(self.settings.amqp, self.name)
        # `evtopup setup` declares the topology; a service only looks up what it uses.
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = await amqp.existing_exchange(channel, amqp.EVENTS_EXCHANGE)
        relay = OutboxRelay(
            self.name,
            service_dsn(self.settings, self.name),
            self.pool,
            self.exchange,
            publisher=self.broker_user,
        )
        self.spawn(relay.run())
        self._janitor = Janitor(self.name, self.pool, self.settings.retention.interval_s)
        self.add_retention("inbox", INBOX_RETENTION_SQL, self.settings.retention.inbox_days)
        self.app[POOL_KEY] = self.pool
        self.app[SETTINGS_KEY] = self.settings
        add_health_routes(self.internal_app, [self._database_ready, self._broker_ready])
        self.internal_app.router.add_post("/reload", self._reload_endpoint)

    @property
    def broker_user(self) -> str:
        """The service's own broker user: the ``user_id`` on everything it publishes."""
        return self.settings.amqp.credentials(self.name)[0]

    async def _database_ready(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def _broker_ready(self) -> None:
        if self.connection.is_closed:
            raise ConnectionError("broker connection closed")

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_died", error=repr(task.exception()))

    def on_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        self._cleanups.append(cleanup)

    def add_consumer(self, consumer: amqp.Consumer) -> None:
        """A started consumer (IdempotentConsumer, RpcServer) to stop first on shutdown."""
        self._consumers.append(consumer)

    def on_reload(self, hook: ReloadHook) -> None:
        """``hook(changed)`` after a reload has added or changed the integrations ``changed``."""
        self._reload_hooks.append(hook)

    async def reload(self) -> frozenset[str]:
        """Read the configuration again and take its ``[integrations]`` (the integrations it added or
        changed are returned); ConfigError, with nothing changed, if it cannot be taken."""
        async with self._reloading:
            new = reloaded_settings(self.settings, self.config_path, service=self.name)
            changed = changed_integrations(self.settings, new)
            apply_reload(self.settings, new)
            for hook in self._reload_hooks:
                await hook(changed)
            active = sorted(i for i, s in self.settings.integrations.items() if s.active)
            log.info("settings_reloaded", changed=sorted(changed), active=active)
            return changed

    async def reload_logged(self) -> None:
        """SIGHUP's reload: a refusal is logged, and the service goes on as it was."""
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("settings_reload_refused", reason=str(exc))

    async def _reload_endpoint(self, _request: web.Request) -> web.Response:
        try:
            changed = await self.reload()
        except ConfigError as exc:
            log.error("settings_reload_refused", reason=str(exc))
            return web.json_response({"service": self.name, "reloaded": False, "error": str(exc)}, status=409)
        return web.json_response({"service": self.name, "reloaded": True, "changed": sorted(changed)})

    def add_retention(self, name: str, sql: str, days: float) -> None:
        """Have the janitor run ``sql`` every ``retention.interval_s``: it removes (or clears) at most
        ``$2`` rows older than ``$1`` (a timestamptz), and is repeated while it fills its batch."""
        self._janitor.add(RetentionRule(name, sql, days))

    def start_janitor(self) -> None:
        """Once ``build`` has registered its retention rules."""
        self.spawn(self._janitor.run())

    async def stop(self) -> None:
        # Take no new messages and let those being handled commit and ack, while the pool and the
        # broker connection they need are still there.
        await asyncio.gather(*(c.stop(CONSUMER_STOP_TIMEOUT_S) for c in self._consumers), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        with contextlib.suppress(Exception):
            await self.connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 10)


Build = Callable[[Runtime], Awaitable[None]]


async def serve(name: str, settings: Settings, build: Build, config_path: str | None = None) -> None:
    configure_logging(name, settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(name, settings, config_path)
    runners: list[web.AppRunner] = []
    try:
        await runtime.start()
        await build(runtime)
        runtime.start_janitor()
        runners.append(await start_site(runtime.app, settings.services.host, service_port(settings, name)))
        runners.append(
            await start_site(runtime.internal_app, settings.services.internal_host, internal_port(settings, name))
        )
        loop.add_signal_handler(signal.SIGHUP, lambda: runtime.spawn(runtime.reload_logged()))
        log.info("service_started", port=service_port(settings, name), internal_port=internal_port(settings, name))
        await stop.wait()
        log.info("service_stopping")
    finally:
        for runner in runners:
            await runner.cleanup()
        if hasattr(runtime, "pool"):
            await runtime.stop()
