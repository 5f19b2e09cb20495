"""Prometheus metrics of the portfolio service (beside tickwatch_common's consumer metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ORDERS = Counter(
    "portfolio_orders_total",
    "Orders answered, by type (market, limit) and outcome (accepted: filled or resting; refused)",
    ["type", "outcome"],
)
FILLS = Counter("portfolio_fills_total", "Orders filled, by type (market, limit)", ["type"])
LIMIT_FILL_FAILURES = Counter(
    "portfolio_limit_fill_failures_total",
    "Reached limit orders whose fill failed (left open in PostgreSQL; the next start rests them)",
)
VALUATION_FLUSH_SECONDS = Histogram(
    "portfolio_valuation_flush_seconds",
    "Time to value and publish the users due in one round of the live valuation",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
