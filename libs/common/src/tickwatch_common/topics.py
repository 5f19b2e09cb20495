"""Every topic: its name, partition count, key and event model, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from tickwatch_common.events import (
    AlertState,
    Candle,
    Event,
    Instrument,
    NotificationDeadLetter,
    NotificationStatus,
    Tick,
    Trigger,
    Valuation,
)

SYMBOL_PARTITIONS = 6
"""Ticks and alert changes share this count so the alert engine can be co-partitioned."""


@dataclass(frozen=True)
class Topic:
    name: str
    model: type[Event]
    partitions: int
    key: str
    tombstones: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


TICKS = Topic("market.ticks.v1", Tick, SYMBOL_PARTITIONS, key="symbol")
CANDLES = Topic("market.candles.v1", Candle, SYMBOL_PARTITIONS, key="symbol")
ALERT_CHANGES = Topic(
    "alerts.changes.v1",
    AlertState,
    SYMBOL_PARTITIONS,
    key="alert_id",
    tombstones=True,
    configs={"cleanup.policy": "compact"},
)
INSTRUMENTS = Topic(
    "market.instruments.v1",
    Instrument,
    SYMBOL_PARTITIONS,
    key="symbol",
    # Latest rules per symbol. A small topic: segments roll daily so compaction (which never
    # touches the active segment) keeps it at about one record per symbol.
    configs={"cleanup.policy": "compact", "segment.ms": str(24 * 3600 * 1000)},
)
ALERTS_TRIGGERED = Topic("alerts.triggered.v1", Trigger, SYMBOL_PARTITIONS, key="alert_id")
PORTFOLIO_VALUATIONS = Topic("portfolio.valuations.v1", Valuation, 3, key="user_id")
NOTIFICATIONS_STATUS = Topic("notifications.status.v1", NotificationStatus, 3, key="event_id")
NOTIFICATIONS_DLQ = Topic("notifications.dlq.v1", NotificationDeadLetter, 3, key="event_id")

ALL_TOPICS: tuple[Topic, ...] = (
    TICKS,
    CANDLES,
    INSTRUMENTS,
    ALERT_CHANGES,
    ALERTS_TRIGGERED,
    PORTFOLIO_VALUATIONS,
    NOTIFICATIONS_STATUS,
    NOTIFICATIONS_DLQ,
)
BY_NAME: dict[str, Topic] = {t.name: t for t in ALL_TOPICS}


def all_topic_specs() -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, configs) for every topic and its dead-letter topic."""
    specs = []
    for t in ALL_TOPICS:
        specs.append((t.name, t.partitions, dict(t.configs)))
        specs.append((t.dlq, 1, {}))
    return specs
