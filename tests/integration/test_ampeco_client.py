"""services/crediting/csms/ampeco/client.py and tenant.py against the AMPECO simulator: what each way
a call can end means (delivered, not sent, failed, uncertain), both kinds of authentication, and the
tenant checks and notification subscription made at start. Every request must pass the simulator's
OpenAPI validation."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio

from services.crediting import store
from services.crediting.csms import BalanceChange, CsmsUnavailable, Delivered, Failed, NotSent, Uncertain, UnknownUser
from services.crediting.csms.ampeco.client import AmpecoClient
from services.crediting.csms.ampeco.tenant import TenantMismatch, prepare_tenant
from shared.settings import CsmsSettings, Settings
from tests.harness import Stack
from tests.integration.conftest import ScratchDb
from tests.simulators.ampeco import AmpecoSimulator

pytestmark = pytest.mark.broker

TOKEN = "static-token-" + uuid.uuid4().hex
CLIENT_ID, CLIENT_SECRET = "client-1", "secret-" + uuid.uuid4().hex


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[AmpecoSimulator]:
    simulator = AmpecoSimulator(api_token=TOKEN, oauth_clients={CLIENT_ID: CLIENT_SECRET}, hang_s=5)
    await simulator.start()
    simulator.add_user(7, Decimal("1.000"), locale="bg-BG")
    simulator.add_user(8, hide_balance=True)
    try:
        yield simulator
    finally:
        await simulator.stop()
    assert simulator.spec_violations == []


def csms_settings(base_url: str, **extra: object) -> CsmsSettings:
    values: dict[str, object] = {
        "kind": "ampeco",
        "base_url": base_url,
        "notification_url": "http://127.0.0.1:9/webhooks/ampeco",
        "request_timeout_s": 0.5,
        "api_token": TOKEN,
        **extra,
    }
    return CsmsSettings.model_validate(values)


@pytest_asyncio.fixture
async def client(sim: AmpecoSimulator) -> AsyncIterator[AmpecoClient]:
    ampeco = AmpecoClient(csms_settings(sim.base_url), "EUR")
    try:
        yield ampeco
    finally:
        await ampeco.close()


def credit(user_id: str = "7", amount_minor: int = 2510) -> BalanceChange:
    return BalanceChange(user_id, "credit", amount_minor, "EUR", "Balance top-up x", '{"transfer":"t"}')


async def test_a_credit_is_delivered_with_the_exact_decimal(sim: AmpecoSimulator, client: AmpecoClient) -> None:
    assert await client.credit(credit()) == Delivered()
    assert sim.balance(7) == Decimal("26.100")
    (call,) = sim.applied[7]
    assert (call.amount, call.reason, call.app_info) == (Decimal("25.10"), "Balance top-up x", '{"transfer":"t"}')


async def test_reading_users(sim: AmpecoSimulator, client: AmpecoClient) -> None:
    user = await client.read_user("7")
    assert (user.locale, user.balance) == ("bg-BG", Decimal("1.000"))
    assert (await client.read_user("8")).balance is None
    with pytest.raises(UnknownUser):
        await client.read_user("404")


@pytest.mark.parametrize(
    ("fault", "expected", "applied"),
    [
        ("hang_after_apply", Uncertain, True),
        ("reset_after_apply", Uncertain, True),
        ("error_5xx_after", Uncertain, True),
        ("error_5xx_before", Uncertain, False),
        ("rate_limited", NotSent, False),
        ("error_422", Failed, False),
    ],
)
async def test_each_lost_or_refused_answer_is_classified(
    sim: AmpecoSimulator, client: AmpecoClient, fault: str, expected: type, applied: bool
) -> None:
    sim.next_faults(7, [fault])
    outcome = await client.credit(credit())
    assert isinstance(outcome, expected), outcome
    assert (len(sim.applied[7]) == 1) is applied
    if isinstance(outcome, NotSent):
        assert outcome.retry_after_s is not None and outcome.retry_after_s > 0


async def test_a_debit_beyond_the_balance_is_flagged(sim: AmpecoSimulator, client: AmpecoClient) -> None:
    outcome = await client.debit(BalanceChange("7", "debit", 500, "EUR", "Correction", "{}"))
    assert isinstance(outcome, Failed) and outcome.insufficient_balance
    assert sim.balance(7) == Decimal("1.000")
    assert await client.debit(BalanceChange("7", "debit", 50, "EUR", "Correction", "{}")) == Delivered()
    assert sim.balance(7) == Decimal("0.500")


async def test_a_refused_connection_was_never_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ampeco = AmpecoClient(csms_settings(f"http://127.0.0.1:{port}"), "EUR")
    try:
        outcome = await ampeco.credit(credit())
        assert isinstance(outcome, NotSent) and not outcome.unauthorized
        with pytest.raises(CsmsUnavailable):
            await ampeco.read_user("7")
    finally:
        await ampeco.close()


async def test_a_refused_static_token_stops_without_applying(sim: AmpecoSimulator, client: AmpecoClient) -> None:
    sim.revoke_token(TOKEN)
    outcome = await client.credit(credit())
    assert isinstance(outcome, NotSent) and outcome.unauthorized
    assert sim.applied[7] == []


async def test_oauth_tokens_are_exchanged_and_replaced_on_expiry_or_401(sim: AmpecoSimulator) -> None:
    settings = csms_settings(sim.base_url, api_token=None, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    ampeco = AmpecoClient(settings, "EUR")
    try:
        assert await ampeco.credit(credit()) == Delivered()
        sim.expire_tokens()  # the token we hold is refused now: one 401, a new token, one more try
        assert await ampeco.credit(credit()) == Delivered()
        exchanges = [r for r in sim.requests if r.path.endswith("/oauth/token")]
        assert len(exchanges) == 2
        assert len(sim.applied[7]) == 2
        assert all(CLIENT_SECRET not in str(r.body) + str(r.headers) for r in exchanges)
    finally:
        await ampeco.close()


async def test_wrong_oauth_credentials_are_not_sent_calls(sim: AmpecoSimulator) -> None:
    settings = csms_settings(sim.base_url, api_token=None, client_id=CLIENT_ID, client_secret="wrong-secret-000")
    ampeco = AmpecoClient(settings, "EUR")
    try:
        outcome = await ampeco.credit(credit())
        assert isinstance(outcome, NotSent) and outcome.unauthorized
        assert sim.applied[7] == []
    finally:
        await ampeco.close()


@pytest.fixture
def crediting_pool(crediting_scratch: ScratchDb) -> asyncpg.Pool:
    return crediting_scratch.pool


async def test_the_tenant_is_checked_and_subscribed_once(
    sim: AmpecoSimulator, client: AmpecoClient, crediting_pool: asyncpg.Pool, stack: Stack
) -> None:
    settings = stack.settings.model_copy(update={"csms": client.settings})
    assert isinstance(settings, Settings)
    assert await prepare_tenant(client, crediting_pool, settings) == "subscription created"
    assert await prepare_tenant(client, crediting_pool, settings) == "subscription present"
    assert len(sim.subscriptions) == 1 and sim.subscriptions[0].token == TOKEN
    assert await store.signing_keys(crediting_pool) == [None]  # the static token itself, never copied
    other = settings.model_copy(update={"operator": settings.operator.model_copy(update={"currency": "BGN"})})
    with pytest.raises(TenantMismatch, match="base currency is EUR"):
        await prepare_tenant(client, crediting_pool, other)


async def test_a_subscription_made_earlier_with_the_static_token_is_adopted(
    sim: AmpecoSimulator, client: AmpecoClient, crediting_pool: asyncpg.Pool, stack: Stack
) -> None:
    settings = stack.settings.model_copy(update={"csms": client.settings})
    sim.subscribe(str(client.settings.notification_url))
    assert await prepare_tenant(client, crediting_pool, settings) == "subscription adopted"
    assert len(sim.subscriptions) == 1
    assert await store.signing_keys(crediting_pool) == [None]  # the static token itself, never copied


async def test_with_oauth_the_token_that_subscribed_is_kept_as_the_key(
    sim: AmpecoSimulator, crediting_pool: asyncpg.Pool, stack: Stack
) -> None:
    settings = csms_settings(sim.base_url, api_token=None, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    ampeco = AmpecoClient(settings, "EUR")
    try:
        full = stack.settings.model_copy(update={"csms": settings})
        assert await prepare_tenant(ampeco, crediting_pool, full) == "subscription created"
    finally:
        await ampeco.close()
    (subscription,) = sim.subscriptions
    assert await store.signing_keys(crediting_pool) == [subscription.token]
    assert subscription.token not in (TOKEN, CLIENT_SECRET)
