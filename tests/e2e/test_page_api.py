"""The page's API contract: authentication, idempotency keys, validation, problem bodies."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import jwt
import pytest

from tests.harness import Driver

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]


def user() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


async def test_same_key_returns_same_topup_and_other_body_is_422(driver: Driver) -> None:
    user_id, key = user(), str(uuid.uuid4())
    first_status, first = await driver.create_topup(user_id, {"package_id": "p10"}, key=key)
    again_status, again = await driver.create_topup(user_id, {"package_id": "p10"}, key=key)
    assert first_status == again_status == 201
    assert again == first
    # The sandbox has a hosted page: the driver goes there.
    assert first["next_step"] == "redirect" and first["redirect_url"]
    status, problem = await driver.create_topup(user_id, {"package_id": "p25"}, key=key)
    assert status == 422 and problem["title"] == "Idempotency-Key reused"
    # Keys belong to a user: another user's identical key is another top-up.
    _, other = await driver.create_topup(user(), {"package_id": "p10"}, key=key)
    assert other["id"] != first["id"]


async def test_concurrent_double_submit_makes_one_order_and_one_payment(driver: Driver) -> None:
    user_id, key = user(), str(uuid.uuid4())
    results = await asyncio.gather(*(driver.create_topup(user_id, {"package_id": "p10"}, key=key) for _ in range(5)))
    assert {status for status, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert len({body["redirect_url"] for _, body in results}) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount_minor": 99}, "amount_minor"),
        ({"amount_minor": 100001}, "amount_minor"),
        ({"amount_minor": 10.5}, "amount_minor"),
        ({"amount_minor": "1000"}, "amount_minor"),
        ({"amount_minor": True}, "amount_minor"),
        ({"package_id": "nope"}, "package_id"),
        ({"package_id": "p10", "amount_minor": 1000}, "package_id"),
        ({}, "package_id"),
        ({"package_id": "p10", "method": "bitcoin"}, "method"),
        ({"package_id": "p10", "price": 1}, "price"),
        # The sandbox prompts no phone: a number is refused, never passed on.
        ({"package_id": "p10", "phone": "254712345678"}, "phone"),
    ],
)
async def test_invalid_topups_get_422_problem_and_no_order(driver: Driver, body: dict[str, object], field: str) -> None:
    user_id = user()
    status, problem = await driver.create_topup(user_id, body)
    assert status == 422, problem
    assert problem["status"] == 422 and problem["field"] == field and problem["detail"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
async def test_malformed_json_is_400_problem(driver: Driver, raw: bytes) -> None:
    status, problem = await driver.create_topup(user(), raw)
    assert status == 400
    assert problem["title"] == "Malformed JSON"


async def test_missing_idempotency_key_is_400(driver: Driver) -> None:
    async with driver.http.post(
        driver.stack.url("page", "/api/v1/topups"),
        json={"package_id": "p10"},
        headers={"Authorization": f"Bearer {driver.token(user())}"},
    ) as response:
        assert response.status == 400
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("case", ["none", "garbage", "expired", "forged", "too_long_lived"])
async def test_unauthenticated_requests_get_401(driver: Driver, case: str) -> None:
    now = int(time.time())
    tokens = {
        "garbage": "abc.def.ghi",
        "expired": driver.token("u", now_s=now - 1000, ttl_s=900),
        "forged": jwt.encode({"sub": "u", "iat": now, "exp": now + 60}, "x" * 40, algorithm="HS256"),
        "too_long_lived": driver.token("u", ttl_s=3600),
    }
    headers = {"Idempotency-Key": "k"}
    if case in tokens:
        headers["Authorization"] = f"Bearer {tokens[case]}"
    async with driver.http.post(
        driver.stack.url("page", "/api/v1/topups"), json={"package_id": "p10"}, headers=headers
    ) as r:
        assert r.status == 401
        assert (await r.json(content_type=None))["status"] == 401
    async with driver.http.get(driver.stack.url("page", f"/topup?token={tokens.get(case, '')}")) as r:
        assert r.status == 401
        assert "open the top-up from the app" in await r.text()


async def test_cookie_session_needs_csrf_token_to_create(driver: Driver) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(driver.stack.url("page", f"/topup?token={driver.token(user())}")) as launch:
            page = await launch.text()
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        url = driver.stack.url("page", "/api/v1/topups")
        async with browser.post(url, json={"package_id": "p10"}, headers={"Idempotency-Key": "a"}) as response:
            assert response.status == 403
        headers = {"Idempotency-Key": "a", "X-CSRF-Token": csrf}
        async with browser.post(url, json={"package_id": "p10"}, headers=headers) as response:
            assert response.status == 201
            order = await response.json()
        async with browser.get(driver.stack.url("page", f"/api/v1/topups/{order['id']}")) as response:
            assert response.status == 200


async def test_another_users_topup_is_404(driver: Driver) -> None:
    owner = user()
    _, order = await driver.create_topup(owner, {"package_id": "p10"})
    assert (await driver.get_topup(owner, order["id"]))[0] == 200
    assert (await driver.get_topup(user(), order["id"]))[0] == 404
    assert (await driver.get_topup(owner, "not-a-uuid"))[0] == 404
    assert (await driver.get_topup(owner, str(uuid.uuid4())))[0] == 404


async def test_crediting_api_needs_its_bearer_token(driver: Driver) -> None:
    url = driver.stack.url("crediting", "/api/v1/users/someone/balance")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": driver.stack.api_token}):
        async with driver.http.get(url, headers=headers) as response:
            assert response.status == 401
    assert await driver.balance(f"never-{uuid.uuid4().hex}") == 0
    async with driver.http.get(
        driver.stack.url("crediting", "/api/v1/users/someone/entries?limit=0"),
        headers={"Authorization": f"Bearer {driver.stack.api_token}"},
    ) as response:
        assert response.status == 400


async def test_unknown_route_is_a_problem_body_not_a_traceback(driver: Driver) -> None:
    async with driver.http.get(driver.stack.url("page", "/api/v1/nope")) as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"
