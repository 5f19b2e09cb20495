"""The alert engine's own metrics, beside the shared consumer metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRIGGERS_FIRED = Counter("alert_engine_triggers_total", "Triggers published", ["condition"])
ALERTS_INDEXED = Gauge("alert_engine_alerts", "Alerts held in memory by this replica")
PARTITIONS_OWNED = Gauge("alert_engine_partitions", "Symbol partitions this replica owns")
REBUILD_SECONDS = Histogram(
    "alert_engine_rebuild_seconds",
    "Time to rebuild the alerts of newly assigned partitions",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
TICK_TO_TRIGGER_SECONDS = Histogram(
    "alert_engine_tick_to_trigger_seconds",
    "From the tick's ingest time to its triggers acknowledged by the broker",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
POSITIONS_VOIDED = Counter(
    "tickwatch_alert_engine_positions_voided_total",
    "Recorded tick positions found void at a rebuild (another log, past its end, before its"
    " start); the partition then starts at its end",
    ["topic", "reason"],
)
