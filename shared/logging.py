"""JSON logs through structlog; a correlation id bound in a context variable follows a top-up across
HTTP requests and messages of all three services."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Any

import structlog

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)

CORRELATION_HEADER = "X-Correlation-Id"
# A correlation id travels in AMQP properties (255 bytes at most) and log lines: only a short id of
# a safe alphabet is taken from outside, anything else is replaced by a new one.
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
_CORRELATION_ID = re.compile(CORRELATION_ID_PATTERN)


def _add_correlation_id(
    _logger: Any, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    correlation_id = correlation_id_var.get()
    if correlation_id is not None:
        event_dict.setdefault("correlation_id", correlation_id)
    return event_dict


def configure_logging(service: str, level: str = "info") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_correlation_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write and a flush per line: processes sharing stdout (``run all``, a container) never
        # interleave half lines, and a line logged before a crash is not lost in a buffer.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def accept_correlation_id(value: object) -> str:
    """``value`` if it is a safe correlation id (ASCII, short), else a new one."""
    if isinstance(value, str) and _CORRELATION_ID.fullmatch(value):
        return value
    return new_correlation_id()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
