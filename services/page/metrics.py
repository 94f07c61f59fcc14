"""Metrics of the page service (the shared ones are in ``shared/metrics.py``). Labels never carry
user ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PAGE_LAUNCHES = Counter(
    "evtopup_page_launches_total",
    "Launches of the top-up page (GET /topup with launch parameters), by launch mode and outcome",
    ["mode", "outcome"],
)
PAGE_EVENT_STREAMS = Gauge(
    "evtopup_page_event_streams",
    "Return pages following their top-up live (GET /topup/{id}/events) in this page process",
)
PAGE_EVENT_STREAMS_REFUSED = Counter(
    "evtopup_page_event_streams_refused_total",
    "Live streams refused (503) because this page process serves its maximum already",
)
PAGE_ORDER_CHANGES = Counter(
    "evtopup_page_order_changes_total",
    "Order changes this page process was told of by PostgreSQL (NOTIFY order_status), whoever made them",
)
PAGE_ORDER_CHANGES_LISTENING = Gauge(
    "evtopup_page_order_changes_listening",
    "1 while this page process listens for order changes; 0 while its connection is being opened again"
    " (its live streams then read their orders every few seconds instead)",
)
