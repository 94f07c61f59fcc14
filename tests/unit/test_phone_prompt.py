"""The page when the processor prompts the driver's phone (M-Pesa's STK push): the phone number a
driver types, normalised or refused; its keyed hash in the idempotency fingerprint (never its digits);
the checkout RPC's failures as the driver and the API see them; and the form, the API and the status
page for a checkout whose next step is a prompt on the phone. No database, no broker: the store and
the RPC are stand-ins, the settings the demo's with an integration that asks for the phone."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, cast

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from services.page import api, pages, service, store
from services.page.domain import (
    InvalidPhone,
    OrderStatus,
    checkout_failure,
    checkout_locale,
    next_step,
    normalise_phone,
    phone_fingerprint_key,
    redact_numbers,
    request_fingerprint,
)
from services.page.i18n import Translator
from services.page.launch import SESSION_COOKIE, Session, encode_session
from services.page.messages import SOURCE
from services.page.open_launch import LaunchLimits
from services.payments.processors.sandbox.config import SandboxSettings
from shared.amqp import CSMS_USER_RPC_QUEUE, RpcClient, RpcError, RpcTimeout
from shared.http import Problem, service_middleware
from shared.messages import CreateCheckout
from shared.runtime import POOL_KEY, SETTINGS_KEY
from shared.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
LAUNCH_SECRET = "launch-secret-0123456789abcdefghijklmnop"
SECRETS = {
    "EVTOPUP__LAUNCH__SECRET": LAUNCH_SECRET,
    "EVTOPUP__CREDITING__API_TOKEN": "crediting-token-value",
    "EVTOPUP__AMQP__PASSWORD": "amqp-password-value",
    "EVTOPUP__AMQP__PAGE_PASSWORD": "amqp-page-password",
    "EVTOPUP__AMQP__PAYMENTS_PASSWORD": "amqp-payments-password",
    "EVTOPUP__AMQP__CREDITING_PASSWORD": "amqp-crediting-password",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY": "sandbox-api-key-value",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET": "sandbox-webhook-secret-value",
}
KEY = phone_fingerprint_key(LAUNCH_SECRET)
PHONE = "254712345678"
PHONE_DRIVER = "phone-driver"  # served by the integration that asks for the phone
CARD_DRIVER = "card-driver"  # served by the demo's sandbox (a redirect)


class PhonePromptSettings(SandboxSettings):
    """The sandbox's settings, as a processor that prompts the driver's phone would have them."""

    asks_driver_phone: ClassVar[bool] = True


@pytest.fixture(scope="module")
def settings() -> Settings:
    demo = load_settings(REPO / "config" / "demo.toml", SECRETS)
    sandbox = demo.integrations["sandbox_demo"]
    phone = PhonePromptSettings.model_validate({**dict(sandbox), "environment": "test", "test_users": [PHONE_DRIVER]})
    return demo.model_copy(update={"integrations": {**demo.integrations, "phone_test": phone}})


# --- the number a driver types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "254712345678",
        "+254712345678",
        "+254 712 345 678",
        "254-712-345-678",
        "  +254 712-345 678  ",
        "+ 254 712 345 678",
        "254\u00a0712\u00a0345\u00a0678",  # no-break spaces, as some keyboards and pastes give
        "254\u2011712\u2013345\u2212678",  # Unicode dashes and a minus sign
    ],
)
def test_spaces_dashes_and_a_leading_plus_are_dropped(typed: str) -> None:
    assert normalise_phone(typed) == PHONE


@pytest.mark.parametrize("typed", ["12345678", "123456789012345"])
def test_8_to_15_digits_are_taken(typed: str) -> None:
    assert normalise_phone(typed) == typed


@pytest.mark.parametrize("typed", [None, "", "   ", "+"])
def test_no_number_is_required(typed: str | None) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalise_phone(typed)
    assert info.value.field == "phone"
    assert info.value.message_key == ("phone_invalid" if typed == "+" else "phone_required")


@pytest.mark.parametrize(
    "typed",
    [
        "0712345678",  # a national number: the country code must come first
        "1234567",  # 7 digits
        "1234567890123456",  # 16 digits
        "254 712 345 67a",
        "254.712.345.678",
        "(254) 712345678",
        "++254712345678",
        "254+712345678",
        "+254712345678+",
        "".join(chr(0x0660 + int(d)) for d in PHONE),  # Arabic-Indic digits: str.isdigit() says yes
        "".join(chr(0xFF10 + int(d)) for d in PHONE),  # fullwidth digits
        "2" * 33,  # longer than anyone types
        "1" + " " * 40 + "2345678",
        254712345678,  # a JSON number, not a string
        ["254712345678"],
        {"phone": "254712345678"},
        True,
    ],
)
def test_anything_else_is_refused_without_repeating_it(typed: object) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalise_phone(typed)
    assert info.value.field == "phone" and info.value.message_key == "phone_invalid"
    assert str(typed) not in info.value.detail and "712345" not in info.value.detail


@given(st.text(max_size=40) | st.from_regex(r"\+?[0-9 \-]{6,20}", fullmatch=True))
def test_a_normalised_number_is_what_the_checkout_request_takes(typed: str) -> None:
    try:
        digits = normalise_phone(typed)
    except InvalidPhone as exc:
        assert exc.message_key in ("phone_required", "phone_invalid")
        return
    assert re.fullmatch(r"[1-9][0-9]{7,14}", digits)
    assert digits in re.sub(r"\D", "", typed)
    command = CreateCheckout(
        order_id=uuid.uuid4(),
        user_id="u",
        integration_id="i",
        method="card",
        package_id="p10",
        return_url="https://page.example/r",
        phone=digits,
    )
    assert command.phone == digits


# --- the idempotency fingerprint -------------------------------------------------------------------------


BODY = {"package_id": "p10", "method": "card"}


def test_a_body_without_a_phone_fingerprints_as_it_always_has() -> None:
    compact = json.dumps(BODY, sort_keys=True, separators=(",", ":")).encode()
    assert request_fingerprint(BODY) == hashlib.sha256(compact).hexdigest()
    assert request_fingerprint(BODY, None, phone_key=KEY) == request_fingerprint(BODY)


def test_the_phone_is_part_of_the_request() -> None:
    with_phone = request_fingerprint(BODY, PHONE, phone_key=KEY)
    assert with_phone != request_fingerprint(BODY)
    assert with_phone != request_fingerprint(BODY, "254712345679", phone_key=KEY)
    assert with_phone == request_fingerprint(dict(reversed(BODY.items())), PHONE, phone_key=KEY)
    # The same number however it was typed.
    assert with_phone == request_fingerprint(BODY, normalise_phone("+254 712-345-678"), phone_key=KEY)


def test_the_fingerprint_cannot_be_reversed_without_the_page_secret() -> None:
    stored = request_fingerprint(BODY, PHONE, phone_key=KEY)
    assert PHONE not in stored and re.fullmatch(r"[0-9a-f]{64}", stored)
    # Whoever reads the orders table and tries every number with a plain hash finds nothing...
    for guess in ({**BODY, "phone": PHONE}, {**BODY, "phone_hmac": hashlib.sha256(PHONE.encode()).hexdigest()}):
        assert hashlib.sha256(json.dumps(guess, sort_keys=True, separators=(",", ":")).encode()).hexdigest() != stored
    # ...and another key (another deployment's secret) gives another fingerprint.
    assert stored != request_fingerprint(BODY, PHONE, phone_key=phone_fingerprint_key("another-secret-" * 3))


def test_a_phone_is_never_fingerprinted_without_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        request_fingerprint(BODY, PHONE)
    with pytest.raises(ValueError, match="key"):
        request_fingerprint(BODY, PHONE, phone_key=b"")


# --- the checkout's failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "asks_phone", "expected"),
    [
        ("processor_refused", True, (422, "processor_refused", "processor_refused_phone", True)),
        ("processor_refused", False, (422, "processor_refused", "processor_refused", True)),
        ("checkout_uncertain", True, (409, "checkout_uncertain", "checkout_uncertain", True)),
        ("checkout_uncertain", False, (409, "checkout_uncertain", "checkout_uncertain", True)),
        ("processor_unavailable", True, (503, "processor_unavailable", "provider_unavailable", False)),
        (None, False, (503, "processor_unavailable", "provider_unavailable", False)),  # no reply in time
        ("broker_unavailable", False, (503, "processor_unavailable", "provider_unavailable", False)),
        ("no_server", False, (503, "processor_unavailable", "provider_unavailable", False)),
        ("conflict", False, (503, "processor_unavailable", "provider_unavailable", False)),
        ("something_new", True, (503, "processor_unavailable", "provider_unavailable", False)),
    ],
)
def test_each_rpc_failure_says_whether_the_same_order_may_be_retried(
    code: str | None, asks_phone: bool, expected: tuple[int, str, str, bool]
) -> None:
    failure = checkout_failure(code, asks_driver_phone=asks_phone)
    assert (failure.status, failure.code, failure.message_key, failure.new_key) == expected
    assert failure.title and failure.detail
    assert ("new Idempotency-Key" in failure.detail) is failure.new_key
    assert ("same Idempotency-Key" in failure.detail) is not failure.new_key


def test_every_failure_has_a_message_in_every_catalogue() -> None:
    keys = {
        checkout_failure(code, asks_driver_phone=asks).message_key
        for code in ("processor_refused", "checkout_uncertain", "processor_unavailable", None)
        for asks in (True, False)
    }
    for key in keys | {"phone_required", "phone_invalid", "prices_updating", "changed_since_sent"}:
        assert key in SOURCE, f"{key} has no text"
        for locale in ("en", "bg", "ar", "sw"):
            Translator(locale)(key)  # no placeholder left unfilled


def test_the_drivers_words() -> None:
    en = Translator("en")
    assert "phone number" in en("processor_refused_phone")
    assert "start a new top-up" in en("checkout_uncertain")
    assert en("status_pending_phone", amount="KES 100.00").startswith(
        "Check your phone: approve the payment of KES 100.00"
    )
    assert "Проверете телефона си" in Translator("bg")("status_pending_phone", amount="1,00 €")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("M-Pesa refused the STK push: 400 Invalid PhoneNumber 254712345678", "...: 400 Invalid PhoneNumber [number]"),
        ("number +254 712 345 678 is not registered", "number [number] is not registered"),
        ("refused 0712-345-678", "refused [number]"),
        ("M-Pesa charges at least KES 1", "M-Pesa charges at least KES 1"),
        ("adyen refused payments (422): 000123", "adyen refused payments (422): 000123"),
    ],
)
def test_numbers_a_processor_echoes_never_reach_the_log(text: str, expected: str) -> None:
    redacted = redact_numbers(text)
    assert redacted.endswith(expected.removeprefix("..."))
    assert "712" not in redacted or "712" in expected


# --- the next step ---------------------------------------------------------------------------------------


def test_the_next_step_follows_from_the_checkout() -> None:
    payment_id = uuid.uuid4()
    assert next_step(None, None) is None  # no checkout yet
    assert next_step(payment_id, "https://pay.example/1") == "redirect"
    assert next_step(payment_id, None) == "phone_prompt"


@pytest.mark.parametrize(
    ("locale", "expected"), [("en", "en"), ("bg", "bg"), ("en-GB", "en-GB"), ("pt_BR", "pt-BR"), ("x", None)]
)
def test_the_locale_the_processor_is_told(locale: str, expected: str | None) -> None:
    assert checkout_locale(locale) == expected


# --- creating a top-up: the store and the RPC as stand-ins --------------------------------------------------


def order(**overrides: Any) -> store.Order:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": PHONE_DRIVER,
        "request_hash": "h",
        "package_id": "p10",
        "amount_minor": 1000,
        "bonus_minor": 0,
        "fee_minor": 0,
        "currency": "EUR",
        "method": "card",
        "integration_id": "phone_test",
        "status": OrderStatus.PENDING,
        "redirect_url": None,
        "balance_minor": None,
        "correlation_id": "c",
        "payment_id": None,
    }
    fields.update(overrides)
    return store.Order(**fields)


class FakeStore:
    """``store``'s order functions over a dict: what the page would write to its database."""

    def __init__(self) -> None:
        self.orders: dict[tuple[str, str], store.Order] = {}
        self.written: list[dict[str, Any]] = []

    async def insert_or_get_order(self, _pool: object, **values: Any) -> store.Order:
        self.written.append(values)
        key = (values["user_id"], values["idempotency_key"])
        if key not in self.orders:
            priced = values["priced"]
            self.orders[key] = order(
                user_id=values["user_id"],
                request_hash=values["request_hash"],
                package_id=priced.package_id,
                amount_minor=priced.amount_minor,
                bonus_minor=priced.bonus_minor,
                fee_minor=priced.fee_minor,
                currency=priced.currency,
                method=priced.method,
                integration_id=values["integration_id"],
                correlation_id=values["correlation_id"],
            )
        return self.orders[key]

    async def record_checkout(
        self, _pool: object, order_id: uuid.UUID, payment_id: uuid.UUID, redirect_url: str | None
    ) -> store.Order:
        self.written.append({"payment_id": payment_id, "redirect_url": redirect_url})
        for key, existing in self.orders.items():
            if existing.id == order_id:
                self.orders[key] = replace(existing, payment_id=payment_id, redirect_url=redirect_url)
                return self.orders[key]
        raise AssertionError("no such order")

    async def get_order(self, _pool: object, order_id: uuid.UUID, user_id: str) -> store.Order | None:
        return next((o for o in self.orders.values() if o.id == order_id and o.user_id == user_id), None)


