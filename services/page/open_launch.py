"""Open launches (``launch.mode = "open"``): how AMPECO opens an external top-up page, with the CSMS
user id and the app's locale as plain URL parameters (their names are configurable: AMPECO does not
document them). Anyone can type an id, so the id is only a claim: the CSMS confirms the user (over
crediting's user lookup RPC), launches are rate-limited, and the page never shows a balance.

Pure functions of their inputs and the clock; the HTTP edge is ``pages.py``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from multidict import MultiMapping

from services.page.i18n import choose_first_locale
from shared.rate_limit import SlidingWindowLimiter

# What a locale in a URL or a CSMS reply may look like (BCP 47-ish: "en", "en-GB", "pt_BR",
# "zh-Hant-TW"); anything else is ignored, never an error: a driver still gets a page.
LOCALE_PATTERN = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,3}")

# Why a launch was refused; each is one page with its status and message (``pages.REFUSALS``).
Refusal = Literal["unauthorized", "wrong_launch", "bad_user_id", "unknown_user", "csms_unavailable", "rate_limited"]

# Per client (see :func:`client_key`): a driver needs one launch, a few at most; a script trying ids
# is slowed to this pace, and every one of its tries is logged.
LAUNCHES_PER_CLIENT = 20
# Per page process, whoever asks: each launch costs one user lookup at the CSMS, whose API has rate
# limits of its own; past this, launches are refused for a moment rather than queued.
LAUNCHES_PER_PROCESS = 1200
LAUNCH_WINDOW_S = 60.0
# Clients remembered by the per-client limiter; past this, the least recently seen is forgotten.
MAX_CLIENTS = 10_000


class LaunchRefused(Exception):
    """A launch the page will not turn into a session; ``refusal`` names the page to show."""

    def __init__(self, refusal: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.refusal: Refusal = refusal
        self.reason = reason


@dataclass(frozen=True)
class OpenLaunch:
    user_id: str
    # The app's locale as the URL gave it, if it gave one that looks like a locale.
    locale: str | None


@dataclass(frozen=True)
class UserLookup:
    exists: bool
    # The user's own locale at the CSMS, if it has one that looks like a locale.
    locale: str | None


def requested_locale(query: MultiMapping[str], locale_param: str) -> str | None:
    """The locale the URL asks for: one value of ``locale_param`` that looks like a locale, else None."""
    values = query.getall(locale_param, [])
    if len(values) != 1:
        return None
    return _locale_or_none(values[0])


def _locale_or_none(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if LOCALE_PATTERN.fullmatch(value) else None


def parse_open_launch(
    query: MultiMapping[str], user_param: str, locale_param: str, user_id_pattern: str
) -> OpenLaunch | None:
    """The launch the URL asks for; None if it names no user (not a launch: the page shows the
    current session's form, or asks to open it from the app). :class:`LaunchRefused` for a user id
    that is not one of the CSMS's, or more than one of them."""
    values = query.getall(user_param, [])
    if not values:
        return None
    if len(values) > 1:
        raise LaunchRefused("bad_user_id", "more than one user id")
    user_id = values[0]
    if re.fullmatch(user_id_pattern, user_id) is None:
        raise LaunchRefused("bad_user_id", "not a user id of this CSMS")
    return OpenLaunch(user_id, requested_locale(query, locale_param))


def parse_user_lookup(user_id: str, reply: Mapping[str, Any]) -> UserLookup:
    """Crediting's answer to a user lookup; ``ValueError`` if it is not an answer about ``user_id``."""
    exists = reply.get("exists")
    if reply.get("user_id") != user_id or not isinstance(exists, bool):
        raise ValueError("the user lookup answered about something else")
    return UserLookup(exists, _locale_or_none(reply.get("locale")) if exists else None)


def open_launch_locale(launch: OpenLaunch, user: UserLookup | None, offered: list[str], default: str) -> str:
    """The URL's locale if we offer it (or its language), else the user's locale at the CSMS, else
    the operator's default."""
    return choose_first_locale([launch.locale, user.locale if user else None], offered, default)


def client_key(remote: str | None, forwarded_for: str | None) -> str:
    """Whom to count a launch against: the address the nearest proxy saw (the last entry of
    ``X-Forwarded-For``, which a client cannot set when the page is behind a proxy that appends to
    it, as ingress controllers do), else the peer's address. Only ever a rate-limit bucket, never
    an identity: a client that can forge it (a page exposed without a proxy) is still bounded by
    the per-process limit."""
    if forwarded_for:
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return remote or "unknown"


@dataclass
class LaunchLimits:
    """The page process's launch limiters."""

    per_client: SlidingWindowLimiter
    per_process: SlidingWindowLimiter

    @classmethod
    def default(cls) -> LaunchLimits:
        return cls(
            SlidingWindowLimiter(LAUNCHES_PER_CLIENT, LAUNCH_WINDOW_S, MAX_CLIENTS),
            SlidingWindowLimiter(LAUNCHES_PER_PROCESS, LAUNCH_WINDOW_S),
        )
