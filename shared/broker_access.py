"""Who may do what on the broker: each service connects as a user of its own that may declare
nothing, read only its own queues and write only to the exchanges it publishes to. ``evtopup setup``
(as the operator's account) declares the topology; ``deploy/rabbitmq/definitions.json`` holds the
same permissions for a pre-provisioned broker (a unit test keeps the two equal)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from yarl import URL

from shared.amqp import (
    CHECKOUT_RPC_QUEUE,
    CREDITING_QUEUE,
    CSMS_USER_RPC_QUEUE,
    DEAD_LETTER_EXCHANGE,
    DIRECT_REPLY_TO,
    EVENTS_EXCHANGE,
    PAGE_QUEUE,
    PAYMENTS_QUEUE,
    UNROUTABLE_EXCHANGE,
    names_pattern,
)
from shared.settings import SERVICE_NAMES, AmqpSettings

DEFAULT_EXCHANGE = "amq.default"  # what RabbitMQ checks for a publish to the default exchange ""
# Every service publishes events (the events exchange routes what no queue wants to its alternate
# exchange, which needs the publisher's write permission too) and dead-letters bad messages itself.
PUBLISHES = (EVENTS_EXCHANGE, UNROUTABLE_EXCHANGE, DEAD_LETTER_EXCHANGE)


@dataclass(frozen=True)
class Permissions:
    """RabbitMQ's three permission regular expressions for one user on one vhost."""

    configure: str
    write: str
    read: str


def _only(*names: str) -> str:
    return names_pattern(names)


SERVICE_PERMISSIONS: dict[str, Permissions] = {
    # The page asks payments for checkouts and crediting for users (launch.mode = "open") over RPC:
    # a request to the default exchange, replies on direct reply-to.
    "page": Permissions("^$", _only(*PUBLISHES, DEFAULT_EXCHANGE), _only(PAGE_QUEUE.name, DIRECT_REPLY_TO)),
    # Payments answers checkout requests, crediting user lookups, on the default exchange.
    "payments": Permissions("^$", _only(*PUBLISHES, DEFAULT_EXCHANGE), _only(CHECKOUT_RPC_QUEUE, PAYMENTS_QUEUE.name)),
    "crediting": Permissions(
        "^$", _only(*PUBLISHES, DEFAULT_EXCHANGE), _only(CREDITING_QUEUE.name, CSMS_USER_RPC_QUEUE)
    ),
}
assert set(SERVICE_PERMISSIONS) == set(SERVICE_NAMES)


def vhost_of(settings: AmqpSettings) -> str:
    return URL(settings.url).path.lstrip("/") or "/"


def provision_with_rabbitmqctl(settings: AmqpSettings) -> list[str]:
    """Create (or update) each service's broker user on a broker on this machine, with its password
    and permissions on the configured vhost; returns the users provisioned. For brokers elsewhere,
    use deploy/rabbitmq/definitions.json."""
    vhost = vhost_of(settings)
    existing = set(_rabbitmqctl("list_users", "--no-table-headers").split())
    for service in SERVICE_NAMES:
        username, password = settings.credentials(service)
        if username == settings.username:
            continue  # one account for everything: nothing of its own to provision
        # The password goes through standard input, never the command line (ps shows that).
        action = "change_password" if username in existing else "add_user"
        _rabbitmqctl(action, username, stdin=password.get_secret_value())
        rights = SERVICE_PERMISSIONS[service]
        _rabbitmqctl("set_permissions", "-p", vhost, username, rights.configure, rights.write, rights.read)
    return [settings.credentials(service)[0] for service in SERVICE_NAMES]


def _rabbitmqctl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()[:300]}")
    return result.stdout
