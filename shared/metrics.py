"""Prometheus metrics shared by the three services. Labels never carry user or payment ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("evtopup_http_requests_total", "HTTP requests served", ["service", "route", "method", "status"])
HTTP_DURATION = Histogram("evtopup_http_request_duration_seconds", "HTTP request duration", ["service", "route"])
MESSAGES_PROCESSED = Counter(
    "evtopup_messages_processed_total", "Messages consumed, by outcome", ["service", "queue", "outcome"]
)
OUTBOX_PENDING = Gauge("evtopup_outbox_pending_messages", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "evtopup_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
OUTBOX_PUBLISHED = Counter("evtopup_outbox_published_total", "Outbox rows published and confirmed", ["service"])
OUTBOX_PARKED = Gauge(
    "evtopup_outbox_parked_messages", "Outbox rows set aside because they can never be published", ["service"]
)
DEFERRED_MESSAGES = Gauge(
    "evtopup_deferred_messages", "Messages of a newer contract version kept until understood", ["service", "queue"]
)
RETENTION_DELETED = Counter(
    "evtopup_retention_deleted_rows_total", "Rows removed (or cleared) by the retention janitor", ["service", "rule"]
)
WEBHOOKS_RECEIVED = Counter(
    "evtopup_webhooks_received_total", "Processor webhooks, by result", ["integration", "result"]
)
PAYMENTS_PENDING = Gauge("evtopup_payments_pending", "Payments waiting for the processor", ["integration"])
RPC_REQUESTS = Counter("evtopup_rpc_requests_total", "Checkout RPCs, by outcome", ["side", "outcome"])
CREDITS_APPLIED = Counter("evtopup_credits_applied_total", "Ledger credits applied", ["currency", "environment"])
CREDIT_LATENCY = Histogram(
    "evtopup_credit_latency_seconds",
    "From payment.succeeded to the credit confirmed: the ledger commit, or the CSMS's confirmation",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
