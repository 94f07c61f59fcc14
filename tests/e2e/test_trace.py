"""``evtopup trace ID``: one top-up's path across the three services in time order, found by its
order id, its payment id or the processor's reference; an unknown id is one clear line."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.e2e.test_cli import evtopup
from tests.harness import Driver, Stack, fetch

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]

# What a paid and credited top-up leaves behind, in the order it happened.
PATH = ("order created", "payment created", "processor event succeeded", "payment succeeded", "transfer topup")


LINE = re.compile(r"^(\S+)\s+(\S+)\s+(.+?)\s{2,}(\{.*\})$")


def steps_of(stdout: str) -> list[str]:
    """The ``what`` column of each line (after the time and the service, before the details)."""
    matches = [LINE.match(line) for line in stdout.splitlines()]
    assert all(matches), stdout
    return [match.group(3) for match in matches if match]


async def test_trace_shows_a_credited_topup_in_time_order(driver: Driver, stack: Stack) -> None:
    user_id = f"trace-{uuid.uuid4().hex[:8]}"
    _, order = await driver.create_topup(user_id, {"package_id": "p25"})
    await driver.pay(order["redirect_url"])
    await driver.wait_status(user_id, order["id"], "credited")
    payment = (
        await fetch(
            stack.dsn("payments"),
            "SELECT id, processor_reference FROM payments WHERE order_id = $1",
            uuid.UUID(order["id"]),
        )
    )[0]

    outputs = []
    for identifier in (order["id"], str(payment["id"]), payment["processor_reference"]):
        result = evtopup(stack, "trace", identifier)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == outputs[2]

    steps = steps_of(outputs[0])
    positions = [steps.index(step) for step in PATH]
    assert positions == sorted(positions), steps
    assert "order now credited" in steps
    lines = outputs[0]
    assert f"user:{user_id} paid +2500" in lines and f"user:{user_id} bonus +150" in lines
    assert order["id"] in lines and payment["processor_reference"] in lines


def test_trace_of_an_unknown_id_is_one_clear_line(stack: Stack) -> None:
    result = evtopup(stack, "trace", "no-such-reference")
    assert result.returncode == 2
    assert result.stderr.strip() == "evtopup: error: no order, payment or processor reference 'no-such-reference'"
