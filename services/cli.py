"""The ``evtopup`` command: run services, set up databases and the broker, print launch URLs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlencode

from services.crediting import app as crediting_app
from services.page import app as page_app
from services.page.launch import issue_launch_token
from services.payments import app as payments_app
from shared import amqp, db
from shared.dead_letters import list_dead_letters, replay_dead_letters
from shared.http import PortInUse
from shared.runtime import Build, internal_port, migration_components, serve, service_dsn, service_port
from shared.settings import ConfigError, Settings, load_settings

SERVICES: dict[str, Build] = {
    page_app.NAME: page_app.build,
    payments_app.NAME: payments_app.build,
    crediting_app.NAME: crediting_app.build,
}
CHILD_STOP_TIMEOUT_S = 15
READY_TIMEOUT_S = 60


class CliError(Exception):
    pass


async def setup(settings: Settings) -> None:
    """Create each service's database if missing, migrate it, declare the broker topology."""
    for service in SERVICES:
        dsn = service_dsn(settings, service)
        created = await db.ensure_database(dsn)
        applied = await db.migrate(dsn, migration_components(service))
        print(f"{service}: database {'created' if created else 'present'}, {len(applied)} migration(s) applied")
    connection = await amqp.connect(settings.amqp)
    try:
        channel = await connection.channel()
        await amqp.declare_topology(channel, settings.amqp.delivery_limit)
    finally:
        await connection.close()
    print("broker: topology declared")


async def migrate(settings: Settings) -> None:
    for service in SERVICES:
        applied = await db.migrate(service_dsn(settings, service), migration_components(service))
        print(f"{service}: {len(applied)} migration(s) applied")


def launch_url(settings: Settings, user_id: str, locale: str | None, ttl_s: int) -> str:
    token = issue_launch_token(
        settings.launch.secret.get_secret_value(),
        user_id,
        locale or settings.operator.default_locale,
        int(time.time()),
        min(ttl_s, settings.launch.token_max_age_s),
    )
    return f"{settings.services.page_public_url.rstrip('/')}/topup?{urlencode({'token': token})}"


def _check_ports_free(settings: Settings, services: Sequence[str]) -> None:
    for service in services:
        for host, port, key in (
            (settings.services.host, service_port(settings, service), f"{service}_port"),
            (settings.services.internal_host, internal_port(settings, service), f"{service}_internal_port"),
        ):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError:
                    raise CliError(
                        f"port {port} ({service}) on {host} is already in use: "
                        f"stop what holds it or set EVTOPUP__SERVICES__{key.upper()}"
                    ) from None


def _wait_ready(settings: Settings, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    pending = set(SERVICES)
    while pending and time.monotonic() < deadline:
        for service in list(pending):
            url = f"http://{settings.services.internal_host}:{internal_port(settings, service)}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    pending.discard(service)
        time.sleep(0.2)
    return not pending


def run_all(settings: Settings, config_path: str | None, launch_user: str | None) -> int:
    """Run the three services as child processes; Ctrl-C or SIGTERM stops them all."""
    base = [sys.executable, "-m", "services.cli"] + (["--config", config_path] if config_path else [])
    children = {name: subprocess.Popen([*base, "run", name]) for name in SERVICES}
    stopping = False
    if launch_user is not None and _wait_ready(settings, READY_TIMEOUT_S):
        url = launch_url(settings, launch_user, None, settings.launch.token_max_age_s)
        print(f"\nevtopup is running. Open this launch URL (new one: make launch-url):\n{url}\n", flush=True)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"evtopup: {name} exited with {child.returncode}; stopping the others", file=sys.stderr)
                exit_code = 1
                stopping = True
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
    return exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evtopup", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $EVTOPUP_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one service, or all three")
    run.add_argument("service", choices=[*SERVICES, "all"])
    run.add_argument("--launch-url-for", metavar="USER", help="with all: print a launch URL for USER once ready")
    commands.add_parser("setup", help="create databases if missing, migrate, declare the broker topology")
    commands.add_parser("migrate", help="apply pending database migrations")
    url = commands.add_parser("launch-url", help="print a signed launch URL for a user")
    url.add_argument("--user", required=True, help="CSMS user id")
    url.add_argument("--locale", help="locale, e.g. en-GB (default: the operator's)")
    url.add_argument("--ttl", type=int, default=900, help="token lifetime in seconds (at most 900)")
    dead = commands.add_parser("dead-letters", help="list or replay dead-lettered messages")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    dead_list = dead_commands.add_parser("list", help="print dead letters as JSON lines (they stay queued)")
    dead_list.add_argument("--limit", type=int, default=100)
    dead_replay = dead_commands.add_parser("replay", help="republish dead letters to the events exchange")
    dead_replay.add_argument("--limit", type=int, default=100)
    dead_replay.add_argument("--id", dest="message_id", help="replay only this message id")
    return parser


async def dead_letters(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "list":
        for letter in await list_dead_letters(settings.amqp, args.limit):
            print(json.dumps(letter.as_dict()))
    else:
        replayed = await replay_dead_letters(settings.amqp, args.limit, args.message_id)
        print(f"replayed {replayed} message(s)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.command == "launch-url":
            print(launch_url(settings, args.user, args.locale, args.ttl))
        elif args.command == "setup":
            asyncio.run(setup(settings))
        elif args.command == "migrate":
            asyncio.run(migrate(settings))
        elif args.command == "dead-letters":
            asyncio.run(dead_letters(settings, args))
        elif args.service == "all":
            _check_ports_free(settings, list(SERVICES))
            return run_all(settings, args.config, args.launch_url_for)
        else:
            _check_ports_free(settings, [args.service])
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve(args.service, settings, SERVICES[args.service]))
    except (ConfigError, CliError, PortInUse, db.DatabaseUnavailable, amqp.BrokerUnavailable) as exc:
        print(f"evtopup: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
