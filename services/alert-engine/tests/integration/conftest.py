"""Fixtures for the alert engine against the real broker and database."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tickwatch_alert_engine.settings import Settings
from tickwatch_common.events import AlertState, Trigger
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, TICKS
from tickwatch_devstack.testing import TopicCollector, replay_tick


class Harness:
    """Publishes alerts and ticks as the gateway and the ingestor do; collects the triggers."""

    def __init__(self, publisher: Publisher, trigger_collector: TopicCollector) -> None:
        self.publisher = publisher
        self.ts = int(time.time() * 1000)
        self._collector = trigger_collector

    @property
    def triggers(self) -> list[Trigger]:
        return self._collector.received(Trigger)

    async def alert(
        self, alert_id: str, symbol: str, condition: str, target: str, **kw: Any
    ) -> AlertState:
        state = AlertState(
            alert_id=alert_id,
            user_id=kw.pop("user_id", "u1"),
            version=kw.pop("version", 1),
            symbol=symbol,
            condition=condition,  # type: ignore[arg-type]
            target_price=target,
            email=kw.pop("email", "trader@example.com"),
            updated_at=self.ts,
            **kw,
        )
        await self.publisher.publish(ALERT_CHANGES, state, key=alert_id, partition_key=symbol)
        return state

    async def tick(self, symbol: str, price: str) -> None:
        self.ts += 1000
        tick = replay_tick(symbol, price, self.ts, ts_ingest=int(time.time() * 1000))
        await self.publisher.publish(TICKS, tick, key=symbol)

    def fired(self, alert_id: str) -> list[Trigger]:
        return [t for t in self.triggers if t.alert_id == alert_id]


@pytest.fixture
async def harness(stack: Any) -> AsyncIterator[Harness]:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with (
        kafka_producer(settings, linger_ms=0) as publisher,
        TopicCollector(stack.kafka_bootstrap_servers, [ALERTS_TRIGGERED]) as trigger_collector,
    ):
        yield Harness(publisher, trigger_collector)


@pytest.fixture
def engine_settings(stack: Any, fresh_database: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=fresh_database,
        alert_engine_group=f"alert-engine-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
    )
