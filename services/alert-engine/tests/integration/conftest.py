"""Fixtures for the alert engine against the real broker and database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_alert_engine.settings import Settings
from tickwatch_common.events import AlertState, Tick, Trigger
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, TICKS


class Harness:
    """Publishes alerts and ticks as the gateway and the ingestor do; collects the triggers."""

    def __init__(self, publisher: Publisher, bootstrap: str) -> None:
        self.publisher = publisher
        self.bootstrap = bootstrap
        self.triggers: list[Trigger] = []
        self.ts = int(time.time() * 1000)
        self._task: asyncio.Task[None] | None = None

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
        base, quote = symbol.split("-")
        tick = Tick(
            symbol=symbol,
            base=base,
            quote=quote,
            source="replay",
            price=price,  # type: ignore[arg-type]
            ts_event=self.ts,
            ts_ingest=int(time.time() * 1000),
        )
        await self.publisher.publish(TICKS, tick, key=symbol)

    def fired(self, alert_id: str) -> list[Trigger]:
        return [t for t in self.triggers if t.alert_id == alert_id]

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await consumer.start()
        tps = [TopicPartition(ALERTS_TRIGGERED.name, p) for p in range(ALERTS_TRIGGERED.partitions)]
        consumer.assign(tps)
        for tp in tps:  # offset 0 rather than seek_to_beginning(), which Tansu has answered wrongly
            consumer.seek(tp, 0)

        async def collect() -> None:
            try:
                async for record in consumer:
                    if record.value is not None:
                        self.triggers.append(Trigger.model_validate_json(record.value))
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(collect())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def harness(stack: Any) -> AsyncIterator[Harness]:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings, linger_ms=0) as publisher:
        h = Harness(publisher, stack.kafka_bootstrap_servers)
        await h.start()
        try:
            yield h
        finally:
            await h.stop()


@pytest.fixture
def engine_settings(stack: Any, fresh_database: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=fresh_database,
        alert_engine_group=f"alert-engine-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
    )
