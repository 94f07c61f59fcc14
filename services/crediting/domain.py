"""The ledger's rules, without I/O: whether a paid top-up may be credited at all, which postings it
makes, and when a transfer that already exists is the same one (a redelivery) or a conflicting one
(an error, never a second credit). Test money lives in accounts of its own, never a driver's real
balance."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Final, Literal

from services.crediting.csms import BalanceChange, Direction
from shared.messages import Environment, PaymentReversalUndone, PaymentReversed, PaymentSucceeded
from shared.money import currency_exponent
from shared.settings import IntegrationSettings

TOPUP = "topup"
ADJUSTMENT = "adjustment"
REVERSAL = "reversal"
UNDO = "undo"  # a payment reversal that did not stand (refund failed, dispute won)
PRODUCTION: Final[Environment] = "production"
TEST: Final[Environment] = "test"

FEE_REVENUE_ACCOUNT = "revenue:fees"
BONUS_EXPENSE_ACCOUNT = "expense:bonus"
ADJUSTMENT_ACCOUNT = "expense:adjustments"


class RefusedCredit(Exception):
    """A payment event this ledger must never post (dead-lettered with this reason)."""


def in_environment(account: str, environment: Environment) -> str:
    """Test money is posted to ``test:``-prefixed accounts, apart from every real balance."""
    return account if environment == PRODUCTION else f"{TEST}:{account}"


def user_account(user_id: str, environment: Environment = PRODUCTION) -> str:
    return in_environment(f"user:{user_id}", environment)


def receivable_account(user_id: str, environment: Environment = PRODUCTION) -> str:
    """What a driver owes the operator: money that came back from a payment after the driver had
    spent it (a chargeback), which the driver's balance could not give back."""
    return in_environment(f"receivable:user:{user_id}", environment)


def clearing_account(integration_id: str, environment: Environment = PRODUCTION) -> str:
    return in_environment(f"processor:{integration_id}", environment)


def credit_environment(
    event: PaymentSucceeded | PaymentReversed | PaymentReversalUndone,
    integrations: Mapping[str, IntegrationSettings],
    user_id_pattern: str | None = None,
) -> Environment:
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
    if user_id_pattern is not None and re.fullmatch(user_id_pattern, event.user_id) is None:
        raise RefusedCredit("payment for a user id this CSMS cannot have")
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
    payment_id: uuid.UUID | None
    order_id: uuid.UUID | None
    user_id: str
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    currency: str
    postings: tuple[Posting, ...]
    reason: str | None = None
    actor: str | None = None

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


def adjustment_transfer(user_id: str, amount_minor: int, currency: str, reason: str, actor: str) -> Transfer:
    """An operator's correction of a driver's real balance: ``amount_minor`` onto it (negative: off
    it), against the adjustments account, under an id of its own."""
    if amount_minor == 0:
        raise RefusedCredit("an adjustment of zero changes nothing")
    if not reason.strip():
        raise RefusedCredit("an adjustment needs a reason")
    transfer = Transfer(
        id=f"{ADJUSTMENT}:{uuid.uuid4()}",
        kind=ADJUSTMENT,
        environment=PRODUCTION,
        payment_id=None,
        order_id=None,
        user_id=user_id,
        amount_minor=abs(amount_minor),
        bonus_minor=0,
        fee_minor=0,
        currency=currency,
        postings=(
            Posting(user_account(user_id), "adjustment", amount_minor),
            Posting(ADJUSTMENT_ACCOUNT, "adjustment", -amount_minor),
        ),
        reason=reason.strip(),
        actor=actor,
    )
    return transfer


def reversal_transfer(original: Transfer, actor: str, why: str) -> Transfer:
    """The ledger undoing ``original``'s postings (a delivery the operator abandoned): the mirror
    of the CSMS must not hold what the CSMS refused."""
    return Transfer(
        id=f"{REVERSAL}:{original.id}",
        kind=REVERSAL,
        environment=original.environment,
        payment_id=None,
        order_id=original.order_id,
        user_id=original.user_id,
        amount_minor=original.amount_minor,
        bonus_minor=original.bonus_minor,
        fee_minor=original.fee_minor,
        currency=original.currency,
        postings=tuple(Posting(p.account, p.entry_kind, -p.amount_minor) for p in original.postings),
        reason=why,
        actor=actor,
    )