class FakeRpc:
    """Payments' checkout RPC: answers as payments would, or fails as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    async def call(self, queue: str, request: dict[str, Any]) -> dict[str, Any]:
        if queue == CSMS_USER_RPC_QUEUE:  # the form asks crediting for the balance before paying
            return {
                "user_id": request["user_id"],
                "exists": True,
                "locale": None,
                "balance_minor": 0,
                "currency": "EUR",
            }
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        phone = request["phone"] is not None
        return {
            "payment_id": str(uuid.uuid5(uuid.NAMESPACE_URL, request["order_id"])),
            "next_step": "phone_prompt" if phone else "redirect",
            "redirect_url": None if phone else f"http://127.0.0.1:8081/sandbox/{request['order_id']}",
            "amount_minor": 1000 if request["package_id"] == "p10" else request["amount_minor"],
            "bonus_minor": 0,
            "fee_minor": 20 if request["method"] == "wallet" else 0,
            "currency": "EUR",
        }


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    for name in ("insert_or_get_order", "record_checkout", "get_order"):
        monkeypatch.setattr(store, name, getattr(fake, name))
    return fake


@pytest.fixture
def rpc() -> FakeRpc:
    return FakeRpc()


async def create(
    settings: Settings, rpc: FakeRpc, body: dict[str, Any], user_id: str = PHONE_DRIVER, key: str = "k1"
) -> store.Order:
    return await service.create_topup(settings, cast(Any, None), cast(RpcClient, rpc), user_id, key, body, locale="bg")


def nothing_holds_the_phone(fake_store: FakeStore) -> None:
    written = repr(fake_store.written) + repr(list(fake_store.orders.values()))
    assert "712345678" not in written and "712 345" not in written


async def test_the_phone_goes_only_into_the_checkout_request(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc
) -> None:
    with capture_logs() as logs:
        created = await create(settings, rpc, {"package_id": "p10", "method": "card", "phone": "+254 712-345-678"})
    assert rpc.requests[0]["phone"] == PHONE and rpc.requests[0]["locale"] == "bg"
    assert CreateCheckout.model_validate(rpc.requests[0]).phone == PHONE
    assert created.next_step == "phone_prompt" and created.redirect_url is None and created.payment_id is not None
    assert fake_store.written[-1]["redirect_url"] is None
    assert fake_store.written[0]["request_hash"] == request_fingerprint(BODY, PHONE, phone_key=KEY)
    nothing_holds_the_phone(fake_store)
    assert "712345678" not in repr(logs)
    body = service.order_body(created, with_balance=True)
    assert body["next_step"] == "phone_prompt" and body["redirect_url"] is None
    assert "712345678" not in json.dumps(body)


async def test_a_retry_finds_the_prompt_sent_and_never_prompts_again(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc
) -> None:
    first = await create(settings, rpc, {"package_id": "p10", "phone": "254712345678"})
    again = await create(settings, rpc, {"package_id": "p10", "phone": "+254 712 345 678"})
    assert again == first and len(rpc.requests) == 1


async def test_the_same_key_with_another_phone_is_another_request(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc
) -> None:
    await create(settings, rpc, {"package_id": "p10", "phone": PHONE})
    with pytest.raises(service.DriverProblem) as info:
        await create(settings, rpc, {"package_id": "p10", "phone": "254712345679"})
    assert (info.value.status, info.value.title) == (422, "Idempotency-Key reused")
    assert info.value.new_key and info.value.message_key == "changed_since_sent"


@pytest.mark.parametrize(
    ("phone", "message_key"), [(None, "phone_required"), ("", "phone_required"), ("0712345678", "phone_invalid")]
)
async def test_a_missing_or_bad_phone_makes_no_order(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc, phone: str | None, message_key: str
) -> None:
    body: dict[str, Any] = {"package_id": "p10"} if phone is None else {"package_id": "p10", "phone": phone}
    with pytest.raises(service.DriverProblem) as info:
        await create(settings, rpc, body)
    assert (info.value.status, info.value.extra, info.value.message_key) == (
        422,
        {"field": "phone", "code": message_key},
        message_key,
    )
    assert not info.value.new_key  # no order was made: the form keeps its key
    assert fake_store.written == [] and rpc.requests == []


async def test_the_amount_is_checked_before_the_phone(settings: Settings, fake_store: FakeStore, rpc: FakeRpc) -> None:
    with pytest.raises(Problem) as info:
        await create(settings, rpc, {"package_id": "nope", "phone": "x"})
    assert info.value.extra == {"field": "package_id", "code": "package_unknown", "params": {}}


async def test_a_phone_where_the_processor_does_not_prompt_is_an_unknown_field(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc
) -> None:
    with pytest.raises(Problem) as info:
        await create(settings, rpc, {"package_id": "p10", "phone": PHONE}, user_id=CARD_DRIVER)
    assert (info.value.status, info.value.extra) == (422, {"field": "phone", "code": "unknown_field", "params": {}})
    assert fake_store.written == []


async def test_a_redirect_checkout_is_as_before(settings: Settings, fake_store: FakeStore, rpc: FakeRpc) -> None:
    created = await create(settings, rpc, {"package_id": "p10", "method": "card"}, user_id=CARD_DRIVER)
    assert rpc.requests[0]["phone"] is None and rpc.requests[0]["locale"] == "bg"
    assert created.next_step == "redirect" and created.redirect_url is not None
    assert fake_store.written[0]["request_hash"] == request_fingerprint({"package_id": "p10", "method": "card"})


@pytest.mark.parametrize(
    ("error", "status", "code", "new_key"),
    [
        (RpcError("processor_refused", "M-Pesa refused the STK push: 400 bad number 254712345678"), 422, None, True),
        (RpcError("checkout_uncertain", "an earlier attempt may have reached the processor"), 409, None, True),
        (RpcError("processor_unavailable", "timeout"), 503, None, False),
        (RpcError("broker_unavailable", "down"), 503, "processor_unavailable", False),
        (RpcTimeout("no reply"), 503, "processor_unavailable", False),
    ],
)
async def test_rpc_failures_become_problems_by_their_code(
    settings: Settings,
    fake_store: FakeStore,
    rpc: FakeRpc,
    error: Exception,
    status: int,
    code: str | None,
    new_key: bool,
) -> None:
    rpc.fail = error
    with capture_logs() as logs, pytest.raises(service.DriverProblem) as info:
        await create(settings, rpc, {"package_id": "p10", "phone": PHONE})
    problem = info.value
    expected_code = code or cast(RpcError, error).code
    assert (problem.status, problem.extra["code"], problem.new_key) == (status, expected_code, new_key)
    assert problem.extra["order_id"] == str(next(iter(fake_store.orders.values())).id)
    assert "712345678" not in repr(logs) and "712345678" not in str(problem.detail)
    assert [entry["code"] for entry in logs if entry["event"] == "checkout_rpc_failed"] == [
        getattr(error, "code", "timeout")
    ]
    nothing_holds_the_phone(fake_store)


async def test_a_double_submit_waits_for_the_prompt_instead_of_racing_it(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Payments' rule for a processor without idempotent creates: one create per payment, so a second
    # request while the first is still out is "checkout_uncertain".
    answer, claimed = rpc.call, set[str]()

    async def single_create(queue: str, request: dict[str, Any]) -> dict[str, Any]:
        if request["order_id"] in claimed:
            raise RpcError("checkout_uncertain", "an earlier attempt may have reached the processor")
        claimed.add(request["order_id"])
        await asyncio.sleep(0.05)
        return await answer(queue, request)

    monkeypatch.setattr(rpc, "call", single_create)
    body = {"package_id": "p10", "phone": PHONE}
    first, second = await asyncio.gather(create(settings, rpc, body), create(settings, rpc, dict(body)))
    assert first == second and first.next_step == "phone_prompt"
    assert len(claimed) == 1


async def test_a_redirect_without_a_url_is_not_taken_for_a_prompt(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = rpc.call

    async def no_url(queue: str, request: dict[str, Any]) -> dict[str, Any]:
        return {**await answer(queue, request), "next_step": "redirect", "redirect_url": None}

    monkeypatch.setattr(rpc, "call", no_url)
    with pytest.raises(service.DriverProblem) as info:
        await create(settings, rpc, {"package_id": "p10", "phone": PHONE})
    assert info.value.status == 503
    assert next(iter(fake_store.orders.values())).payment_id is None  # nothing recorded: a retry asks again


# --- the form, the API and the status page -------------------------------------------------------------------


@pytest.fixture
async def client(
    settings: Settings, fake_store: FakeStore, rpc: FakeRpc
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[service_middleware("page")])
    app[SETTINGS_KEY] = settings
    app[POOL_KEY] = cast(Any, None)
    app[api.RPC_KEY] = cast(RpcClient, rpc)
    app[pages.LIMITS_KEY] = LaunchLimits.default()
    api.add_routes(app, "signed")
    pages.add_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def session_cookie(user_id: str, locale: str = "en") -> dict[str, str]:
    session = Session(user_id, locale, "csrf-token-of-this-browser", int(time.time()) - 10)
    return {SESSION_COOKIE: encode_session(LAUNCH_SECRET, session)}


def field_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


Client = TestClient[web.Request, web.Application]


async def post_form(client: Client, user_id: str, locale: str = "en", **fields: str) -> tuple[int, str, str]:
    form = {"csrf_token": "csrf-token-of-this-browser", "idempotency_key": "key-1", "package_id": "p10"}
    form |= {"method": "card", **fields}
    client.session.cookie_jar.update_cookies(session_cookie(user_id, locale))
    async with client.post("/topup", data=form, allow_redirects=False) as response:
        return response.status, response.headers.get("Location", ""), await response.text()


async def test_the_form_asks_for_the_phone_only_where_the_processor_prompts_it(client: Client) -> None:
    client.session.cookie_jar.update_cookies(session_cookie(PHONE_DRIVER))
    async with client.get("/topup") as response:
        html = await response.text()
    field = re.search(r"<input [^>]*name=\"phone\"[^>]*>", html)
    assert field, html
    for attribute in ('type="tel"', "required", 'autocomplete="tel"', 'inputmode="tel"', 'id="phone"'):
        assert attribute in field.group(0)
    assert '<label for="phone">Your phone number' in html and "2547XXXXXXXX" in html
    client.session.cookie_jar.update_cookies(session_cookie(CARD_DRIVER))
    async with client.get("/topup") as response:
        assert 'name="phone"' not in await response.text()


async def test_a_prompt_sends_the_driver_to_the_status_page(client: Client, rpc: FakeRpc) -> None:
    status, location, _ = await post_form(client, PHONE_DRIVER, "bg", phone="+254 712 345 678")
    assert status == 303 and re.fullmatch(r"/topup/[0-9a-f-]{36}/return", location)
    assert rpc.requests[0]["phone"] == PHONE and rpc.requests[0]["locale"] == "bg"


async def test_a_bad_phone_is_refused_on_the_form_in_the_drivers_language(client: Client, rpc: FakeRpc) -> None:
    status, _, html = await post_form(client, PHONE_DRIVER, "bg", phone="0712 345 678")
    assert status == 422 and rpc.requests == []
    assert Translator("bg")("phone_invalid") in html
    assert 'aria-invalid="true"' in html
    assert field_value(html, "phone") == "0712 345 678"  # to correct, not to type again
    assert field_value(html, "idempotency_key") == "key-1"  # no order was made
    assert "Traceback" not in html


async def test_a_missing_phone_is_refused_on_the_form(client: Client) -> None:
    status, _, html = await post_form(client, PHONE_DRIVER)
    assert status == 422 and SOURCE["phone_required"] in html


@pytest.mark.parametrize(
    ("code", "status", "message_key", "new_key"),
    [
        ("processor_refused", 422, "processor_refused_phone", True),
        ("checkout_uncertain", 409, "checkout_uncertain", True),
        ("processor_unavailable", 503, "provider_unavailable", False),
    ],
)
async def test_a_failed_checkout_on_the_form(
    client: Client, rpc: FakeRpc, code: str, status: int, message_key: str, new_key: bool
) -> None:
    rpc.fail = RpcError(code, "details for the log")
    answer, _, html = await post_form(client, PHONE_DRIVER, "bg", phone=PHONE)
    assert answer == status
    assert Translator("bg")(message_key) in html and "details for the log" not in html
    # Refused or uncertain: pressing the button again is a new top-up, never this order again.
    assert (field_value(html, "idempotency_key") != "key-1") is new_key
    assert field_value(html, "idempotency_key")


async def test_the_api_takes_a_phone_and_says_what_follows(client: Client, rpc: FakeRpc) -> None:
    headers = {"Authorization": f"Bearer {launch_token(PHONE_DRIVER, 'bg-BG')}", "Idempotency-Key": "api-1"}
    async with client.post(
        "/api/v1/topups", json={"package_id": "p10", "phone": "+254712345678"}, headers=headers
    ) as r:
        assert r.status == 201
        body = await r.json()
    assert body["next_step"] == "phone_prompt" and body["redirect_url"] is None
    assert rpc.requests[0]["locale"] == "bg" and rpc.requests[0]["phone"] == PHONE
    async with client.get(f"/api/v1/topups/{body['id']}", headers=headers) as r:
        assert (await r.json())["next_step"] == "phone_prompt"


@pytest.mark.parametrize(
    ("body", "fail", "status", "expected"),
    [
        ({"package_id": "p10"}, None, 422, {"field": "phone", "code": "phone_required"}),
        ({"package_id": "p10", "phone": "call me"}, None, 422, {"field": "phone", "code": "phone_invalid"}),
        ({"package_id": "p10", "phone": 254712345678}, None, 422, {"field": "phone", "code": "phone_invalid"}),
        ({"package_id": "p10", "phone": PHONE}, "processor_refused", 422, {"code": "processor_refused"}),
        ({"package_id": "p10", "phone": PHONE}, "checkout_uncertain", 409, {"code": "checkout_uncertain"}),
        ({"package_id": "p10", "phone": PHONE}, "processor_unavailable", 503, {"code": "processor_unavailable"}),
    ],
)
async def test_the_api_problems(
    client: Client, rpc: FakeRpc, body: dict[str, Any], fail: str | None, status: int, expected: dict[str, str]
) -> None:
    rpc.fail = RpcError(fail, "processor words") if fail else None
    headers = {"Authorization": f"Bearer {launch_token(PHONE_DRIVER)}", "Idempotency-Key": "api-2"}
    async with client.post("/api/v1/topups", json=body, headers=headers) as response:
        assert response.status == status
        assert response.content_type == "application/problem+json"
        problem = await response.json()
    assert expected.items() <= problem.items()
    assert "processor words" not in json.dumps(problem) and "712345678" not in json.dumps(problem)


def launch_token(user_id: str, locale: str = "en") -> str:
    now = int(time.time())
    claims = {"sub": user_id, "locale": locale, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, LAUNCH_SECRET, algorithm="HS256")


async def status_page(client: Client, fake_store: FakeStore, **overrides: Any) -> str:
    shown = order(**overrides)
    fake_store.orders[(shown.user_id, "k")] = shown
    client.session.cookie_jar.update_cookies(session_cookie(shown.user_id))
    async with client.get(f"/topup/{shown.id}/return") as response:
        assert response.status == 200
        return await response.text()


async def test_the_status_page_says_to_approve_on_the_phone_and_keeps_following(
    client: Client, fake_store: FakeStore
) -> None:
    html = await status_page(client, fake_store, payment_id=uuid.uuid4(), method="wallet", fee_minor=20)
    # What the prompt will ask for: the amount and the fee.
    assert "Check your phone: approve the payment of €10.20" in html
    assert 'data-next-step="phone_prompt"' in html and 'http-equiv="refresh"' in html


async def test_the_status_page_after_the_prompt_is_as_for_any_payment(client: Client, fake_store: FakeStore) -> None:
    html = await status_page(client, fake_store, payment_id=uuid.uuid4(), status=OrderStatus.CREDITED)
    assert SOURCE["status_credited"] in html and "Check your phone" not in html
    assert 'http-equiv="refresh"' not in html
    failed = await status_page(client, fake_store, payment_id=uuid.uuid4(), status=OrderStatus.FAILED)
    assert SOURCE["status_failed"] in failed and 'href="/topup"' in failed


async def test_a_redirect_order_waits_as_before(client: Client, fake_store: FakeStore) -> None:
    html = await status_page(client, fake_store, payment_id=uuid.uuid4(), redirect_url="https://pay.example/1")
    assert SOURCE["status_pending"] in html and "Check your phone" not in html
