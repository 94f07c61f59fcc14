"""Metrics of deliveries to an external CSMS (the shared ones are in ``shared/metrics.py``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CSMS_CALLS = Counter(
    "evtopup_csms_calls_total",
    "Balance changes sent to the CSMS, by outcome of the call"
    " (delivered, not_sent, rate_limited, unauthorized, failed, uncertain)",
    ["direction", "outcome"],
)
DELIVERIES_SETTLED = Counter(
    "evtopup_deliveries_settled_total",
    "Deliveries settled as applied, by what settled them (response, notification, balance, operator)",
    ["settled_by"],
)
DELIVERIES_NOT_APPLIED = Counter(
    "evtopup_deliveries_not_applied_total",
    "Uncertain or failed deliveries found not applied and delivered again, by who found it (evidence, operator)",
    ["actor"],
)
DELIVERIES = Gauge("evtopup_deliveries", "Deliveries not yet delivered, by state", ["state"])
DELIVERIES_UNCERTAIN_OLDEST_AGE = Gauge(
    "evtopup_deliveries_uncertain_oldest_age_seconds", "Time since the call of the oldest uncertain delivery"
)
DELIVERIES_AWAITING_OPERATOR = Gauge(
    "evtopup_deliveries_awaiting_operator",
    "Uncertain deliveries evidence did not settle within csms.uncertain_resolve_after_s, plus failed ones",
)
CSMS_UNAUTHORIZED = Gauge(
    "evtopup_csms_unauthorized", "1 while the CSMS refuses the configured static API token (deliveries wait)"
)
CSMS_NOTIFICATIONS = Counter(
    "evtopup_csms_notifications_total",
    "userBalance.changed notifications received, by result (settled, matched, unmatched, duplicate, refused, ...)",
    ["result"],
)
