"""``evtopup reconcile --since T [--until T] [--json]``: payments, the ledger, deliveries to the CSMS
and the CSMS's own notifications, side by side for a window, and every disagreement with what the
operator does about it.

For the window ``[since, until)`` it takes the payments that succeeded in it, the ledger transfers
written in it (top-ups by payment, and operator adjustments), each one's delivery to AMPECO
(``csms.kind = "ampeco"``) and the ``userBalance.changed`` notifications received in it. What links
them is looked up whatever its time (a payment that succeeded just before ``since`` whose transfer
was written just after is one row, not two mismatches). :func:`reconcile` compares them and has no
I/O; :func:`load_facts` reads the two databases, each as its service's role.

The exit code is 1 when there is a mismatch, 0 when everything agrees (warnings do not count), and 2
for a usage or configuration error."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import asyncpg

from services.crediting.csms.ampeco.wire import API_CHANGE_TYPES
from services.crediting.domain import ADJUSTMENT, SHORTFALL, TOPUP, confirmed_in_ledger, user_account
from shared import db
from shared.messages import Environment
from shared.money import MoneyError, from_major, to_major
from shared.runtime import service_dsn
from shared.settings import Settings

# What a succeeded payment without a transfer, or a delivery not yet settled, may take before it is
# a mismatch rather than work in flight.
DEFAULT_GRACE_S: Final = 300.0

Severity = Literal["mismatch", "warning"]
Verdict = Literal["ok", "in_flight", "warning", "mismatch"]

# --- What is compared (plain rows, no I/O) ---------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    order_id: uuid.UUID
    user_id: str
    status: str
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    currency: str
    environment: str
    succeeded_at: datetime | None
    processor_reference: str | None = None


@dataclass(frozen=True)
class LedgerTransfer:
    id: str
    kind: str
    payment_id: uuid.UUID | None
    order_id: uuid.UUID | None
    user_id: str
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    currency: str
    environment: Environment
    created_at: datetime
    # What the transfer's postings did to the driver's own account (signed): amount + bonus for a
    # top-up, the correction for an adjustment.
    user_change_minor: int


@dataclass(frozen=True)
class Delivery:
    id: int
    transfer_id: str
    user_id: str
    direction: str
    amount_minor: int
    currency: str
    reason: str
    state: str
    created_at: datetime
    sent_at: datetime | None = None
    uncertain_since: datetime | None = None
    escalated_at: datetime | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None
    last_outcome: str | None = None

    @property
    def change_minor(self) -> int:
        return self.amount_minor if self.direction == "credit" else -self.amount_minor


@dataclass(frozen=True)
class Notification:
    """A ``userBalance.changed`` received (amounts in the CSMS's major units)."""

    id: int
    user_id: str
    credit: Decimal
    debit: Decimal
    currency: str
    change_type: str
    transaction_id: int | None
    occurred_at: datetime
    received_at: datetime
    delivery_id: int | None

    @property
    def is_api_change(self) -> bool:
        return self.change_type in API_CHANGE_TYPES

    @property
    def change(self) -> Decimal:
        return self.credit - self.debit


@dataclass(frozen=True)
class Facts:
    """Everything :func:`reconcile` looks at. ``payments`` and ``transfers`` include those that the
    window's rows refer to, whatever their time; ``deliveries`` are those of ``transfers``."""

    since: datetime
    until: datetime
    now: datetime
    csms_kind: str
    payments: Sequence[Payment] = ()
    transfers: Sequence[LedgerTransfer] = ()
    deliveries: Sequence[Delivery] = ()
    notifications: Sequence[Notification] = ()
    grace: timedelta = timedelta(seconds=DEFAULT_GRACE_S)


# --- What comes out ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: Severity
    detail: str
    remedy: str
    user_id: str | None = None
    order_id: str | None = None
    payment_id: str | None = None
    transfer_id: str | None = None
    delivery_id: int | None = None
    notification_id: int | None = None


@dataclass
class Row:
    """One top-up (or correction, or unexplained CSMS change) across the systems."""

    user_id: str
    currency: str
    order_id: str | None = None
    payment_id: str | None = None
    payment_status: str | None = None
    paid_minor: int | None = None
    bonus_minor: int | None = None
    transfer_id: str | None = None
    transfer_kind: str | None = None
    credited_minor: int | None = None
    delivery_id: int | None = None
    delivery_state: str | None = None
    settled_by: str | None = None
    notification_id: int | None = None
    notified: str | None = None
    verdict: Verdict = "ok"
    findings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    now: datetime
    csms_kind: str
    grace_s: float
    counts: dict[str, int]
    rows: list[Row]
    mismatches: list[Finding]
    warnings: list[Finding]

    @property
    def exit_code(self) -> int:
        return 1 if self.mismatches else 0


# --- The kinds of mismatch, and what the operator does about each ------------------------------------

PAYMENT_NOT_CREDITED = "payment_not_credited"
TRANSFER_WITHOUT_PAYMENT = "transfer_without_payment"
TRANSFER_PAYMENT_NOT_SUCCEEDED = "transfer_payment_not_succeeded"
TRANSFER_DIFFERS = "transfer_differs"
TRANSFER_WITHOUT_DELIVERY = "transfer_without_delivery"
DELIVERY_DIFFERS = "delivery_differs"
DELIVERY_UNCERTAIN = "delivery_uncertain"
DELIVERY_FAILED = "delivery_failed"
DELIVERY_STUCK = "delivery_stuck"
NOTIFICATION_UNACCOUNTED = "notification_unaccounted"
DELIVERED_NOT_NOTIFIED = "delivered_not_notified"

SEVERITY: Final[Mapping[str, Severity]] = {
    PAYMENT_NOT_CREDITED: "mismatch",
    TRANSFER_WITHOUT_PAYMENT: "mismatch",
    TRANSFER_PAYMENT_NOT_SUCCEEDED: "mismatch",
    TRANSFER_DIFFERS: "mismatch",
    TRANSFER_WITHOUT_DELIVERY: "mismatch",
    DELIVERY_DIFFERS: "mismatch",
    DELIVERY_UNCERTAIN: "mismatch",
    DELIVERY_FAILED: "mismatch",
    DELIVERY_STUCK: "mismatch",
    NOTIFICATION_UNACCOUNTED: "mismatch",
    # Notifications can be lost (and AMPECO resends them): listed, never failing the run.
    DELIVERED_NOT_NOTIFIED: "warning",
}

BACK_OFFICE = "AMPECO's back office (Users → {user} → Balance history / transactions)"


def _money(amount_minor: int, currency: str) -> str:
    try:
        return f"{to_major(amount_minor, currency)} {currency}"
    except MoneyError:
        return f"{amount_minor} {currency} minor units"


def _signed(amount_minor: int, currency: str) -> str:
    return ("+" if amount_minor >= 0 else "-") + _money(abs(amount_minor), currency)


def _at(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "-"


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _trace_key(transfer: LedgerTransfer | None, payment: Payment | None) -> str | None:
    if payment is not None:
        return str(payment.order_id)
    if transfer is not None and transfer.order_id is not None:
        return str(transfer.order_id)
    if transfer is not None and transfer.payment_id is not None:
        return str(transfer.payment_id)
    return None


class _Comparison:
    """The state of one run of :func:`reconcile`."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.findings: list[Finding] = []
        self.rows: list[Row] = []
        self.in_flight = 0
        # Reversal transfer id → what its shortfall gave back to the driver's account.
        self.shortfalls = {t.id.split(":", 1)[1]: t.user_change_minor for t in facts.transfers if t.kind == SHORTFALL}

    @property
    def ampeco(self) -> bool:
        return self.facts.csms_kind == "ampeco"

    def older_than_grace(self, moment: datetime | None) -> bool:
        return moment is not None and self.facts.now - moment > self.facts.grace

    def flag(self, row: Row, kind: str, detail: str, remedy: str, **refs: Any) -> None:
        finding = Finding(kind, SEVERITY[kind], detail, remedy, **refs)
        self.findings.append(finding)
        row.findings.append(kind)
        if finding.severity == "mismatch":
            row.verdict = "mismatch"
        elif row.verdict != "mismatch":
            row.verdict = "warning"

    def mark_in_flight(self, row: Row) -> None:
        self.in_flight += 1
        if row.verdict == "ok":
            row.verdict = "in_flight"

    # --- payments and the ledger ----------------------------------------------------------------

    def payment_without_transfer(self, row: Row, payment: Payment) -> None:
        if payment.status != "succeeded":
            return
        if not self.older_than_grace(payment.succeeded_at):
            self.mark_in_flight(row)
            return
        credit = payment.amount_minor + payment.bonus_minor
        self.flag(
            row,
            PAYMENT_NOT_CREDITED,
            f"payment {payment.id} (order {payment.order_id}, user {payment.user_id}) succeeded"
            f" {_at(payment.succeeded_at)} for {_money(payment.amount_minor, payment.currency)}"
            f" + bonus {_money(payment.bonus_minor, payment.currency)}; the ledger has no transfer for it",
            "Paid and not credited. Payments' sweeper keeps announcing it: find what stops it with"
            " `evtopup dead-letters list` (a refused payment.succeeded says why), check that crediting runs and"
            f" consumes crediting.payment_events, and `evtopup trace {payment.order_id}` shows where it stopped."
            " Once the path works it is credited by itself, exactly once. Only if crediting refuses it for good,"
            f" credit the driver by hand: `evtopup adjust --user {payment.user_id} --amount {credit} --reason"
            f' "top-up {payment.order_id} not credited: <why>"` (never both).',
            user_id=payment.user_id,
            order_id=str(payment.order_id),
            payment_id=str(payment.id),
        )

    def topup_against_payment(self, row: Row, transfer: LedgerTransfer, payment: Payment | None) -> None:
        credit = _money(transfer.user_change_minor, transfer.currency)
        refs = {
            "user_id": transfer.user_id,
            "order_id": str(transfer.order_id) if transfer.order_id else None,
            "payment_id": str(transfer.payment_id) if transfer.payment_id else None,
            "transfer_id": transfer.id,
        }
        take_back = (
            f"`evtopup adjust --user {transfer.user_id} --amount -{transfer.user_change_minor}"
            f' --reason "transfer {transfer.id}: <why>"`'
        )
        if payment is None:
            self.flag(
                row,
                TRANSFER_WITHOUT_PAYMENT,
                f"transfer {transfer.id} credited user {transfer.user_id} {credit} for payment"
                f" {transfer.payment_id}, which the payments database does not have",
                f"`evtopup trace {transfer.payment_id}`: with no payment and no processor event behind it, nobody"
                f" paid for this credit. Find out how it was written, then take it back: {take_back}.",
                **refs,
            )
            return
        if payment.status != "succeeded":
            self.flag(
                row,
                TRANSFER_PAYMENT_NOT_SUCCEEDED,
                f"transfer {transfer.id} credited user {transfer.user_id} {credit}, but payment {payment.id}"
                f" is {payment.status}",
                f"`evtopup trace {payment.order_id}` and the processor's dashboard"
                f" (reference {payment.processor_reference or '-'}): if the processor has the money, payments'"
                " record is behind (needs_review: `evtopup review list`, then `evtopup review settle`); if the"
                f" driver paid nothing, take the credit back: {take_back}.",
                **refs,
            )
        expected = payment.amount_minor + payment.bonus_minor
        differences = [
            f"{name} {ours} in the ledger, {theirs} in payments"
            for name, ours, theirs in (
                ("user", transfer.user_id, payment.user_id),
                ("currency", transfer.currency, payment.currency),
                ("amount", transfer.amount_minor, payment.amount_minor),
                ("bonus", transfer.bonus_minor, payment.bonus_minor),
                ("fee", transfer.fee_minor, payment.fee_minor),
                ("environment", transfer.environment, payment.environment),
                ("credited to the driver", transfer.user_change_minor, expected),
            )
            if ours != theirs
        ]
        if not differences:
            return
        if transfer.user_id == payment.user_id and transfer.currency == payment.currency:
            fix = (
                "the driver's balance is right (only the ledger's record differs)"
                if expected == transfer.user_change_minor
                else f"correct it with `evtopup adjust --user {payment.user_id}"
                f" --amount {expected - transfer.user_change_minor}"
                f' --reason "transfer {transfer.id} differs from its payment"`'
            )
        else:
            fix = "correct each driver's balance with `evtopup adjust --user ... --amount ... --reason ...`"
        self.flag(
            row,
            TRANSFER_DIFFERS,
            f"transfer {transfer.id} differs from payment {payment.id}: {'; '.join(differences)}",
            f"`evtopup trace {payment.order_id}` shows both. The driver is owed"
            f" {_money(expected, payment.currency)} (amount + bonus) and the ledger credited {credit} to user"
            f" {transfer.user_id}: {fix}, and tell the developers (the ledger refuses a conflicting transfer,"
            " so this one was written some other way).",
            **refs,
        )

    # --- deliveries and notifications -------------------------------------------------------------

    def transfer_delivery(
        self, row: Row, transfer: LedgerTransfer, delivery: Delivery | None, trace_key: str | None
    ) -> None:
        if not self.ampeco or confirmed_in_ledger(self.facts.csms_kind, transfer.environment):
            return
        # A shortfall never goes to the CSMS: it is the part of a reversal's debit the CSMS balance
        # could not give, cut from that reversal's delivery.
        if transfer.kind == SHORTFALL or self.delivered_change(transfer) == 0:
            return
        refs = {
            "user_id": transfer.user_id,
            "order_id": str(transfer.order_id) if transfer.order_id else None,
            "payment_id": str(transfer.payment_id) if transfer.payment_id else None,
            "transfer_id": transfer.id,
        }
        if delivery is None:
            trace = f"`evtopup trace {trace_key}`, then look" if trace_key else "Look"
            self.flag(
                row,
                TRANSFER_WITHOUT_DELIVERY,
                f"transfer {transfer.id} ({_signed(transfer.user_change_minor, transfer.currency)} for user"
                f" {transfer.user_id}, {_at(transfer.created_at)}) has no delivery to AMPECO",
                'AMPECO was never asked to apply it (a transfer from before csms.kind = "ampeco", or written by'
                f" hand). {trace} the user up in {BACK_OFFICE.format(user=transfer.user_id)}. If the change is"
                " there, nothing is owed. If not, the developers can add its delivery;"
                f" `evtopup adjust --user {transfer.user_id} --amount {transfer.user_change_minor}"
                f' --reason "transfer {transfer.id} never delivered"` also reaches the driver, but counts the'
                " change twice in the ledger.",
                **refs,
            )
            return
        self.delivery_state(row, transfer, delivery, trace_key)

    def delivered_change(self, transfer: LedgerTransfer) -> int:
        """What the transfer's delivery is to change in the CSMS: its change to the driver's account,
        less what a shortfall cut from it (``domain.shortfall_transfer``)."""
        return transfer.user_change_minor + self.shortfalls.get(transfer.id, 0)

    def delivery_state(self, row: Row, transfer: LedgerTransfer, delivery: Delivery, trace_key: str | None) -> None:
        refs = {
            "user_id": delivery.user_id,
            "order_id": str(transfer.order_id) if transfer.order_id else None,
            "payment_id": str(transfer.payment_id) if transfer.payment_id else None,
            "transfer_id": transfer.id,
            "delivery_id": delivery.id,
        }
        what = (
            f"delivery {delivery.id} ({delivery.direction} {_money(delivery.amount_minor, delivery.currency)}"
            f' for user {delivery.user_id}, reason "{delivery.reason}")'
        )
        back_office = BACK_OFFICE.format(user=delivery.user_id)
        if delivery.change_minor != self.delivered_change(transfer) or delivery.user_id != transfer.user_id:
            trace = f"`evtopup trace {trace_key}`, " if trace_key else ""
            self.flag(
                row,
                DELIVERY_DIFFERS,
                f"{what} does not carry transfer {transfer.id}"
                f" ({_signed(transfer.user_change_minor, transfer.currency)} for user {transfer.user_id})",
                f"Do not resolve it blindly: {trace}compare {back_office} with the ledger, correct the driver's"
                " balance with `evtopup adjust --user ... --amount ... --reason ...`, and tell the developers.",
                **refs,
            )
        if delivery.state == "uncertain":
            since = delivery.uncertain_since or delivery.sent_at or delivery.created_at
            if delivery.escalated_at is None and not self.older_than_grace(since):
                self.mark_in_flight(row)  # evidence may still settle it
                return
            escalated = f", handed to the operator {_at(delivery.escalated_at)}" if delivery.escalated_at else ""
            self.flag(
                row,
                DELIVERY_UNCERTAIN,
                f"{what} is uncertain since {_at(since)} ({delivery.last_outcome or 'answer lost'}){escalated}",
                "Its call may or may not have been applied, and AMPECO's evidence did not settle it. Look the user"
                f" up in {back_office}: a {delivery.direction} of"
                f' {_money(delivery.amount_minor, delivery.currency)} with reason "{delivery.reason}" around'
                f" {_at(delivery.sent_at)}. There: `evtopup deliveries resolve {delivery.id} --applied --by NAME"
                ' --why "seen in the back office"`; not there: `evtopup deliveries resolve'
                f' {delivery.id} --not-applied --by NAME --why "not in the back office"` (it is delivered again).'
                " All of them: `evtopup deliveries list --state uncertain`.",
                **refs,
            )
        elif delivery.state == "failed":
            self.flag(
                row,
                DELIVERY_FAILED,
                f"{what} failed: {delivery.last_outcome or 'refused'}",
                "AMPECO refused it for good (`evtopup deliveries list --state failed` shows why). Fix the cause"
                " (unknown user, insufficient balance for a debit, the token's permissions), then deliver it"
                f' again: `evtopup deliveries resolve {delivery.id} --not-applied --by NAME --why "..."`;'
                f" or, if {back_office} shows it applied after all, `evtopup deliveries resolve {delivery.id}"
                ' --applied --by NAME --why "..."`.',
                **refs,
            )
        elif delivery.state in ("pending", "sending"):
            if not self.older_than_grace(delivery.created_at):
                self.mark_in_flight(row)
                return
            self.flag(
                row,
                DELIVERY_STUCK,
                f"{what} is still {delivery.state} {_age(self.facts.now - delivery.created_at)} after its"
                f" transfer ({delivery.last_outcome or 'not tried yet'})",
                "`evtopup deliveries list --state open`: an uncertain or failed delivery of the same user holds it"
                " back (resolve that one first: `evtopup deliveries list --state awaiting-operator`); otherwise"
                " AMPECO refuses the calls (last outcome: rate limited, or the token refused: see"
                " EvtopupCsmsTokenRefused) or no crediting dispatcher runs. It goes out by itself once the cause"
                " is gone.",
                **refs,
            )

    def delivered_notification(self, row: Row, delivery: Delivery, notification: Notification | None) -> None:
        if delivery.state != "delivered" or notification is not None:
            return
        if not self.older_than_grace(delivery.settled_at or delivery.created_at):
            return  # the notification may still be on its way
        self.flag(
            row,
            DELIVERED_NOT_NOTIFIED,
            f"delivery {delivery.id} ({delivery.direction} {_money(delivery.amount_minor, delivery.currency)} for"
            f" user {delivery.user_id}) was settled by {delivery.settled_by or '-'} {_at(delivery.settled_at)};"
            " no userBalance.changed notification was matched to it",
            "Notifications can be lost or late (AMPECO resends them). Nothing to do if"
            f" {BACK_OFFICE.format(user=delivery.user_id)} shows the change. If it does not, the delivery was"
            f" taken for applied wrongly: `evtopup adjust --user {delivery.user_id} --amount"
            f' {delivery.change_minor} --reason "delivery {delivery.id} not applied in AMPECO"` reaches the driver'
            " (the ledger then counts the change twice: say so in the reason).",
            user_id=delivery.user_id,
            transfer_id=delivery.transfer_id,
            delivery_id=delivery.id,
        )

    def unaccounted_notification(self, row: Row, notification: Notification, lookalikes: Sequence[int]) -> None:
        change = notification.change
        direction = "credit" if change > 0 else "debit"
        try:
            undo = f"--amount {-from_major(change, notification.currency)}"
        except MoneyError:
            undo = "--amount <the change in minor units, opposite sign>"
        hint = (
            f"; it is the same change as our delivery {', '.join(map(str, lookalikes))} to this user:"
            " a second application of it?"
            if lookalikes
            else ""
        )
        self.flag(
            row,
            NOTIFICATION_UNACCOUNTED,
            f"AMPECO notified an API {direction} ({notification.change_type}) of {abs(change)}"
            f" {notification.currency} for user {notification.user_id} at {_at(notification.occurred_at)}"
            f" (notification {notification.id}, AMPECO transaction {notification.transaction_id or '-'})"
            f" that no delivery of ours accounts for{hint}",
            "Either one of our calls was applied twice (a double credit) or another API client of the tenant"
            f" changed the balance. Compare {BACK_OFFICE.format(user=notification.user_id)} with our deliveries"
            " (`evtopup deliveries list --state delivered`). A second application of ours: undo it with"
            f' `evtopup adjust --user {notification.user_id} {undo} --reason "AMPECO transaction'
            f' {notification.transaction_id or "?"} applied twice"` (it is also posted to the ledger, which'
            " counted the change once: say so in the reason). Another client's change: nothing to do.",
            user_id=notification.user_id,
            notification_id=notification.id,
        )


def _row_of_payment(payment: Payment) -> Row:
    return Row(
        user_id=payment.user_id,
        currency=payment.currency,
        order_id=str(payment.order_id),
        payment_id=str(payment.id),
        payment_status=payment.status,
        paid_minor=payment.amount_minor,
        bonus_minor=payment.bonus_minor,
    )


def _add_transfer(row: Row, transfer: LedgerTransfer) -> None:
    row.transfer_id = transfer.id
    row.transfer_kind = transfer.kind
    row.credited_minor = transfer.user_change_minor
    if row.order_id is None and transfer.order_id is not None:
        row.order_id = str(transfer.order_id)
    if row.payment_id is None and transfer.payment_id is not None:
        row.payment_id = str(transfer.payment_id)


def _major(amount_minor: int, currency: str) -> Decimal | None:
    try:
        return to_major(amount_minor, currency)
    except MoneyError:
        return None


def reconcile(facts: Facts) -> Report:
    """Every payment, transfer, delivery and API balance notification of ``facts`` side by side,
    and every disagreement between them, each with what the operator does about it. Pure."""
    run = _Comparison(facts)
    topups = {t.payment_id: t for t in facts.transfers if t.kind == TOPUP and t.payment_id is not None}
    delivery_of = {d.transfer_id: d for d in facts.deliveries}
    notification_of = {n.delivery_id: n for n in facts.notifications if n.delivery_id is not None}
    known_payments = {p.id: p for p in facts.payments}
    placed: set[str] = set()

    def follow(row: Row, transfer: LedgerTransfer, payment: Payment | None) -> None:
        _add_transfer(row, transfer)
        placed.add(transfer.id)
        if transfer.kind == TOPUP:
            run.topup_against_payment(row, transfer, payment)
        delivery = delivery_of.get(transfer.id)
        if delivery is not None:
            row.delivery_id, row.delivery_state, row.settled_by = delivery.id, delivery.state, delivery.settled_by
            notification = notification_of.get(delivery.id)
            if notification is not None:
                row.notification_id = notification.id
                row.notified = f"{notification.change_type} {notification.change:+} {notification.currency}"
            if run.ampeco:
                run.delivered_notification(row, delivery, notification)
        run.transfer_delivery(row, transfer, delivery, _trace_key(transfer, payment))

    for payment in sorted(facts.payments, key=lambda p: (p.succeeded_at or facts.now, str(p.id))):
        row = _row_of_payment(payment)
        run.rows.append(row)
        transfer = topups.get(payment.id)
        if transfer is None:
            run.payment_without_transfer(row, payment)
        else:
            follow(row, transfer, payment)
    for transfer in sorted(facts.transfers, key=lambda t: (t.created_at, t.id)):
        if transfer.id in placed:
            continue
        row = Row(user_id=transfer.user_id, currency=transfer.currency)
        run.rows.append(row)
        follow(row, transfer, known_payments.get(transfer.payment_id) if transfer.payment_id else None)

    if run.ampeco:
        same_change: dict[tuple[str, Decimal], list[int]] = {}
        for delivery in facts.deliveries:
            major = _major(delivery.change_minor, delivery.currency)
            if major is not None:
                same_change.setdefault((delivery.user_id, major), []).append(delivery.id)
        for notification in sorted(facts.notifications, key=lambda n: (n.received_at, n.id)):
            if notification.delivery_id is not None or not notification.is_api_change:
                continue
            row = Row(
                user_id=notification.user_id,
                currency=notification.currency,
                notification_id=notification.id,
                notified=f"{notification.change_type} {notification.change:+} {notification.currency}",
            )
            run.rows.append(row)
            lookalikes = same_change.get((notification.user_id, notification.change), [])
            run.unaccounted_notification(row, notification, sorted(lookalikes))

    mismatches = [f for f in run.findings if f.severity == "mismatch"]
    warnings = [f for f in run.findings if f.severity == "warning"]
    return Report(
        since=facts.since,
        until=facts.until,
        now=facts.now,
        csms_kind=facts.csms_kind,
        grace_s=facts.grace.total_seconds(),
        counts=_counts(facts, run, mismatches, warnings),
        rows=run.rows,
        mismatches=mismatches,
        warnings=warnings,
    )


def _counts(facts: Facts, run: _Comparison, mismatches: list[Finding], warnings: list[Finding]) -> dict[str, int]:
    counts = {
        "payments_succeeded": sum(1 for p in facts.payments if p.status == "succeeded"),
        "topup_transfers": sum(1 for t in facts.transfers if t.kind == TOPUP),
        "adjustments": sum(1 for t in facts.transfers if t.kind == ADJUSTMENT),
        "other_transfers": sum(1 for t in facts.transfers if t.kind not in (TOPUP, ADJUSTMENT)),
    }
    if facts.csms_kind == "ampeco":
        for state in ("pending", "sending", "uncertain", "delivered", "failed"):
            counts[f"deliveries_{state}"] = sum(1 for d in facts.deliveries if d.state == state)
        api = [n for n in facts.notifications if n.is_api_change]
        counts["notifications_api"] = len(api)
        counts["notifications_matched"] = sum(1 for n in facts.notifications if n.delivery_id is not None)
        counts["notifications_other"] = len(facts.notifications) - len(api)
    counts.update(
        rows=len(run.rows),
        ok=sum(1 for r in run.rows if r.verdict == "ok"),
        in_flight=run.in_flight,
        mismatches=len(mismatches),
        warnings=len(warnings),
    )
    return counts


# --- Output -----------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def report_json(report: Report) -> str:
    """One JSON object: window, counts, rows, mismatches, warnings."""
    return json.dumps(
        {
            "window": {
                "since": report.since,
                "until": report.until,
                "now": report.now,
                "csms": report.csms_kind,
                "grace_s": report.grace_s,
            },
            "counts": report.counts,
            "rows": [asdict(row) for row in report.rows],
            "mismatches": [asdict(f) for f in report.mismatches],
            "warnings": [asdict(f) for f in report.warnings],
        },
        default=_jsonable,
    )


TABLE_COLUMNS = (
    ("verdict", 9),
    ("user", 12),
    ("order", 36),
    ("payment", 24),
    ("ledger", 26),
    ("delivery", 22),
    ("notification", 0),
)


def _cells(row: Row) -> list[str]:
    payment = "-"
    if row.payment_status is not None:
        payment = f"{row.payment_status} {row.paid_minor}+{row.bonus_minor}"
    ledger = "-"
    if row.transfer_id is not None:
        ledger = f"{row.transfer_kind} {row.credited_minor:+}"
    delivery = "-"
    if row.delivery_id is not None:
        delivery = f"{row.delivery_id} {row.delivery_state}" + (f"/{row.settled_by}" if row.settled_by else "")
    notification = f"{row.notification_id} {row.notified}" if row.notification_id is not None else "-"
    return [row.verdict, row.user_id, row.order_id or "-", payment, ledger, delivery, notification]


def report_text(report: Report) -> str:
    """The report for a person: the window and counts, the rows that disagree side by side, then
    each mismatch and warning with what to do."""
    lines = [
        f"reconcile {_at(report.since)} .. {_at(report.until)} (csms {report.csms_kind},"
        f" grace {report.grace_s:g} s, at {_at(report.now)})",
        "counts: " + ", ".join(f"{name} {value}" for name, value in report.counts.items()),
    ]
    flagged = [row for row in report.rows if row.verdict in ("mismatch", "warning")]
    if flagged:
        lines.append("")
        lines.append(_table_line([name for name, _ in TABLE_COLUMNS]))
        lines.extend(_table_line(_cells(row)) for row in flagged)
    agreeing = len(report.rows) - len(flagged)
    lines.append("")
    lines.append(f"{agreeing} row(s) agree or are in flight (--json lists every row); amounts in minor units")
    for title, findings in (("MISMATCH", report.mismatches), ("WARNING", report.warnings)):
        for finding in findings:
            lines.append("")
            lines.append(f"{title} {finding.kind}: {finding.detail}")
            lines.append(f"  what to do: {finding.remedy}")
    lines.append("")
    if report.mismatches:
        lines.append(f"{len(report.mismatches)} mismatch(es), {len(report.warnings)} warning(s)")
    else:
        lines.append(f"no mismatch ({len(report.warnings)} warning(s))")
    return "\n".join(lines)


def _table_line(cells: Sequence[str]) -> str:
    return "  ".join(
        cell.ljust(width) if width else cell for cell, (_, width) in zip(cells, TABLE_COLUMNS, strict=True)
    ).rstrip()


# --- Reading the databases (thin) -------------------------------------------------------------------

PAYMENT_COLUMNS = (
    "id, order_id, user_id, status, amount_minor, bonus_minor, fee_minor, currency, environment, succeeded_at,"
    " processor_reference"
)
DELIVERY_COLUMNS = (
    "id, transfer_id, user_id, direction, amount_minor, currency, reason, state, created_at, sent_at,"
    " uncertain_since, escalated_at, settled_at, settled_by, last_outcome"
)
NOTIFICATION_COLUMNS = (
    "id, user_id, credit, debit, currency, change_type, transaction_id, occurred_at, received_at, delivery_id"
)


def _payment(row: asyncpg.Record) -> Payment:
    return db.record_to(Payment, row, currency=row["currency"].strip())


def _delivery(row: asyncpg.Record) -> Delivery:
    return db.record_to(Delivery, row, currency=row["currency"].strip())


def _notification(row: asyncpg.Record) -> Notification:
    return db.record_to(Notification, row, currency=row["currency"].strip())


def _transfers(rows: Iterable[asyncpg.Record], postings: Iterable[asyncpg.Record]) -> list[LedgerTransfer]:
    by_account = {(p["transfer_id"], p["account"]): int(p["total"]) for p in postings}
    return [
        db.record_to(
            LedgerTransfer,
            row,
            currency=row["currency"].strip(),
            user_change_minor=by_account.get((row["id"], user_account(row["user_id"], row["environment"])), 0),
        )
        for row in rows
    ]


async def load_facts(settings: Settings, since: datetime, until: datetime | None, grace: timedelta) -> Facts:
    """The window's payments, transfers, deliveries and notifications, and what they refer to, read as
    the payments and crediting roles. ``until`` None: up to the crediting database's ``now()``."""
    payments_db = await db.connect(service_dsn(settings, "payments"))
    try:
        crediting_db = await db.connect(service_dsn(settings, "crediting"))
        try:
            now: datetime = await crediting_db.fetchval("SELECT now()")
            until = until or now
            payment_rows = await payments_db.fetch(
                f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE succeeded_at >= $1 AND succeeded_at < $2",
                since,
                until,
            )
            payments = {row["id"]: _payment(row) for row in payment_rows}
            transfer_rows = await crediting_db.fetch(
                "SELECT * FROM transfers WHERE (created_at >= $1 AND created_at < $2) OR payment_id = ANY($3::uuid[])",
                since,
                until,
                list(payments),
            )
            missing = list(
                {row["payment_id"] for row in transfer_rows if row["payment_id"] is not None} - set(payments)
            )
            for row in await payments_db.fetch(
                f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ANY($1::uuid[])", missing
            ):
                payments[row["id"]] = _payment(row)
            transfer_ids = [row["id"] for row in transfer_rows]
            postings = await crediting_db.fetch(
                "SELECT transfer_id, account, sum(amount_minor) AS total FROM postings"
                " WHERE transfer_id = ANY($1::text[]) GROUP BY transfer_id, account",
                transfer_ids,
            )
            deliveries = [
                _delivery(row)
                for row in await crediting_db.fetch(
                    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE transfer_id = ANY($1::text[])", transfer_ids
                )
            ]
            notifications = [
                _notification(row)
                for row in await crediting_db.fetch(
                    f"SELECT {NOTIFICATION_COLUMNS} FROM csms_notifications"
                    " WHERE (received_at >= $1 AND received_at < $2) OR delivery_id = ANY($3::bigint[])",
                    since,
                    until,
                    [d.id for d in deliveries],
                )
            ]
        finally:
            await crediting_db.close()
    finally:
        await payments_db.close()
    return Facts(
        since=since,
        until=until,
        now=now,
        csms_kind=settings.csms.kind,
        payments=list(payments.values()),
        transfers=_transfers(transfer_rows, postings),
        deliveries=deliveries,
        notifications=notifications,
        grace=grace,
    )


# --- The command ------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (``2025-03-01T12:00:00+02:00``; without a zone it is UTC) or a date (its
    midnight, UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or date: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _grace_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def add_reconcile_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """``evtopup reconcile``, on the command line's subcommands."""
    parser = commands.add_parser(
        "reconcile",
        help="payments, ledger, deliveries and CSMS notifications side by side; every mismatch with its remedy",
        description="Exit code: 0 when everything agrees, 1 on any mismatch (warnings do not count), 2 on a"
        " usage or configuration error.",
    )
    parser.add_argument("--since", required=True, type=parse_time, help="window start: ISO-8601 time or date (UTC)")
    parser.add_argument("--until", type=parse_time, help="window end, excluded (default: now)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object: window, counts, rows, mismatches, warnings"
    )
    parser.add_argument(
        "--grace-s",
        type=_grace_s,
        default=DEFAULT_GRACE_S,
        help=f"work younger than this is in flight, not a mismatch (default {DEFAULT_GRACE_S:g})",
    )
    return parser


async def reconcile_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``evtopup reconcile``; the exit code (0 clean, 1 mismatches, 2 usage or configuration)."""
    since: datetime = args.since
    until: datetime | None = args.until
    if until is not None and until <= since:
        print("evtopup: error: --until must be after --since", file=sys.stderr)
        return 2
    try:
        facts = await load_facts(settings, since, until, timedelta(seconds=args.grace_s))
    except db.DatabaseUnavailable as exc:
        print(f"evtopup: error: {exc}", file=sys.stderr)
        return 2
    except asyncpg.PostgresError as exc:
        print(f"evtopup: error: reading the databases: {exc} (are they migrated? evtopup migrate)", file=sys.stderr)
        return 2
    report = reconcile(facts)
    print(report_json(report) if args.json else report_text(report))
    return report.exit_code
