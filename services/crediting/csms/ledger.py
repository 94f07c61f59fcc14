"""The built-in ledger as the CSMS: crediting's own ledger is the balance, so a credit is complete
when its ledger transfer commits and there is nothing to deliver."""

from __future__ import annotations

import asyncpg

from services.crediting import store
from services.crediting.csms import BalanceChange, CallOutcome, CsmsUser, Delivered
from shared.money import to_major


class LedgerCsms:
    kind = "ledger"

    def __init__(self, pool: asyncpg.Pool, currency: str) -> None:
        self.pool = pool
        self.currency = currency

    async def read_user(self, user_id: str) -> CsmsUser:
        """Every user id is a user of the built-in ledger (with a zero balance until credited)."""
        balance_minor = await store.balance(self.pool, user_id, self.currency)
        return CsmsUser(user_id=user_id, locale=None, balance=to_major(balance_minor, self.currency))

    async def credit(self, change: BalanceChange) -> CallOutcome:
        return Delivered()

    async def debit(self, change: BalanceChange) -> CallOutcome:
        return Delivered()

    async def close(self) -> None:
        return None
