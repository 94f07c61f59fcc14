"""The ledger's rules, without I/O: which postings a paid top-up makes, and when a transfer that
already exists is the same one (a redelivery) or a conflicting one (an error, never a second credit)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.messages import PaymentSucceeded

TOPUP = "topup"


def user_account(user_id: str) -> str:
    return f"user:{user_id}"


def clearing_account(integration_id: str) -> str:
    return f"processor:{integration_id}"


FEE_REVENUE_ACCOUNT = "revenue:fees"
BONUS_EXPENSE_ACCOUNT = "expense:bonus"


@dataclass(frozen=True)
class Posting:
    account: str
    entry_kind: str
    amount_minor: int  # positive credits the account, negative debits it


@dataclass(frozen=True)
class Transfer:
    id: str
    kind: str
    payment_id: uuid.UUID
    order_id: uuid.UUID
    user_id: str
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    currency: str
    postings: tuple[Posting, ...]

    @property
    def user_credit_minor(self) -> int:
        return sum(p.amount_minor for p in self.postings if p.account == user_account(self.user_id))


def transfer_id(kind: str, payment_id: uuid.UUID) -> str:
    return f"{kind}:{payment_id}"


def topup_transfer(event: PaymentSucceeded) -> Transfer:
    """The driver paid ``amount + fee`` to the processor; the driver's balance gets ``amount`` plus
    the package ``bonus`` (as a separate entry, paid for by the bonus expense account) and the fee
    goes to the CPO's revenue."""
    user = user_account(event.user_id)
    postings = [
        Posting(clearing_account(event.integration_id), "charged", -(event.amount_minor + event.fee_minor)),
        Posting(user, "paid", event.amount_minor),
    ]
    if event.fee_minor:
        postings.append(Posting(FEE_REVENUE_ACCOUNT, "fee", event.fee_minor))
    if event.bonus_minor:
        postings.append(Posting(BONUS_EXPENSE_ACCOUNT, "bonus", -event.bonus_minor))
        postings.append(Posting(user, "bonus", event.bonus_minor))
    transfer = Transfer(
        id=transfer_id(TOPUP, event.payment_id),
        kind=TOPUP,
        payment_id=event.payment_id,
        order_id=event.order_id,
        user_id=event.user_id,
        amount_minor=event.amount_minor,
        bonus_minor=event.bonus_minor,
        fee_minor=event.fee_minor,
        currency=event.currency,
        postings=tuple(postings),
    )
    assert sum(p.amount_minor for p in transfer.postings) == 0, "a transfer must balance"
    return transfer
