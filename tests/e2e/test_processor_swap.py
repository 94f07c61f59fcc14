"""Changing the operator's processor while drivers are paying: a configuration change and
``evtopup reload``, no restart. New top-ups go to the new processor at once; the old integration
keeps taking its webhooks and polling until its last payment settles (draining), then is retired;
nothing is lost and nothing is charged or credited twice. A reload that needs a restart is refused
and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from services.payments.processors.base import Checkout, Redirect
from tests.harness import (
    REPO,
    Driver,
    Integrations,
    ServiceProcess,
    Stack,
    assert_exactly_once,
    eventually,
    fetch,
    own_stack,
    services_running,
    superuser_dsn,
)
from tests.simulators.paypal import PayPalSimulator
from tests.simulators.processor import ProcessorSimulator, WebhookFaults
from tests.simulators.stripe_sim import StripeSimulator

pytestmark = [pytest.mark.e2e]

PACKAGE = {"package_id": "p25"}
CREDIT = 2500 + 150  # the package's amount and bonus


def integration_table(
    integration_id: str, processor: str, method: str, simulator: ProcessorSimulator, *, active: bool, **more: Any
) -> str:
    table = {
        "processor": processor,
        "environment": "production",
        "active": active,
        "methods": [method],
        "api_base_url": simulator.base_url,
        **simulator.settings(),
        **more,
    }
    return f"[integrations.{integration_id}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def secret_env(integration_id: str, secrets: Mapping[str, str]) -> dict[str, str]:
    return {f"EVTOPUP__INTEGRATIONS__{integration_id.upper()}__{k.upper()}": v for k, v in secrets.items()}


@dataclass
class Swap:
    stack: Stack
    driver: Driver
    old: StripeSimulator  # stripe_main, active at the start
    new: PayPalSimulator  # paypal_main, added by the reload
    processes: list[ServiceProcess]

    async def cli(self, *args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "--config",
            str(self.stack.config_path),
            *args,
            env={**os.environ, **self.stack.env},
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return process.returncode or 0, out.decode()

    async def top_up(self, user: str, method: str) -> tuple[str, str, Checkout]:
        """(order id, integration id, checkout) of a new top-up."""
        status, body = await self.driver.create_topup(user, {**PACKAGE, "method": method})
        assert status in (200, 201), body
        [row] = await fetch(
            superuser_dsn(self.stack, "payments"),
            "SELECT integration_id, processor_reference, redirect_url FROM payments WHERE order_id = $1",
            uuid.UUID(body["id"]),
        )
        return body["id"], row["integration_id"], Checkout(row["processor_reference"], Redirect(row["redirect_url"]))

    async def states(self) -> dict[str, dict[str, Any]]:
        code, out = await self.cli("integrations", "--json")
        assert code == 0, out
        return {line["integration_id"]: line for line in map(json.loads, out.splitlines())}


@pytest_asyncio.fixture
async def swap(tmp_path: Path) -> AsyncIterator[Swap]:
    old, new = StripeSimulator(), PayPalSimulator()
    await old.start()
    await new.start()
    try:
        # The new processor's credentials are files the configuration names: a reload reads them,
        # while a running service's environment cannot change.
        secret_files = {}
        for key, value in new.secrets().items():
            path = tmp_path / f"paypal_{key}"
            path.write_text(value)
            secret_files[f"{key}_file"] = str(path)
        integrations = Integrations(
            toml=integration_table("stripe_main", "stripe", "card", old, active=True),
            secrets=secret_env("stripe_main", old.secrets()),
        )
        (tmp_path / "stack").mkdir()
        async with own_stack(tmp_path / "stack", integrations=integrations) as stack:
            old.webhook_url = stack.url("payments", "/webhooks/stripe_main")
            new.webhook_url = stack.url("payments", "/webhooks/paypal_main")
            stack.config_path.with_suffix(".next").write_text(
                stack.config_path.read_text().replace(
                    integrations.toml,
                    integration_table("stripe_main", "stripe", "card", old, active=False)
                    + "\n"
                    + integration_table("paypal_main", "paypal", "paypal", new, active=True, **secret_files),
                )
            )
            async with services_running(stack) as processes, aiohttp.ClientSession() as http:
                yield Swap(stack, Driver(stack, http), old, new, processes)
    finally:
        await old.close()
        await new.close()


async def test_top_ups_in_flight_complete_after_the_processor_is_swapped_without_a_restart(swap: Swap) -> None:
    stack, old, new = swap.stack, swap.old, swap.new
    users = [f"swap-{n}-{uuid.uuid4().hex[:6]}" for n in range(6)]
    paid: dict[str, tuple[str, int]] = {}

    # In flight on the old processor: four paid whose webhooks are held, one whose webhooks are lost
    # (only polling can find it), one the driver has not paid yet.
    old.faults = WebhookFaults(copies=2, hold=True)
    in_flight = [await swap.top_up(user, "card") for user in users[:4]]
    for (order_id, integration_id, checkout), user in zip(in_flight, users[:4], strict=True):
        assert integration_id == "stripe_main"
        await old.act(checkout, "succeeded")
        paid[order_id] = (user, CREDIT)
    old.faults = WebhookFaults(drop=True)
    lost_order, _, lost_checkout = await swap.top_up(users[4], "card")
    await old.act(lost_checkout, "succeeded")
    paid[lost_order] = (users[4], CREDIT)
    unpaid_order, _, unpaid_checkout = await swap.top_up(users[5], "card")
    assert old.created_payments() == 6

    # The switch: stripe_main inactive, paypal_main added and active; one reload, in order.
    swap.stack.config_path.write_text(stack.config_path.with_suffix(".next").read_text())
    code, out = await swap.cli("reload")
    assert code == 0, out
    assert out.splitlines() == [
        "payments: reloaded: took paypal_main, stripe_main",
        "crediting: reloaded: took paypal_main, stripe_main",
        "page: reloaded: took paypal_main, stripe_main",
    ], out
    states = await swap.states()
    assert states["paypal_main"]["state"] == "active"
    assert states["stripe_main"]["state"] == "draining"
    assert states["stripe_main"]["activity"]["open_payments"] >= 2  # the held webhooks have not come

    # New top-ups use the new processor at once; the old one's method is no longer offered.
    status, body = await swap.driver.create_topup(f"late-{uuid.uuid4().hex[:6]}", {**PACKAGE, "method": "card"})
    assert status == 422 and body["field"] == "method", body
    for n in range(3):
        user = f"swap-new-{n}-{uuid.uuid4().hex[:6]}"
        order_id, integration_id, checkout = await swap.top_up(user, "paypal")
        assert integration_id == "paypal_main"
        await new.act(checkout, "succeeded")
        paid[order_id] = (user, CREDIT)

    # The old integration still takes its webhooks (newest first, twice each) and polls the lost
    # one; the driver who had not paid pays now, on the old processor's page.
    old.faults = WebhookFaults()
    await old.act(unpaid_checkout, "succeeded")
    paid[unpaid_order] = (users[5], CREDIT)
    await old.release()

    await assert_exactly_once(stack, paid, timeout_s=90)
    assert old.created_payments() == 6, "a top-up was charged twice at the old processor"
    assert new.created_payments() == 3

    async def retired() -> dict[str, Any] | None:
        states = await swap.states()
        return states if states["stripe_main"]["state"] == "retired" else None

    states = await eventually(retired, 30, "the old integration never retired")
    assert states["paypal_main"]["state"] == "active"
    assert states["stripe_main"]["activity"]["open_payments"] == 0


async def test_a_reload_that_needs_a_restart_is_refused_and_changes_nothing(swap: Swap) -> None:
    config = swap.stack.config_path.read_text()
    swap.stack.config_path.write_text(config.replace('name = "Test CPO"', 'name = "Another CPO"'))
    code, out = await swap.cli("reload")
    assert code == 1
    assert out.splitlines() == [
        "payments: NOT reloaded: operator: changed, and only [integrations] is reloaded; restart to apply"
    ], out

    # Removing an integration payments may still need is refused too, on SIGHUP as by the command.
    swap.stack.config_path.write_text(swap.stack.config_path.with_suffix(".next").read_text())
    code, out = await swap.cli("reload")
    assert code == 0, out
    without_old = swap.stack.config_path.read_text().split("[integrations.stripe_main]")[0] + (
        "[integrations.paypal_main]" + swap.stack.config_path.read_text().split("[integrations.paypal_main]")[1]
    )
    swap.stack.config_path.write_text(without_old)
    [payments] = [process for process in swap.processes if process.name == "payments"]
    assert payments.proc is not None
    refusals = len(payments.log_events("settings_reload_refused"))  # the one above
    payments.proc.send_signal(signal.SIGHUP)

    async def refused() -> dict[str, Any] | None:
        events = payments.log_events("settings_reload_refused")
        return events[-1] if len(events) > refusals else None

    event = await eventually(refused, 10, "payments did not refuse the reload")
    # (Its secrets are still in payments' environment, so the table is not even complete.)
    assert event["reason"].startswith("integrations.stripe_main.processor: no processor"), event

    # Both integrations are still served: the old one's webhooks still reach their adapter.
    _, integration_id, _ = await swap.top_up(f"after-{uuid.uuid4().hex[:6]}", "paypal")
    assert integration_id == "paypal_main"
    async with swap.driver.http.post(swap.stack.url("payments", "/webhooks/stripe_main"), data=b"{}") as response:
        assert response.status == 401  # verified (and refused) by the Stripe adapter, not unknown (404)
