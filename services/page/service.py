"""The page's use cases: turn a priced top-up request into an order with a checkout, idempotently;
and ask the CSMS (through crediting) whether an openly launched user exists."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.page import domain, store
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


def check_idempotency_key(key: str | None) -> str:
    if not key:
        raise Problem(400, "Missing Idempotency-Key", "send an Idempotency-Key header (a UUID is best)")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise Problem(400, "Bad Idempotency-Key", f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters")
    return key


async def create_topup(
    settings: Settings,
    pool: asyncpg.Pool,
    rpc: RpcClient,
    user_id: str,
    idempotency_key: str,
    body: dict[str, Any],
) -> store.Order:
    """Create the order (or find the one this key made) and make sure it has a checkout. A retry with
    the same key after any failure resumes the same order; the checkout RPC is idempotent on it."""
    integration_id = pricing.integration_for_user(settings, user_id)
    try:
        priced = pricing.price_topup(
            body, settings.amounts, settings.integrations[integration_id], settings.operator.currency
        )
    except pricing.InvalidTopup as exc:
        raise Problem(422, "Invalid top-up", exc.detail, field=exc.field) from None
    order = await store.insert_or_get_order(
        pool,
        user_id=user_id,
        idempotency_key=idempotency_key,
        request_hash=domain.request_fingerprint(body),
        priced=priced,
        integration_id=integration_id,
        correlation_id=correlation_id_var.get() or new_correlation_id(),
    )
    if order.request_hash != domain.request_fingerprint(body):
        raise Problem(422, "Idempotency-Key reused", "this Idempotency-Key was used with another request body")
    if order.redirect_url is not None:
        return order
    command = CreateCheckout(
        order_id=order.id,
        user_id=order.user_id,
        integration_id=order.integration_id,
        method=order.method,
        package_id=order.package_id,
        amount_minor=None if order.package_id is not None else order.amount_minor,
        return_url=f"{settings.services.page_public_url.rstrip('/')}/topup/{order.id}/return",
    )
    token = correlation_id_var.set(order.correlation_id)
    try:
        reply = await rpc.call(CHECKOUT_RPC_QUEUE, command.model_dump(mode="json"))
    except (RpcTimeout, RpcError) as exc:
        RPC_REQUESTS.labels("client", type(exc).__name__).inc()
        log.warning("checkout_rpc_failed", order_id=str(order.id), error=str(exc))
        raise Problem(
            503,
            "Payment provider unavailable",
            "try again with the same Idempotency-Key",
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
        raise Problem(503, "Prices are being updated", "try again shortly with the same Idempotency-Key")
    log.info(
        "topup_created", order_id=str(order.id), payment_id=str(created.payment_id), correlation_id=order.correlation_id
    )
    return await store.record_checkout(pool, order.id, created.payment_id, created.redirect_url)


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
        "redirect_url": order.redirect_url,
    }
    if with_balance and order.balance_minor is not None:
        body["balance_minor"] = order.balance_minor
    return body
