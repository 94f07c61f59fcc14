"""Fixtures shared by the integration and end-to-end tests. Each run gets its own databases, vhost
and ports on the real PostgreSQL and RabbitMQ, and removes them afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from services.cli import SERVICES
from tests.harness import Driver, ServiceProcess, Stack, own_stack


def pytest_sessionstart(session: pytest.Session) -> None:
    """The page reads compiled catalogues (``make catalogs``): compiled here too, so that a plain
    ``pytest`` (and the services it starts) speaks every language."""
    from services.page import catalogs

    catalogs.compile_all()


@pytest_asyncio.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest_asyncio.fixture(scope="session")
async def services(stack: Stack) -> AsyncIterator[dict[str, ServiceProcess]]:
    processes = {name: ServiceProcess(name, stack) for name in SERVICES}
    for process in processes.values():
        process.start()
    try:
        for process in processes.values():
            await process.wait_ready()
        yield processes
    finally:
        exit_codes = {name: process.stop() for name, process in processes.items()}
    # SIGTERM is a clean stop, not a crash.
    assert exit_codes == dict.fromkeys(processes, 0), exit_codes


@pytest_asyncio.fixture
async def driver(stack: Stack) -> AsyncIterator[Driver]:
    async with aiohttp.ClientSession() as http:
        yield Driver(stack, http)
