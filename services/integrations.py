"""``evtopup integrations`` and ``evtopup reload``: which integrations take new top-ups, which are
draining, which are retired; and taking a changed ``[integrations]`` into the running services.

Changing the operator's processor is a configuration change and a reload: the new integration gets
``active = true``, the old one ``active = false``. From the reload on, new top-ups use the new one,
while the old one keeps its webhooks, its polling, its refunds and disputes; it is **draining** while
payments made with it are open, held for review or have a refund waiting for the processor, then
**retired**. A retired integration stays configured while refunds and disputes may still come (a
chargeback can come months later); :func:`integration_states` has no I/O, :func:`load_activity` reads
payments' database."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Final, Literal

import aiohttp
import asyncpg

from services.payments import app as payments_app
from shared import db
from shared.runtime import internal_port, service_dsn
from shared.settings import Settings

State = Literal["active", "draining", "retired", "missing"]

# The order a reload goes in: payments knows an integration before the page sends top-ups to it.
RELOAD_ORDER: Final = ("payments", "crediting", "page")
RELOAD_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class Activity:
    """What payments still does with an integration."""

    open_payments: int = 0  # created, pending, approved: the driver may still pay
    under_review: int = 0  # held for review: settling one may refund at the processor
    refunds_waiting: int = 0  # refund requests the processor has not answered
    last_payment_at: datetime | None = None

    @property
    def busy(self) -> bool:
        return bool(self.open_payments or self.under_review or self.refunds_waiting)


@dataclass(frozen=True)
class IntegrationState:
    integration_id: str
    processor: str | None  # None: payments name it, the configuration no longer does
    environment: str | None
    state: State
    activity: Activity

    def line(self) -> str:
        activity = self.activity
        what = [f"{activity.open_payments} open payments"]
        if activity.under_review:
            what.append(f"{activity.under_review} under review")
        if activity.refunds_waiting:
            what.append(f"{activity.refunds_waiting} refunds waiting")
        last = activity.last_payment_at.isoformat(timespec="seconds") if activity.last_payment_at else "never"
        return (
            f"{self.integration_id:<20} {self.processor or '?':<12} {self.environment or '?':<10}"
            f" {self.state:<8} {', '.join(what)}; last payment {last}"
        )

    def as_json(self) -> str:
        fields = asdict(self)
        fields["activity"]["last_payment_at"] = (
            self.activity.last_payment_at.isoformat() if self.activity.last_payment_at else None
        )
        return json.dumps(fields)


def integration_states(settings: Settings, activity: Mapping[str, Activity]) -> list[IntegrationState]:
    """Each configured integration's state, and any integration payments still need that the
    configuration no longer names (``missing``: its webhooks and polling have stopped)."""
    states = []
    for integration_id, integration in settings.integrations.items():
        doing = activity.get(integration_id, Activity())
        state: State = "active" if integration.active else "draining" if doing.busy else "retired"
        states.append(IntegrationState(integration_id, integration.processor, integration.environment, state, doing))
    for integration_id in sorted(set(activity) - set(settings.integrations)):
        if activity[integration_id].busy:
            states.append(IntegrationState(integration_id, None, None, "missing", activity[integration_id]))
    return states


async def load_activity(pool: asyncpg.Pool) -> dict[str, Activity]:
    payments = await pool.fetch(
        "SELECT integration_id,"
        " count(*) FILTER (WHERE status IN ('created', 'pending', 'approved')) AS open_payments,"
        " count(*) FILTER (WHERE status = 'needs_review') AS under_review,"
        " max(created_at) AS last_payment_at"
        " FROM payments GROUP BY integration_id"
    )
    waiting = await pool.fetch(
        "SELECT p.integration_id, count(*) AS n FROM refund_requests r JOIN payments p ON p.id = r.payment_id"
        " WHERE r.state IN ('requested', 'accepted') GROUP BY p.integration_id"
    )
    refunds: dict[str, int] = {row["integration_id"]: row["n"] for row in waiting}
    return {
        row["integration_id"]: Activity(
            row["open_payments"], row["under_review"], refunds.get(row["integration_id"], 0), row["last_payment_at"]
        )
        for row in payments
    }


async def integrations_command(settings: Settings, as_json: bool) -> int:
    """Prints each integration's state; exit code 1 when one is ``missing``."""
    pool = await db.create_pool(service_dsn(settings, payments_app.NAME), 2)
    try:
        states = integration_states(settings, await load_activity(pool))
    finally:
        await pool.close()
    for state in states:
        print(state.as_json() if as_json else state.line())
    return 1 if any(s.state == "missing" for s in states) else 0


@dataclass(frozen=True)
class ReloadAnswer:
    service: str
    reloaded: bool
    detail: str  # the integrations it took, or why not


async def reload_services(settings: Settings) -> list[ReloadAnswer]:
    """Ask each service (on its internal port, in ``RELOAD_ORDER``) to read the configuration again.
    A service that refuses (the change needs a restart) or cannot be reached stops the round: the
    services after it keep the old configuration, so the page never sends top-ups to an integration
    payments does not know yet."""
    answers = []
    timeout = aiohttp.ClientTimeout(total=RELOAD_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for service in RELOAD_ORDER:
            url = f"http://{settings.services.internal_host}:{internal_port(settings, service)}/reload"
            try:
                async with http.post(url) as response:
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                answers.append(ReloadAnswer(service, False, f"not reachable at {url} ({type(exc).__name__})"))
                break
            if not isinstance(body, dict) or body.get("reloaded") is not True:
                error = body.get("error") if isinstance(body, dict) else None
                answers.append(ReloadAnswer(service, False, str(error or f"answered {response.status}")))
                break
            changed = body.get("changed") or []
            answers.append(ReloadAnswer(service, True, f"took {', '.join(changed)}" if changed else "nothing changed"))
    return answers
