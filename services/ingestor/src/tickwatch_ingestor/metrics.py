"""The ingestor's Prometheus metrics. None of them is touched per tick on a label lookup:
the publisher counts a flushed batch at once (see :mod:`tickwatch_ingestor.sink`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS_PUBLISHED = Counter(
    "tickwatch_ingestor_ticks_published_total", "Ticks published", ["source", "symbol"]
)
LAST_TICK_SECONDS = Gauge(
    "tickwatch_ingestor_last_tick_timestamp_seconds",
    "Unix time the ingestor last handed a tick of the symbol to the producer (its staleness is"
    " time() minus this)",
    ["source", "symbol"],
)
CANDLES_PUBLISHED = Counter(
    "tickwatch_ingestor_candles_published_total",
    "Candles published (closed and open)",
    ["source", "interval"],
)
LAG_SECONDS = Histogram(
    "tickwatch_ingestor_lag_seconds",
    "Exchange event time to ingest time",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONNECTS = Counter(
    "tickwatch_ingestor_reconnects_total", "Connections replaced, by cause", ["source", "cause"]
)
CONNECTIONS = Gauge("tickwatch_ingestor_connections", "Open streaming connections", ["source"])
GAPS_DETECTED = Counter(
    "tickwatch_ingestor_gaps_detected_total", "Gaps seen in the feed", ["source", "kind"]
)
GAPS_FILLED = Counter(
    "tickwatch_ingestor_gaps_filled_total", "Gaps repaired by REST backfill", ["source", "kind"]
)
CANDLES_BACKFILLED = Counter(
    "tickwatch_ingestor_candles_backfilled_total", "Candles published by backfill", ["source"]
)
MESSAGES_REJECTED = Counter(
    "tickwatch_ingestor_messages_rejected_total",
    "Frames and answers that were malformed or unusable; counted and skipped",
    ["source", "reason"],
)
DUPLICATES_DROPPED = Counter(
    "tickwatch_ingestor_duplicates_dropped_total",
    "Messages seen twice (e.g. during a connection switch-over) and dropped",
    ["source"],
)
PUBLISH_FAILURES = Counter(
    "tickwatch_ingestor_publish_failures_total", "Batches the broker did not acknowledge", ["topic"]
)
REST_RETRIES = Counter(
    "tickwatch_ingestor_rest_retries_total", "REST calls retried, by reason", ["source", "reason"]
)
REST_USED_WEIGHT = Gauge(
    "tickwatch_ingestor_binance_used_weight_1m", "Last X-MBX-USED-WEIGHT-1M seen from Binance"
)
INSTRUMENTS_PUBLISHED = Counter(
    "tickwatch_ingestor_instruments_published_total",
    "Instruments (trading rules) published on market.instruments.v1",
    ["source"],
)
INSTRUMENT_REFRESH_FAILURES = Counter(
    "tickwatch_ingestor_instrument_refresh_failures_total",
    "Rounds of fetching or publishing trading rules that failed (retried with backoff)",
    ["source"],
)
SUBSCRIPTION_ERRORS = Counter(
    "tickwatch_ingestor_subscription_errors_total",
    "Subscriptions a streaming source refused (the connection is replaced, with backoff)",
    ["source"],
)
