"""The ledger's rules, without I/O: whether a paid top-up may be credited at all, which postings it
makes, and when a transfer that already exists is the same one (a redelivery) or a conflicting one
(an error, never a second credit). Test money lives in accounts of its own, never a driver's real
balance."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shared.messages import Environment, PaymentSucceeded
from shared.settings import IntegrationSettings

TOPUP = "topup"
PRODUCTION: Final[Environment] = "production"
TEST: Final[Environment] = "test"

FEE_REVENUE_ACCOUNT = "revenue:fees"
BONUS_EXPENSE_ACCOUNT = "expense:bonus"


class RefusedCredit(Exception):
    """A payment event this ledger must never post (dead-lettered with this reason)."""


def in_environment(account: str, environment: Environment) -> str:
    """Test money is posted to ``test:``-prefixed accounts, apart from every real balance."""
    return account if environment == PRODUCTION else f"{TEST}:{account}"


def user_account(user_id: str, environment: Environment = PRODUCTION) -> str:
    return in_environment(f"user:{user_id}", environment)


def clearing_account(integration_id: str, environment: Environment = PRODUCTION) -> str:
    return in_environment(f"processor:{integration_id}", environment)


def credit_environment(event: PaymentSucceeded, integrations: Mapping[str, IntegrationSettings]) -> Environment:
    """The environment a payment's money belongs to, from this service's own configuration: a
    payment of an unknown integration, or test money for a user outside the test list, is refused
    whatever the page and payments decided."""
    integration = integrations.get(event.integration_id)
    if integration is None:
        raise RefusedCredit(f"payment of unknown integration {event.integration_id!r}")
    if event.environment != integration.environment:
        raise RefusedCredit(
            f"payment says {event.environment!r}, integration {event.integration_id} is {integration.environment!r}"
        )
    if integration.environment == TEST and event.user_id not in integration.test_users:
        raise RefusedCredit(f"test payment for a user outside the test_users of {event.integration_id}")
    return integration.environment


@dataclass(frozen=True)
class Posting:
    account: str
    entry_kind: str
    amount_minor: int  # positive credits the account, negative debits it


@dataclass(frozen=True)
class Transfer:
    id: str
    kind: str
    environment: Environment
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
        return sum(p.amount_minor for p in self.postings if p.account == user_account(self.user_id, self.environment))


def transfer_id(kind: str, payment_id: uuid.UUID) -> str:
    return f"{kind}:{payment_id}"


def topup_transfer(event: PaymentSucceeded, environment: Environment = PRODUCTION) -> Transfer:
    """The driver paid ``amount + fee`` to the processor; the driver's balance gets ``amount`` plus
    the package ``bonus`` (as a separate entry, paid for by the bonus expense account) and the fee
    goes to the CPO's revenue. Every account is the ``environment``'s own."""
    user = user_account(event.user_id, environment)
    postings = [
        Posting(
            clearing_account(event.integration_id, environment), "charged", -(event.amount_minor + event.fee_minor)
        ),
        Posting(user, "paid", event.amount_minor),
    ]
    if event.fee_minor:
        postings.append(Posting(in_environment(FEE_REVENUE_ACCOUNT, environment), "fee", event.fee_minor))
    if event.bonus_minor:
        postings.append(Posting(in_environment(BONUS_EXPENSE_ACCOUNT, environment), "bonus", -event.bonus_minor))
        postings.append(Posting(user, "bonus", event.bonus_minor))
    transfer = Transfer(
        id=transfer_id(TOPUP, event.payment_id),
        kind=TOPUP,
        environment=environment,
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
