"""The return page, live: ``GET /topup/{id}/events`` streams the order's status as server-sent events
(``text/event-stream``) until it is final; ``GET /topup/{id}/status`` answers the same once, as JSON,
for the page's script to poll when the stream is not available. Both take the session cookie and
show only the driver's own orders (404 otherwise).

How a change reaches a stream, whichever page replica's consumer made it: a trigger on ``orders``
(migration 004) NOTIFYs ``order_status`` with the order's id on commit; each page process LISTENs on
one connection of its own (:class:`OrderChanges`) and wakes the streams following that order, which
read it again. A stream also reads its order every :data:`REREAD_S` seconds (more often while the
listening connection is down), so a missed notification delays an update, never loses it.

What the page says for an order is decided once, here, without I/O (:func:`status_view`), for the
page's first render, the stream and the poll alike: the texts go out already in the driver's
language (:func:`status_message`), so the script carries none."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from services.page import store
from services.page.api import parse_order_id
from services.page.assets import LONG_CACHE, SHORT_CACHE, STATIC_DIR, Asset
from services.page.domain import OrderStatus
from services.page.i18n import Translator
from services.page.launch import InvalidLaunch, Session
from services.page.messages import SOURCE
from services.page.metrics import (
    PAGE_EVENT_STREAMS,
    PAGE_EVENT_STREAMS_REFUSED,
    PAGE_ORDER_CHANGES,
    PAGE_ORDER_CHANGES_LISTENING,
)
from services.page.sessions import session_from_cookie
from shared.http import EVERY_RESPONSE_HEADERS, NO_STORE, Problem, json_response
from shared.logging import get_logger
from shared.runtime import POOL_KEY, SETTINGS_KEY, Runtime, service_dsn
from shared.settings import Settings

log = get_logger(__name__)

# Nothing changes any more: the stream ends, the script stops following.
FINAL_STATUSES = frozenset({OrderStatus.CREDITED, OrderStatus.FAILED, OrderStatus.EXPIRED, OrderStatus.REFUNDED})
# A stream's life; the browser's EventSource then connects again (after RETRY_MS) and gets the
# current status first. Bounds what a forgotten tab holds.
STREAM_LIFETIME_S = 600.0
# A comment line this long after the last write: proxies and phones' networks keep an idle
# connection open, and a driver who left is noticed (the write fails).
HEARTBEAT_S = 15.0
# The safety net: each stream reads its order this often whatever it was told, and more often while
# this process is not listening (its LISTEN connection is being opened again).
REREAD_S = 10.0
REREAD_UNLISTENED_S = 3.0
# How long the browser waits before connecting again after a stream ended or broke.
RETRY_MS = 3000
# Streams one page process serves at once; beyond, 503 (the script then polls).
MAX_STREAMS = 500
# The LISTEN connection is checked this often (a dead TCP connection shows only when used), and
# opened again after a loss with a backoff up to LISTEN_MAX_BACKOFF_S.
LISTEN_KEEPALIVE_S = 30.0
LISTEN_MAX_BACKOFF_S = 30.0
# How the LISTEN connection names itself to PostgreSQL (``pg_stat_activity.application_name``).
LISTEN_APPLICATION_NAME = "evtopup-page-order-changes"
# An order without a checkout this long after it was made never got one: the checkout request to
# payments failed (the processor unavailable, or an answer that never came) and the driver was told
# on the form. Beyond the RPC's own timeout, a margin for the reply being recorded.
CHECKOUT_MARGIN_S = 5.0
# How many times a page without JavaScript reloads itself (every NOSCRIPT_REFRESH_S): ten minutes,
# like a stream's life; then it says so and offers the Refresh link.
NOSCRIPT_REFRESH_S = 5
NOSCRIPT_MAX_REFRESHES = 120
# Linked with its content's hash (``?v=``), like the page's other assets: cached for a year, and a new
# version is a new URL.
SCRIPT = Asset("/static/return.js", (STATIC_DIR / "return.js").read_bytes(), "text/javascript")
STREAM_HEADERS = {
    **EVERY_RESPONSE_HEADERS,
    **NO_STORE,
    # nginx and its kind: pass each event on at once rather than buffering the response.
    "X-Accel-Buffering": "no",
}


# --- what the page says for an order (no I/O) --------------------------------------------------------


@dataclass(frozen=True)
class StatusView:
    """What the return page shows for an order. ``status`` is the order's, or ``not_started`` for
    an order whose checkout never came about. ``final``: nothing changes any more (the stream ends);
    ``follow``: a change is expected soon (a page without JavaScript reloads itself meanwhile)."""

    status: str
    text_key: str
    text_amount_minor: int | None
    next_key: str | None
    balance_minor: int | None
    final: bool
    follow: bool
    back_to_app: bool
    try_again: bool


def status_view(order: store.Order, *, show_balance: bool, now: datetime, checkout_deadline_s: float) -> StatusView:
    """What the page says for ``order`` at ``now``. The balance crediting reported only with
    ``show_balance`` (signed launches: an open launch is a user id anyone can type)."""
    status = order.status
    if status is OrderStatus.PENDING and order.next_step == "phone_prompt":
        # No processor page: the prompt is on the driver's phone, for the amount and the fee; what
        # to do is in the text itself.
        amount = order.amount_minor + order.fee_minor
        return StatusView("pending", "status_pending_phone", amount, None, None, False, True, False, False)
    if status is OrderStatus.PENDING and _checkout_never_came(order, now, checkout_deadline_s):
        # Nothing to follow: the driver was told on the form, and tries again from there.
        return StatusView("not_started", "status_not_started", None, "next_not_started", None, False, False, True, True)
    next_key = f"next_{status.value}"
    final = status in FINAL_STATUSES
    return StatusView(
        status=status.value,
        text_key=f"status_{status.value}",
        text_amount_minor=None,
        next_key=next_key if next_key in SOURCE else None,
        balance_minor=order.balance_minor if show_balance else None,
        final=final,
        follow=status in (OrderStatus.PENDING, OrderStatus.PAID),
        # Under review takes an operator's time: the driver may go back to the app meanwhile.
        back_to_app=final or status is OrderStatus.UNDER_REVIEW,
        try_again=status in (OrderStatus.FAILED, OrderStatus.EXPIRED, OrderStatus.REFUNDED),
    )


def _checkout_never_came(order: store.Order, now: datetime, deadline_s: float) -> bool:
    if order.payment_id is not None or order.created_at is None:
        return False
    return (now - order.created_at).total_seconds() > deadline_s


def checkout_deadline_s(settings: Settings) -> float:
    return settings.amqp.rpc_timeout_s + CHECKOUT_MARGIN_S


def status_message(view: StatusView, t: Translator, currency: str) -> dict[str, object]:
    """What the stream and the poll send for ``view``: the status, and every text that depends on
    it in the driver's language (None: not shown)."""
    if view.text_amount_minor is not None:
        text = t(view.text_key, amount=t.money(view.text_amount_minor, currency))
    else:
        text = t(view.text_key)
    return {
        "status": view.status,
        "final": view.final,
        "text": text,
        "next": t(view.next_key) if view.next_key else None,
        "balance": (
            t("new_balance", balance=t.money(view.balance_minor, currency)) if view.balance_minor is not None else None
        ),
        "follow": view.follow,
        "back_to_app": view.back_to_app,
        "try_again": view.try_again,
    }


