"""The AMPECO simulator itself (tests/simulators/ampeco.py): balances, spec validation, auth, OAuth,
rate limits, signed notifications and every fault. No database or broker: each test runs the
simulator (and, where needed, a small webhook receiver) in its own event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.simulators.ampeco import (
    ADD_BALANCE,
    CUSTOM_FEE,
    SPEC_PATH,
    AmpecoSimulator,
    dumps_exact,
    exact_multiple_of,
    spec_validator,
    trim_spec,
)

TOKEN = "tok-test-5f2c1a"
CLIENT_ID, CLIENT_SECRET = "client-1", "secret-9d1e"
USER = 1001
REPO = Path(__file__).resolve().parents[2]
SOURCE_SPEC = REPO.parent / "shared" / "reference" / "ampeco-public-api-topup-excerpt.json"
X_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@asynccontextmanager
async def running(sim: AmpecoSimulator) -> AsyncIterator[AmpecoSimulator]:
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
    assert sim.response_violations == [], "the simulator's own answers must follow the spec"


def new_sim(**options: Any) -> AmpecoSimulator:
    options.setdefault("check_responses", True)
    options.setdefault("notification_backoff_s", (0.02,))
    sim = AmpecoSimulator(TOKEN, oauth_clients={CLIENT_ID: CLIENT_SECRET}, **options)
    sim.add_user(USER, Decimal("10.00"), locale="bg-BG")
    return sim


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[AmpecoSimulator]:
    async with running(new_sim()) as started:
        yield started


@dataclass
class Reply:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = TOKEN,
    body: bytes | None = None,
    payload: Any = None,
    content_type: str = "application/json",
    timeout_s: float = 5.0,
) -> Reply:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if payload is not None:
        body = json.dumps(payload).encode()
    if body is not None:
        headers["Content-Type"] = content_type
    async with http.request(
        method, url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as response:
        return Reply(response.status, await response.read(), response.headers)


def add_url(sim: AmpecoSimulator, user: int | str = USER) -> str:
    return sim.base_url + ADD_BALANCE.format(user=user)


def fee_url(sim: AmpecoSimulator, user: int | str = USER) -> str:
    return sim.base_url + CUSTOM_FEE.format(user=user)


async def add_balance(http: aiohttp.ClientSession, sim: AmpecoSimulator, amount: str, **kw: Any) -> Reply:
    body = b'{"amount":%s,"reason":"order ord_1"}' % amount.encode()
    return await call(http, "POST", add_url(sim), body=body, **kw)


# ---- webhook receiver ------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # given first, then 202

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body, parse_float=Decimal) for _, body in self.received]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def webhook(request: web.Request) -> web.Response:
        state.received.append((dict(request.headers), await request.read()))
        return web.Response(status=state.answers.pop(0) if state.answers else 202)

    app = web.Application()
    app.router.add_post("/webhooks/ampeco", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/ampeco"
    try:
        yield state
    finally:
        await runner.cleanup()


def signature_ok(key: str, body: bytes, header: str, *, encoding: str = "hex") -> bool:
    """Written here, independently of the simulator: HMAC-SHA256 of the raw body, keyed with the token."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    expected = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return hmac.compare_digest(expected, header)


async def subscribe(http: aiohttp.ClientSession, sim: AmpecoSimulator, url: str, token: str = TOKEN) -> Reply:
    payload = {"via": "webhook", "notifications": ["userBalance.changed"], "webhook": {"callbackUrl": url}}
    return await call(http, "POST", sim.base_url + "/public-api/notifications/v2.0", payload=payload, token=token)


# ---- add-balance and validation ------------------------------------------------------------------------


