"""``evtopup reconcile`` on the real databases: top-ups paid through the stack reconcile clean (exit
0); a ledger transfer that no payment stands behind is a mismatch (exit 1) with its remedy; and with
``csms.kind = "ampeco"`` the deliveries and ``userBalance.changed`` notifications are read and
compared too. Whatever a test writes by hand into the shared stack is removed before it ends."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from services.reconcile import add_reconcile_parser, reconcile_command
from shared.settings import Settings
from tests.e2e.test_cli import evtopup
from tests.harness import Driver, Stack, superuser_dsn

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]


def reconcile_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evtopup")
    add_reconcile_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["reconcile", *argv])


async def reconcile(settings: Settings, *argv: str) -> tuple[int, str]:
    """The command in this process: its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await reconcile_command(settings, reconcile_args(*argv))
    return code, out.getvalue()


def cli_has_reconcile() -> bool:
    """Whether ``evtopup reconcile`` is wired into services/cli.py yet (then it is run as a process too)."""
    from services.cli import _parser

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            _parser().parse_args(["reconcile", "--since", "2026-01-01"])
        except SystemExit:
            return False
    return True


@contextlib.asynccontextmanager
async def crediting_as_superuser(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(superuser_dsn(stack, "crediting"))
    try:
        yield conn
    finally:
        await conn.close()


async def paid_topups(driver: Driver, stack: Stack, count: int) -> tuple[datetime, list[tuple[str, str]]]:
    """``count`` top-ups of users of their own, paid and credited; the window start before them and
    (user id, order id) of each."""
    async with crediting_as_superuser(stack) as conn:
        since: datetime = await conn.fetchval("SELECT now()") - timedelta(seconds=1)
    done = []
    for index in range(count):
        user_id = f"reconcile-{uuid.uuid4().hex[:8]}"
        status, order = await driver.create_topup(user_id, {"package_id": "p25" if index % 2 else "p10"})
        assert status == 201, order
        await driver.pay(order["redirect_url"])
        done.append((user_id, order["id"]))
    for user_id, order_id in done:
        await driver.wait_status(user_id, order_id, "credited")
    return since, done


async def test_paid_topups_reconcile_clean_and_an_unpaid_credit_is_a_mismatch(driver: Driver, stack: Stack) -> None:
    since, done = await paid_topups(driver, stack, 2)

    code, out = await reconcile(stack.settings, "--since", since.isoformat(), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["mismatches"] == [] and report["warnings"] == []
    rows = {row["order_id"]: row for row in report["rows"]}
    for user_id, order_id in done:
        row = rows[order_id]
        assert (row["user_id"], row["payment_status"], row["transfer_kind"], row["verdict"]) == (
            user_id,
            "succeeded",
            "topup",
            "ok",
        )
        assert row["credited_minor"] == row["paid_minor"] + row["bonus_minor"]
    assert report["counts"]["payments_succeeded"] >= 2 and report["window"]["csms"] == "ledger"
    if cli_has_reconcile():
        result = evtopup(stack, "reconcile", "--since", since.isoformat())
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.rstrip().endswith("no mismatch (0 warning(s))")

    # A credit no payment stands behind: written by hand, balanced, and removed again.
    user_id, transfer_id = f"reconcile-{uuid.uuid4().hex[:8]}", f"topup:{uuid.uuid4()}"
    payment_id = transfer_id.split(":", 1)[1]
    async with crediting_as_superuser(stack) as conn:
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO transfers (id, kind, payment_id, order_id, user_id, amount_minor, bonus_minor,"
                    " fee_minor, currency, correlation_id) VALUES ($1, 'topup', $2, $3, $4, 1000, 0, 0, 'EUR',"
                    " 'reconcile-test')",
                    transfer_id,
                    uuid.UUID(payment_id),
                    uuid.uuid4(),
                    user_id,
                )
                await conn.executemany(
                    "INSERT INTO postings (transfer_id, account, entry_kind, amount_minor, currency)"
                    " VALUES ($1, $2, $3, $4, 'EUR')",
                    [
                        (transfer_id, "processor:sandbox_main", "charged", -1000),
                        (transfer_id, f"user:{user_id}", "paid", 1000),
                    ],
                )
            code, out = await reconcile(stack.settings, "--since", since.isoformat())
            assert code == 1, out
            assert f"MISMATCH transfer_without_payment: transfer {transfer_id} credited user {user_id}" in out
            assert f"what to do: `evtopup trace {payment_id}`" in out
            assert f"`evtopup adjust --user {user_id} --amount -1000 --reason" in out
            assert out.rstrip().endswith("1 mismatch(es), 0 warning(s)")

            code, out = await reconcile(stack.settings, "--since", since.isoformat(), "--json")
            assert code == 1
            [mismatch] = json.loads(out)["mismatches"]
            assert (mismatch["kind"], mismatch["transfer_id"], mismatch["user_id"]) == (
                "transfer_without_payment",
                transfer_id,
                user_id,
            )
            if cli_has_reconcile():
                result = evtopup(stack, "reconcile", "--since", since.isoformat())
                assert result.returncode == 1, result.stderr
                assert "evtopup adjust --user" in result.stdout
            # An empty window is a usage error.
            code, _ = await reconcile(stack.settings, "--since", since.isoformat(), "--until", since.isoformat())
            assert code == 2
        finally:
            await conn.execute("DELETE FROM postings WHERE transfer_id = $1", transfer_id)
            await conn.execute("DELETE FROM transfers WHERE id = $1", transfer_id)


async def test_with_ampeco_deliveries_and_notifications_are_compared(driver: Driver, stack: Stack) -> None:
    """The ledger stack has no dispatcher, so rows written into ``deliveries`` stay as written: one top-up
    delivered and notified, one uncertain and handed to the operator, and an API credit AMPECO notified
    that none of ours accounts for."""
    since, done = await paid_topups(driver, stack, 2)
    settings = stack.settings.model_copy(update={"csms": stack.settings.csms.model_copy(update={"kind": "ampeco"})})
    (delivered_user, delivered_order), (uncertain_user, uncertain_order) = done
    async with crediting_as_superuser(stack) as conn:
        transfers = {
            str(row["order_id"]): row
            for row in await conn.fetch(
                "SELECT id, order_id, amount_minor + bonus_minor AS credit FROM transfers"
                " WHERE order_id = ANY($1::uuid[])",
                [uuid.UUID(order_id) for _, order_id in done],
            )
        }
        delivery_ids: list[int] = []
        try:
            for user_id, order_id, state in (
                (delivered_user, delivered_order, "delivered"),
                (uncertain_user, uncertain_order, "uncertain"),
            ):
                transfer = transfers[order_id]
                delivery_ids.append(
                    await conn.fetchval(
                        "INSERT INTO deliveries (transfer_id, user_id, direction, amount_minor, currency, reason,"
                        " app_info, state, sent_at, uncertain_since, escalated_at, settled_at, settled_by,"
                        " correlation_id) VALUES ($1, $2, 'credit', $3, 'EUR', $4, '{}', $5, now(),"
                        " CASE WHEN $5 = 'uncertain' THEN now() END, CASE WHEN $5 = 'uncertain' THEN now() END,"
                        " CASE WHEN $5 = 'delivered' THEN now() END, CASE WHEN $5 = 'delivered' THEN 'response' END,"
                        " 'reconcile-test') RETURNING id",
                        transfer["id"],
                        user_id,
                        transfer["credit"],
                        f"Balance top-up {order_id}",
                        state,
                    )
                )
            delivered_credit = transfers[delivered_order]["credit"]
            for delivery_id, change_type in ((delivery_ids[0], "api_top_up"), (None, "add_to_balance")):
                await conn.execute(
                    "INSERT INTO csms_notifications (identity_sha256, user_id, credit, debit, updated_balance,"
                    " currency, change_type, transaction_id, occurred_at, delivery_id)"
                    " VALUES ($1, $2, $3, 0, 100, 'EUR', $4, 4242, now(), $5)",
                    secrets.token_bytes(32),
                    delivered_user,
                    Decimal(delivered_credit) / 100,
                    change_type,
                    delivery_id,
                )

            code, out = await reconcile(settings, "--since", since.isoformat(), "--json")
            assert code == 1, out
            report = json.loads(out)
            # Only this test's users: anything else in the window is no business of this test's.
            ours = [m for m in report["mismatches"] if m["user_id"] in (delivered_user, uncertain_user)]
            by_kind = {m["kind"]: m for m in ours}
            assert len(ours) == 2, ours
            assert set(by_kind) == {"delivery_uncertain", "notification_unaccounted"}, report["mismatches"]
            uncertain = by_kind["delivery_uncertain"]
            assert uncertain["delivery_id"] == delivery_ids[1] and uncertain["order_id"] == uncertain_order
            assert f'"Balance top-up {uncertain_order}"' in uncertain["remedy"]
            assert f"evtopup deliveries resolve {delivery_ids[1]} --applied" in uncertain["remedy"]
            unaccounted = by_kind["notification_unaccounted"]
            assert unaccounted["user_id"] == delivered_user
            assert f"same change as our delivery {delivery_ids[0]}" in unaccounted["detail"]
            assert f"evtopup adjust --user {delivered_user} --amount -{delivered_credit}" in unaccounted["remedy"]
            rows = {row["order_id"]: row for row in report["rows"]}
            assert rows[delivered_order]["delivery_state"] == "delivered"
            assert rows[delivered_order]["notified"].startswith("api_top_up +")
            assert rows[delivered_order]["verdict"] == "ok"
            assert report["counts"]["notifications_api"] >= 2 and report["counts"]["notifications_matched"] >= 1
        finally:
            await conn.execute("DELETE FROM csms_notifications WHERE user_id = $1", delivered_user)
            await conn.execute("DELETE FROM deliveries WHERE id = ANY($1::bigint[])", delivery_ids)