def noscript_refresh(view: StatusView, refreshes: str | None) -> int | None:
    """For a page without JavaScript: the count to put in the next automatic reload's URL, or None
    for no automatic reload (nothing expected soon, or the driver's page has reloaded itself
    NOSCRIPT_MAX_REFRESHES times, or asked it to stop: any count that is not a small number)."""
    if not view.follow:
        return None
    try:
        count = int(refreshes) if refreshes is not None else 0
    except ValueError:
        return None
    if not 0 <= count < NOSCRIPT_MAX_REFRESHES:
        return None
    return count + 1


def sse_event(event: str, data: Mapping[str, object]) -> bytes:
    """One server-sent event: its type and its data, JSON on one line (JSON escapes newlines in
    strings, so the data can never end the event early or add a field)."""
    encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert "\n" not in encoded and "\r" not in encoded
    return f"event: {event}\ndata: {encoded}\n\n".encode()


def sse_comment(text: str) -> bytes:
    """A comment line (ignored by the browser): the heartbeat."""
    return f": {' '.join(text.splitlines())}\n\n".encode()


def sse_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


# --- one LISTEN connection per process ------------------------------------------------------------------


class TooManyStreams(Exception):
    pass


class OrderChanges:
    """The orders changed, as PostgreSQL tells this process (``LISTEN order_status``, on a
    connection of its own, never the pool's): each notification wakes the streams that follow that
    order. After the connection was lost and opened again, every stream is woken (a notification
    may have been missed meanwhile)."""

    def __init__(self, dsn: str, *, max_streams: int = MAX_STREAMS) -> None:
        self._dsn = dsn
        self.max_streams = max_streams
        self._followers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._streams = 0
        self._listening = False
        self.closing = False

    @property
    def streams(self) -> int:
        return self._streams

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (else the streams read their orders more often)."""
        return self._listening

    @listening.setter
    def listening(self, value: bool) -> None:
        self._listening = value
        PAGE_ORDER_CHANGES_LISTENING.set(1 if value else 0)

    @contextlib.contextmanager
    def follow(self, order_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever ``order_id`` may have changed; :class:`TooManyStreams` beyond
        ``max_streams`` (or while the process stops)."""
        if self.closing or self._streams >= self.max_streams:
            raise TooManyStreams
        wake = asyncio.Event()
        self._streams += 1
        self._followers.setdefault(order_id, set()).add(wake)
        PAGE_EVENT_STREAMS.inc()
        try:
            yield wake
        finally:
            self._streams -= 1
            PAGE_EVENT_STREAMS.dec()
            followers = self._followers.get(order_id)
            if followers is not None:
                followers.discard(wake)
                if not followers:
                    del self._followers[order_id]

    def notified(self, payload: str) -> None:
        PAGE_ORDER_CHANGES.inc()
        try:
            order_id = uuid.UUID(payload)
        except ValueError:
            log.warning("order_change_unreadable")
            return
        for wake in self._followers.get(order_id, ()):
            wake.set()

    def wake_all(self) -> None:
        for followers in self._followers.values():
            for wake in followers:
                wake.set()

    async def close(self, _app: web.Application | None = None) -> None:
        """On shutdown (``app.on_shutdown``): every stream ends now, so the server stops promptly."""
        self.closing = True
        self.wake_all()

    async def run(self) -> None:
        """LISTEN forever, opening the connection again whenever it is lost (after 1 s, doubling
        up to LISTEN_MAX_BACKOFF_S while it cannot be opened)."""
        backoff_s = 1.0
        while True:
            listened = False
            try:
                listened = await self._listen()
            except Exception as exc:
                log.warning("order_changes_listen_failed", error=repr(exc))
            self.listening = False
            self.wake_all()  # read again now, and more often until listening again
            backoff_s = 1.0 if listened else min(backoff_s * 2, LISTEN_MAX_BACKOFF_S)
            await asyncio.sleep(backoff_s)

    async def _listen(self) -> bool:
        """Listen until the connection is lost; True if it was listening (a loss, not a failure
        to connect)."""
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": LISTEN_APPLICATION_NAME}
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(store.ORDER_CHANGES_CHANNEL, self._on_notify)
            self.listening = True
            self.wake_all()  # a change committed before LISTEN took effect is read now
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), LISTEN_KEEPALIVE_S)
                if not lost.is_set():
                    await conn.execute("SELECT 1", timeout=10)
            log.warning("order_changes_listen_lost")
            return True
        except Exception as exc:
            if not self.listening:
                raise
            log.warning("order_changes_listen_lost", error=repr(exc))
            return True
        finally:
            self.listening = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.notified(str(payload))