async def test_valid_add_balance_answers_202_without_body_and_credits(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(
        http, "POST", add_url(sim), payload={"amount": 25.1, "reason": "order ord_1", "app_info": "evtopup"}
    )
    assert (reply.status, reply.body) == (202, b"")
    assert reply.headers["X-RateLimit-Limit"] and reply.headers["X-RateLimit-Remaining"]
    assert sim.balance(USER) == Decimal("35.10")
    [applied] = sim.applied[USER]
    assert (applied.amount, applied.reason, applied.app_info) == (Decimal("25.1"), "order ord_1", "evtopup")
    assert isinstance(applied.amount, Decimal) and applied.fault is None
    assert sim.spec_violations == []
    recorded = sim.requests[-1]
    assert (recorded.method, recorded.status, recorded.body["amount"]) == ("POST", 202, Decimal("25.1"))
    assert recorded.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "amount",
    ["25.1", "19.99", "0.70", "1.005", "0.001", "7", "25.100", "1e-3", "1E+2", "99999999999999.999"],
)
async def test_amounts_that_are_multiples_of_0_001_are_accepted_exactly(
    sim: AmpecoSimulator, http: aiohttp.ClientSession, amount: str
) -> None:
    # jsonschema's own multipleOf, on floats, wrongly rejects about 13% of such amounts (19.99, 0.7, 1.005).
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(19.99, {"multipleOf": 0.001})
    reply = await add_balance(http, sim, amount)
    assert reply.status == 202, reply.body
    assert sim.balance(USER) == Decimal("10.00") + Decimal(amount)
    assert sim.spec_violations == []


@pytest.mark.parametrize(
    ("user", "body", "field"),
    [
        ("abc", b'{"amount":5,"reason":"r"}', "user"),
        ("1.5", b'{"amount":5,"reason":"r"}', "user"),
        ("1001", b'{"amount":1.0005,"reason":"r"}', "amount"),
        ("1001", b'{"amount":0.30000000000000004,"reason":"r"}', "amount"),
        ("1001", b'{"amount":"5.00","reason":"r"}', "amount"),
        ("1001", b'{"amount":true,"reason":"r"}', "amount"),
        ("1001", b'{"amount":5,"reason":"r","orderId":"ord_1"}', "orderId"),
        ("1001", b'{"amount":5}', "reason"),
        ("1001", b'{"amount":5,"reason":null}', "reason"),
        ("1001", b'{"amount":5,"reason":"r","app_info":"' + b"x" * 2001 + b'"}', "app_info"),
        ("1001", b'{"amount":NaN,"reason":"r"}', "body"),
        ("1001", b"amount=5&reason=r", "body"),
        ("1001", b"[]", "body"),
    ],
)
async def test_requests_the_spec_rejects_get_422_and_are_recorded(
    sim: AmpecoSimulator, http: aiohttp.ClientSession, user: str, body: bytes, field: str
) -> None:
    reply = await call(http, "POST", add_url(sim, user), body=body)
    assert reply.status == 422, reply.body
    answer = reply.json()
    assert isinstance(answer["message"], str) and field in answer["errors"], answer
    assert all(isinstance(m, str) for messages in answer["errors"].values() for m in messages)
    assert len(sim.spec_violations) == len([m for ms in answer["errors"].values() for m in ms])
    assert any(field in v and f"/{user}/" in v for v in sim.spec_violations), sim.spec_violations
    assert sim.balance(USER) == Decimal("10.00") and sim.applied[USER] == []


