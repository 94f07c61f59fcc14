"""launch.mode = "open" without I/O: the launch URL's parameters, the locale a launch ends in,
crediting's user lookup reply, the launch rate limits, and a balance that is never shown."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from services.page import api, events, service
from services.page.domain import OrderStatus
from services.page.i18n import Translator, choose_first_locale
from services.page.messages import SOURCE
from services.page.open_launch import (
    LaunchRefused,
    OpenLaunch,
    UserLookup,
    client_key,
    open_launch_locale,
    parse_open_launch,
    parse_user_lookup,
    requested_locale,
)
from services.page.pages import REFUSALS, TEMPLATES
from services.page.store import Order
from shared.http import service_middleware
from shared.rate_limit import SlidingWindowLimiter

AMPECO_IDS = r"^[1-9][0-9]{0,17}$"
OFFERED = ["en", "bg"]


def query(*pairs: tuple[str, str]) -> MultiDict[str]:
    return MultiDict(pairs)


def parse(*pairs: tuple[str, str], user_param: str = "user_id", locale_param: str = "locale") -> OpenLaunch | None:
    return parse_open_launch(query(*pairs), user_param, locale_param, AMPECO_IDS)


# --- the launch URL ---------------------------------------------------------------------------------


def test_a_user_id_and_a_locale() -> None:
    assert parse(("user_id", "1042"), ("locale", "bg-BG")) == OpenLaunch("1042", "bg-BG")


def test_the_parameter_names_are_the_configured_ones() -> None:
    launch = parse(("uid", "7"), ("lang", "en_GB"), ("user_id", "9"), user_param="uid", locale_param="lang")
    assert launch == OpenLaunch("7", "en_GB")


def test_no_user_parameter_is_no_launch() -> None:
    assert parse() is None
    assert parse(("locale", "bg")) is None
    assert parse(("uid", "7")) is None  # another parameter name than the configured one


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        "0",
        "007",
        "-1",
        "+1",
        "1.0",
        "1e3",
        " 42",
        "42 ",
        "42\n",
        "4 2",
        "abc",
        "user-42",
        "1" * 19,  # AMPECO ids are at most 18 digits
        "\u0661\u0662",  # Arabic-Indic digits are not ASCII digits
        "\uff11\uff12",  # fullwidth digits
        "42\x00",
        "42;DROP",
    ],
)
def test_a_user_id_the_csms_cannot_have_is_refused(user_id: str) -> None:
    with pytest.raises(LaunchRefused) as info:
        parse(("user_id", user_id))
    assert info.value.refusal == "bad_user_id"


def test_a_user_id_of_18_digits_is_accepted() -> None:
    assert parse(("user_id", "9" * 18)) == OpenLaunch("9" * 18, None)


def test_two_user_ids_are_refused_even_when_equal() -> None:
    for second in ("42", "43"):
        with pytest.raises(LaunchRefused) as info:
            parse(("user_id", "42"), ("user_id", second))
        assert info.value.refusal == "bad_user_id"


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), None),
        ((("locale", "bg"),), "bg"),
        ((("locale", " en-GB "),), "en-GB"),
        ((("locale", "zh-Hant-TW"),), "zh-Hant-TW"),
        ((("locale", "pt_BR"),), "pt_BR"),
        ((("locale", ""),), None),
        ((("locale", "e"),), None),
        ((("locale", "en-"),), None),
        ((("locale", "<script>"),), None),
        ((("locale", "en" * 40),), None),
        ((("locale", "en-GB-x-y-z-w"),), None),
        ((("locale", "bg"), ("locale", "en")), None),  # ambiguous: none
    ],
)
def test_the_requested_locale_is_one_that_looks_like_a_locale(
    pairs: tuple[tuple[str, str], ...], expected: str | None
) -> None:
    assert requested_locale(query(*pairs), "locale") == expected


def test_a_bad_locale_never_refuses_the_launch() -> None:
    assert parse(("user_id", "42"), ("locale", "../../etc")) == OpenLaunch("42", None)


# --- the user lookup's reply ------------------------------------------------------------------------------


def test_a_known_user_with_a_locale() -> None:
    assert parse_user_lookup("42", {"user_id": "42", "exists": True, "locale": "bg-BG"}) == UserLookup(True, "bg-BG")


def test_an_unknown_user() -> None:
    assert parse_user_lookup("42", {"user_id": "42", "exists": False, "locale": None}) == UserLookup(False, None)


@pytest.mark.parametrize("locale", [None, 5, "", "not a locale", ["bg"]])
def test_a_user_without_a_usable_locale(locale: Any) -> None:
    assert parse_user_lookup("42", {"user_id": "42", "exists": True, "locale": locale}) == UserLookup(True, None)


@pytest.mark.parametrize(
    "reply",
    [
        {},
        {"user_id": "43", "exists": True, "locale": None},  # about someone else
        {"user_id": 42, "exists": True, "locale": None},
        {"user_id": "42", "exists": "yes", "locale": None},
        {"user_id": "42", "exists": 1, "locale": None},
        {"user_id": "42", "locale": "en"},
    ],
)
def test_a_reply_that_is_not_an_answer_about_the_user_is_an_error(reply: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_user_lookup("42", reply)


# --- the locale a launch ends in ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url_locale", "user_locale", "expected"),
    [
        ("bg", "en-GB", "bg"),  # the URL's first
        ("en-GB", "bg", "en"),  # negotiated: en-GB → en
        (None, "bg-BG", "bg"),  # else the user's at the CSMS
        (None, None, "en"),  # else the operator's default
        ("fr", "bg", "bg"),  # a locale we do not offer is passed over
        ("fr", "de", "en"),
        ("fr", None, "en"),
    ],
)
def test_open_launch_locale(url_locale: str | None, user_locale: str | None, expected: str) -> None:
    launch = OpenLaunch("42", url_locale)
    assert open_launch_locale(launch, UserLookup(True, user_locale), OFFERED, "en") == expected


def test_before_the_lookup_only_the_url_counts() -> None:
    assert open_launch_locale(OpenLaunch("42", "bg"), None, OFFERED, "en") == "bg"
    assert open_launch_locale(OpenLaunch("42", None), None, OFFERED, "bg") == "bg"


def test_choose_first_locale_skips_empty_candidates() -> None:
    assert choose_first_locale(["", None, "BG"], OFFERED, "en") == "bg"
    assert choose_first_locale([], OFFERED, "en") == "en"


# --- rate limits ---------------------------------------------------------------------------------------


def test_the_limiter_allows_limit_events_per_window_and_forgets_old_ones() -> None:
    limiter = SlidingWindowLimiter(3, 60.0, max_keys=10)
    assert [limiter.allow("a", t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert limiter.retry_after_s("a", 3.0) == 57
    assert limiter.allow("b", 3.0)  # others are not held back
    assert not limiter.allow("a", 59.9)
    assert limiter.allow("a", 60.0)  # the first event left the window
    assert not limiter.allow("a", 60.5)
    assert limiter.allow("a", 61.0)


def test_a_refused_event_is_not_counted() -> None:
    limiter = SlidingWindowLimiter(1, 10.0)
    assert limiter.allow("a", 0.0)
    for t in range(1, 10):
        assert not limiter.allow("a", float(t))
    assert limiter.allow("a", 10.0)


def test_the_limiter_remembers_a_bounded_number_of_keys() -> None:
    limiter = SlidingWindowLimiter(1, 60.0, max_keys=2)
    assert limiter.allow("a", 0.0) and limiter.allow("b", 0.0)
    assert not limiter.allow("a", 1.0)  # "a" is now the most recently seen
    assert limiter.allow("c", 1.0)  # forgets "b", the least recently seen
    assert len(limiter._events) == 2
    assert limiter.allow("b", 2.0)
    assert not limiter.allow("c", 2.0)


def test_retry_after_is_at_least_a_second() -> None:
    limiter = SlidingWindowLimiter(1, 60.0)
    assert limiter.retry_after_s("a", 0.0) == 1
    limiter.allow("a", 0.0)
    assert limiter.retry_after_s("a", 59.999) == 1


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.7", "203.0.113.7"),
        # Only the last hop, which the nearest proxy appended; the client wrote the ones before.
        ("10.0.0.1", "1.2.3.4, 203.0.113.7", "203.0.113.7"),
        ("10.0.0.1", "1.2.3.4,  ", "10.0.0.1"),
        (None, None, "unknown"),
        ("10.0.0.1", "x" * 500, "x" * 64),
    ],
)
def test_client_key(remote: str | None, forwarded: str | None, expected: str) -> None:
    assert client_key(remote, forwarded) == expected


# --- refusal pages and messages ---------------------------------------------------------------------------


def test_every_refusal_has_a_message_in_every_locale() -> None:
    statuses = {refusal: status for refusal, (status, _) in REFUSALS.items()}
    assert statuses == {
        "unauthorized": 401,
        "wrong_launch": 400,
        "bad_user_id": 400,
        "unknown_user": 404,
        "csms_unavailable": 503,
        "rate_limited": 429,
    }
    for _, key in REFUSALS.values():
        assert key in SOURCE, f"{key} has no text"


def test_the_not_found_message_asks_to_open_from_the_app() -> None:
    assert Translator("en")("user_not_found") == (
        "We could not find your account. Please open the top-up from the app again."
    )
    assert "опитайте отново след малко" in Translator("bg")("try_again_later")


# --- no balance for open launches ------------------------------------------------------------------------


def credited_order(balance_minor: int | None = 123_456) -> Order:
    return Order(
        id=uuid.uuid4(),
        user_id="42",
        request_hash="h",
        package_id="p10",
        amount_minor=1000,
        bonus_minor=0,
        fee_minor=0,
        currency="EUR",
        method="card",
        integration_id="main",
        status=OrderStatus.CREDITED,
        redirect_url="https://pay.example/1",
        balance_minor=balance_minor,
        correlation_id="c",
    )


def test_the_order_body_has_the_balance_only_when_asked() -> None:
    order = credited_order()
    assert service.order_body(order, with_balance=True)["balance_minor"] == 123_456
    assert "balance_minor" not in service.order_body(order, with_balance=False)
    assert "balance_minor" not in service.order_body(credited_order(None), with_balance=True)


def render_return(show_balance: bool) -> str:
    order, t = credited_order(), Translator("en")
    view = events.status_view(order, show_balance=show_balance, now=datetime.now(UTC), checkout_deadline_s=15)
    return TEMPLATES.get_template("return.html").render(
        t=t,
        operator="CPO",
        demo=False,
        account="4••••2",
        order=order,
        deep_link="cpo://balance",
        live=events.status_message(view, t, order.currency),
        refresh_count=events.noscript_refresh(view, None),
        refresh_s=events.NOSCRIPT_REFRESH_S,
        script_url=events.SCRIPT.url,
    )


def test_the_return_page_shows_the_balance_only_when_asked() -> None:
    assert "New balance: €1,234.56" in render_return(show_balance=True)
    hidden = render_return(show_balance=False)
    assert "balance:" not in hidden and "1,234.56" not in hidden
    assert 'data-status="credited"' in hidden and "cpo://balance" in hidden


# --- the API is for signed launches only -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/topups"), ("GET", f"/api/v1/topups/{uuid.uuid4()}"), ("GET", "/api/v2/anything")],
)
async def test_the_api_answers_404_with_a_problem_in_open_mode(method: str, path: str) -> None:
    app = web.Application(middlewares=[service_middleware("page")])
    api.add_routes(app, "open")
    async with TestClient(TestServer(app)) as client:
        response = await client.request(method, path, headers={"Authorization": "Bearer 42"}, json={})
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert "signed launches only" in problem["detail"]
