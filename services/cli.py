"""The ``evtopup`` command: run services, set up databases and the broker, print launch URLs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from urllib.parse import urlencode

import uvloop

from services.crediting import app as crediting_app
from services.crediting import operations
from services.crediting import service as crediting_service
from services.crediting.csms import CsmsUnavailable
from services.crediting.csms.ampeco.client import AmpecoClient
from services.crediting.csms.ampeco.tenant import TenantMismatch, prepare_tenant
from services.crediting.domain import RefusedAction, RefusedCredit
from services.crediting.store import InsufficientBalance
from services.integrations import RELOAD_ORDER, integrations_command, reload_services
from services.page import app as page_app
from services.page.launch import issue_launch_token
from services.payments import app as payments_app
from services.payments import refunds, review, store
from services.payments.domain import ReviewDecision, ReviewRefused
from services.payments.processors import ADAPTERS
from services.reconcile import add_reconcile_parser, reconcile_command
from services.trace import NotFound, trace
from shared import amqp, db
from shared.broker_access import provision_with_rabbitmqctl, vhost_of
from shared.dead_letters import LISTABLE_QUEUES, list_dead_letters, replay_dead_letters
from shared.http import PortInUse
from shared.outbox import list_parked, unpark
from shared.runtime import Build, internal_port, migration_components, serve, service_dsn, service_port
from shared.settings import ConfigError, Settings, load_settings, secret_environment_names

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
    """Give each service its own database role and database (created if missing), migrate it as that
    role, and declare the broker topology as the operator's account."""
    databases = settings.databases
    for service in SERVICES:
        created = await db.provision_database(
            databases.admin, databases.password("admin"), databases.dsn(service), databases.password(service)
        )
        applied = await db.migrate(service_dsn(settings, service), migration_components(service))
        print(f"{service}: database {'created' if created else 'present'}, {len(applied)} migration(s) applied")
    connection = await amqp.connect(settings.amqp)
    try:
        warnings = await amqp.declare_topology(connection)
    finally:
        await connection.close()
    for warning in warnings:
        print(f"evtopup: warning: {warning}", file=sys.stderr)
    print("broker: topology declared")
    if settings.csms.kind == "ampeco":
        print(f"ampeco: {await prepare_ampeco(settings)}")


async def prepare_ampeco(settings: Settings) -> str:
    """The tenant's base currency checked and its notification subscription made (setup and start)."""
    client = AmpecoClient(settings.csms, settings.operator.currency)
    pool = await db.create_pool(service_dsn(settings, crediting_app.NAME), 2)
    try:
        return await prepare_tenant(client, pool, settings)
    except (TenantMismatch, CsmsUnavailable) as exc:
        raise CliError(str(exc)) from None
    finally:
        await pool.close()
        await client.close()


async def migrate(settings: Settings) -> None:
    for service in SERVICES:
        applied = await db.migrate(service_dsn(settings, service), migration_components(service))
        print(f"{service}: {len(applied)} migration(s) applied")


def launch_url(settings: Settings, user_id: str, locale: str | None, ttl_s: int) -> str:
    page = f"{settings.services.page_public_url.rstrip('/')}/topup"
    launch = settings.launch
    if launch.mode == "open":
        # What AMPECO's app opens: the user id (and locale) as plain parameters.
        query = {launch.user_param: user_id, launch.locale_param: locale or settings.operator.default_locale}
        return f"{page}?{urlencode(query)}"
    token = issue_launch_token(
        settings.launch.secret.get_secret_value(),
        user_id,
        locale or settings.operator.default_locale,
        int(time.time()),
        min(ttl_s, settings.launch.token_max_age_s),
        audience=settings.launch.audience,
        issuer=settings.launch.issuer,
    )
    return f"{page}?{urlencode({'token': token})}"


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


def service_environment(service: str) -> dict[str, str]:
    """This process's environment less the secrets that ``service`` may not hold."""
    withheld = set(secret_environment_names(os.environ, service))
    return {name: value for name, value in os.environ.items() if name not in withheld}


def reload_command(settings: Settings) -> int:
    answers = asyncio.run(reload_services(settings))
    for answer in answers:
        print(f"{answer.service}: {'reloaded' if answer.reloaded else 'NOT reloaded'}: {answer.detail}")
    return 0 if len(answers) == len(RELOAD_ORDER) and all(a.reloaded for a in answers) else 1


