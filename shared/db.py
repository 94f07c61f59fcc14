"""PostgreSQL plumbing: pools, creating a service's database, and numbered SQL migrations."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

# What a transaction runs on: a plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every process migrating one database.
MIGRATION_LOCK_KEY = 7_460_110


def record_to(cls: type[T], row: asyncpg.Record, **converted: Any) -> T:
    """The dataclass ``cls`` from a row: each field from the column of its name, or from ``converted``."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: converted[f.name] if f.name in converted else row[f.name] for f in fields})


class DatabaseUnavailable(Exception):
    pass


def _database_name(dsn: str) -> str:
    name = urlsplit(dsn).path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"database name {name!r} must be letters, digits and underscores")
    return name


def with_password(dsn: str, password: str | None) -> str:
    if password is None:
        return dsn
    parts = urlsplit(dsn)
    user, host = parts.netloc.split("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _maintenance_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/postgres"))


def _where(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


async def connect(dsn: str, password: str | None = None) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, password=password, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {_where(dsn)} is not answering: {exc}") from None


async def rounds_on_notify(
    dsn: str,
    channel: str,
    wake: asyncio.Event,
    one_round: Callable[[], Awaitable[bool]],
    *,
    idle_s: float,
    failure_backoff_s: float,
    failure_event: str,
) -> None:
    """Run ``one_round`` forever: again at once while it says there is more to do, else when
    ``channel`` is NOTIFYed (or ``wake`` set) or after ``idle_s``. LISTEN holds a connection of its
    own (never the pool's), opened again whenever the database dropped it; a failing round is
    logged as ``failure_event`` and tried again after ``failure_backoff_s``."""
    listener: asyncpg.Connection | None = None
    try:
        while True:
            # Cleared before the round, not after: a commit notified during the round must still
            # wake the next one instead of waiting out the idle poll.
            wake.clear()
            try:
                if listener is None or listener.is_closed():
                    listener = await asyncpg.connect(dsn, timeout=10)
                    await listener.add_listener(channel, lambda *_: wake.set())
                more = await one_round()
            except Exception as exc:
                log.warning(failure_event, error=repr(exc))
                await asyncio.sleep(failure_backoff_s)
                continue
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), idle_s)
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=5)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """What the pool does to a connection handed back, beyond ending its transaction: nothing. The
    default is one more round trip per use (``RESET ALL; UNLISTEN *; ...``) for session state that
    pooled connections never hold here (LISTEN and advisory locks use connections of their own)."""


async def create_pool(dsn: str, max_size: int, password: str | None = None) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn, password=password, min_size=1, max_size=max_size, timeout=10, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {_where(dsn)} is not answering: {exc}") from None
    assert pool is not None
    return pool


def role_name(dsn: str) -> str:
    name = urlsplit(dsn).username or ""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"role name {name!r} must be letters, digits and underscores")
    return name


async def provision_database(admin_dsn: str, admin_password: str | None, dsn: str, password: str | None) -> bool:
    """Make the role and database of ``dsn`` exist, the role owning the database and everything in
    it, and no other role allowed to connect (least privilege); True if the database was created.
    Runs as the operator's ``admin_dsn`` account, which may create roles and databases."""
    name, role = _database_name(dsn), role_name(dsn)
    conn = await connect(admin_dsn, admin_password)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f'CREATE ROLE "{role}" LOGIN')
            log.info("role_created", role=role)
        if password is not None:
            # format(%L) quotes the password as a literal; it never appears in a log.
            statement = await conn.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', $1, $2)", role, password)
            await conn.execute(statement)
        created = False
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
                created = True
                log.info("database_created", database=name)
            except asyncpg.DuplicateDatabaseError:
                pass
        await conn.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
        await conn.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
    finally:
        await conn.close()
    if not created:
        await _hand_over(admin_dsn, admin_password, name, role)
    return created


async def _hand_over(admin_dsn: str, admin_password: str | None, name: str, role: str) -> None:
    """A database made before roles were separated: its tables, sequences, views and functions pass
    to the service's role, so that the service, and only it, can migrate and use them."""
    conn = await connect(urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}")), admin_password)
    try:
        # ``role`` is letters, digits and underscores (role_name), so it is safe inside the literal.
        await conn.execute(f"""
            DO $$
            DECLARE object record;
            BEGIN
                FOR object IN SELECT c.relname, c.relkind FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v') LOOP
                    EXECUTE format('ALTER %s public.%I OWNER TO %I',
                        CASE object.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END,
                        object.relname, '{role}');
                END LOOP;
                FOR object IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                        JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' LOOP
                    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', object.signature, '{role}');
                END LOOP;
            END $$
            """)
    finally:
        await conn.close()


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it is missing, as ``dsn``'s own role (scratch
    databases in tests); True if it was created. Services' databases: :func:`provision_database`."""
    name = _database_name(dsn)
    conn = await connect(_maintenance_dsn(dsn))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str, admin_dsn: str | None = None) -> None:
    """Drop the database of ``dsn``, as ``admin_dsn`` if given (then its role too), else as ``dsn``'s role."""
    name = _database_name(dsn)
    conn = await connect(admin_dsn or _maintenance_dsn(dsn))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if admin_dsn is not None:
            await conn.execute(f'DROP ROLE IF EXISTS "{role_name(dsn)}"')
    finally:
        await conn.close()


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    for path in sorted(directory.iterdir()):
        match = MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{directory}: migrations must be numbered 001, 002, ... without gaps")
    return found


async def migrate(dsn: str, components: dict[str, Path], password: str | None = None) -> list[str]:
    """Apply each migration not yet applied, each in its own transaction; returns what was applied.

    ``components`` maps a name to a directory of numbered files: the shared plumbing tables (outbox,
    inbox) and the service's own tables are numbered independently."""
    applied: list[str] = []
    conn = await connect(dsn, password)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component text NOT NULL, version integer NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        done = {(r["component"], r["version"]) for r in await conn.fetch("SELECT * FROM schema_migrations")}
        for component, directory in components.items():
            for version, path in migration_files(directory):
                if (component, version) in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                        component,
                        version,
                        path.name,
                    )
                applied.append(f"{component}/{path.name}")
                log.info("migration_applied", database=_database_name(dsn), migration=applied[-1])
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied
