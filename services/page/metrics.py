"""Metrics of the page service (the shared ones are in ``shared/metrics.py``). Labels never carry
user ids."""

from __future__ import annotations

from prometheus_client import Counter

PAGE_LAUNCHES = Counter(
    "evtopup_page_launches_total",
    "Launches of the top-up page (GET /topup with launch parameters), by launch mode and outcome",
    ["mode", "outcome"],
)