def run_all(settings: Settings, config_path: str | None, launch_user: str | None) -> int:
    """Run the three services as child processes, each given only its own secrets; Ctrl-C or
    SIGTERM stops them all, SIGHUP reloads their ``[integrations]`` (as ``evtopup reload``)."""
    base = [sys.executable, "-m", "services.cli"] + (["--config", config_path] if config_path else [])
    children = {name: subprocess.Popen([*base, "run", name], env=service_environment(name)) for name in SERVICES}
    stopping = reloading = False
    if launch_user is not None and _wait_ready(settings, READY_TIMEOUT_S):
        url = launch_url(settings, launch_user, None, settings.launch.token_max_age_s)
        print(f"\nevtopup is running. Open this launch URL (new one: make launch-url):\n{url}\n", flush=True)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    def reload(_signum: int, _frame: object) -> None:
        nonlocal reloading
        reloading = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, reload)
    exit_code = 0
    while not stopping:
        if reloading:
            reloading = False
            reload_command(settings)
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
    trace_parser = commands.add_parser("trace", help="one top-up's whole path across the services, in time order")
    trace_parser.add_argument("id", help="an order id, a payment id or a processor reference")
    commands.add_parser(
        "broker-users", help="create each service's RabbitMQ user with its permissions (broker on this machine)"
    )
    url = commands.add_parser("launch-url", help="print a signed launch URL for a user")
    url.add_argument("--user", required=True, help="CSMS user id")
    url.add_argument("--locale", help="locale, e.g. en-GB (default: the operator's)")
    url.add_argument("--ttl", type=int, default=900, help="token lifetime in seconds (at most 900)")
    dead = commands.add_parser("dead-letters", help="list or replay dead-lettered messages")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    dead_list = dead_commands.add_parser("list", help="print dead letters as JSON lines (they stay queued)")
    dead_list.add_argument("--limit", type=int, default=100)
    dead_list.add_argument(
        "--queue", choices=LISTABLE_QUEUES, default="dead_letters", help="unroutable: what no queue was bound for"
    )
    dead_replay = dead_commands.add_parser("replay", help="republish dead letters to the events exchange")
    dead_replay.add_argument("--limit", type=int, default=100)
    dead_replay.add_argument("--id", dest="message_id", help="replay only this message id")
    outbox = commands.add_parser("outbox", help="outbox rows parked because they cannot be published")
    outbox_commands = outbox.add_subparsers(dest="action", required=True)
    outbox_parked = outbox_commands.add_parser("parked", help="print parked outbox rows as JSON lines")
    outbox_parked.add_argument("--service", choices=SERVICES, help="only this service's outbox")
    outbox_parked.add_argument("--limit", type=int, default=100)
    outbox_retry = outbox_commands.add_parser("retry", help="un-park one row so the relay tries it again")
    outbox_retry.add_argument("id", type=int, help="the row's id (from outbox parked)")
    outbox_retry.add_argument("--service", choices=SERVICES, help="the service whose outbox holds it")
    reviews = commands.add_parser("review", help="payments held for review: list them, settle one")
    review_commands = reviews.add_subparsers(dest="action", required=True)
    review_list = review_commands.add_parser("list", help="print payments held for review as JSON lines")
    review_list.add_argument("--limit", type=int, default=100)
    review_settle = review_commands.add_parser("settle", help="credit the driver, or reject (refund at the processor)")
    review_settle.add_argument("payment_id", help="the payment's id (from review list)")
    decision = review_settle.add_mutually_exclusive_group(required=True)
    decision.add_argument("--credit", action="store_const", dest="decision", const=ReviewDecision.CREDIT)
    decision.add_argument("--reject", action="store_const", dest="decision", const=ReviewDecision.REJECT)
    review_settle.add_argument("--by", required=True, help="who decides (kept in the audit record)")
    review_settle.add_argument("--note", required=True, help="why (kept in the audit record)")
    deliveries = commands.add_parser("deliveries", help="credits on their way to the CSMS: list them, resolve one")
    delivery_commands = deliveries.add_subparsers(dest="action", required=True)
    deliveries_list = delivery_commands.add_parser("list", help="print deliveries as JSON lines, oldest first")
    deliveries_list.add_argument("--state", choices=list(operations.LISTED_STATES), default="awaiting-operator")
    deliveries_list.add_argument("--limit", type=int, default=100)
    resolve = delivery_commands.add_parser("resolve", help="settle an uncertain or failed delivery by hand")
    resolve.add_argument("id", type=int, help="the delivery's id (from deliveries list)")
    verdict = resolve.add_mutually_exclusive_group(required=True)
    verdict.add_argument(
        "--applied", action="store_const", dest="verdict", const="applied", help="AMPECO shows the change: delivered"
    )
    verdict.add_argument(
        "--not-applied",
        action="store_const",
        dest="verdict",
        const="not_applied",
        help="AMPECO does not show it: deliver it again",
    )
    verdict.add_argument(
        "--abandon",
        action="store_const",
        dest="verdict",
        const="abandon",
        help="a failed one AMPECO will never take: give up and reverse it in the ledger",
    )
    resolve.add_argument("--by", required=True, help="who decides (kept in the audit record)")
    resolve.add_argument("--why", required=True, help="what the back office showed (kept in the audit record)")
    adjust = commands.add_parser("adjust", help="post an audited correction of a driver's balance")
    adjust.add_argument("--user", required=True, help="CSMS user id")
    adjust.add_argument("--amount", required=True, type=int, help="minor units, negative to take from the balance")
    adjust.add_argument("--reason", required=True, help="why (shown in AMPECO's back office, kept in the ledger)")
    adjust.add_argument("--by", default=os.environ.get("USER", "operator"), help="who (default: $USER)")
    refund = commands.add_parser(
        "refund", help="ask the processor to refund a top-up (the ledger follows its confirmation)"
    )
    refund.add_argument("order_id", help="the top-up's order id")
    refund.add_argument(
        "--amount", type=int, help="minor units of what the driver was charged (default: all that is left)"
    )
    refund.add_argument("--by", required=True, help="who asks (kept with the request)")
    refund.add_argument("--why", required=True, help="why (kept with the request, sent to the processor)")
    refund.add_argument(
        "--wait", type=float, default=20.0, help="seconds to wait for the processor's answer (default 20)"
    )
    commands.add_parser(
        "receivables", help="what drivers owe: reversals their balance could not give back (JSON lines)"
    )
    integrations = commands.add_parser(
        "integrations", help="each integration's state: active, draining (with what is still open), retired"
    )
    integrations.add_argument("--json", action="store_true", help="JSON lines instead of text")
    commands.add_parser(
        "reload", help="have the running services take a changed [integrations] (payments, crediting, then page)"
    )
    add_reconcile_parser(commands)
    return parser


