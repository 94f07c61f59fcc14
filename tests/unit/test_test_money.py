"""Test money never reaches a real balance: crediting decides an event's environment from its own
configuration, refuses test money for users outside the test list, and posts test money to
``test:`` accounts only (services/crediting/domain.py)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import SecretStr

from services.crediting.domain import (
    RefusedCredit,
    credit_environment,
    topup_transfer,
    user_account,
)
from services.payments.processors.sandbox.config import SandboxSettings
from tests.factories import payment_succeeded as paid


def integration(environment: Literal["production", "test"], test_users: list[str] | None = None) -> SandboxSettings:
    return SandboxSettings(
        processor="sandbox",
        environment=environment,
        methods=["card"],
        test_users=test_users or [],
        api_key=SecretStr("sk_test_0123456789abcdef"),
        webhook_secret=SecretStr("whsec_test_0123456789"),
    )


INTEGRATIONS = {"live": integration("production"), "trial": integration("test", ["tester-1"])}


def test_production_payment_is_production_money() -> None:
    assert credit_environment(paid(integration_id="live"), INTEGRATIONS) == "production"


def test_test_payment_for_a_listed_tester_is_test_money() -> None:
    event = paid(integration_id="trial", user_id="tester-1", environment="test")
    assert credit_environment(event, INTEGRATIONS) == "test"


def test_test_payment_for_anyone_else_is_refused() -> None:
    event = paid(integration_id="trial", user_id="driver-7", environment="test")
    with pytest.raises(RefusedCredit, match="outside the test_users"):
        credit_environment(event, INTEGRATIONS)


@pytest.mark.parametrize(("integration_id", "claimed"), [("trial", "production"), ("live", "test")])
def test_an_event_that_misstates_its_environment_is_refused(integration_id: str, claimed: str) -> None:
    event = paid(integration_id=integration_id, user_id="tester-1", environment=claimed)
    with pytest.raises(RefusedCredit, match="integration"):
        credit_environment(event, INTEGRATIONS)


def test_unknown_integration_is_refused() -> None:
    with pytest.raises(RefusedCredit, match="unknown integration"):
        credit_environment(paid(integration_id="gone"), INTEGRATIONS)


def test_test_money_is_posted_to_test_accounts_only() -> None:
    transfer = topup_transfer(paid(user_id="tester-1", integration_id="trial", environment="test"), "test")
    accounts = {p.account for p in transfer.postings}
    assert accounts == {"test:processor:trial", "test:user:tester-1", "test:revenue:fees", "test:expense:bonus"}
    assert user_account("tester-1") not in accounts
    assert transfer.user_credit_minor == 2600
    assert sum(p.amount_minor for p in transfer.postings) == 0


def test_production_accounts_keep_their_names() -> None:
    transfer = topup_transfer(paid(user_id="driver-1", integration_id="live"))
    assert {p.account for p in transfer.postings} == {
        "processor:live",
        "user:driver-1",
        "revenue:fees",
        "expense:bonus",
    }
