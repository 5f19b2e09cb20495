"""Prometheus metrics shared by every service (each service adds its own beside these)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "tickwatch_messages_consumed_total", "Messages handled by a consumer", ["topic"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "tickwatch_messages_dead_lettered_total",
    "Malformed messages moved to <topic>.dlq",
    ["topic", "reason"],
)
MESSAGES_MALFORMED_SKIPPED = Counter(
    "tickwatch_messages_malformed_skipped_total",
    "Malformed messages a group-less consumer logged and skipped (its groups dead-letter them)",
    ["topic", "reason"],
)
MESSAGES_PUBLISHED = Counter("tickwatch_messages_published_total", "Events published", ["topic"])
HANDLER_FAILURES = Counter(
    "tickwatch_handler_failures_total",
    "Handler errors; the batch is retried after a backoff, never skipped",
    ["topic"],
)
HANDLE_SECONDS = Histogram(
    "tickwatch_handle_seconds",
    "Time to handle one consumed batch",
    ["topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
CONSUMER_LAG = Gauge(
    "tickwatch_consumer_lag",
    "Records in the log past the position a consumer handled, per partition",
    ["consumer", "topic", "partition"],
)