async def test_app_info_of_2000_chars_is_fine_and_form_encoding_is_not(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    ok = await call(http, "POST", add_url(sim), payload={"amount": 1, "reason": "r", "app_info": "é" * 2000})
    assert ok.status == 202
    form = await call(
        http, "POST", add_url(sim), body=b"amount=1&reason=r", content_type="application/x-www-form-urlencoded"
    )
    assert form.status == 422 and "application/json" in sim.spec_violations[-1]
    assert sim.balance(USER) == Decimal("11.00")


async def test_unknown_user_404_and_unknown_routes_are_violations(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    missing = await call(http, "POST", add_url(sim, 999), payload={"amount": 1, "reason": "r"})
    assert missing.status == 404 and isinstance(missing.json()["message"], str)
    assert sim.spec_violations == []  # a well-formed call for an unknown user is not a spec violation
    v11 = await call(http, "GET", sim.base_url + "/public-api/resources/users/v1.1/1001")
    delete = await call(http, "DELETE", sim.base_url + "/public-api/resources/users/v1.0/1001")
    assert (v11.status, delete.status) == (404, 405)
    assert len(sim.spec_violations) == 2


def test_exact_multiple_of_and_exact_json() -> None:
    step = Decimal("0.001")
    assert exact_multiple_of(Decimal("25.1"), step) and exact_multiple_of(Decimal("1E+30"), step)
    assert not exact_multiple_of(Decimal("1.0005"), step)
    # Past the 28 digits of the default decimal context, still exact.
    assert not exact_multiple_of(Decimal("1.0000000000000000000000000000001"), step)
    assert exact_multiple_of(Decimal("0.75"), Decimal("0.25")) and not exact_multiple_of(
        Decimal("0.8"), Decimal("0.25")
    )
    assert dumps_exact({"a": Decimal("25.100"), "b": Decimal("1E+2"), "c": None}) == b'{"a":25.1,"b":100,"c":null}'
    with pytest.raises(TypeError):
        dumps_exact({"a": 0.1})


# ---- authentication, OAuth, rate limits ---------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong", ""])
async def test_missing_or_wrong_token_is_401(
    sim: AmpecoSimulator, http: aiohttp.ClientSession, token: str | None
) -> None:
    reply = await call(http, "POST", add_url(sim), payload={"amount": 1, "reason": "r"}, token=token)
    assert (reply.status, reply.json()) == (401, {"message": "Unauthenticated."})
    basic = await http.get(
        sim.base_url + "/public-api/resources/settings/v1.0", headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert basic.status == 401
    basic.release()
    assert sim.balance(USER) == Decimal("10.00")


async def test_oauth_client_credentials_token_works_then_expires(http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    async with running(new_sim(token_ttl_s=60, clock=lambda: now[0])) as sim:
        url = sim.base_url + "/public-api/oauth/token"
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        async with http.post(url, data=form) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            issued = await response.json()
        assert issued["token_type"] == "Bearer" and issued["expires_in"] == 60
        token = issued["access_token"]
        assert (await add_balance(http, sim, "1", token=token)).status == 202

        # HTTP Basic client authentication (RFC 6749 §2.3.1) works too.
        basic = {"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()}
        async with http.post(url, data={"grant_type": "client_credentials"}, headers=basic) as response:
            assert response.status == 200
            second = (await response.json())["access_token"]

        now[0] += 61
        expired = await add_balance(http, sim, "1", token=token)
        assert expired.status == 401 and expired.json() == {"message": "Unauthenticated."}
        assert (await add_balance(http, sim, "1", token=second)).status == 401
        assert sim.balance(USER) == Decimal("11.00")

        async with http.post(url, data={**form, "client_secret": "nope"}) as response:
            assert response.status == 401 and (await response.json())["error"] == "invalid_client"
        async with http.post(url, data={**form, "grant_type": "password"}) as response:
            assert response.status == 400 and (await response.json())["error"] == "unsupported_grant_type"
        assert sim.spec_violations == []
        async with http.post(url, json=form) as response:  # not form-encoded
            assert response.status == 400
        assert len(sim.spec_violations) == 1 and "RFC 6749" in sim.spec_violations[0]
        secrets_seen = [r.body.get("client_secret") for r in sim.requests if isinstance(r.body, dict)]
        assert CLIENT_SECRET not in secrets_seen and "***" in secrets_seen


async def test_expire_tokens_forces_a_new_exchange(sim: AmpecoSimulator, http: aiohttp.ClientSession) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    async with http.post(sim.base_url + "/public-api/oauth/token", data=form) as response:
        token = (await response.json())["access_token"]
    assert (await add_balance(http, sim, "1", token=token)).status == 202
    sim.expire_tokens()
    assert (await add_balance(http, sim, "1", token=token)).status == 401
    assert (await add_balance(http, sim, "1")).status == 202  # the static API token does not expire


async def test_rate_limit_429_with_headers_and_nothing_applied(http: aiohttp.ClientSession) -> None:
    now = [500.0]
    async with running(new_sim(clock=lambda: now[0])) as sim:
        sim.rate_limit(limit=2, window_s=60)
        first, second = await add_balance(http, sim, "1"), await add_balance(http, sim, "1")
        assert (first.status, second.status) == (202, 202)
        assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == ("2", "1")
        assert second.headers["X-RateLimit-Remaining"] == "0"
        limited = await add_balance(http, sim, "1")
        assert limited.status == 429 and limited.json() == {"message": "Too Many Attempts."}
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert abs(int(limited.headers["X-RateLimit-Reset"]) - (time.time() + 60)) <= 2
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert sim.balance(USER) == Decimal("12.00") and len(sim.applied[USER]) == 2
        now[0] += 60
        assert (await add_balance(http, sim, "1")).status == 202


# ---- resources ----------------------------------------------------------------------------------


async def test_user_settings_and_currency_resources(sim: AmpecoSimulator, http: aiohttp.ClientSession) -> None:
    sim.add_user(2002, Decimal("3"), hide_balance=True)
    user = (await call(http, "GET", sim.base_url + "/public-api/resources/users/v1.0/1001")).json()["data"]
    assert (user["id"], user["locale"], user["balance"], user["status"]) == ("1001", "bg-BG", Decimal("10"), "enabled")
    partner_user = (await call(http, "GET", sim.base_url + "/public-api/resources/users/v1.0/2002")).json()["data"]
    assert "balance" not in partner_user
    assert (await call(http, "GET", sim.base_url + "/public-api/resources/users/v1.0/7")).status == 404
    assert (await call(http, "GET", sim.base_url + "/public-api/resources/users/v1.0/x")).status == 422

    settings = (await call(http, "GET", sim.base_url + "/public-api/resources/settings/v1.0")).json()["data"]
    currency_id = settings["baseCurrency"]["id"]
    assert isinstance(currency_id, int)
    currency = (await call(http, "GET", sim.base_url + f"/public-api/resources/currencies/v2.0/{currency_id}")).json()
    assert "data" not in currency
    assert (currency["alphabeticCode"], currency["numericCode"], currency["decimal"]) == ("EUR", "978", 2)
    assert (await call(http, "GET", sim.base_url + "/public-api/resources/currencies/v2.0/999")).status == 404
    assert len(sim.spec_violations) == 1  # the "x" user id


async def test_custom_fee_takes_the_balance_or_refuses_with_400(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    sim.next_faults(USER, ["hang_after_apply"])  # refused before applying: this fault never happens
    too_much = await call(http, "POST", fee_url(sim), payload={"amount": 10.001, "description": "fee"})
    assert too_much.status == 400 and too_much.json() == {"message": "User has insufficient balance"}
    assert sim.balance(USER) == Decimal("10.00") and sim.custom_fees[USER] == [] and not sim.fault_counts
    ok = await call(http, "POST", fee_url(sim), payload={"amount": 4.5, "description": "fee", "paymentMethodId": None})
    assert (ok.status, ok.body) == (202, b"")
    assert sim.balance(USER) == Decimal("5.50") and sim.custom_fees[USER][0].transaction_id is not None
    wrong_type = await call(http, "POST", fee_url(sim), payload={"amount": 1, "description": "f", "paymentMethodId": 5})
    assert wrong_type.status == 422 and "paymentMethodId" in wrong_type.json()["errors"]
    assert sim.applied[USER] == []  # fees are not credits


# ---- notifications ------------------------------------------------------------------------------


async def test_balance_changes_are_notified_signed_with_the_subscribing_token(
    sim: AmpecoSimulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    created = await subscribe(http, sim, receiver.url)
    assert created.status == 201 and isinstance(created.json()["data"]["id"], int)
    listing = (await call(http, "GET", sim.base_url + "/public-api/notifications/v2.0?per_page=10")).json()
    assert [s["webhook"]["callbackUrl"] for s in listing["data"]] == [receiver.url]
    assert {"links", "meta"} <= set(listing)

    assert (await add_balance(http, sim, "25.1")).status == 202
    assert (await call(http, "POST", fee_url(sim), payload={"amount": 5, "description": "fee"})).status == 202
    await sim.wait_notifications_idle()

    assert len(receiver.received) == 2
    for headers, raw in receiver.received:
        assert signature_ok(TOKEN, raw, headers["X-Signature"])
        assert X_TIMESTAMP.match(headers["X-Timestamp"]) and headers["X-Tenant"] == "tenant-1"
        assert b" " not in raw  # compact JSON, signed exactly as sent
        assert spec_validator().callback_errors("userBalance.changed", json.loads(raw, parse_float=Decimal)) == []
    credit, debit = receiver.bodies()
    assert credit == {
        "notification": "userBalance.changed",
        "debit": 0,
        "credit": Decimal("25.1"),
        "updatedBalance": Decimal("35.1"),
        "userId": USER,
        "currency": "EUR",
        "type": "api_top_up",
        "transactionId": None,
        "timestamp": credit["timestamp"],
        "lastUpdatedAt": credit["lastUpdatedAt"],
    }
    assert (debit["type"], debit["debit"], debit["credit"], debit["updatedBalance"]) == (
        "custom_fee",
        5,
        0,
        Decimal("30.1"),
    )
    assert isinstance(debit["transactionId"], int)
    assert [n.status for n in sim.notifications_sent] == [202, 202]


async def test_an_oauth_subscription_is_signed_with_that_token_base64_optionally(
    sim: AmpecoSimulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    async with http.post(sim.base_url + "/public-api/oauth/token", data=form) as response:
        oauth_token = (await response.json())["access_token"]
    assert (await subscribe(http, sim, receiver.url, token=oauth_token)).status == 201
    sim.signature_encoding = "base64"
    await add_balance(http, sim, "1")
    await sim.wait_notifications_idle()
    [(headers, raw)] = receiver.received
    assert signature_ok(oauth_token, raw, headers["X-Signature"], encoding="base64")
    assert not signature_ok(TOKEN, raw, headers["X-Signature"], encoding="base64")


async def test_invalid_subscriptions_are_violations(sim: AmpecoSimulator, http: aiohttp.ClientSession) -> None:
    url = sim.base_url + "/public-api/notifications/v2.0"
    no_webhook = await call(http, "POST", url, payload={"via": "webhook", "notifications": ["userBalance.changed"]})
    no_list = await call(http, "POST", url, payload={"via": "webhook", "webhook": {"callbackUrl": "http://x.test/"}})
    bad_url = await call(
        http,
        "POST",
        url,
        payload={"via": "webhook", "notifications": ["userBalance.changed"], "webhook": {"callbackUrl": "no url"}},
    )
    bad_event = await call(
        http,
        "POST",
        url,
        payload={"via": "webhook", "notifications": ["balance"], "webhook": {"callbackUrl": "http://x.test/"}},
    )
    assert [r.status for r in (no_webhook, no_list, bad_url, bad_event)] == [422] * 4
    assert len(sim.spec_violations) == 4 and sim.subscriptions == []


async def test_notifications_are_retried_until_accepted_or_given_up(
    sim: AmpecoSimulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.subscribe(receiver.url)
    receiver.answers = [500, 503]
    await add_balance(http, sim, "1")
    await sim.wait_notifications_idle()
    assert [n.status for n in sim.notifications_sent] == [500, 503, 202]
    assert len({raw for _, raw in receiver.received}) == 1 and len(receiver.received) == 3

    sim.subscriptions.clear()
    sim.notifications_sent.clear()
    sim.subscribe("http://127.0.0.1:9/unreachable")
    await add_balance(http, sim, "1")
    await sim.wait_notifications_idle()
    assert [n.status for n in sim.notifications_sent] == [None] * sim.notification_attempts
    assert all(n.error for n in sim.notifications_sent)


async def test_notification_faults(sim: AmpecoSimulator, http: aiohttp.ClientSession, receiver: Receiver) -> None:
    sim.subscribe(receiver.url)
    sim.reorder_hold_s = 0.1
    sim.next_notification_faults(["duplicate", "lose", "wrong_key", "reorder"])
    for amount in ("1", "2", "3", "4", "5"):
        assert (await add_balance(http, sim, amount)).status == 202
    await sim.wait_notifications_idle()
    credits = [body["credit"] for body in receiver.bodies()]
    # 1 twice (duplicate), 2 never (lost), 3 with a wrong key, 4 held back until after 5.
    assert credits == [1, 1, 3, 5, 4]
    assert [signature_ok(TOKEN, raw, h["X-Signature"]) for h, raw in receiver.received] == [
        True,
        True,
        False,
        True,
        True,
    ]
    assert receiver.received[0] == receiver.received[1]
    assert len(sim.notifications_lost) == 1
    assert sim.notification_fault_counts == {"duplicate": 1, "lose": 1, "wrong_key": 1, "reorder": 1}

    # A held notification with nothing after it still goes out (after reorder_hold_s), and "delay" delays.
    receiver.received.clear()
    sim.notification_delay_s = (0.3, 0.3)
    sim.next_notification_faults(["reorder", "delay"])
    await add_balance(http, sim, "6")
    await sim.wait_notifications_idle()
    await add_balance(http, sim, "7")
    await asyncio.sleep(0.1)
    assert [b["credit"] for b in receiver.bodies()] == [6]
    await sim.wait_notifications_idle()
    assert [b["credit"] for b in receiver.bodies()] == [6, 7]


# ---- call faults --------------------------------------------------------------------------------


async def test_hang_after_apply_changes_the_balance_and_never_answers(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    sim.next_faults(USER, ["hang_after_apply"])
    with pytest.raises(TimeoutError):
        await add_balance(http, sim, "2.5", timeout_s=0.5)
    assert sim.balance(USER) == Decimal("12.50") and sim.applied[USER][0].fault == "hang_after_apply"
    assert sim.requests[-1].status is None and sim.fault_counts["hang_after_apply"] == 1


async def test_a_test_can_kill_the_caller_once_the_call_is_applied(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    seen: list[Decimal] = []
    sim.on_applied = lambda call: seen.append(call.amount)
    sim.next_faults(None, ["hang_after_apply"])
    caller = asyncio.create_task(add_balance(http, sim, "3"))
    applied = await sim.wait_applied(USER, timeout=2)
    caller.cancel()  # what SIGKILL of the calling process amounts to, seen from here
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert applied.amount == Decimal("3") and seen == [Decimal("3")] and sim.balance(USER) == Decimal("13.00")


async def test_reset_after_apply_is_a_disconnect_not_an_answer(
    sim: AmpecoSimulator, http: aiohttp.ClientSession
) -> None:
    sim.next_faults(USER, ["reset_after_apply"])
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await add_balance(http, sim, "1")
    assert sim.balance(USER) == Decimal("11.00") and sim.requests[-1].status is None


async def test_5xx_before_and_after_apply(sim: AmpecoSimulator, http: aiohttp.ClientSession) -> None:
    sim.next_faults(USER, ["error_5xx_before"] * 4)
    statuses = {(await add_balance(http, sim, "1")).status for _ in range(4)}
    assert statuses <= {500, 502, 503} and sim.balance(USER) == Decimal("10.00")
    sim.next_faults(USER, ["error_5xx_after"])
    assert (await add_balance(http, sim, "1")).status == 500
    assert sim.balance(USER) == Decimal("11.00")
    assert sim.fault_counts == {"error_5xx_before": 4, "error_5xx_after": 1}


async def test_slow_rate_limited_and_422_faults(sim: AmpecoSimulator, http: aiohttp.ClientSession) -> None:
    sim.slow_delay_s = (0.2, 0.2)
    sim.next_faults(None, ["slow", "rate_limited", "error_422", "ok"])
    sim.next_faults(2002, ["error_5xx_before"])  # another user's fault does not touch 1001
    started = time.monotonic()
    slow = await add_balance(http, sim, "1")
    assert slow.status == 202 and time.monotonic() - started >= 0.2
    limited = await add_balance(http, sim, "1")
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    invalid = await add_balance(http, sim, "1")
    assert invalid.status == 422 and invalid.json()["errors"]
    assert (await add_balance(http, sim, "1")).status == 202
    assert sim.balance(USER) == Decimal("12.00")
    assert sim.spec_violations == []  # injected faults are not our client's mistakes
    assert sim.fault_counts == {"slow": 1, "rate_limited": 1, "error_422": 1}


async def test_a_seeded_fault_mix_is_reproducible_and_balances_stay_exact(http: aiohttp.ClientSession) -> None:
    mix = {"error_5xx_before": 0.2, "error_5xx_after": 0.2, "error_422": 0.1, "slow": 0.1}
    outcomes = []
    for _ in range(2):
        async with running(new_sim(slow_delay_s=(0.0, 0.01))) as sim:
            sim.set_fault_mix(mix, seed=42)
            statuses = [(await add_balance(http, sim, "0.333")).status for _ in range(40)]
            assert sim.balance(USER) == Decimal("10.00") + sum((c.amount for c in sim.applied[USER]), Decimal(0))
            expected_applied = sum(1 for s in statuses if s == 202) + sim.fault_counts["error_5xx_after"]
            assert len(sim.applied[USER]) == expected_applied
            outcomes.append((statuses, dict(sim.fault_counts)))
    assert outcomes[0] == outcomes[1] and sum(outcomes[0][1].values()) > 5


# ---- the spec copy and the process --------------------------------------------------------------------


def test_the_spec_copy_is_the_trimmed_excerpt() -> None:
    spec = json.loads(SPEC_PATH.read_text())
    assert "AMPECO.CHARGE Public API 3.110.0" in spec["x-note"] and "openapi-spec.json" in spec["x-note"]
    assert {path: sorted(set(item) - {"parameters"}) for path, item in spec["paths"].items()} == {
        "/public-api/actions/users/v1.0/{user}/add-balance": ["post"],
        "/public-api/actions/users/v1.0/{user}/apply-custom-fee": ["post"],
        "/public-api/resources/users/v1.0/{user}": ["get"],
        "/public-api/resources/settings/v1.0": ["get"],
        "/public-api/resources/currencies/v2.0/{currency}": ["get"],
        "/public-api/notifications/v2.0": ["get", "post"],
    }
    assert list(spec["paths"]["/public-api/notifications/v2.0"]["post"]["callbacks"]) == ["userBalance.changed"]
    # Where the reference material sits beside the repository (a developer's checkout, not CI's
    # clone), the copy must also be exactly its trim: regenerated, never edited by hand.
    if SOURCE_SPEC.exists():
        assert trim_spec(json.loads(SOURCE_SPEC.read_text())) == spec


async def test_runs_as_a_process_with_the_token_from_the_environment(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "SIM_TOKEN_FOR_TEST": TOKEN, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "tests.simulators.ampeco",
        "--port",
        "0",
        "--api-token-env",
        "SIM_TOKEN_FOR_TEST",
        "--users",
        "1..3",
        "--no-notifications",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        base_url = line.split()[-1]
        assert (
            await call(http, "POST", f"{base_url}{ADD_BALANCE.format(user=3)}", payload={"amount": 2.5, "reason": "r"})
        ).status == 202
        user = (await call(http, "GET", f"{base_url}/public-api/resources/users/v1.0/3")).json()["data"]
        assert user["balance"] == Decimal("2.5")
        assert (await call(http, "GET", f"{base_url}/public-api/resources/users/v1.0/4")).status == 404
        process.send_signal(signal.SIGTERM)
        summary = json.loads(await asyncio.to_thread(process.stdout.readline))
        assert summary == {"applied_calls": 1, "total_balance": "2.5"}
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