def share_minor(part_minor: int, before_minor: int, after_minor: int, whole_minor: int) -> int:
    """``part``'s share of the slice ``before..after`` of ``whole``, so that the shares of successive
    slices add up to exactly ``part`` once the whole has gone (floors of a running total)."""
    return part_minor * after_minor // whole_minor - part_minor * before_minor // whole_minor


def payment_reversal_id(event: PaymentReversed | PaymentReversalUndone) -> str:
    return f"{event.cause}:{event.integration_id}:{event.cause_id}"


def payment_reversal_transfer(
    event: PaymentReversed, environment: Environment, available_minor: int, bonus_on_refund: str, *, emptied: bool
) -> Transfer:
    """Money of a payment went back to the driver (``reversed_minor`` of what was charged): the
    processor's clearing account gets it back, and the top-up's shares of it come off: the paid part
    off the driver's balance, the fee part off the fee revenue, and the bonus in proportion (or not,
    as configured). The driver's balance never goes below zero: what it cannot give back becomes a
    receivable (the driver owes it), for the operator to see."""
    charge = event.amount_minor + event.fee_minor
    before, after = event.reversed_before_minor, event.reversed_before_minor + event.reversed_minor
    if after > charge:
        raise RefusedCredit(f"reversal {event.cause_id} takes back more than was charged")
    if emptied:
        # Its undo came first (see ``undo_transfer``): posted, but moving nothing.
        return _transfer_for_reversal(event, environment, (), 0, 0, 0)
    paid = share_minor(event.amount_minor, before, after, charge)
    fee = event.reversed_minor - paid
    bonus = share_minor(event.bonus_minor, before, after, charge) if bonus_on_refund == "proportional" else 0
    owed = paid + bonus
    taken = min(max(available_minor, 0), owed)
    user = user_account(event.user_id, environment)
    postings = [Posting(clearing_account(event.integration_id, environment), "reversed", event.reversed_minor)]
    if taken:
        postings.append(Posting(user, event.cause, -taken))
    if owed > taken:
        postings.append(Posting(receivable_account(event.user_id, environment), "owed", -(owed - taken)))
    if fee:
        postings.append(Posting(in_environment(FEE_REVENUE_ACCOUNT, environment), "fee", -fee))
    if bonus:
        postings.append(Posting(in_environment(BONUS_EXPENSE_ACCOUNT, environment), "bonus", bonus))
    transfer = _transfer_for_reversal(event, environment, tuple(postings), paid, bonus, fee)
    assert sum(p.amount_minor for p in transfer.postings) == 0, "a transfer must balance"
    return transfer


def _transfer_for_reversal(
    event: PaymentReversed, environment: Environment, postings: tuple[Posting, ...], paid: int, bonus: int, fee: int
) -> Transfer:
    return Transfer(
        id=payment_reversal_id(event),
        kind=event.cause,
        environment=environment,
        payment_id=event.payment_id,
        order_id=event.order_id,
        user_id=event.user_id,
        amount_minor=paid,
        bonus_minor=bonus,
        fee_minor=fee,
        currency=event.currency,
        postings=postings,
        reason=f"{event.cause} {event.cause_id}",
    )


REVERSAL_KINDS = frozenset({"refund", "dispute"})
SHORTFALL = "shortfall"


def is_payment_reversal(transfer_id: str) -> bool:
    return transfer_id.split(":", 1)[0] in REVERSAL_KINDS


def reversal_debit_cap(amount_minor: int, balance: Decimal | None, currency: str) -> int | None:
    """How much of a reversal's debit the CSMS balance can still give (its balance read before the
    call, in major units); None when all of it (or when the balance is hidden: then the CSMS
    decides). What a driver has spent since the top-up cannot be taken: the rest is a receivable."""
    if balance is None:
        return None
    available = int((balance.scaleb(currency_exponent(currency))).to_integral_value(rounding=ROUND_FLOOR))
    return None if available >= amount_minor else max(available, 0)