async def refund_command(settings: Settings, args: argparse.Namespace) -> None:
    """Record the refund request; payments' refund dispatcher asks the processor (with the request id
    as the idempotency key). Prints the request and, if it comes within ``--wait``, the answer."""
    try:
        order_id = uuid.UUID(args.order_id)
    except ValueError:
        raise CliError(f"{args.order_id!r} is not an order id") from None
    pool = await db.create_pool(service_dsn(settings, payments_app.NAME), 2)
    try:
        try:
            asked = await refunds.request_refund(pool, ADAPTERS, order_id, args.amount, args.by, args.why)
        except refunds.RefundRefused as exc:
            raise CliError(f"no refund: {exc}") from None
        print(f"refund {asked.request_id} of {asked.amount_minor} {asked.currency} (minor units) requested")
        deadline = time.monotonic() + max(args.wait, 0.0)
        while True:
            row = await store.refund_request(pool, asked.request_id)
            assert row is not None
            if row["state"] != "requested" or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        if row["state"] == "refused":
            raise CliError(f"the processor refused refund {asked.request_id}: {row['error']}")
        if row["state"] == "requested":
            print(f"not answered yet ({row['error'] or 'waiting for the payments service'}); payments keeps asking")
        else:
            print(
                f"{row['state']} by the processor as {row['processor_refund_id']} ({row['processor_status']});"
                " the balance follows the processor's confirmation"
            )
    finally:
        await pool.close()


async def receivables_command(settings: Settings) -> None:
    pool = await db.create_pool(service_dsn(settings, crediting_app.NAME), 2)
    try:
        for owed in await operations.receivables(pool):
            print(json.dumps(owed))
    finally:
        await pool.close()


async def delivery_commands(settings: Settings, args: argparse.Namespace) -> None:
    pool = await db.create_pool(service_dsn(settings, crediting_app.NAME), 2)
    try:
        if args.command == "adjust":
            if re.fullmatch(settings.user_id_pattern, args.user) is None:
                raise CliError(f"{args.user!r} is not a user id of this CSMS")
            try:
                transfer, delivery_id = await crediting_service.post_adjustment(
                    pool, settings, args.user, args.amount, args.reason, args.by
                )
            except (RefusedCredit, InsufficientBalance) as exc:
                raise CliError(str(exc)) from None
            where = f", delivery {delivery_id} to the CSMS" if delivery_id is not None else ""
            print(f"adjustment {transfer.id} posted{where}")
        elif args.action == "list":
            resolve_after_s = settings.csms.uncertain_resolve_after_s
            for delivery in await operations.list_deliveries(pool, args.state, args.limit, resolve_after_s):
                print(json.dumps(delivery, default=str))
        else:
            try:
                state = await operations.resolve_delivery(pool, args.id, args.verdict, args.by, args.why)
            except RefusedAction as exc:
                raise CliError(f"delivery {args.id} not resolved: {exc}") from None
            print(f"delivery {args.id}: {state}")
    finally:
        await pool.close()


