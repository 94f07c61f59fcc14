"""Retention: a janitor that removes plumbing rows past their age (the inbox, and whatever a service
registers), in bounded batches, every ``retention.interval_s``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.logging import get_logger
from shared.metrics import RETENTION_DELETED

log = get_logger(__name__)

BATCH_SIZE = 1000
# At most this many batches per rule and run: a huge backlog is worked off over several runs.
MAX_BATCHES_PER_RUN = 100

INBOX_RETENTION_SQL = (
    "DELETE FROM inbox WHERE message_id IN (SELECT message_id FROM inbox WHERE received_at < $1 LIMIT $2)"
)


@dataclass(frozen=True)
class RetentionRule:
    """``sql`` removes (or clears) at most ``$2`` rows older than ``$1`` (a timestamptz)."""

    name: str
    sql: str
    days: float


class Janitor:
    def __init__(self, service: str, pool: asyncpg.Pool, interval_s: float) -> None:
        self.service = service
        self.pool = pool
        self.interval_s = interval_s
        self.rules: list[RetentionRule] = []

    def add(self, rule: RetentionRule) -> None:
        self.rules.append(rule)

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("retention_failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)

    async def run_once(self, batch_size: int = BATCH_SIZE) -> dict[str, int]:
        """Apply every rule once; returns the rows affected per rule."""
        affected: dict[str, int] = {}
        for rule in self.rules:
            cutoff = datetime.now(UTC) - timedelta(days=rule.days)
            total = 0
            for _ in range(MAX_BATCHES_PER_RUN):
                status = await self.pool.execute(rule.sql, cutoff, batch_size)
                # The command tag ends with the row count: "DELETE 1000", "UPDATE 12".
                count = int(status.rsplit(" ", 1)[-1])
                total += count
                if count < batch_size:
                    break
            RETENTION_DELETED.labels(self.service, rule.name).inc(total)
            if total:
                log.info("retention_applied", rule=rule.name, rows=total)
            affected[rule.name] = total
        return affected