def shortfall_transfer(reversal: Transfer, shortfall_minor: int, attempt: int) -> Transfer:
    """The part of a reversal's debit the CSMS balance could not give (the driver spent it): back
    onto the ledger's mirror of the driver's balance, and owed instead. One per attempt of the
    reversal's delivery that cut it (a retry may find even less)."""
    return Transfer(
        id=f"{shortfall_prefix(reversal.id)}{attempt}",
        kind=SHORTFALL,
        environment=reversal.environment,
        payment_id=reversal.payment_id,
        order_id=reversal.order_id,
        user_id=reversal.user_id,
        amount_minor=shortfall_minor,
        bonus_minor=0,
        fee_minor=0,
        currency=reversal.currency,
        postings=(
            Posting(user_account(reversal.user_id, reversal.environment), "unpaid", shortfall_minor),
            Posting(receivable_account(reversal.user_id, reversal.environment), "owed", -shortfall_minor),
        ),
        reason=f"the CSMS balance could not give {shortfall_minor} of {reversal.id}",
    )


def shortfall_prefix(reversal_id: str) -> str:
    return f"{SHORTFALL}:{reversal_id}:"


def undo_id(reversal_id: str) -> str:
    return f"{UNDO}:{reversal_id}"


def undo_transfer(
    event: PaymentReversalUndone,
    environment: Environment,
    original: Transfer | None,
    shortfalls: Sequence[Transfer] = (),
) -> Transfer:
    """A reversal that did not stand (the refund failed, the dispute was won), undone exactly: its
    postings mirrored, and those of the shortfalls that cut its delivery (so the driver gets back
    what was taken, and owes nothing any more). When the undo overtakes the reversal it undoes
    (messages can), it is an empty marker, and the reversal is then posted empty too: the two
    cancel out either way."""
    reversal_id = payment_reversal_id(event)
    undone = [p for transfer in ([original] if original else []) + list(shortfalls) for p in transfer.postings]
    return Transfer(
        id=undo_id(reversal_id),
        kind=UNDO,
        environment=environment,
        payment_id=event.payment_id,
        order_id=original.order_id if original else None,
        user_id=event.user_id,
        amount_minor=original.amount_minor if original else 0,
        bonus_minor=original.bonus_minor if original else 0,
        fee_minor=original.fee_minor if original else 0,
        currency=event.currency,
        postings=tuple(Posting(p.account, p.entry_kind, -p.amount_minor) for p in undone),
        reason=f"undoes {reversal_id}",
    )


def confirmed_in_ledger(csms_kind: str, environment: Environment) -> bool:
    """Whether the ledger transfer is the whole credit: with the built-in ledger it is, and test
    money never leaves the ledger's test accounts for a real CSMS."""
    return csms_kind == "ledger" or environment == TEST


@dataclass(frozen=True)
class DeliveryIntent:
    """What the dispatcher is to carry to the CSMS for one transfer: one call, paid plus bonus."""

    transfer_id: str
    change: BalanceChange


def _compact(data: Mapping[str, str | None]) -> str:
    return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"), sort_keys=True)


def delivery_intent(transfer: Transfer, processor_reference: str | None = None) -> DeliveryIntent:
    """One call per transfer for its whole effect on the driver's balance. ``reason`` is what the
    operator reads in AMPECO's back office; ``app_info`` carries our ids for reconciliation."""
    change = transfer.user_credit_minor
    if change == 0:
        raise RefusedCredit(f"transfer {transfer.id} does not change the driver's balance")
    if transfer.kind == TOPUP:
        reason = f"Balance top-up {transfer.order_id}"
    elif transfer.kind in ("refund", "dispute", UNDO):
        reason = f"Top-up {transfer.order_id}: {transfer.reason or transfer.kind}"[:500]
    else:
        reason = f"Balance correction {transfer.id.split(':', 1)[1]}: {transfer.reason or ''}".strip()[:500]
    app_info = _compact(
        {
            "source": "evtopup",
            "topup": str(transfer.order_id) if transfer.order_id else None,
            "payment": str(transfer.payment_id) if transfer.payment_id else None,
            "transfer": transfer.id,
            "processor_reference": processor_reference,
        }
    )
    return DeliveryIntent(
        transfer.id,
        BalanceChange(
            user_id=transfer.user_id,
            direction="credit" if change > 0 else "debit",
            amount_minor=abs(change),
            currency=transfer.currency,
            reason=reason,
            app_info=app_info[:2000],
        ),
    )


