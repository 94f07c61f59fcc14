"""Runs the payments service's background jobs (polling, sweeping, re-examination, retention)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.logging import get_logger

log = get_logger(__name__)

# A job returns True when it did a full batch: more work is waiting, so it runs again at once.
Job = Callable[[], Awaitable[bool]]


async def run_every(name: str, interval_s: float, job: Job) -> None:
    while True:
        try:
            more = await job()
        except Exception as exc:  # a healing job must outlive any one failure (database restart...)
            log.warning("background_job_failed", job=name, error=repr(exc))
            more = False
        if not more:
            await asyncio.sleep(interval_s)
