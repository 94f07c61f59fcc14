"""``evtopup trace ID``: one top-up's whole path across the three services, in time order.

ID is an order id, a payment id or a processor's reference. The trace reads each service's database
(as that service's role) and the broker's dead-letter and unroutable queues (without taking anything
out of them): the order, the payment, every processor event, reviews, the ledger transfer and its
postings, outbox rows still waiting or parked, deferred messages and dead letters. What links them
is the order and payment ids and the correlation id that every service keeps."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from shared import amqp, db
from shared.dead_letters import LISTABLE_QUEUES, list_dead_letters
from shared.runtime import service_dsn
from shared.settings import Settings

DEAD_LETTERS_SCANNED = 1000


class NotFound(Exception):
    pass


@dataclass(frozen=True, order=True)
class Step:
    at: datetime | None
    service: str
    what: str
    details: dict[str, Any] = field(compare=False)

    def line(self) -> str:
        at = self.at.isoformat() if self.at else "-" * 32
        return f"{at}  {self.service:<9}  {self.what:<28}  {json.dumps(self.details, default=str)}"


@dataclass
class Keys:
    """What identifies the top-up in each service."""

    order_id: uuid.UUID | None = None
    payment_id: uuid.UUID | None = None
    correlation_id: str | None = None

    def texts(self) -> list[str]:
        return [str(v) for v in (self.order_id, self.payment_id, self.correlation_id) if v is not None]


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def _connect(settings: Settings, service: str) -> asyncpg.Connection:
    return await db.connect(service_dsn(settings, service))


async def find_keys(settings: Settings, identifier: str) -> Keys:
    """The order, payment and correlation ids behind ``identifier``."""
    as_uuid = _uuid(identifier)
    conn = await _connect(settings, "payments")
    try:
        row = await conn.fetchrow(
            "SELECT id, order_id, correlation_id FROM payments WHERE id = $1 OR order_id = $1"
            if as_uuid is not None
            else "SELECT id, order_id, correlation_id FROM payments WHERE processor_reference = $1",
            as_uuid if as_uuid is not None else identifier,
        )
    finally:
        await conn.close()
    if row is not None:
        return Keys(row["order_id"], row["id"], row["correlation_id"])
    if as_uuid is not None:
        # An order whose checkout was never created has no payment yet.
        conn = await _connect(settings, "page")
        try:
            order = await conn.fetchrow("SELECT id, payment_id, correlation_id FROM orders WHERE id = $1", as_uuid)
        finally:
            await conn.close()
        if order is not None:
            return Keys(order["id"], order["payment_id"], order["correlation_id"])
    raise NotFound(f"no order, payment or processor reference {identifier!r}")


def _details(row: asyncpg.Record, *names: str) -> dict[str, Any]:
    return {name: row[name] for name in names if row[name] is not None}


async def _page_steps(conn: asyncpg.Connection, keys: Keys) -> list[Step]:
    steps: list[Step] = []
    order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", keys.order_id)
    if order is not None:
        steps.append(
            Step(
                order["created_at"],
                "page",
                "order created",
                _details(order, "id", "user_id", "amount_minor", "bonus_minor", "fee_minor", "currency", "method"),
            )
        )
        steps.append(
            Step(
                order["updated_at"],
                "page",
                f"order now {order['status']}",
                _details(order, "status_reason", "balance_minor"),
            )
        )
    return steps


async def _payments_steps(conn: asyncpg.Connection, keys: Keys) -> list[Step]:
    steps: list[Step] = []
    payment = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", keys.payment_id)
    if payment is None:
        return steps
    steps.append(
        Step(
            payment["created_at"],
            "payments",
            "payment created",
            _details(payment, "id", "integration_id", "processor", "charge_minor", "currency", "processor_reference"),
        )
    )
    # Events first: at equal times, the event is what moved the payment.
    for event in await conn.fetch(
        "SELECT * FROM processor_events WHERE payment_id = $1 OR (integration_id = $2 AND processor_reference = $3)"
        " ORDER BY received_at",
        keys.payment_id,
        payment["integration_id"],
        payment["processor_reference"],
    ):
        steps.append(
            Step(
                event["received_at"],
                "payments",
                f"processor event {event['kind']}",
                _details(event, "event_id", "outcome"),
            )
        )
    if payment["succeeded_at"] is not None:
        steps.append(Step(payment["succeeded_at"], "payments", "payment succeeded", {}))
    if payment["credited_at"] is not None:
        steps.append(Step(payment["credited_at"], "payments", "credit confirmed", {}))
    steps.append(
        Step(
            payment["updated_at"],
            "payments",
            f"payment now {payment['status']}",
            _details(payment, "status_reason", "poll_failures", "last_poll_error", "announce_count", "next_poll_at"),
        )
    )
    for review in await conn.fetch("SELECT * FROM payment_reviews WHERE payment_id = $1", keys.payment_id):
        steps.append(
            Step(
                review["decided_at"],
                "payments",
                f"review: {review['decision']}",
                _details(review, "decided_by", "note"),
            )
        )
    return steps


async def _crediting_steps(conn: asyncpg.Connection, keys: Keys) -> list[Step]:
    steps: list[Step] = []
    for transfer in await conn.fetch("SELECT * FROM transfers WHERE payment_id = $1", keys.payment_id):
        postings = await conn.fetch(
            "SELECT account, entry_kind, amount_minor FROM postings WHERE transfer_id = $1 ORDER BY id", transfer["id"]
        )
        steps.append(
            Step(
                transfer["created_at"],
                "crediting",
                f"transfer {transfer['kind']}",
                {
                    **_details(transfer, "id", "environment", "amount_minor", "bonus_minor", "fee_minor", "currency"),
                    "postings": [f"{p['account']} {p['entry_kind']} {p['amount_minor']:+d}" for p in postings],
                },
            )
        )
    return steps


async def _plumbing_steps(conn: asyncpg.Connection, service: str, keys: Keys) -> list[Step]:
    """Messages this service has not handed over yet: outbox rows waiting or parked, deferred ones."""
    steps: list[Step] = []
    if keys.correlation_id is not None:
        for row in await conn.fetch("SELECT * FROM outbox WHERE correlation_id = $1 ORDER BY id", keys.correlation_id):
            what = "outbox parked" if row["parked_at"] is not None else "outbox waiting"
            steps.append(
                Step(
                    row["created_at"],
                    service,
                    f"{what}: {row['routing_key']}",
                    _details(row, "id", "attempts", "parked_reason", "last_error"),
                )
            )
    for row in await conn.fetch(
        "SELECT * FROM deferred_messages WHERE EXISTS"
        " (SELECT 1 FROM unnest($1::text[]) AS key WHERE strpos(convert_from(body, 'UTF8'), key) > 0)"
        " ORDER BY first_seen_at",
        keys.texts(),
    ):
        steps.append(
            Step(
                row["first_seen_at"],
                service,
                f"deferred: {row['message_type']}/v{row['version']}",
                _details(row, "reason"),
            )
        )
    return steps


async def _broker_steps(settings: Settings, keys: Keys) -> list[Step]:
    steps: list[Step] = []
    texts = keys.texts()
    for name, queue in LISTABLE_QUEUES.items():
        for letter in await list_dead_letters(settings.amqp, DEAD_LETTERS_SCANNED, queue):
            if any(text in letter.body_preview for text in texts):
                steps.append(
                    Step(
                        None,
                        "broker",
                        f"{name}: {letter.routing_key}",
                        {"message_id": letter.message_id, "reason": letter.reason},
                    )
                )
    return steps


SERVICE_STEPS = {"page": _page_steps, "payments": _payments_steps, "crediting": _crediting_steps}


async def trace(settings: Settings, identifier: str) -> list[Step]:
    """Every step of one top-up that the system still knows, in time order (undated ones last)."""
    keys = await find_keys(settings, identifier)
    steps: list[Step] = []
    for service, service_steps in SERVICE_STEPS.items():
        conn = await _connect(settings, service)
        try:
            steps += await service_steps(conn, keys)
            steps += await _plumbing_steps(conn, service, keys)
        finally:
            await conn.close()
    try:
        steps += await _broker_steps(settings, keys)
    except amqp.BrokerUnavailable as exc:
        steps.append(Step(None, "broker", "not reachable", {"error": str(exc)}))
    return _in_time_order(steps)


def _in_time_order(steps: Iterable[Step]) -> list[Step]:
    dated = sorted((s for s in steps if s.at is not None), key=lambda s: s.at or datetime.min)
    return dated + [s for s in steps if s.at is None]