CHANGES_KEY = web.AppKey("order_changes", OrderChanges)


def attach(runtime: Runtime) -> None:
    """The process's LISTEN connection, started with the service and ended with it; its streams
    end at the server's shutdown, before it waits for requests to finish."""
    changes = OrderChanges(service_dsn(runtime.settings, "page"))
    runtime.app[CHANGES_KEY] = changes
    runtime.app.on_shutdown.append(changes.close)
    runtime.spawn(changes.run())


# --- the endpoints --------------------------------------------------------------------------------------


def _session(request: web.Request) -> Session:
    try:
        return session_from_cookie(request)
    except InvalidLaunch as exc:
        raise Problem(401, "Unauthorized", str(exc)) from None


async def _own_order(request: web.Request, session: Session) -> store.Order:
    order = await store.get_order(request.app[POOL_KEY], parse_order_id(request), session.user_id)
    if order is None:
        raise Problem(404, "No such top-up")
    return order


def _view(settings: Settings, order: store.Order) -> StatusView:
    return status_view(
        order,
        show_balance=settings.launch.mode == "signed",
        now=datetime.now(UTC),
        checkout_deadline_s=checkout_deadline_s(settings),
    )


def _message(settings: Settings, session: Session, order: store.Order) -> dict[str, object]:
    t = Translator(session.locale, settings.operator.translations_dir)
    return status_message(_view(settings, order), t, order.currency)


