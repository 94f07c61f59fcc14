"""The ``evtopup`` command as a user runs it: setup again reuses what exists, a launch URL works,
taken ports and bad configuration are one clear line, and Ctrl-C stops ``run all`` cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from tests.harness import REPO, Stack, free_ports

pytestmark = [pytest.mark.e2e]


def evtopup(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(stack.config_path), *args],
        env={**os.environ, **stack.env, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_setup_again_reuses_what_exists(stack: Stack) -> None:
    result = evtopup(stack, "setup")
    assert result.returncode == 0, result.stderr
    for service in ("page", "payments", "crediting"):
        assert f"{service}: database present, 0 migration(s) applied" in result.stdout
    assert "broker: topology declared" in result.stdout


@pytest.mark.usefixtures("services")
async def test_launch_url_opens_the_page(stack: Stack) -> None:
    result = evtopup(stack, "launch-url", "--user", "cli-user", "--locale", "bg")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(stack.url("page", "/topup?token="))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser, browser.get(url) as page:
        assert page.status == 200
        assert "Заредете баланса си" in await page.text()


@pytest.mark.usefixtures("services")
def test_taken_port_is_one_clear_line(stack: Stack) -> None:
    result = evtopup(stack, "run", "all")
    assert result.returncode == 2
    assert result.stderr.startswith("evtopup: error: port ")
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EVTOPUP__LAUNCH__SECRET": "tiny-secret-XYZ"}, "launch.secret: must be at least 32 characters"),
        ({"EVTOPUP__SERVICES__PAGE_PORT": "seventy"}, "services.page_port:"),
        ({"EVTOPUP__AMQP__URL": "amqp://guest:pw@127.0.0.1/x"}, "amqp.url:"),
        ({"EVTOPUP__DATABASES__PAGE": "postgresql://postgres@127.0.0.1:1/evtopup_x"}, "is not answering"),
    ],
)
def test_bad_configuration_or_unreachable_server_is_one_clear_line(
    stack: Stack, env: dict[str, str], expected: str
) -> None:
    result = evtopup(stack, "migrate", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("evtopup: error: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "tiny-secret-XYZ" not in result.stderr  # a secret's value is never shown


LAUNCH_URL_DEADLINE_S = 60


async def read_until(process: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    """The first line of ``process``'s stdout that starts with ``prefix``, read with a deadline: a
    process that goes quiet fails the test instead of hanging it (the caller kills the process,
    which ends the blocked read)."""
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    seen: list[str] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no line starting with {prefix!r} in {timeout_s}s; last lines: {seen[-5:]}")
        try:
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), remaining)
        except TimeoutError:
            raise AssertionError(f"no line starting with {prefix!r} in {timeout_s}s; last lines: {seen[-5:]}") from None
        if not line:
            raise AssertionError(f"the process exited ({process.poll()}) before printing {prefix!r}: {seen[-5:]}")
        if line.startswith(prefix):
            return line
        seen.append(line.rstrip())


async def test_read_until_gives_up_on_a_silent_process() -> None:
    # The guard itself: a process that prints nothing fails within the deadline, not never.
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(AssertionError, match="starting"):
            await read_until(process, "http://", 1)
        assert asyncio.get_running_loop().time() - started < 10
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.timeout(180)
async def test_ctrl_c_stops_run_all_cleanly(stack: Stack) -> None:
    ports = free_ports(6)
    env = {
        **os.environ,
        **stack.env,
        "EVTOPUP__SERVICES__PAGE_PORT": str(ports[0]),
        "EVTOPUP__SERVICES__PAYMENTS_PORT": str(ports[1]),
        "EVTOPUP__SERVICES__CREDITING_PORT": str(ports[2]),
        "EVTOPUP__SERVICES__PAGE_INTERNAL_PORT": str(ports[3]),
        "EVTOPUP__SERVICES__PAYMENTS_INTERNAL_PORT": str(ports[4]),
        "EVTOPUP__SERVICES__CREDITING_INTERNAL_PORT": str(ports[5]),
        "EVTOPUP__SERVICES__PAGE_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "--config",
            str(stack.config_path),
            "run",
            "all",
            "--launch-url-for",
            "cli-user",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        assert process.stdout is not None
        await read_until(process, f"http://127.0.0.1:{ports[0]}/topup?token=", LAUNCH_URL_DEADLINE_S)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr + stdout
    stopping = [json.loads(line)["service"] for line in stdout.splitlines() if '"service_stopping"' in line]
    assert sorted(stopping) == ["crediting", "page", "payments"]
