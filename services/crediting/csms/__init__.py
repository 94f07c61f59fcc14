"""The CSMS a driver's balance lives in, behind one small interface: read a user, credit, debit.

``ledger`` keeps balances in crediting's own ledger, so its credit is done when the ledger transfer
commits. ``ampeco`` delivers each ledger transfer to an AMPECO.CHARGE tenant through the delivery
dispatcher; what a call's outcome means (delivered, refused before sending, failed, uncertain) is
decided here, in the adapter, and acted on by the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

Direction = Literal["credit", "debit"]


@dataclass(frozen=True)
class CsmsUser:
    user_id: str
    locale: str | None
    # In the CSMS's own units (AMPECO: a decimal in the tenant's base currency); None when the CSMS
    # does not disclose it (an AMPECO partner user without "addUserBalance" permission).
    balance: Decimal | None


@dataclass(frozen=True)
class BalanceChange:
    """One call to make: ``amount_minor`` (positive) of ``currency`` onto or off a user's balance."""

    user_id: str
    direction: Direction
    amount_minor: int
    currency: str
    reason: str
    app_info: str


@dataclass(frozen=True)
class Delivered:
    """The CSMS accepted the change."""


@dataclass(frozen=True)
class NotSent:
    """The change was certainly not applied (refused before sending, rate limited, token refused):
    try again, not before ``retry_after_s`` when the CSMS said so."""

    reason: str
    retry_after_s: float | None = None
    unauthorized: bool = False


@dataclass(frozen=True)
class Failed:
    """The CSMS refused the change for good (validation, permission, unknown user, insufficient
    balance): never retried blindly, the operator decides."""

    reason: str
    insufficient_balance: bool = False


@dataclass(frozen=True)
class Uncertain:
    """The call may or may not have been applied (timeout, reset after sending, 5xx): never retried
    until the CSMS's own evidence settles it."""

    reason: str


CallOutcome = Delivered | NotSent | Failed | Uncertain


class UnknownUser(Exception):
    """The CSMS has no such user."""


class UserRefused(Exception):
    """The CSMS refuses to show us this user for good (no permission, invalid): the operator decides."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsmsUnavailable(Exception):
    """The CSMS could not be asked right now (nothing was changed by asking)."""

    def __init__(self, reason: str, retry_after_s: float | None = None, unauthorized: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.unauthorized = unauthorized


class Csms(Protocol):
    kind: str

    async def read_user(self, user_id: str) -> CsmsUser:
        """Raises :class:`UnknownUser`, :class:`UserRefused` or :class:`CsmsUnavailable`."""
        ...

    async def credit(self, change: BalanceChange) -> CallOutcome:
        """Add to the user's balance; every outcome of the call is returned, never raised."""
        ...

    async def debit(self, change: BalanceChange) -> CallOutcome:
        """Take from the user's balance (never a card); every outcome is returned, never raised."""
        ...

    async def close(self) -> None: ...
