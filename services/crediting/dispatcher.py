"""The delivery dispatcher: carries each ledger transfer to the external CSMS, one call per user at a
time, never inside a database transaction, and knows what a lost answer means.

For each delivery it claims (``SKIP LOCKED``, so several replicas share the work), it reads the
user's balance, commits ``sent_at`` with that balance, makes the call, and commits the outcome:

- delivered → ``credit.applied`` is announced (outbox, same transaction);
- certainly not applied (refused before sending, 429, 401) → pending again, with backoff;
- refused for good (400/403/404/422, insufficient balance) → failed, for the operator;
- uncertain (timeout, reset, 5xx) → never retried until evidence settles it: a matching
  ``userBalance.changed`` notification, or the balance compared with the one read before the call.
  What evidence cannot settle within ``csms.uncertain_resolve_after_s`` is listed for the operator.

A dispatcher killed mid-call leaves its row ``sending`` with a lease: once the lease runs out, a row
with ``sent_at`` becomes uncertain (its call may have been applied), one without goes back to pending."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from decimal import Decimal

import asyncpg

from services.crediting import domain, service, store
from services.crediting.csms import (
    BalanceChange,
    CallOutcome,
    Csms,
    CsmsUnavailable,
    Delivered,
    Failed,
    NotSent,
    Uncertain,
    UnknownUser,
    UserRefused,
)
from services.crediting.csms.ampeco import wire
from services.crediting.metrics import (
    CSMS_CALLS,
    CSMS_UNAUTHORIZED,
    DELIVERIES,
    DELIVERIES_AWAITING_OPERATOR,
    DELIVERIES_NOT_APPLIED,
    DELIVERIES_UNCERTAIN_OLDEST_AGE,
)
from shared.db import rounds_on_notify
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

NOTIFY_CHANNEL = "deliveries"
IDLE_POLL_S = 1.0
FAILURE_BACKOFF_S = 1.0
GAUGE_INTERVAL_S = 5.0
EVIDENCE_BATCH = 200
# A claimed row belongs to its dispatcher this long. Its read and its call are each bounded by four
# request timeouts (a token wait, the request, a refreshed token, the request again), so a live
# dispatcher has always written the outcome before another one could take the row as stopped.
LEASE_TIMEOUTS = 10
LEASE_MARGIN_S = 30.0


class DeliveryDispatcher:
    def __init__(self, settings: Settings, dsn: str, pool: asyncpg.Pool, csms: Csms) -> None:
        self.settings = settings
        self.csms_settings = settings.csms
        self.dsn = dsn
        self.pool = pool
        self.csms = csms
        self.lease_s = LEASE_TIMEOUTS * settings.csms.request_timeout_s + LEASE_MARGIN_S
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.csms.max_concurrent_calls)
        self._in_flight: set[asyncio.Task[None]] = set()
        # While the tenant rate-limits us, no new call starts before this (loop time).
        self._paused_until = 0.0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._dispatch_forever())
            tasks.create_task(self._examine_forever())
            tasks.create_task(self._gauges_forever())

    def wake(self) -> None:
        self._wake.set()

    async def _dispatch_forever(self) -> None:
        try:
            await rounds_on_notify(
                self.dsn,
                NOTIFY_CHANNEL,
                self._wake,
                self._dispatch_round,
                idle_s=IDLE_POLL_S,
                failure_backoff_s=FAILURE_BACKOFF_S,
                failure_event="delivery_dispatch_failed",
            )
        finally:
            # Stopping: calls already out are let finish and recorded (else each would turn
            # uncertain when its lease runs out), for as long as a call can take.
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=4 * self.csms_settings.request_timeout_s + 1)
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _dispatch_round(self) -> bool:
        return await self.dispatch_once() > 0

    async def dispatch_once(self) -> int:
        """Claim what is due (as many as there are free call slots) and start each call."""
        loop = asyncio.get_running_loop()
        pause = self._paused_until - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        for row in await store.expire_leases(self.pool):
            log.warning("delivery_lease_expired", delivery_id=row["id"], now=row["state"])
        free = self.csms_settings.max_concurrent_calls - len(self._in_flight)
        if free <= 0:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return 1
        rows = await store.claim_deliveries(self.pool, free, self.lease_s)
        for row in rows:
            task = loop.create_task(self._deliver_guarded(row))
            self._in_flight.add(task)
            task.add_done_callback(self._call_done)
        return len(rows)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _deliver_guarded(self, row: asyncpg.Record) -> None:
        try:
            await self.deliver(row)
        except Exception as exc:
            # The row keeps its lease; when it runs out the row is pending again or uncertain.
            log.error("delivery_crashed", delivery_id=row["id"], error=repr(exc))

    async def deliver(self, row: asyncpg.Record) -> None:
        delivery_id, attempt = row["id"], row["attempts"]
        change = BalanceChange(
            user_id=row["user_id"],
            direction=row["direction"],
            amount_minor=row["amount_minor"],
            currency=row["currency"].strip(),
            reason=row["reason"],
            app_info=row["app_info"],
        )
        try:
            before = await self.csms.read_user(change.user_id)
        except UnknownUser:
            await self._record(delivery_id, attempt, change, Failed("unknown user (404)"), None)
            return
        except UserRefused as exc:
            await self._record(delivery_id, attempt, change, Failed(exc.reason), None)
            return
        except CsmsUnavailable as exc:
            not_sent = NotSent(f"reading the user: {exc.reason}", exc.retry_after_s, exc.unauthorized)
            await self._record(delivery_id, attempt, change, not_sent, None)
            return
        cap = (
            domain.reversal_debit_cap(change.amount_minor, before.balance, change.currency)
            if change.direction == "debit" and domain.is_payment_reversal(row["transfer_id"])
            else None
        )
        if cap is not None:
            assert before.balance is not None
            amount = await service.cap_reversal_debit(
                self.pool, delivery_id, attempt, row["transfer_id"], cap, before.balance
            )
            if amount is None:
                log.warning("delivery_lease_lost", delivery_id=delivery_id)
                return
            if amount == 0:
                return
            change = dataclasses.replace(change, amount_minor=amount)
        if not await store.mark_sent(self.pool, delivery_id, attempt, before.balance):
            log.warning("delivery_lease_lost", delivery_id=delivery_id)
            return
        call = self.csms.credit if change.direction == "credit" else self.csms.debit
        outcome = await call(change)
        await self._record(delivery_id, attempt, change, outcome, before.balance)

    async def _record(
        self,
        delivery_id: int,
        attempt: int,
        change: BalanceChange,
        outcome: CallOutcome,
        balance_before: Decimal | None,
    ) -> None:
        CSMS_CALLS.labels(change.direction, _outcome_label(outcome)).inc()
        if isinstance(outcome, Delivered):
            CSMS_UNAUTHORIZED.set(0)
            async with self.pool.acquire() as conn, conn.transaction():
                settled = await service.settle_delivered(
                    conn, delivery_id, "response", self._balance_after(change, balance_before), attempt=attempt
                )
            if not settled:
                # Only if this dispatcher outlived its lease (a stalled process): evidence settles it.
                log.error("delivery_answer_after_lease", delivery_id=delivery_id, attempt=attempt)
        elif isinstance(outcome, NotSent):
            if outcome.unauthorized:
                CSMS_UNAUTHORIZED.set(1)
                log.error("csms_token_refused", delivery_id=delivery_id, reason=outcome.reason)
            if outcome.retry_after_s is not None:
                self._paused_until = max(self._paused_until, asyncio.get_running_loop().time() + outcome.retry_after_s)
            retry_in_s = outcome.retry_after_s
            if retry_in_s is None:
                retry_in_s = domain.retry_backoff_s(attempt, self.csms_settings.retry_max_backoff_s)
            await store.release_delivery(self.pool, delivery_id, attempt, retry_in_s, outcome.reason)
            log.info("delivery_not_sent", delivery_id=delivery_id, reason=outcome.reason, retry_in_s=retry_in_s)
        elif isinstance(outcome, Failed):
            await store.mark_failed(self.pool, delivery_id, attempt, outcome.reason)
            log.error(
                "delivery_failed",
                delivery_id=delivery_id,
                reason=outcome.reason,
                insufficient_balance=outcome.insufficient_balance,
            )
        else:
            await store.mark_uncertain(self.pool, delivery_id, attempt, outcome.reason)
            log.warning("delivery_uncertain", delivery_id=delivery_id, reason=outcome.reason)

    @staticmethod
    def _balance_after(change: BalanceChange, balance_before: Decimal | None) -> Decimal | None:
        """The balance the page shows: the one AMPECO reported just before the call, moved by it. A
        read right after a 202 may not show the accepted action yet, so it is not read again."""
        if balance_before is None:
            return None
        amount = wire.ampeco_amount(change.amount_minor, change.currency)
        return balance_before + amount if change.direction == "credit" else balance_before - amount

    # --- Evidence ---------------------------------------------------------------------------------

    async def _examine_forever(self) -> None:
        while True:
            try:
                await self.examine_uncertain()
            except Exception as exc:
                log.warning("delivery_evidence_failed", error=repr(exc))
            await asyncio.sleep(self.csms_settings.evidence_interval_s)

    async def examine_uncertain(self) -> None:
        """Settle what the CSMS's evidence can settle; hand the rest to the operator in time."""
        for row in await store.escalate_uncertain(self.pool, self.csms_settings.uncertain_resolve_after_s):
            log.error("delivery_awaits_operator", delivery_id=row["id"])
        for row in await store.uncertain_deliveries(self.pool, EVIDENCE_BATCH):
            try:
                await self._examine(row)
            except Exception as exc:
                log.warning("delivery_evidence_failed", delivery_id=row["id"], error=repr(exc))

    async def _examine(self, row: asyncpg.Record) -> None:
        delivery_id = row["id"]
        if row["matched_notification"] is not None:
            balance = await self.pool.fetchval(
                "SELECT updated_balance FROM csms_notifications WHERE id = $1", row["matched_notification"]
            )
            async with self.pool.acquire() as conn, conn.transaction():
                await service.settle_delivered(
                    conn, delivery_id, "notification", balance, actor="evidence", why="matched userBalance.changed"
                )
            return
        if row["balance_before"] is None:
            return
        try:
            user = await self.csms.read_user(row["user_id"])
        except (UnknownUser, UserRefused, CsmsUnavailable):
            return
        amount = wire.ampeco_amount(row["amount_minor"], row["currency"].strip())
        verdict = domain.settle_by_balance(
            row["direction"],
            amount,
            row["balance_before"],
            user.balance,
            seconds_since_sent=row["seconds_since_sent"],
            notified_since_sent=row["notified_since_sent"],
            tenant_moved_on=row["tenant_moved_on"],
            not_applied_after_s=self.csms_settings.not_applied_after_s,
        )
        why = f"balance {row['balance_before']} before the call, {user.balance} now"
        if verdict == "applied":
            async with self.pool.acquire() as conn, conn.transaction():
                await service.settle_delivered(conn, delivery_id, "balance", user.balance, actor="evidence", why=why)
        elif verdict == "not_applied":
            async with self.pool.acquire() as conn, conn.transaction():
                if await store.settle_not_applied(conn, delivery_id, "evidence", why, ("uncertain",)):
                    DELIVERIES_NOT_APPLIED.labels("evidence").inc()
                    log.info("delivery_not_applied", delivery_id=delivery_id, why=why)

    # --- Gauges -----------------------------------------------------------------------------------

    async def _gauges_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.update_gauges()
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def update_gauges(self) -> None:
        rows = await self.pool.fetch(
            "SELECT state, count(*) AS n FROM deliveries WHERE state IN ('pending', 'sending', 'uncertain', 'failed')"
            " GROUP BY state"
        )
        counts = {row["state"]: row["n"] for row in rows}
        for state in ("pending", "sending", "uncertain", "failed"):
            DELIVERIES.labels(state).set(counts.get(state, 0))
        oldest = await self.pool.fetchval(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(sent_at)), 0)::float8 FROM deliveries"
            " WHERE state = 'uncertain'"
        )
        DELIVERIES_UNCERTAIN_OLDEST_AGE.set(oldest)
        awaiting = await self.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE state = 'failed'"
            " OR (state = 'uncertain' AND escalated_at IS NOT NULL)"
            " OR (state = 'pending' AND created_at < now() - make_interval(secs => $1))",
            self.csms_settings.uncertain_resolve_after_s,
        )
        DELIVERIES_AWAITING_OPERATOR.set(awaiting)


def _outcome_label(outcome: CallOutcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    if isinstance(outcome, NotSent):
        if outcome.unauthorized:
            return "unauthorized"
        return "rate_limited" if outcome.retry_after_s is not None else "not_sent"
    if isinstance(outcome, Failed):
        return "failed"
    assert isinstance(outcome, Uncertain)
    return "uncertain"
