"""Every HTTP route of the three services answers whatever it is sent with a status below 500:
arbitrary bytes in the headers the services read, in bodies, path parameters and query strings, sent
over a raw socket so that undecodable bytes really arrive. Part of each request is valid (real
credentials, a correct signature over the fuzzed body), so the fuzzing reaches past authentication.

Bounded: at most EXAMPLES_PER_ROUTE requests and ROUTE_BUDGET_S seconds per route."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote_from_bytes, urlencode

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.page.launch import encode_session, new_session
from services.payments.processors.sandbox.adapter import sign_sandbox_payload
from tests.e2e.raw_http import raw_request
from tests.harness import ServiceProcess, Stack

# A hard stop well above what a route takes (ROUTE_BUDGET_S plus one slow request at most).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

EXAMPLES_PER_ROUTE = 150
ROUTE_BUDGET_S = 3.0
FUZZ_USER = "fuzz-user-1"


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    path: str  # at most one "{param}"
    valid_param: str = ""

    def __str__(self) -> str:
        return f"{self.service} {self.method} {self.path}"


ROUTES = [
    Route("page", "GET", "/topup"),
    Route("page", "POST", "/topup"),
    Route("page", "POST", "/topup/switch"),
    Route("page", "POST", "/api/v1/topups"),
    Route("page", "GET", "/api/v1/topups/{param}", str(uuid.uuid4())),
    Route("page", "GET", "/topup/{param}/return", str(uuid.uuid4())),
    Route("page", "GET", "/static/page.css"),
    Route("payments", "POST", "/webhooks/{param}", "sandbox_main"),
    Route("payments", "POST", "/sandbox/api/v1/checkouts"),
    Route("payments", "GET", "/sandbox/api/v1/checkouts/{param}", "sbx_000000000000000000000000"),
    Route("payments", "GET", "/sandbox/checkout/{param}", "sbx_000000000000000000000000"),
    Route("payments", "POST", "/sandbox/checkout/{param}", "sbx_000000000000000000000000"),
    Route("crediting", "GET", "/api/v1/users/{param}/balance", FUZZ_USER),
    Route("crediting", "GET", "/api/v1/users/{param}/entries", FUZZ_USER),
]

# Header values: any bytes but CR and LF (which would end the header, not fuzz it).
ANY_HEADER_VALUE = st.binary(max_size=300).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
# Request-target bytes: anything but what ends or splits the request line.
ANY_TARGET_BYTES = st.binary(max_size=120).map(lambda raw: bytes(b for b in raw if b not in b" \r\n#?"))
ANY_TEXT = st.text(max_size=80)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
FIELDS = ["package_id", "amount_minor", "method", "amount", "outcome", "currency", "return_url", "idempotency_key"]


def deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def bodies(csrf_token: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2000),
        st.integers(1_000, 30_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1_000, 30_000).map(deep_json),
        st.integers(1, 5000).map(lambda n: b'{"amount_minor": ' + b"9" * n + b"}"),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5).map(lambda d: json.dumps(d).encode()),
        # Forms: the real CSRF token (or not) and anything in the other fields.
        st.dictionaries(
            st.sampled_from([*FIELDS, "csrf_token", "switch_token"]) | ANY_TEXT,
            ANY_TEXT | st.just(csrf_token) | st.sampled_from(["p10", "card", "succeeded", "10.00"]),
            max_size=6,
        ).map(lambda form: urlencode(form).encode()),
        st.binary(max_size=500).map(lambda raw: b"--xyz\r\n" + raw + b"\r\n--xyz--\r\n"),
    )


@dataclass(frozen=True)
class Credentials:
    launch_secret: str
    api_token: str
    sandbox_api_key: str
    webhook_secret: str
    session_cookie: str
    csrf_token: str

    @classmethod
    def for_stack(cls, stack: Stack) -> Credentials:
        session = new_session(FUZZ_USER, "en", int(time.time()))
        return cls(
            stack.launch_secret,
            stack.api_token,
            stack.settings.integrations["sandbox_main"].api_key.get_secret_value(),
            stack.webhook_secret,
            encode_session(stack.launch_secret, session),
            session.csrf_token,
        )

    def launch_token(self) -> str:
        now = int(time.time())
        claims = {"sub": FUZZ_USER, "locale": "en", "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.launch_secret, algorithm="HS256")


@st.composite
def requests(draw: st.DrawFn, route: Route, creds: Credentials) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    param = draw(
        st.just(route.valid_param.encode())
        | ANY_TEXT.map(lambda text: quote_from_bytes(text.encode(), safe="").encode())
        | ANY_TARGET_BYTES
    )
    target = route.path.encode().replace(b"{param}", param or b"x")
    query = draw(
        st.just(b"")
        | ANY_TARGET_BYTES
        | st.dictionaries(
            st.sampled_from(["token", "limit", "environment"]) | ANY_TEXT,
            ANY_TEXT | st.just(creds.launch_token()) | st.integers().map(str),
            max_size=3,
        ).map(lambda query: urlencode(query).encode())
    )
    if query:
        target += b"?" + query
    body = draw(bodies(creds.csrf_token)) if route.method == "POST" else draw(st.just(b"") | st.binary(max_size=200))
    valid_values = {
        b"Authorization": [
            b"Bearer " + creds.launch_token().encode(),
            b"Bearer " + creds.api_token.encode(),
            b"Bearer " + creds.sandbox_api_key.encode(),
        ],
        b"Cookie": [b"evtopup_session=" + creds.session_cookie.encode()],
        b"Idempotency-Key": [str(uuid.uuid4()).encode()],
        b"X-CSRF-Token": [creds.csrf_token.encode()],
        b"Sandbox-Signature": [sign_sandbox_payload(creds.webhook_secret, body, int(time.time())).encode()],
        b"X-Correlation-Id": [b"fuzz-1"],
        b"Content-Type": [
            b"application/json",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=xyz",
            b"application/x-www-form-urlencoded; charset=no-such-charset",
            b"text/plain; charset=utf-16",
        ],
    }
    headers = []
    for name, valid in valid_values.items():
        value = draw(st.none() | st.sampled_from(valid) | ANY_HEADER_VALUE)
        if value is not None:
            headers.append((name, value))
    return target, headers, body


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_no_input_makes_a_route_fail_with_5xx(stack: Stack, services: dict[str, ServiceProcess], route: Route) -> None:
    creds = Credentials.for_stack(stack)
    port: int = getattr(stack.settings.services, f"{route.service}_port")
    started = time.monotonic()

    @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=requests(route, creds))
    def fuzz(request: tuple[bytes, list[tuple[bytes, bytes]], bytes]) -> None:
        if time.monotonic() - started > ROUTE_BUDGET_S:
            return
        target, headers, body = request
        response = raw_request(port, route.method, target, headers, body)
        assert response.status < 500, (response.status, response.body[:300])

    fuzz()
    for name, process in services.items():
        assert process.proc is not None and process.proc.poll() is None, f"{name} died: {process.logs()}"
