"""The engine heals when its broker log is replaced (issue 9): PostgreSQL keeps the positions,
trigger states and prices, while market.ticks.v1 and alerts.changes.v1 come back new and empty.

These tests delete and recreate topics, so they run on a private broker of their own (never
the shared one other tests use), with PostgreSQL from the test session."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from prometheus_client import REGISTRY
from tickwatch_alert_engine.__main__ import running_alert_engine
from tickwatch_alert_engine.engine import trigger_event_id
from tickwatch_alert_engine.settings import Settings
from tickwatch_common.events import AlertState, Trigger
from tickwatch_common.kafka import ensure_topics, kafka_producer, partition_for
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, SYMBOL_PARTITIONS, TICKS
from tickwatch_devstack.infra import Server, free_port, start_kafka
from tickwatch_devstack.testing import TopicCollector, recreate_topic, replay_tick, wait_until

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server: Server = start_kafka(Path(tmp_path_factory.mktemp("kafka")), free_port())
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


class Gateway:
    """Publishes alert states and ticks as the gateway and the ingestor do."""

    def __init__(self, publisher: Any, collector: TopicCollector) -> None:
        self.publisher = publisher
        self.collector = collector
        self.ts = int(time.time() * 1000)

    async def alert(self, state: AlertState) -> None:
        await self.publisher.publish(
            ALERT_CHANGES, state, key=state.alert_id, partition_key=state.symbol
        )

    async def tick(self, symbol: str, price: str) -> None:
        self.ts += 1000
        await self.publisher.publish(TICKS, replay_tick(symbol, price, self.ts), key=symbol)

    def fired(self, alert_id: str) -> list[Trigger]:
        return [t for t in self.collector.received(Trigger) if t.alert_id == alert_id]


@pytest.fixture
async def gateway(private_kafka: str) -> AsyncIterator[Gateway]:
    await ensure_topics(private_kafka)
    settings = KafkaSettings(kafka_bootstrap_servers=private_kafka)
    async with (
        kafka_producer(settings, linger_ms=0) as publisher,
        TopicCollector(private_kafka, [ALERTS_TRIGGERED]) as collector,
    ):
        yield Gateway(publisher, collector)


@pytest.fixture
def settings(private_kafka: str, fresh_database: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=private_kafka,
        database_url=fresh_database,
        alert_engine_group=f"alert-engine-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
    )


def state(alert_id: str, symbol: str, condition: str, target: str, **kw: Any) -> AlertState:
    return AlertState(
        alert_id=alert_id,
        user_id="u1",
        version=kw.pop("version", 1),
        symbol=symbol,
        condition=condition,  # type: ignore[arg-type]
        target_price=target,  # type: ignore[arg-type]
        email="trader@example.com",
        updated_at=1,
        **kw,
    )


def voided(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "tickwatch_alert_engine_positions_voided_total", {"topic": TICKS.name, "reason": reason}
    )
    return value or 0.0


async def test_a_replaced_log_is_void_and_alerting_resumes_with_the_recorded_trigger_state(
    gateway: Gateway, settings: Settings, private_kafka: str
) -> None:
    symbol = f"T{uuid.uuid4().hex[:7].upper()}-USDT"
    once = state("once-" + uuid.uuid4().hex[:8], symbol, "above", "100")
    recurring = state(
        "rec-" + uuid.uuid4().hex[:8],
        symbol,
        "above",
        "100",
        frequency="recurring",
        cooldown_seconds=3600,
    )
    cross = state("cross-" + uuid.uuid4().hex[:8], symbol, "crosses_up", "200")
    sentinel = state("sentinel-" + uuid.uuid4().hex[:8], symbol, "above", "1000")
    alerts = [once, recurring, cross, sentinel]
    partition = partition_for(symbol, SYMBOL_PARTITIONS)

    # Before: the once and the recurring alert fire; the last price recorded is 150.
    async with running_alert_engine(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        for alert in alerts:
            await gateway.alert(alert)
        await wait_until(lambda: sentinel.alert_id in worker.engine.alerts, what="alerts loaded")
        await gateway.tick(symbol, "101")
        await gateway.tick(symbol, "150")
        await wait_until(
            lambda: gateway.fired(once.alert_id) and gateway.fired(recurring.alert_id),
            what="the first triggers",
        )
        await wait_until(lambda: worker.next_offsets.get(partition) == 2, what="both ticks")
    conn = await asyncpg.connect(settings.database_url)
    try:
        old = await conn.fetchrow(
            "SELECT next_offset, log FROM alert_engine.tick_offset"
            " WHERE topic = $1 AND partition = $2",
            TICKS.name,
            partition,
        )
    finally:
        await conn.close()
    assert old["next_offset"] >= 2 and old["log"]

    # The broker's logs are replaced; the gateway republishes every alert's latest version
    # (here the versions it first published: it has not counted the firings yet).
    await recreate_topic(private_kafka, TICKS.name, TICKS.partitions, dict(TICKS.configs))
    await recreate_topic(
        private_kafka, ALERT_CHANGES.name, ALERT_CHANGES.partitions, dict(ALERT_CHANGES.configs)
    )
    for alert in alerts:
        await gateway.alert(alert)
    before = voided("new_log")

    with structlog.testing.capture_logs() as logs:
        async with running_alert_engine(settings, serve_ops=False) as worker:
            await wait_until(worker.assigned.is_set, what="assignment after the new log")
            await wait_until(
                lambda: all(a.alert_id in worker.engine.alerts for a in alerts),
                what="alerts rebuilt",
            )
            await gateway.tick(symbol, "250")  # crosses 200 from the recorded 150
            await gateway.tick(symbol, "1001")  # the sentinel: every tick before is handled
            await wait_until(lambda: gateway.fired(sentinel.alert_id), what="sentinel")
            assert len(gateway.fired(recurring.alert_id)) == 1  # still cooling down
            gateway.ts += HOUR_MS  # the cooldown is over
            await gateway.tick(symbol, "300")
            await wait_until(lambda: len(gateway.fired(recurring.alert_id)) == 2, what="re-arm")

    void = [e for e in logs if e["event"] == "position_void" and e["partition"] == partition]
    assert len(void) == 1
    assert void[0]["log_level"] == "warning"
    assert (void[0]["topic"], void[0]["reason"], void[0]["stored"]) == (
        TICKS.name,
        "new_log",
        old["next_offset"],
    )
    assert void[0]["stored_log"] == old["log"] != void[0]["current_log"]
    assert voided("new_log") - before >= 1
    [crossing] = gateway.fired(cross.alert_id)
    assert str(crossing.price) == "250"
    assert [t.sequence for t in gateway.fired(once.alert_id)] == [1]  # never fired again
    assert [t.event_id for t in gateway.fired(recurring.alert_id)] == [
        trigger_event_id(recurring.alert_id, 1),
        trigger_event_id(recurring.alert_id, 2),
    ]


async def test_a_batch_of_only_malformed_ticks_moves_the_recorded_position(
    gateway: Gateway, settings: Settings
) -> None:
    """Otherwise those records are read, and dead-lettered, again after every restart."""
    symbol = f"T{uuid.uuid4().hex[:7].upper()}-USDT"
    partition = partition_for(symbol, SYMBOL_PARTITIONS)
    producer = gateway.publisher.producer
    async with running_alert_engine(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        sent = [
            await producer.send_and_wait(
                TICKS.name, b"not json", key=symbol.encode(), partition=partition
            )
            for _ in range(3)
        ]
        last = sent[-1].offset
        await wait_until(
            lambda: worker.next_offsets.get(partition, -1) > last, what="position past the poison"
        )
    conn = await asyncpg.connect(settings.database_url)
    try:
        recorded = await conn.fetchval(
            "SELECT next_offset FROM alert_engine.tick_offset WHERE topic = $1 AND partition = $2",
            TICKS.name,
            partition,
        )
    finally:
        await conn.close()
    assert recorded > last

    with structlog.testing.capture_logs() as logs:
        async with running_alert_engine(settings, serve_ops=False) as worker:
            await wait_until(worker.assigned.is_set, what="assignment after restart")
            assert worker.next_offsets[partition] > last
            await gateway.tick(symbol, "1")
            await wait_until(
                lambda: worker.next_offsets[partition] > last + 1, what="the next good tick"
            )
    assert not [e for e in logs if e.get("offset") in {m.offset for m in sent}]
