"""The notifier's own metrics, beside the shared consumer metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "notifier_deliveries_total", "Delivery attempts by channel and outcome", ["channel", "status"]
)
IN_FLIGHT = Gauge("notifier_deliveries_in_flight", "Deliveries accepted and not yet finished")
SEND_SECONDS = Histogram(
    "notifier_send_seconds",
    "Time of one send attempt",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRIGGER_TO_SENT_SECONDS = Histogram(
    "notifier_trigger_to_sent_seconds",
    "From the trigger's triggered_at (the alert engine's clock) to its send on a channel"
    " recorded as sent, retries included: how late the user hears of it",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
SMTP_CONNECTIONS = Counter("notifier_smtp_connections_total", "SMTP connections opened by the pool")
SMTP_RESENDS = Counter(
    "notifier_smtp_resends_total",
    "Sends repeated on a new connection after a pooled one was found dead before DATA",
)
