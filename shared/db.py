"""PostgreSQL plumbing: pools, creating a service's database, and numbered SQL migrations."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

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


def _maintenance_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/postgres"))


def _where(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {_where(dsn)} is not answering: {exc}") from None


async def create_pool(dsn: str, max_size: int) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {_where(dsn)} is not answering: {exc}") from None
    assert pool is not None
    return pool


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it is missing; True if it was created."""
    name = _database_name(dsn)
    conn = await connect(_maintenance_dsn(dsn))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        log.info("database_created", database=name)
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    name = _database_name(dsn)
    conn = await connect(_maintenance_dsn(dsn))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
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


async def migrate(dsn: str, components: dict[str, Path]) -> list[str]:
    """Apply each migration not yet applied, each in its own transaction; returns what was applied.

    ``components`` maps a name to a directory of numbered files: the shared plumbing tables (outbox,
    inbox) and the service's own tables are numbered independently."""
    applied: list[str] = []
    conn = await connect(dsn)
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
