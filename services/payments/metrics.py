"""Metrics of the payments service's healing work (the shared ones are in ``shared/metrics.py``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PAYMENTS_OLDEST_PENDING_AGE = Gauge(
    "evtopup_payments_oldest_pending_age_seconds",
    "Age of the oldest payment still created or pending",
    ["integration"],
)
PAYMENTS_POLLED = Counter(
    "evtopup_payments_polled_total", "Status lookups at processors, by result", ["integration", "result"]
)
PAYMENTS_UNCREDITED = Gauge(
    "evtopup_payments_uncredited",
    "Succeeded payments the ledger has not confirmed crediting sweep_after_s after the success",
    ["integration"],
)
CREDIT_REANNOUNCED = Counter(
    "evtopup_credit_reannounced_total", "payment.succeeded announced again for a payment not credited"
)
UNKNOWN_EVENTS_REEXAMINED = Counter(
    "evtopup_unknown_payment_events_reexamined_total",
    "Looks again at processor events whose payment was not found, by result",
    ["result"],
)
REFUND_REQUESTS = Counter(
    "evtopup_refund_requests_total",
    "Operators' refund requests carried to the processor, by answer (accepted, refused, retry)",
    ["integration", "result"],
)
MONEY_BACK_EVENTS = Counter(
    "evtopup_money_back_events_total",
    "Refund and dispute events applied, by outcome (e.g. refund_refunded, dispute_won, exceeds_charge)",
    ["integration", "outcome"],
)
