"""The page's use cases: turn a priced top-up request into an order with a checkout, idempotently;
and ask the CSMS (through crediting) whether an openly launched user exists."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

import asyncpg

from services.page import domain, store, topup_form
from services.page.launch import mask_user_id
from services.page.open_launch import LaunchRefused, UserLookup, parse_user_lookup
from shared import pricing
from shared.amqp import CHECKOUT_RPC_QUEUE, CSMS_USER_RPC_QUEUE, RpcClient, RpcError, RpcTimeout
from shared.http import Problem
from shared.logging import correlation_id_var, get_logger, new_correlation_id
from shared.messages import CheckoutCreated, CreateCheckout
from shared.metrics import RPC_REQUESTS
from shared.settings import Settings

log = get_logger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The form waits at most this long for the driver's balance before paying (then shows without it).
BALANCE_TIMEOUT_S = 1.5
# The checkout RPCs this process has in flight, by order: a double submit waits for the first and
# finds its checkout, rather than racing it to payments (which, for a processor without idempotent
# creates, answers the second "checkout_uncertain" while the first prompt goes to the phone).
# Replicas do not share it: across them, payments' own rule decides.
_CHECKOUTS_IN_FLIGHT: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()


def check_idempotency_key(key: str | None) -> str:
    if not key:
        raise Problem(400, "Missing Idempotency-Key", "send an Idempotency-Key header (a UUID is best)")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise Problem(400, "Bad Idempotency-Key", f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters")
    return key


class DriverProblem(Problem):
    """A problem the page also shows a driver, in their language: ``message_key`` names the text in
    the page's catalogues (``messages.SOURCE``). ``new_key``: trying again needs a new top-up (a new
    Idempotency-Key), never the same one again."""

    def __init__(
        self, status: int, title: str, detail: str, message_key: str, *, new_key: bool = False, **extra: Any
    ) -> None:
        super().__init__(status, title, detail, **extra)
        self.message_key = message_key
        self.new_key = new_key


def driver_phone(value: object) -> str:
    """The phone a request gave, normalised; a 422 :class:`DriverProblem` naming the field if it is
    missing or not a number (the problem never repeats it)."""
    try:
        return domain.normalise_phone(value)
    except domain.InvalidPhone as exc:
        raise DriverProblem(422, "Invalid top-up", exc.detail, exc.message_key, field="phone", code=exc.code) from None


async def create_topup(
    settings: Settings,
    pool: asyncpg.Pool,
    rpc: RpcClient,
    user_id: str,
    idempotency_key: str,
    body: dict[str, Any],
    *,
    locale: str,
) -> store.Order:
    """Create the order (or find the one this key made) and make sure it has a checkout. A retry with
    the same key after any failure resumes the same order; the checkout RPC is idempotent on it.

    A phone number (for an integration that prompts the driver's phone) goes only to payments, in
    the checkout request: it is never stored here (the order's fingerprint holds a keyed hash of it),
    logged, nor put in a URL."""
    integration_id = pricing.integration_for_user(settings, user_id)
    integration = settings.integrations[integration_id]
    asks_phone = integration.asks_driver_phone
    # Pricing takes no phone (and refuses one where the integration does not ask for it).
    request = {key: value for key, value in body.items() if not (asks_phone and key == "phone")}
    try:
        priced = pricing.price_topup(request, settings.amounts, integration, settings.operator.currency)
    except pricing.InvalidTopup as exc:
        raise Problem(422, "Invalid top-up", exc.detail, field=exc.field, code=exc.code, params=exc.params) from None
    phone = driver_phone(body.get("phone")) if asks_phone else None
    fingerprint = domain.request_fingerprint(
        request, phone, phone_key=domain.phone_fingerprint_key(settings.launch.secret.get_secret_value())
    )
    order = await store.insert_or_get_order(
        pool,
        user_id=user_id,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        priced=priced,
        integration_id=integration_id,
        correlation_id=correlation_id_var.get() or new_correlation_id(),
        terms_version=settings.operator.terms_version,
    )
    if order.request_hash != fingerprint:
        raise DriverProblem(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with another request body",
            "changed_since_sent",
            new_key=True,
        )
    if order.payment_id is not None:  # the checkout exists: a redirect, or a prompt already sent
        return order
    lock = _CHECKOUTS_IN_FLIGHT.setdefault(order.id, asyncio.Lock())
    waited = lock.locked()
    async with lock:
        if waited:  # another request for this order was asking: its answer is recorded, or it failed
            current = await store.get_order(pool, order.id, order.user_id)
            if current is not None and current.payment_id is not None:
                return current
        return await _checkout(settings, pool, rpc, order, phone, locale, asks_phone)


async def _checkout(
    settings: Settings,
    pool: asyncpg.Pool,
    rpc: RpcClient,
    order: store.Order,
    phone: str | None,
    locale: str,
    asks_phone: bool,
) -> store.Order:
    """Ask payments for the order's checkout and record it; a :class:`DriverProblem` if it fails."""
    command = CreateCheckout(
        order_id=order.id,
        user_id=order.user_id,
        integration_id=order.integration_id,
        method=order.method,
        package_id=order.package_id,
        amount_minor=None if order.package_id is not None else order.amount_minor,
        return_url=f"{settings.services.page_public_url.rstrip('/')}/topup/{order.id}/return",
        locale=domain.checkout_locale(locale),
        phone=phone,
    )
    token = correlation_id_var.set(order.correlation_id)
    try:
        reply = await rpc.call(CHECKOUT_RPC_QUEUE, command.model_dump(mode="json"))
    except (RpcTimeout, RpcError) as exc:
        RPC_REQUESTS.labels("client", type(exc).__name__).inc()
        code = exc.code if isinstance(exc, RpcError) else None
        failure = domain.checkout_failure(code, asks_driver_phone=asks_phone)
        # The processor's words may echo what the driver typed: long numbers are hidden.
        detail = domain.redact_numbers(exc.detail if isinstance(exc, RpcError) else str(exc))
        log.warning("checkout_rpc_failed", order_id=str(order.id), code=code or "timeout", error=detail)
        raise DriverProblem(
            failure.status,
            failure.title,
            failure.detail,
            failure.message_key,
            new_key=failure.new_key,
            code=failure.code,
            order_id=str(order.id),
        ) from None
    finally:
        correlation_id_var.reset(token)
    RPC_REQUESTS.labels("client", "ok").inc()
    created = CheckoutCreated.model_validate(reply)
    charged = (created.amount_minor, created.bonus_minor, created.fee_minor, created.currency)
    if charged != (order.amount_minor, order.bonus_minor, order.fee_minor, order.currency):
        # Payments prices from its own configuration; during a price change the two may differ for a
        # moment. The driver is never charged other terms than the order shows.
        log.warning("checkout_terms_differ", order_id=str(order.id), charged=charged)
        raise DriverProblem(
            503,
            "Prices are being updated",
            "try again shortly with the same Idempotency-Key",
            "prices_updating",
            code="prices_updating",
        )
    if created.next_step == "redirect" and created.redirect_url is None:
        log.error("checkout_without_redirect", order_id=str(order.id), payment_id=str(created.payment_id))
        # Not what the contract allows; nothing is recorded, and a retry asks again.
        failure = domain.checkout_failure(None, asks_driver_phone=asks_phone)
        raise DriverProblem(
            failure.status,
            failure.title,
            failure.detail,
            failure.message_key,
            code=failure.code,
            order_id=str(order.id),
        )
    log.info(
        "topup_created",
        order_id=str(order.id),
        payment_id=str(created.payment_id),
        next_step=created.next_step,
        correlation_id=order.correlation_id,
    )
    redirect_url = created.redirect_url if created.next_step == "redirect" else None
    return await store.record_checkout(pool, order.id, created.payment_id, redirect_url)


async def lookup_user(rpc: RpcClient, user_id: str) -> UserLookup:
    """Whether the CSMS knows ``user_id`` (and the user's locale there), asked of crediting over RPC.
    :class:`LaunchRefused` when nobody can tell now (timeout, CSMS or broker unavailable, a reply
    that makes no sense): the driver tries again in a moment, and nothing was recorded."""
    try:
        reply = await rpc.call(CSMS_USER_RPC_QUEUE, {"user_id": user_id})
        return parse_user_lookup(user_id, reply)
    except RpcError as exc:
        if exc.code == "bad_request":  # crediting does not take it for one of the CSMS's ids
            raise LaunchRefused("bad_user_id", f"user lookup refused: {exc.detail}") from None
        log.warning("user_lookup_failed", user=mask_user_id(user_id), error=exc.code)
        raise LaunchRefused("csms_unavailable", f"user lookup failed: {exc.code}") from None
    except RpcTimeout:
        log.warning("user_lookup_failed", user=mask_user_id(user_id), error="timeout")
        raise LaunchRefused("csms_unavailable", "user lookup timed out") from None
    except (ValueError, AttributeError):
        log.error("user_lookup_bad_reply", user=mask_user_id(user_id))
        raise LaunchRefused("csms_unavailable", "user lookup answered nonsense") from None


async def balance_before(rpc: RpcClient, user_id: str, currency: str) -> int | None:
    """The driver's balance before paying, for the form (signed launches only: the caller's
    check), asked of crediting with the user lookup; None when crediting does not answer within
    ``BALANCE_TIMEOUT_S`` or cannot tell it: the form is shown without it, never held up for long."""
    try:
        async with asyncio.timeout(BALANCE_TIMEOUT_S):
            reply = await rpc.call(CSMS_USER_RPC_QUEUE, {"user_id": user_id, "balance": True})
    except (RpcError, RpcTimeout, TimeoutError) as exc:
        log.info("balance_unavailable", user=mask_user_id(user_id), error=getattr(exc, "code", "timeout"))
        return None
    return topup_form.balance_from_lookup(user_id, reply, currency)


def order_body(order: store.Order, *, with_balance: bool) -> dict[str, Any]:
    """The order as the API shows it; the balance crediting reported only ``with_balance`` (signed
    launches: an open launch is a user id anyone can type)."""
    body: dict[str, Any] = {
        "id": str(order.id),
        "status": order.status.value,
        "amount_minor": order.amount_minor,
        "bonus_minor": order.bonus_minor,
        "fee_minor": order.fee_minor,
        "currency": order.currency,
        "method": order.method,
        # "redirect": send the driver to redirect_url; "phone_prompt": the processor prompted the
        # driver's phone (redirect_url is null), follow the status; null: no checkout yet.
        "next_step": order.next_step,
        "redirect_url": order.redirect_url,
        # The operator's terms version in force when the order was made (null: none published).
        "terms_version": order.terms_version,
    }
    if with_balance and order.balance_minor is not None:
        body["balance_minor"] = order.balance_minor
    return body