async def dead_letters(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "list":
        for letter in await list_dead_letters(settings.amqp, args.limit, LISTABLE_QUEUES[args.queue]):
            print(json.dumps(letter.as_dict()))
    else:
        result = await replay_dead_letters(settings.amqp, args.limit, args.message_id)
        for message_id, why in result.refused:
            print(f"evtopup: not replayed: {message_id}: {why}", file=sys.stderr)
        print(f"replayed {result.replayed} message(s)")


async def parked_outbox(settings: Settings, args: argparse.Namespace) -> None:
    unparked_in: list[str] = []
    for service in [args.service] if args.service else list(SERVICES):
        conn = await db.connect(service_dsn(settings, service))
        try:
            if args.action == "parked":
                for parked in await list_parked(conn, args.limit):
                    print(json.dumps({"service": service, **parked.as_dict()}))
            elif await unpark(conn, args.id):
                unparked_in.append(service)
        finally:
            await conn.close()
    if args.action == "retry":
        if not unparked_in:
            raise CliError(f"no parked outbox row {args.id}" + (f" in {args.service}" if args.service else ""))
        print(f"outbox row {args.id} of {', '.join(unparked_in)} handed back to the relay")


async def review_payments(settings: Settings, args: argparse.Namespace) -> None:
    pool = await db.create_pool(service_dsn(settings, payments_app.NAME), 2)
    try:
        if args.action == "list":
            for payment in await review.payments_in_review(pool, args.limit):
                print(json.dumps(payment))
            return
        try:
            payment_id = uuid.UUID(args.payment_id)
        except ValueError:
            raise CliError(f"{args.payment_id!r} is not a payment id") from None
        try:
            status = await review.settle(pool, payment_id, args.decision, args.by, args.note)
        except ReviewRefused as exc:
            raise CliError(f"payment {payment_id} not settled: {exc}") from None
        print(f"payment {payment_id}: {status.value}")
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # A service sees only its own secrets; the operator's commands see them all.
        one_service = args.command == "run" and args.service != "all"
        settings = load_settings(args.config, service=args.service if one_service else None)
        if args.command == "launch-url":
            print(launch_url(settings, args.user, args.locale, args.ttl))
        elif args.command == "setup":
            asyncio.run(setup(settings))
        elif args.command == "trace":
            try:
                for step in asyncio.run(trace(settings, args.id)):
                    print(step.line())
            except NotFound as exc:
                raise CliError(str(exc)) from None
        elif args.command == "broker-users":
            users = provision_with_rabbitmqctl(settings.amqp)
            print(f"broker: users {', '.join(users)} provisioned on vhost {vhost_of(settings.amqp)}")
        elif args.command == "migrate":
            asyncio.run(migrate(settings))
        elif args.command == "dead-letters":
            asyncio.run(dead_letters(settings, args))
        elif args.command == "outbox":
            asyncio.run(parked_outbox(settings, args))
        elif args.command == "review":
            asyncio.run(review_payments(settings, args))
        elif args.command == "reconcile":
            return asyncio.run(reconcile_command(settings, args))
        elif args.command == "refund":
            asyncio.run(refund_command(settings, args))
        elif args.command == "receivables":
            asyncio.run(receivables_command(settings))
        elif args.command == "integrations":
            return asyncio.run(integrations_command(settings, args.json))
        elif args.command == "reload":
            return reload_command(settings)
        elif args.command in ("deliveries", "adjust"):
            asyncio.run(delivery_commands(settings, args))
        elif args.service == "all":
            _check_ports_free(settings, list(SERVICES))
            return run_all(settings, args.config, args.launch_url_for)
        else:
            _check_ports_free(settings, [args.service])
            with contextlib.suppress(KeyboardInterrupt):
                # uvloop: the same asyncio, a third less CPU per top-up (see README, Performance).
                uvloop.run(serve(args.service, settings, SERVICES[args.service], args.config))
    except (
        ConfigError,
        CliError,
        PortInUse,
        db.DatabaseUnavailable,
        amqp.BrokerUnavailable,
        TenantMismatch,
        CsmsUnavailable,
    ) as exc:
        print(f"evtopup: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
