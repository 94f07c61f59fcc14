"""What every processor simulator offers the conformance suite (``tests/conformance/``).

A simulator is an aiohttp server reproducing one processor's documented API and webhooks
(``../shared/reference/processors.md``), written independently of the adapter, so that the two cannot
share one mistake. It keeps its own state (payments, refunds, disputes), signs and delivers webhooks
the way the processor does, and misbehaves on request: duplicates, reordering, lost webhooks, slow or
failing API calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
from aiohttp import web

from services.payments.processors.base import Checkout, WebhookRequest
from shared.settings import IntegrationSettings

# What the driver does at the processor: pays, declines (card refused, cancels the phone prompt, …),
# or lets the checkout expire.
Outcome = Literal["succeeded", "declined", "expired"]
SettingsT = TypeVar("SettingsT", bound=IntegrationSettings)


@dataclass
class WebhookFaults:
    """How the simulator delivers its webhooks from now on."""

    copies: int = 1  # each webhook is sent this many times
    hold: bool = False  # keep webhooks until ``release()``, which sends them newest first
    drop: bool = False  # never send them (lost webhooks: polling must heal)


CreateFault = Literal["error_500", "timeout_after_create"]


class ProcessorSimulator(Protocol):
    processor: str  # the adapter's ``name``
    faults: WebhookFaults
    # Where webhooks go (payments' ``POST /webhooks/{integration_id}``). Processors that take the
    # callback URL per request (M-Pesa's CallBackURL) use the request's.
    webhook_url: str | None

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""

    async def close(self) -> None: ...

    @property
    def base_url(self) -> str:
        """The integration's ``api_base_url``."""

    def settings(self) -> dict[str, Any]:
        """The processor's own non-secret settings for ``[integrations.<id>]`` (besides ``processor``,
        ``methods`` and ``api_base_url``), e.g. ``{"merchant_account": "…"}``."""

    def secrets(self) -> dict[str, str]:
        """The integration's secrets by key (``EVTOPUP__INTEGRATIONS__<ID>__<KEY>``)."""

    def fail_next_create(self, fault: CreateFault) -> None:
        """The next create call fails: a 500 before anything is created, or the payment is created and
        the answer comes only after the client has given up."""

    def created_payments(self) -> int:
        """How many payments (checkouts, sessions, links, orders, prompts) the processor holds: the
        conformance suite checks that a retried create never makes a second chargeable one."""

    async def act(self, checkout: Checkout, outcome: Outcome) -> None:
        """The driver acts at the processor on the checkout ``create_checkout`` returned (follows its
        redirect, or answers the phone prompt). Afterwards the processor's state reflects it and its
        webhooks are delivered according to ``faults``. PayPal: "succeeded" approves the order; the
        capture is the adapter's to make."""

    async def release(self) -> None:
        """Send the webhooks held so far, newest first (``faults.hold``)."""

    async def open_dispute(self, processor_reference: str, amount_minor: int) -> str:
        """A chargeback on a paid payment; returns the dispute id. Sends the processor's webhook."""

    async def settle_dispute(self, dispute_id: str, won: bool) -> None:
        """The dispute ends: won (by the operator: money returned) or lost. Sends the webhook."""

    def signed_webhook(
        self, processor_reference: str, outcome: Literal["succeeded", "declined"], *, age_s: int = 0
    ) -> WebhookRequest:
        """A webhook the processor would send for the payment's outcome (for a payment it holds),
        signed (where the processor signs) as if sent ``age_s`` seconds ago; not sent. The suite
        tampers with it: the body, the signature, the secret, the whitespace."""

    def with_other_secret(self) -> ProcessorSimulator:
        """A view of this simulator whose ``signed_webhook`` signs with a different secret (or, for a
        processor that verifies through its API, one that the API does not recognise)."""


def simulated_settings(
    config_type: type[SettingsT], simulator: ProcessorSimulator, methods: Sequence[str], **changes: Any
) -> SettingsT:
    """An integration's settings of ``config_type`` pointed at ``simulator``: its processor, its API,
    its own settings and secrets; ``changes`` on top."""
    return config_type.model_validate(
        {
            "processor": simulator.processor,
            "methods": list(methods),
            "api_base_url": simulator.base_url,
            **simulator.settings(),
            **simulator.secrets(),
            **changes,
        }
    )


# --- what the simulators share: serving, work in the background, delivering webhooks --------------


async def serve_app(app: web.Application, *, shutdown_timeout: float = 60.0) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on 127.0.0.1, on a free port: its runner (``cleanup()`` stops it) and the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


@asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """``handler`` answers every method and path (a stand-in for a processor's API) while in the block;
    yields its base URL. Afterwards nothing listens there any more."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner, port = await serve_app(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class BackgroundTasks:
    """A simulator's work under way (webhook deliveries with their retries, delayed state changes)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Until every task has finished, those that tasks start included."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SimulatorHost:
    """What a simulator runs on: its API served on 127.0.0.1 on a free port, the client session it
    sends webhooks (and the driver's clicks) with, and its work under way. A view of a simulator
    (``with_other_secret``) shares its host."""

    def __init__(self) -> None:
        self.tasks = BackgroundTasks()
        self.http: aiohttp.ClientSession | None = None  # None until started
        self._runner: web.AppRunner | None = None
        self._port = 0  # before start: nothing listens there (unstarted simulators still sign webhooks)

    async def start(self, app: web.Application, *, shutdown_timeout: float = 60.0) -> None:
        self.http = aiohttp.ClientSession()
        self._runner, self._port = await serve_app(app, shutdown_timeout=shutdown_timeout)

    async def close(self) -> None:
        """Cancels the work under way, then stops serving."""
        await self.tasks.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.http is not None:
            await self.http.close()
            self.http = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"


class OnHost:
    """What a simulator delegates to its host (``self._host``): stopping it, its base URL, waiting for
    its work under way."""

    _host: SimulatorHost

    async def close(self) -> None:
        await self._host.close()

    @property
    def base_url(self) -> str:
        return self._host.base_url

    async def idle(self) -> None:
        """Until every webhook delivery (with its retries) and delayed change has finished."""
        await self._host.tasks.idle()


@dataclass(frozen=True)
class Answer:
    """What one POST of a webhook got: the receiver's status, or none and the error's kind."""

    status: int | None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def post_webhook(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
) -> Answer:
    """One attempt: the body POSTed as it is; a refused connection or a timeout is an answer too."""
    try:
        async with http.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            await response.read()
            return Answer(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(None, type(exc).__name__)


async def with_retries(
    attempt: Callable[[int], Awaitable[bool]], backoffs_s: Sequence[float], *, first: int = 0
) -> bool:
    """``attempt(n)`` for n = first, first + 1, … until one returns True (accepted): after attempt n
    fails, waits ``backoffs_s[n]``; gives up after attempt ``len(backoffs_s)``. Every simulator retries
    a webhook this way, each on its processor's schedule (compressed)."""
    for n in range(first, len(backoffs_s) + 1):
        if await attempt(n):
            return True
        if n < len(backoffs_s):
            await asyncio.sleep(backoffs_s[n])
    return False
