"""aiohttp plumbing: RFC 9457 problem bodies, the middleware every service runs (malformed input,
errors, metrics, correlation id, headers every response carries), health and metrics endpoints, and
starting a site with a clear error for a taken port."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from multidict import MultiDictProxy, MultiMapping
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.logging import CORRELATION_HEADER, accept_correlation_id, correlation_id_var, get_logger
from shared.metrics import HTTP_DURATION, HTTP_REQUESTS

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadinessCheck = Callable[[], Awaitable[None]]

PROBLEM_TYPE = "application/problem+json"
MAX_JSON_BODY_BYTES = 64 * 1024
# For bodies that carry balances or a driver's orders: no cache, shared or private, may keep them.
NO_STORE = {"Cache-Control": "no-store"}
# No browser may guess a type other than the declared one (e.g. run a JSON error body as HTML).
EVERY_RESPONSE_HEADERS = {"X-Content-Type-Options": "nosniff"}
# Request headers read as credentials or identifiers: bytes there that are not UTF-8 make the request
# malformed (400), never something to decode, compare or store. (X-Correlation-Id is not listed: an
# unsafe one is replaced by a new id.)
STRICT_HEADERS = ("Authorization", "Cookie", "Idempotency-Key", "X-CSRF-Token", "Content-Type")


class Problem(Exception):
    """Raised by handlers; rendered as ``application/problem+json`` with this status."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(problem: Problem) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": problem.title, "status": problem.status}
    if problem.detail:
        body["detail"] = problem.detail
    body.update(problem.extra)
    return web.Response(
        status=problem.status, text=json.dumps(body), content_type=PROBLEM_TYPE, headers=problem.headers
    )


def json_response(body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 problem saying what is wrong with it."""
    if request.content_length is not None and request.content_length > MAX_JSON_BODY_BYTES:
        raise Problem(413, "Request body too large")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise Problem(400, "Malformed JSON", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "Malformed JSON", "the request body must be a JSON object")
    return body


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The request body as a form, or a 400 problem if it cannot be read as one."""
    try:
        return await request.post()
    # Undecodable text, an unknown charset, a multipart body without parts or with broken part headers.
    except (ValueError, LookupError, HttpProcessingError):
        raise Problem(400, "Malformed form", "the request body is not a readable form") from None


def _not_utf8(value: str) -> bool:
    # aiohttp hands undecodable header bytes through as surrogate escapes.
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def malformed_request(headers: MultiMapping[str], path: str, query: MultiMapping[str]) -> str | None:
    """Why a request (its headers, decoded path and query) is unreadable before any handler looks at it, or None."""
    for name in STRICT_HEADERS:
        if any(_not_utf8(value) for value in headers.getall(name, ())):
            return f"the {name} header is not valid UTF-8"
    # No identifier or parameter has any use for NUL or undecodable bytes, and PostgreSQL refuses them.
    parts = [path, *query.keys(), *query.values()]
    if any("\x00" in part or _not_utf8(part) for part in parts):
        return "the URL has characters no parameter may hold"
    return None


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def service_middleware(service: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = correlation_id_var.set(accept_correlation_id(request.headers.get(CORRELATION_HEADER)))
        started = time.perf_counter()
        status = 500
        try:
            try:
                malformed = malformed_request(request.headers, request.path, request.query)
                if malformed is not None:
                    raise Problem(400, "Malformed request", malformed)
                response = await handler(request)
            except Problem as problem:
                response = problem_response(problem)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = problem_response(Problem(exc.status, exc.reason))
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError):
                # The database is restarting or out of reach: a retry will do, and should.
                log.warning("dependency_unavailable", path=request.path, method=request.method, exc_info=True)
                response = problem_response(Problem(503, "Service temporarily unavailable", "try again shortly"))
            except Exception:
                # Never a traceback to the client; the log has it.
                log.exception("unhandled_error", path=request.path, method=request.method)
                response = problem_response(Problem(500, "Internal error"))
            status = response.status
            if not response.prepared:
                response.headers.update(EVERY_RESPONSE_HEADERS)
            return response
        except web.HTTPException as exc:  # redirects
            status = exc.status
            exc.headers.update(EVERY_RESPONSE_HEADERS)
            raise
        finally:
            route = _route_name(request)
            HTTP_REQUESTS.labels(service, route, request.method, str(status)).inc()
            HTTP_DURATION.labels(service, route).observe(time.perf_counter() - started)
            correlation_id_var.reset(token)

    return middleware


# Text worth compressing for a phone on a slow network; smaller bodies gain nothing.
COMPRESSIBLE = frozenset({"text/html", "text/css", "text/javascript", "application/javascript", "image/svg+xml"})
COMPRESS_FROM_BYTES = 512


def compression_middleware() -> Middleware:
    """Responses of the types above compressed (gzip or deflate, as the client accepts: aiohttp
    negotiates ``Accept-Encoding``). Streams (server-sent events) are left alone."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if (
            isinstance(response, web.Response)
            and not response.prepared
            and response.content_type in COMPRESSIBLE
            and response.body is not None
            and len(response.body) >= COMPRESS_FROM_BYTES  # type: ignore[arg-type]
        ):
            response.enable_compression()
            # Whatever the client accepted, a cache must not hand the gzip body to one that did not.
            response.headers["Vary"] = "Accept-Encoding"
        return response

    return middleware


def add_health_routes(app: web.Application, readiness: list[ReadinessCheck]) -> None:
    async def healthz(_request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        failures: list[str] = []
        for check in readiness:
            try:
                await check()
            except Exception as exc:
                failures.append(f"{check.__name__}: {type(exc).__name__}")
        if failures:
            return json_response({"status": "unavailable", "failures": failures}, status=503)
        return json_response({"status": "ready"})

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


class PortInUse(Exception):
    pass


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return runner