def return_page_context(
    settings: Settings, session: Session, order: store.Order, refreshes: str | None
) -> dict[str, Any]:
    """What ``return.html`` shows of the order's status: the same as the stream's first event, and
    the automatic reload for a page without JavaScript (``?refreshes=``: how many it has had)."""
    view = _view(settings, order)
    t = Translator(session.locale, settings.operator.translations_dir)
    return {
        "live": status_message(view, t, order.currency),
        "refresh_count": noscript_refresh(view, refreshes),
        "refresh_s": NOSCRIPT_REFRESH_S,
        "script_url": SCRIPT.url,
    }


async def order_status(request: web.Request) -> web.Response:
    """``GET /topup/{id}/status``: what the stream would send now, once (the script's fallback)."""
    settings = request.app[SETTINGS_KEY]
    session = _session(request)
    order = await _own_order(request, session)
    return json_response(_message(settings, session, order), headers=NO_STORE)


async def order_events(request: web.Request) -> web.StreamResponse:
    """``GET /topup/{id}/events``: the order's status now, then whenever what the page shows of it
    changes, until it is final (or the stream's life ends; the browser then connects again)."""
    settings = request.app[SETTINGS_KEY]
    session = _session(request)
    order = await _own_order(request, session)
    changes = request.app.get(CHANGES_KEY)
    if changes is None:
        raise Problem(503, "Live status unavailable", "poll GET /topup/{id}/status")
    try:
        with changes.follow(order.id) as wake:
            response = web.StreamResponse(headers=STREAM_HEADERS)
            response.content_type = "text/event-stream"
            response.charset = "utf-8"
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the driver left
                await _stream(request, response, changes, wake, settings, session, order)
            return response
    except TooManyStreams:
        PAGE_EVENT_STREAMS_REFUSED.inc()
        raise Problem(
            503, "Too many live streams", "poll GET /topup/{id}/status", headers={"Retry-After": "30"}
        ) from None


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    changes: OrderChanges,
    wake: asyncio.Event,
    settings: Settings,
    session: Session,
    order: store.Order,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    ends = started + STREAM_LIFETIME_S
    await response.write(sse_retry(RETRY_MS))
    last_written, next_read = started, started
    sent: dict[str, object] | None = None
    t = Translator(session.locale, settings.operator.translations_dir)
    while True:
        message = status_message(_view(settings, order), t, order.currency)
        now = loop.time()
        if message != sent:
            await response.write(sse_event("status", message))
            sent, last_written = message, now
        if message["final"] or changes.closing or now >= ends:
            return
        if next_read <= now:
            next_read = now + (REREAD_S if changes.listening else REREAD_UNLISTENED_S)
        until = min(ends, last_written + HEARTBEAT_S, next_read)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), max(0.0, until - now))
        transport = request.transport
        if changes.closing or transport is None or transport.is_closing():
            return
        now = loop.time()
        if wake.is_set() or now >= next_read:
            wake.clear()  # before reading: a change committed during the read wakes the next round
            try:
                current = await store.get_order(request.app[POOL_KEY], order.id, session.user_id)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The browser connects again shortly; by then the database may be back.
                log.warning("order_events_read_failed", error=repr(exc))
                return
            if current is None:
                return
            order = current
            next_read = now + (REREAD_S if changes.listening else REREAD_UNLISTENED_S)
        elif now >= last_written + HEARTBEAT_S:
            await response.write(sse_comment("heartbeat"))
            last_written = now


async def script(request: web.Request) -> web.Response:
    """``GET /static/return.js``: the return page's script (the page's own: no inline code)."""
    cache = LONG_CACHE if request.query.get("v") == SCRIPT.version else SHORT_CACHE
    return web.Response(
        body=SCRIPT.body, content_type=SCRIPT.content_type, charset="utf-8", headers={"Cache-Control": cache}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/topup/{order_id}/events", order_events)
    app.router.add_get("/topup/{order_id}/status", order_status)
    app.router.add_get("/static/return.js", script)
