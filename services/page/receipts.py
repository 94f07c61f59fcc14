"""The driver's history and receipts without I/O: what each top-up shows (in the driver's language,
at the operator's timezone), which of them a page of the history holds, and the cursor to the next.

The history is paged by a keyset (``created_at``, ``id``), newest first: a top-up made while the
driver reads never shifts the next page. Only top-ups that reached the processor (a checkout was
made) are listed, and only those have a receipt: an order whose checkout never came back was never
shown to the driver, who could not have paid it."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.page.domain import OrderStatus
from services.page.i18n import Translator
from services.page.launch import mask_user_id
from services.page.store import Order
from shared.settings import Settings

PAGE_SIZE = 20
# Money was (or may have been) taken: a receipt of payment. Otherwise the same page says "details".
MONEY_TAKEN = frozenset({OrderStatus.PAID, OrderStatus.CREDITED, OrderStatus.UNDER_REVIEW, OrderStatus.REFUNDED})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR = re.compile(r"([0-9]{1,17})_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


class BadCursor(ValueError):
    """A ``before`` the page did not make."""


def encode_cursor(order: Order) -> str:
    """Where the next page starts: after this top-up (``<µs since 1970>_<id>``)."""
    assert order.created_at is not None
    micros = (order.created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{order.id}"


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    match = CURSOR.fullmatch(text)
    if match is None:
        raise BadCursor("not a history cursor")
    return EPOCH + timedelta(microseconds=int(match.group(1))), uuid.UUID(match.group(2))


def page_of(rows: list[Order], size: int = PAGE_SIZE) -> tuple[list[Order], str | None]:
    """``rows`` (up to ``size + 1``, newest first) as one page and the cursor to the next page, if
    there is one (the extra row says there is)."""
    shown = rows[:size]
    return shown, encode_cursor(shown[-1]) if len(rows) > size and shown else None


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    time: str
    time_iso: str
    amount: str
    bonus: str | None
    status: str
    status_label: str


def history_entry(order: Order, t: Translator, timezone: str) -> HistoryEntry:
    assert order.created_at is not None
    return HistoryEntry(
        id=str(order.id),
        time=t.datetime(order.created_at, timezone),
        time_iso=order.created_at.isoformat(),
        amount=t.money(order.amount_minor, order.currency),
        bonus=t.money(order.bonus_minor, order.currency) if order.bonus_minor else None,
        status=order.status.value,
        status_label=t(f"status_label_{order.status.value}"),
    )


@dataclass(frozen=True)
class Row:
    """One line of a receipt: ``id`` names it in the page (``receipt-<id>``)."""

    id: str
    label: str
    value: str


@dataclass(frozen=True)
class Operator:
    """Who issues the receipt: the name always, the rest when configured."""

    name: str
    legal_name: str | None
    address_lines: list[str]
    vat_id: str | None
    support_email: str | None


@dataclass(frozen=True)
class Receipt:
    order_id: str
    title: str
    paid: bool
    status: str
    # What became of the payment, unless it simply went through (not paid, under review, refunded).
    note: str | None
    rows: list[Row]
    operator: Operator
    time_iso: str


def operator_details(settings: Settings) -> Operator:
    operator = settings.operator
    address = [line.strip() for line in (operator.address or "").splitlines() if line.strip()]
    return Operator(operator.name, operator.legal_name, address, operator.vat_id, operator.support_email)


def method_name(order: Order, settings: Settings, t: Translator) -> str:
    """The method's name in the driver's language; the processor's name for it (a brand) if the
    order's integration is still configured."""
    integration = settings.integrations.get(order.integration_id)
    declared = integration.payment_methods.get(order.method) if integration else None
    return t.method(order.method, declared.name if declared else None)


def receipt(order: Order, settings: Settings, t: Translator) -> Receipt:
    """What the receipt of ``order`` says, in ``t``'s language and at the operator's timezone."""
    assert order.created_at is not None
    paid = order.status in MONEY_TAKEN
    moment = order.paid_at or order.created_at
    money = order.currency
    rows = [
        Row("number", t("receipt_number"), str(order.id)),
        Row("time", t("receipt_time"), t.datetime(moment, settings.operator.timezone, detailed=True)),
        Row("account", t("receipt_account"), mask_user_id(order.user_id)),
        Row("status", t("receipt_status"), t(f"status_label_{order.status.value}")),
        Row("method", t("receipt_method"), method_name(order, settings, t)),
        Row("amount", t("receipt_amount"), t.money(order.amount_minor, money)),
    ]
    if order.bonus_minor:
        rows.append(Row("bonus", t("receipt_bonus"), t.money(order.bonus_minor, money)))
    rows += [
        Row("fee", t("receipt_fee"), t.money(order.fee_minor, money)),
        Row(
            "total",
            t("receipt_total" if paid else "receipt_total_unpaid"),
            t.money(order.amount_minor + order.fee_minor, money),
        ),
    ]
    if order.status is OrderStatus.CREDITED:
        rows.append(Row("added", t("receipt_added"), t.money(order.amount_minor + order.bonus_minor, money)))
    if order.processor_reference:
        rows.append(Row("reference", t("receipt_reference"), order.processor_reference))
    return Receipt(
        order_id=str(order.id),
        title=t("receipt_title" if paid else "receipt_title_unpaid"),
        paid=paid,
        status=order.status.value,
        note=None if order.status in (OrderStatus.PAID, OrderStatus.CREDITED) else t(f"status_{order.status.value}"),
        rows=rows,
        operator=operator_details(settings),
        time_iso=moment.isoformat(),
    )


def pdf_filename(order: Order) -> str:
    return f"receipt-{str(order.id)[:8]}.pdf"
