"""The broker topology: declared by setup only (services look it up and say clearly when it is
missing), queues left by an older version kept with a warning, policies from one definition."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractConnection

from shared import amqp
from tests.harness import REPO, Stack, rabbitmqctl

pytestmark = [pytest.mark.broker]

DEFINITIONS = REPO / "deploy" / "rabbitmq" / "definitions.json"


@pytest_asyncio.fixture
async def empty_vhost(stack: Stack) -> AsyncIterator[AbstractConnection]:
    """A connection to a vhost of its own with nothing declared in it."""
    vhost = f"{stack.vhost}_topology_{uuid.uuid4().hex[:6]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
        async with connection:
            yield connection
    finally:
        rabbitmqctl("delete_vhost", vhost)


async def test_a_service_finds_no_topology_and_says_to_run_setup(empty_vhost: AbstractConnection) -> None:
    channel = await empty_vhost.channel()
    with pytest.raises(amqp.TopologyMissing, match=r"no exchange evtopup\.events .*run `evtopup setup`"):
        await amqp.existing_exchange(channel, amqp.EVENTS_EXCHANGE)
    channel = await empty_vhost.channel()  # the failed lookup closed the channel
    with pytest.raises(amqp.TopologyMissing, match=f"no queue {amqp.CREDITING_QUEUE.name}"):
        await amqp.existing_queue(channel, amqp.CREDITING_QUEUE.name)


async def test_setup_keeps_a_queue_declared_with_old_arguments_and_warns(empty_vhost: AbstractConnection) -> None:
    channel = await empty_vhost.channel()
    # As the previous version declared it: delivery limit and dead-lettering as queue arguments.
    await channel.declare_queue(
        amqp.CREDITING_QUEUE.name,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 10, "x-dead-letter-exchange": "evtopup.dead_letter"},
    )
    warnings = await amqp.declare_topology(empty_vhost)
    assert len(warnings) == 1
    assert amqp.CREDITING_QUEUE.name in warnings[0] and "kept as it is" in warnings[0]
    # Everything else was declared and bound all the same.
    channel = await empty_vhost.channel()
    for spec in amqp.EVENT_QUEUES:
        await amqp.existing_queue(channel, spec.name)
    for name in (amqp.DEAD_LETTER_QUEUE, amqp.UNROUTABLE_QUEUE, amqp.CHECKOUT_RPC_QUEUE, amqp.CSMS_USER_RPC_QUEUE):
        await amqp.existing_queue(channel, name)
    assert await amqp.declare_topology(empty_vhost) == warnings  # and again: idempotent


def test_the_definitions_file_matches_the_topology_and_policies() -> None:
    definitions = json.loads(Path(DEFINITIONS).read_text())
    vhost = definitions["vhosts"][0]["name"]
    # Limits and dead-lettering come from policies only; queues carry just their type.
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    for spec in amqp.EVENT_QUEUES:
        assert queues[spec.name] == {"x-queue-type": "quorum"}
        bound = {b["routing_key"] for b in definitions["bindings"] if b["destination"] == spec.name}
        assert bound == set(spec.bindings)
    assert queues[amqp.UNROUTABLE_QUEUE] == {"x-queue-type": "quorum"}
    # RPC requests carry an expiration: classic queues (no arguments), bound to nothing but the
    # default exchange, and under no policy.
    assert amqp.RPC_QUEUES == (amqp.CHECKOUT_RPC_QUEUE, amqp.CSMS_USER_RPC_QUEUE)
    for name in amqp.RPC_QUEUES:
        assert queues[name] == {}
        assert [b for b in definitions["bindings"] if b["destination"] == name] == []
        assert [p.name for p in amqp.broker_policies(1) if re.search(p.pattern, name)] == []
    # Nothing else: every queue in the file is one the topology declares.
    declared = {spec.name for spec in amqp.EVENT_QUEUES} | set(amqp.RPC_QUEUES)
    assert set(queues) == declared | {amqp.DEAD_LETTER_QUEUE, amqp.UNROUTABLE_QUEUE}
    policies = {p["name"]: p for p in definitions["policies"]}
    delivery_limit = policies["evtopup-event-queues"]["definition"]["delivery-limit"]
    assert list(policies.values()) == [p.as_definition(vhost) for p in amqp.broker_policies(delivery_limit)]


async def test_setup_declares_the_rpc_queues_as_classic_queues(empty_vhost: AbstractConnection) -> None:
    await amqp.declare_topology(empty_vhost)
    channel = await empty_vhost.channel()
    for name in amqp.RPC_QUEUES:
        # Declared again with no arguments it is the same queue; as a quorum queue it is refused.
        await channel.declare_queue(name, durable=True, arguments={})
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        channel = await empty_vhost.channel()


async def test_the_policies_apply_to_the_event_queues(stack: Stack) -> None:
    """The stack's vhost got its policies the way `scripts/ensure-vhost.sh` sets them."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", stack.vhost, "--no-table-headers", "name", "policy"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    policies = dict(line.split("\t") for line in listed.splitlines() if line)
    for spec in amqp.EVENT_QUEUES:
        assert policies[spec.name] == "evtopup-event-queues"
