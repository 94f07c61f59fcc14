"""The user lookup the page calls over RabbitMQ when the charging app opens it with a bare user id
(``launch.mode = "open"``): does the CSMS know this user, and in which locale does the user's app run.
The balance is never part of the answer: in open mode anyone can type an id."""

from __future__ import annotations

import re
from typing import Any

from services.crediting.csms import Csms, CsmsUnavailable, UnknownUser, UserRefused
from shared.amqp import RpcError, RpcHandler
from shared.metrics import RPC_REQUESTS
from shared.settings import Settings


def user_lookup_handler(csms: Csms, settings: Settings) -> RpcHandler:
    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        user_id = request.get("user_id")
        if not isinstance(user_id, str) or re.fullmatch(settings.user_id_pattern, user_id) is None:
            raise ValueError("user_id is not a user id of this CSMS")
        try:
            user = await csms.read_user(user_id)
        except UnknownUser:
            RPC_REQUESTS.labels("server", "unknown_user").inc()
            return {"user_id": user_id, "exists": False, "locale": None}
        except (CsmsUnavailable, UserRefused) as exc:
            RPC_REQUESTS.labels("server", "csms_unavailable").inc()
            raise RpcError("csms_unavailable", exc.reason) from None
        RPC_REQUESTS.labels("server", "ok").inc()
        return {"user_id": user_id, "exists": True, "locale": user.locale}

    return handle