# --- Evidence: what settles a delivery whose answer was lost ---------------------------------------

Settlement = Literal["applied", "not_applied"]
# AMPECO's clock and ours may differ this much: a notification stamped this long before our call can
# still be its evidence.
CLOCK_SKEW = timedelta(seconds=5)


@dataclass(frozen=True)
class SentDelivery:
    """A delivery whose call went out and that no notification has been matched to yet."""

    id: int
    direction: Direction
    amount: Decimal  # in the CSMS's units
    sent_at: datetime


@dataclass(frozen=True)
class ObservedChange:
    """A balance change the CSMS notified us of."""

    direction: Direction
    amount: Decimal
    occurred_at: datetime


def assign_notification(change: ObservedChange, unmatched: Sequence[SentDelivery]) -> int | None:
    """The delivery a notified change is the evidence of: the user's oldest sent, unmatched delivery
    of that direction and amount that went out before the change happened. Calls to one user are
    made one at a time, so counting in order is exact when no notification is lost; a lost one only
    leaves a later delivery unmatched (uncertain for longer), never settles one wrongly."""
    for delivery in sorted(unmatched, key=lambda d: d.id):
        if (
            delivery.direction == change.direction
            and delivery.amount == change.amount
            and delivery.sent_at <= change.occurred_at + CLOCK_SKEW
        ):
            return delivery.id
    return None


def settle_by_balance(
    direction: Direction,
    amount: Decimal,
    balance_before: Decimal | None,
    balance_now: Decimal | None,
    *,
    seconds_since_sent: float,
    notified_since_sent: bool,
    tenant_moved_on: bool,
    not_applied_after_s: float,
) -> Settlement | None:
    """What the user's balance says about a call whose answer was lost, when nothing else moved it
    (no notification for the user since the call but the call's own). Moved by exactly the amount:
    applied. Unchanged long after the call, while AMPECO has confirmed a change requested after it
    (an accepted action is applied in order, so ours would show by now): not applied. Anything else
    (another change in between, a hidden balance, an idle or stalled tenant): undecided, left to
    notifications or the operator."""
    if balance_before is None or balance_now is None or notified_since_sent:
        return None
    delta = balance_now - balance_before
    expected = amount if direction == "credit" else -amount
    if delta == expected:
        return "applied"
    if delta == 0 and tenant_moved_on and seconds_since_sent >= not_applied_after_s:
        return "not_applied"
    return None


# --- Operator actions -------------------------------------------------------------------------------


class RefusedAction(Exception):
    """An operator action that does not apply to the delivery as it is."""


Verdict = Literal["applied", "not_applied", "abandon"]


def operator_resolution(state: str, verdict: Verdict) -> str:
    """The state an operator's verdict moves a delivery to: applied → delivered; not applied →
    pending, delivered again; abandon (only a failed one: the CSMS refused it for good) →
    abandoned, its transfer reversed. Only an uncertain or failed delivery can be resolved."""
    if state not in ("uncertain", "failed"):
        raise RefusedAction(f"a {state} delivery is not waiting for the operator")
    if verdict == "abandon":
        if state != "failed":
            raise RefusedAction("only a failed delivery can be abandoned: an uncertain one may have been applied")
        return "abandoned"
    return "delivered" if verdict == "applied" else "pending"


def retry_backoff_s(attempts: int, max_backoff_s: float) -> float:
    """Doubling from 1 s for deliveries that were certainly not applied, up to the maximum."""
    return float(min(max_backoff_s, 2 ** min(max(attempts - 1, 0), 20)))
