"""services/reconcile.py without I/O: a consistent world is clean under both CSMS kinds, every kind of
mismatch is found with the remedy that names the real commands, work in flight is not flagged, and
a delivered credit AMPECO never notified is a warning that does not fail the run."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services import reconcile as rc
from shared.money import to_major

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 3, 1, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=3)
GRACE = timedelta(minutes=5)


# --- a consistent world ------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    payments: list[rc.Payment] = dataclasses.field(default_factory=list)
    transfers: list[rc.LedgerTransfer] = dataclasses.field(default_factory=list)
    deliveries: list[rc.Delivery] = dataclasses.field(default_factory=list)
    notifications: list[rc.Notification] = dataclasses.field(default_factory=list)

    def facts(self, csms_kind: str = "ampeco", now: datetime = NOW) -> rc.Facts:
        return rc.Facts(
            since=SINCE,
            until=now,
            now=now,
            csms_kind=csms_kind,
            payments=self.payments,
            transfers=self.transfers,
            deliveries=self.deliveries,
            notifications=self.notifications,
            grace=GRACE,
        )

    def report(self, csms_kind: str = "ampeco") -> rc.Report:
        return rc.reconcile(self.facts(csms_kind))

    @staticmethod
    def replace(items: list[Any], index: int, **changes: Any) -> None:
        items[index] = dataclasses.replace(items[index], **changes)


def topup(
    world: World,
    *,
    user: str = "1001",
    amount: int = 2500,
    bonus: int = 150,
    fee: int = 25,
    currency: str = "EUR",
    at: datetime = LONG_AGO,
    environment: str = "production",
    delivered: bool = True,
) -> tuple[rc.Payment, rc.LedgerTransfer]:
    """A paid top-up that went all the way: payment, transfer, delivery, notification."""
    payment = rc.Payment(
        id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        user_id=user,
        status="succeeded",
        amount_minor=amount,
        bonus_minor=bonus,
        fee_minor=fee,
        currency=currency,
        environment=environment,
        succeeded_at=at,
        processor_reference=f"ref-{len(world.payments)}",
    )
    transfer = rc.LedgerTransfer(
        id=f"topup:{payment.id}",
        kind="topup",
        payment_id=payment.id,
        order_id=payment.order_id,
        user_id=user,
        amount_minor=amount,
        bonus_minor=bonus,
        fee_minor=fee,
        currency=currency,
        environment=environment,  # type: ignore[arg-type]
        created_at=at + timedelta(seconds=1),
        user_change_minor=amount + bonus,
    )
    world.payments.append(payment)
    world.transfers.append(transfer)
    if environment == "production" and delivered:
        deliver(world, transfer, reason=f"Balance top-up {payment.order_id}")
    return payment, transfer


def deliver(world: World, transfer: rc.LedgerTransfer, reason: str, notified: bool = True) -> rc.Delivery:
    change = transfer.user_change_minor
    delivery = rc.Delivery(
        id=len(world.deliveries) + 1,
        transfer_id=transfer.id,
        user_id=transfer.user_id,
        direction="credit" if change > 0 else "debit",
        amount_minor=abs(change),
        currency=transfer.currency,
        reason=reason,
        state="delivered",
        created_at=transfer.created_at,
        sent_at=transfer.created_at + timedelta(seconds=1),
        settled_at=transfer.created_at + timedelta(seconds=2),
        settled_by="response",
        last_outcome=None,
    )
    world.deliveries.append(delivery)
    if notified:
        notify(world, delivery.user_id, change, delivery.currency, delivery_id=delivery.id)
    return delivery


def notify(
    world: World,
    user: str,
    change_minor: int,
    currency: str = "EUR",
    *,
    change_type: str | None = None,
    delivery_id: int | None = None,
    at: datetime = LONG_AGO + timedelta(seconds=3),
) -> rc.Notification:
    amount = to_major(abs(change_minor), currency)
    notification = rc.Notification(
        id=len(world.notifications) + 1,
        user_id=user,
        credit=amount if change_minor > 0 else Decimal(0),
        debit=amount if change_minor < 0 else Decimal(0),
        currency=currency,
        change_type=change_type or ("api_top_up" if change_minor > 0 else "custom_fee"),
        transaction_id=9000 + len(world.notifications),
        occurred_at=at,
        received_at=at,
        delivery_id=delivery_id,
    )
    world.notifications.append(notification)
    return notification


def adjustment(world: World, *, user: str = "1001", change: int = -500, delivered: bool = True) -> rc.LedgerTransfer:
    transfer = rc.LedgerTransfer(
        id=f"adjustment:{uuid.uuid4()}",
        kind="adjustment",
        payment_id=None,
        order_id=None,
        user_id=user,
        amount_minor=abs(change),
        bonus_minor=0,
        fee_minor=0,
        currency="EUR",
        environment="production",
        created_at=LONG_AGO,
        user_change_minor=change,
    )
    world.transfers.append(transfer)
    if delivered:
        deliver(world, transfer, reason=f"Balance correction {transfer.id.split(':', 1)[1]}: goodwill (by ops)")
    return transfer


def kinds(report: rc.Report) -> list[str]:
    return [f.kind for f in report.mismatches]


def only(report: rc.Report, kind: str) -> rc.Finding:
    assert kinds(report) == [kind], [(f.kind, f.detail) for f in report.mismatches]
    assert report.exit_code == 1
    return report.mismatches[0]


# --- clean ----------------------------------------------------------------------------------------------


def test_a_consistent_world_is_clean_with_ampeco_and_with_the_ledger() -> None:
    world = World()
    topup(world)
    topup(world, user="1002", amount=1000, bonus=0, fee=0, at=LONG_AGO + timedelta(minutes=1))
    topup(world, user="1003", environment="test", at=LONG_AGO + timedelta(minutes=2))  # never leaves the ledger
    adjustment(world)
    # A balance change that is no API call of ours (a charging session, a voucher) is not ours to explain.
    notify(world, "1001", -730, change_type="session")
    notify(world, "1002", 500, change_type="voucher")
    for kind in ("ampeco", "ledger"):
        report = world.report(kind)
        assert report.mismatches == [] and report.warnings == [], report.mismatches + report.warnings
        assert report.exit_code == 0
        assert {row.verdict for row in report.rows} == {"ok"}
    report = world.report("ampeco")
    assert report.counts["payments_succeeded"] == 3
    assert report.counts["topup_transfers"] == 3 and report.counts["adjustments"] == 1
    assert report.counts["deliveries_delivered"] == 3
    assert report.counts["notifications_api"] == 3 and report.counts["notifications_matched"] == 3
    assert report.counts["notifications_other"] == 2
    assert report.counts["rows"] == 4 and report.counts["ok"] == 4 and report.counts["mismatches"] == 0
    # Side by side: one row per top-up, each system's view of it.
    first = report.rows[0]
    payment, transfer = world.payments[0], world.transfers[0]
    assert (first.order_id, first.payment_id, first.transfer_id) == (
        str(payment.order_id),
        str(payment.id),
        transfer.id,
    )
    assert (first.payment_status, first.paid_minor, first.bonus_minor, first.credited_minor) == (
        "succeeded",
        2500,
        150,
        2650,
    )
    assert (first.delivery_id, first.delivery_state, first.settled_by, first.notification_id) == (
        1,
        "delivered",
        "response",
        1,
    )
    assert first.notified == "api_top_up +26.50 EUR"


def test_the_ledger_csms_ignores_deliveries_and_notifications() -> None:
    world = World()
    topup(world, delivered=False)
    notify(world, "1001", 2650)  # would be unaccounted with AMPECO
    report = world.report("ledger")
    assert report.exit_code == 0 and report.warnings == []
    assert "deliveries_pending" not in report.counts and "notifications_api" not in report.counts


def test_an_empty_window_is_clean() -> None:
    report = World().report()
    assert report.exit_code == 0 and report.rows == [] and report.counts["rows"] == 0


# --- each mismatch ---------------------------------------------------------------------------------------


def test_a_succeeded_payment_without_a_transfer() -> None:
    world = World()
    payment, _ = topup(world, delivered=False)
    world.transfers.clear()
    finding = only(world.report(), rc.PAYMENT_NOT_CREDITED)
    assert finding.payment_id == str(payment.id) and finding.order_id == str(payment.order_id)
    assert "evtopup dead-letters list" in finding.remedy
    assert f"evtopup trace {payment.order_id}" in finding.remedy
    assert "evtopup adjust --user 1001 --amount 2650 --reason" in finding.remedy
    assert world.report().rows[0].verdict == "mismatch"


def test_a_payment_that_just_succeeded_is_in_flight_not_a_mismatch() -> None:
    world = World()
    topup(world, at=NOW - GRACE + timedelta(seconds=1), delivered=False)
    world.transfers.clear()
    report = world.report()
    assert report.exit_code == 0 and report.counts["in_flight"] == 1
    assert report.rows[0].verdict == "in_flight"


def test_a_payment_that_did_not_succeed_needs_no_transfer() -> None:
    world = World()
    topup(world, delivered=False)
    world.transfers.clear()
    world.replace(world.payments, 0, status="needs_review", succeeded_at=None)
    assert world.report().exit_code == 0


def test_a_transfer_whose_payment_is_unknown() -> None:
    world = World()
    _, transfer = topup(world)
    world.payments.clear()
    finding = only(world.report(), rc.TRANSFER_WITHOUT_PAYMENT)
    assert finding.transfer_id == transfer.id
    assert f"evtopup trace {transfer.payment_id}" in finding.remedy
    assert "evtopup adjust --user 1001 --amount -2650" in finding.remedy


@pytest.mark.parametrize("status", ["failed", "expired", "needs_review", "rejected", "pending"])
def test_a_transfer_whose_payment_did_not_succeed(status: str) -> None:
    world = World()
    payment, _ = topup(world)
    world.replace(world.payments, 0, status=status)
    finding = only(world.report(), rc.TRANSFER_PAYMENT_NOT_SUCCEEDED)
    assert f"is {status}" in finding.detail
    assert f"evtopup trace {payment.order_id}" in finding.remedy and "ref-0" in finding.remedy
    assert "evtopup adjust --user 1001 --amount -2650" in finding.remedy


@pytest.mark.parametrize(
    ("changes", "difference", "adjust"),
    [
        (
            {"amount_minor": 2000, "user_change_minor": 2150},
            "amount 2000 in the ledger, 2500 in payments",
            "--amount 500",
        ),
        ({"bonus_minor": 0, "user_change_minor": 2500}, "bonus 0 in the ledger, 150 in payments", "--amount 150"),
        ({"user_change_minor": 5300}, "credited to the driver 5300 in the ledger, 2650", "--amount -2650"),
        ({"fee_minor": 0}, "fee 0 in the ledger, 25 in payments", "the driver's balance is right"),
        ({"currency": "BGN"}, "currency BGN in the ledger, EUR in payments", "evtopup adjust --user ... --amount ..."),
        ({"user_id": "1002"}, "user 1002 in the ledger, 1001 in payments", "evtopup adjust --user ... --amount ..."),
    ],
)
def test_a_transfer_that_differs_from_its_payment(changes: dict[str, object], difference: str, adjust: str) -> None:
    world = World()
    topup(world, delivered=False)
    world.replace(world.transfers, 0, **changes)
    finding = only(world.report("ledger"), rc.TRANSFER_DIFFERS)
    assert difference in finding.detail
    assert adjust in finding.remedy


def test_with_ampeco_a_transfer_without_a_delivery() -> None:
    world = World()
    payment, transfer = topup(world, delivered=False)
    finding = only(world.report(), rc.TRANSFER_WITHOUT_DELIVERY)
    assert f"evtopup trace {payment.order_id}" in finding.remedy
    assert "Users → 1001 → Balance history" in finding.remedy
    assert f'evtopup adjust --user 1001 --amount 2650 --reason "transfer {transfer.id} never delivered"' in (
        finding.remedy
    )
    # ... and an adjustment without one.
    world = World()
    adjustment(world, delivered=False)
    finding = only(world.report(), rc.TRANSFER_WITHOUT_DELIVERY)
    assert "--amount -500" in finding.remedy and "evtopup trace" not in finding.remedy


def test_test_money_is_never_delivered_so_never_missing() -> None:
    world = World()
    topup(world, environment="test")
    assert world.deliveries == [] and world.report().exit_code == 0


def uncertain(world: World, index: int = 0, **changes: object) -> None:
    """Delivery ``index`` made uncertain: its answer lost, and no notification matched to it."""
    delivery_id = world.deliveries[index].id
    world.notifications[:] = [n for n in world.notifications if n.delivery_id != delivery_id]
    fields: dict[str, object] = {
        "state": "uncertain",
        "settled_at": None,
        "settled_by": None,
        "uncertain_since": LONG_AGO,
        "last_outcome": "HTTP 502",
    }
    world.replace(world.deliveries, index, **(fields | changes))


def test_an_uncertain_delivery_awaiting_the_operator() -> None:
    world = World()
    payment, _ = topup(world)
    uncertain(world, escalated_at=NOW - timedelta(minutes=1), uncertain_since=NOW - timedelta(minutes=2))
    finding = only(world.report(), rc.DELIVERY_UNCERTAIN)
    assert finding.delivery_id == 1
    assert "Users → 1001 → Balance history / transactions" in finding.remedy
    assert f'"Balance top-up {payment.order_id}"' in finding.remedy and "26.50 EUR" in finding.remedy
    assert "evtopup deliveries resolve 1 --applied --by NAME" in finding.remedy
    assert "evtopup deliveries resolve 1 --not-applied --by NAME" in finding.remedy
    assert "evtopup deliveries list --state uncertain" in finding.remedy


def test_an_uncertain_delivery_still_waiting_for_evidence_is_in_flight_until_the_grace_passes() -> None:
    world = World()
    topup(world)
    uncertain(world, uncertain_since=NOW - timedelta(seconds=30))
    report = world.report()
    assert report.exit_code == 0 and report.counts["in_flight"] == 1
    uncertain(world, uncertain_since=NOW - GRACE - timedelta(seconds=1))
    only(world.report(), rc.DELIVERY_UNCERTAIN)


def test_a_failed_delivery() -> None:
    world = World()
    topup(world)
    world.notifications.clear()
    world.replace(
        world.deliveries, 0, state="failed", settled_at=None, settled_by=None, last_outcome="404 unknown user"
    )
    finding = only(world.report(), rc.DELIVERY_FAILED)
    assert "404 unknown user" in finding.detail
    assert "evtopup deliveries list --state failed" in finding.remedy
    assert "evtopup deliveries resolve 1 --not-applied" in finding.remedy
    assert "evtopup deliveries resolve 1 --applied" in finding.remedy


@pytest.mark.parametrize("state", ["pending", "sending"])
def test_a_delivery_not_sent_for_longer_than_the_grace(state: str) -> None:
    world = World()
    topup(world)
    world.notifications.clear()
    world.replace(
        world.deliveries,
        0,
        state=state,
        sent_at=None,
        settled_at=None,
        settled_by=None,
        last_outcome="rate limited (429)",
    )
    finding = only(world.report(), rc.DELIVERY_STUCK)
    assert f"still {state} 2 h 59 min" in finding.detail and "rate limited (429)" in finding.detail
    assert "evtopup deliveries list --state open" in finding.remedy


def test_a_delivery_just_written_is_in_flight() -> None:
    world = World()
    topup(world, at=NOW - timedelta(seconds=10))
    world.notifications.clear()
    world.replace(world.deliveries, 0, state="pending", sent_at=None, settled_at=None, settled_by=None)
    report = world.report()
    assert report.exit_code == 0 and report.counts["in_flight"] == 1 and report.warnings == []


def test_a_delivery_that_does_not_carry_its_transfer() -> None:
    world = World()
    topup(world)
    world.replace(world.deliveries, 0, amount_minor=2500)
    world.replace(world.notifications, 0, credit=Decimal("25.00"))
    finding = only(world.report(), rc.DELIVERY_DIFFERS)
    assert "+26.50 EUR for user 1001" in finding.detail


@pytest.mark.parametrize("change_type", ["api_top_up", "add_to_balance"])
def test_an_api_credit_no_delivery_accounts_for(change_type: str) -> None:
    world = World()
    topup(world)
    notify(world, "1001", 2650, change_type=change_type, at=LONG_AGO + timedelta(minutes=1))
    finding = only(world.report(), rc.NOTIFICATION_UNACCOUNTED)
    assert finding.notification_id == 2 and finding.user_id == "1001"
    assert "a second application of it?" in finding.detail and "delivery 1" in finding.detail
    assert "double credit" in finding.remedy
    assert "evtopup adjust --user 1001 --amount -2650" in finding.remedy
    assert "AMPECO transaction 9001" in finding.remedy


def test_an_api_debit_no_delivery_accounts_for_and_one_unlike_any_of_ours() -> None:
    world = World()
    notify(world, "1001", -700, change_type="custom_fee")
    notify(world, "1002", 12345, change_type="api_top_up")
    report = world.report()
    assert kinds(report) == [rc.NOTIFICATION_UNACCOUNTED] * 2
    debit, credit = report.mismatches
    assert "API debit (custom_fee) of 7.00 EUR" in debit.detail and "--amount 700" in debit.remedy
    assert "second application" not in credit.detail and "--amount -12345" in credit.remedy
    assert [row.notified for row in report.rows] == ["custom_fee -7.00 EUR", "api_top_up +123.45 EUR"]


def test_a_delivered_credit_without_its_notification_is_only_a_warning() -> None:
    world = World()
    topup(world)
    world.notifications.clear()
    report = world.report()
    assert report.mismatches == [] and report.exit_code == 0
    [warning] = report.warnings
    assert warning.kind == rc.DELIVERED_NOT_NOTIFIED and warning.severity == "warning"
    assert "AMPECO resends them" in warning.remedy and "Users → 1001" in warning.remedy
    assert report.rows[0].verdict == "warning" and report.counts["warnings"] == 1
    # Not even a warning while the notification may still be on its way.
    world = World()
    topup(world, at=NOW - timedelta(seconds=20))
    world.notifications.clear()
    assert world.report().warnings == []


def test_the_rows_side_by_side_follow_payments_then_other_transfers_then_unexplained_changes() -> None:
    world = World()
    topup(world, at=LONG_AGO + timedelta(minutes=2))
    topup(world, user="1002", at=LONG_AGO)
    adjustment(world, user="1003", change=300)
    notify(world, "1004", 100)
    report = world.report()
    assert [row.user_id for row in report.rows] == ["1002", "1001", "1003", "1004"]
    assert [row.transfer_kind for row in report.rows] == ["topup", "topup", "adjustment", None]
    assert kinds(report) == [rc.NOTIFICATION_UNACCOUNTED]


# --- property: a consistent world of any shape is clean, and any single corruption of it is found -------

CURRENCIES = st.sampled_from(["EUR", "BGN", "JPY", "KWD"])


@st.composite
def worlds(draw: st.DrawFn, victim: bool = False) -> World:
    """Consistent worlds; with ``victim``, the first payment, transfer, delivery and notification of
    each list are one delivered production top-up, for a corruption to spoil."""
    world = World()
    if victim:
        topup(world, user="77", at=LONG_AGO - timedelta(minutes=10))
    for index in range(draw(st.integers(0, 6))):
        amount = draw(st.integers(1, 10**7))
        topup(
            world,
            user=str(draw(st.integers(1, 4))),
            amount=amount,
            bonus=draw(st.integers(0, 10**5)),
            fee=draw(st.integers(0, 500)),
            currency=draw(CURRENCIES),
            at=LONG_AGO + timedelta(minutes=index),
            environment=draw(st.sampled_from(["production", "production", "test"])),
        )
    for _ in range(draw(st.integers(0, 2))):
        adjustment(
            world,
            user=str(draw(st.integers(1, 4))),
            change=draw(st.integers(1, 10**5)) * draw(st.sampled_from([1, -1])),
        )
    return world


@hypothesis_settings(max_examples=150)
@given(worlds(), st.sampled_from(["ampeco", "ledger"]))
def test_any_consistent_world_is_clean(world: World, csms_kind: str) -> None:
    report = world.report(csms_kind)
    assert report.mismatches == [] and report.warnings == [] and report.exit_code == 0
    assert report.counts["rows"] == len(world.payments) + sum(1 for t in world.transfers if t.kind == "adjustment")


Corruption = Callable[[World, int], str]


def drop_transfer(world: World, _: int) -> str:
    transfer = world.transfers.pop(0)
    world.deliveries[:] = [d for d in world.deliveries if d.transfer_id != transfer.id]
    return rc.PAYMENT_NOT_CREDITED


def drop_payment(world: World, _: int) -> str:
    world.payments.pop(0)
    return rc.TRANSFER_WITHOUT_PAYMENT


def fail_payment(world: World, _: int) -> str:
    world.replace(world.payments, 0, status="failed")
    return rc.TRANSFER_PAYMENT_NOT_SUCCEEDED


def inflate_credit(world: World, extra: int) -> str:
    transfer = world.transfers[0]
    world.replace(
        world.transfers,
        0,
        bonus_minor=transfer.bonus_minor + extra,
        user_change_minor=transfer.user_change_minor + extra,
    )
    return rc.TRANSFER_DIFFERS


def drop_delivery(world: World, _: int) -> str:
    world.deliveries.pop(0)
    world.notifications[:] = [n for n in world.notifications if n.delivery_id != 1]
    return rc.TRANSFER_WITHOUT_DELIVERY


def escalate(world: World, _: int) -> str:
    uncertain(world, escalated_at=NOW)
    return rc.DELIVERY_UNCERTAIN


def refuse(world: World, _: int) -> str:
    world.notifications.clear()
    world.replace(world.deliveries, 0, state="failed", settled_at=None, settled_by=None)
    return rc.DELIVERY_FAILED


def hold(world: World, _: int) -> str:
    world.notifications.clear()
    world.replace(world.deliveries, 0, state="pending", sent_at=None, settled_at=None, settled_by=None)
    return rc.DELIVERY_STUCK


def apply_twice(world: World, _: int) -> str:
    delivery = world.deliveries[0]
    notify(world, delivery.user_id, delivery.change_minor, delivery.currency)
    return rc.NOTIFICATION_UNACCOUNTED


@hypothesis_settings(max_examples=200)
@given(
    worlds(victim=True),
    st.sampled_from(
        [drop_transfer, drop_payment, fail_payment, inflate_credit, drop_delivery, escalate, refuse, hold, apply_twice]
    ),
    st.integers(1, 1000),
)
def test_any_single_corruption_is_found(world: World, corrupt: Corruption, extra: int) -> None:
    assert world.report().exit_code == 0
    expected = corrupt(world, extra)
    report = world.report()
    assert expected in kinds(report), (corrupt.__name__, kinds(report))
    assert report.exit_code == 1
    assert all(f.remedy and "evtopup " in f.remedy for f in report.mismatches)


# --- output ---------------------------------------------------------------------------------------------


def corrupted_world() -> World:
    """1001 fine, 1002's delivery uncertain and handed to the operator, 1003's never notified."""
    world = World()
    topup(world)
    topup(world, user="1002", at=LONG_AGO + timedelta(minutes=1))
    topup(world, user="1003", at=LONG_AGO + timedelta(minutes=2))
    uncertain(world, 1, escalated_at=NOW)
    world.notifications[:] = [n for n in world.notifications if n.delivery_id != 3]
    return world


def test_json_is_one_object_with_window_counts_rows_mismatches_and_warnings() -> None:
    report = corrupted_world().report()
    data = json.loads(rc.report_json(report))
    assert set(data) == {"window", "counts", "rows", "mismatches", "warnings"}
    assert data["window"] == {
        "since": SINCE.isoformat(),
        "until": NOW.isoformat(),
        "now": NOW.isoformat(),
        "csms": "ampeco",
        "grace_s": 300.0,
    }
    assert [m["kind"] for m in data["mismatches"]] == [rc.DELIVERY_UNCERTAIN]
    assert [w["kind"] for w in data["warnings"]] == [rc.DELIVERED_NOT_NOTIFIED]
    assert (
        data["mismatches"][0]["delivery_id"] == 2 and "evtopup deliveries resolve 2" in data["mismatches"][0]["remedy"]
    )
    assert len(data["rows"]) == 3 and data["counts"]["mismatches"] == 1 and data["counts"]["warnings"] == 1
    assert [row["verdict"] for row in data["rows"]] == ["ok", "mismatch", "warning"]


def test_text_puts_disagreeing_rows_side_by_side_and_says_what_to_do() -> None:
    report = corrupted_world().report()
    text = rc.report_text(report)
    lines = text.splitlines()
    assert lines[0].startswith("reconcile 2026-03-01T00:00:00+00:00 .. 2026-03-02T12:00:00+00:00 (csms ampeco")
    assert "mismatches 1" in lines[1]
    header = next(line for line in lines if line.startswith("verdict"))
    assert header.split() == ["verdict", "user", "order", "payment", "ledger", "delivery", "notification"]
    assert any(line.startswith("mismatch") and "2 uncertain" in line and "succeeded 2500+150" in line for line in lines)
    assert any(line.startswith("warning") and "3 delivered/response" in line for line in lines)
    assert "MISMATCH delivery_uncertain: delivery 2" in text
    assert "  what to do: Its call may or may not have been applied" in text
    assert "WARNING delivered_not_notified" in text
    assert lines[-1] == "1 mismatch(es), 1 warning(s)"
    assert rc.report_text(World().report()).splitlines()[-1] == "no mismatch (0 warning(s))"


# --- the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T10:30:00Z", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        ("2026-03-01T10:30", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        ("2026-03-01 12:30:00+02:00", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_times_and_dates(text: str, expected: datetime) -> None:
    assert rc.parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "1700000000"])
def test_a_bad_time_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO-8601 time or date"):
        rc.parse_time(text)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="evtopup")
    rc.add_reconcile_parser(root.add_subparsers(dest="command", required=True))
    return root


def test_the_parser() -> None:
    args = parser().parse_args(["reconcile", "--since", "2026-03-01", "--json"])
    assert (args.command, args.since, args.until, args.json, args.grace_s) == (
        "reconcile",
        SINCE,
        None,
        True,
        rc.DEFAULT_GRACE_S,
    )
    args = parser().parse_args(["reconcile", "--since", "2026-03-01", "--until", "2026-03-02", "--grace-s", "60"])
    assert (args.until, args.json, args.grace_s) == (datetime(2026, 3, 2, tzinfo=UTC), False, 60.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["reconcile"],
        ["reconcile", "--since", "soon"],
        ["reconcile", "--since", "2026-03-01", "--grace-s", "-1"],
        ["reconcile", "--since", "2026-03-01", "--grace-s", "nan"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "evtopup reconcile: error:" in capsys.readouterr().err


def test_an_empty_window_is_a_usage_error_before_any_database_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["reconcile", "--since", "2026-03-02", "--until", "2026-03-01"])
    # No settings are needed to refuse it: nothing is connected to.
    assert asyncio.run(rc.reconcile_command(None, args)) == 2  # type: ignore[arg-type]
    assert capsys.readouterr().err == "evtopup: error: --until must be after --since\n"
