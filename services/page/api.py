"""The page's JSON API: create a top-up, read its status. Signed launches only: its bearer token is
the launch JWT, and with ``launch.mode = "open"`` (a bare user id anyone can type) every API path
answers 404 with a problem saying so, never a top-up or a balance."""

from __future__ import annotations

import uuid

from aiohttp import web

from services.page import service, store
from services.page.sessions import api_caller, api_user
from shared.amqp import RpcClient
from shared.http import NO_STORE, Problem, json_response, read_json_object
from shared.runtime import POOL_KEY, SETTINGS_KEY

RPC_KEY = web.AppKey("rpc", RpcClient)


async def create_topup(request: web.Request) -> web.Response:
    """``{"package_id" | "amount_minor", "method", "phone"?}``; ``phone`` (digits, country code first;
    spaces, dashes and a leading "+" are dropped) is required where the driver's integration prompts
    the driver's phone, and refused elsewhere. The reply's ``next_step`` says what follows:
    ``redirect`` to ``redirect_url``, or ``phone_prompt`` (approve on the phone; follow the status)."""
    caller = api_caller(request)
    idempotency_key = service.check_idempotency_key(request.headers.get("Idempotency-Key"))
    body = await read_json_object(request)
    order = await service.create_topup(
        request.app[SETTINGS_KEY],
        request.app[POOL_KEY],
        request.app[RPC_KEY],
        caller.user_id,
        idempotency_key,
        body,
        locale=caller.locale,
    )
    return json_response(service.order_body(order, with_balance=_signed(request)), status=201, headers=NO_STORE)


def parse_order_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["order_id"])
    except ValueError:
        raise Problem(404, "No such top-up") from None


async def get_topup(request: web.Request) -> web.Response:
    user_id = api_user(request)
    order = await store.get_order(request.app[POOL_KEY], parse_order_id(request), user_id)
    if order is None:
        raise Problem(404, "No such top-up")
    return json_response(service.order_body(order, with_balance=_signed(request)), headers=NO_STORE)


def _signed(request: web.Request) -> bool:
    return request.app[SETTINGS_KEY].launch.mode == "signed"


async def signed_launches_only(_request: web.Request) -> web.Response:
    raise Problem(
        404,
        "Not available",
        'the page API serves signed launches only (launch.mode = "signed"); this page opens with a user id',
    )


def add_routes(app: web.Application, launch_mode: str) -> None:
    if launch_mode != "signed":
        app.router.add_route("*", "/api/{path:.*}", signed_launches_only)
        return
    app.router.add_post("/api/v1/topups", create_topup)
    app.router.add_get("/api/v1/topups/{order_id}", get_topup)
