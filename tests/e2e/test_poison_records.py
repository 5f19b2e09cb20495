"""Poison never kills (issue 9): a malformed record as large as the broker accepts (just under
Apache Kafka's default ``message.max.bytes`` of 1,048,588) on every topic a consumer group
reads. The gateway, the alert engine and the notifier run as processes: each such record is
dead-lettered exactly once (as a bounded reference: a copy with its headers would not fit a
producer request), every service stays up and ready, and after a restart of all three the
count is still one each."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tickwatch_common.events import Trigger
from tickwatch_common.kafka import partition_for
from tickwatch_common.topics import (
    ALERT_CHANGES,
    ALERTS_TRIGGERED,
    CANDLES,
    NOTIFICATIONS_STATUS,
    TICKS,
)
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.services import ready_status, service_process
from tickwatch_devstack.testing import dead_letter_sources, wait_until

pytestmark = pytest.mark.e2e

POISONED = (TICKS, CANDLES, ALERT_CHANGES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS)
SERVICES = ("gateway", "alert-engine", "notifier")
POISON_BYTES = 1_048_400


async def test_a_record_as_large_as_the_broker_takes_is_dead_lettered_once_on_every_topic(
    stack: Stack, fresh_database: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bootstrap = stack.kafka_bootstrap_servers
    env = {
        **os.environ,
        **stack.env(),
        "DATABASE_URL": fresh_database,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "REDIS_PREFIX": f"poison-{suffix}:",
        "GATEWAY_HOST": "127.0.0.1",
        # Groups of this test alone, reading from the beginning of what is published next.
        "ALERT_ENGINE_GROUP": f"alert-engine-{suffix}",
        "NOTIFIER_GROUP": f"notifier-{suffix}",
        "NOTIFIER_OFFSET_RESET": "latest",  # not every trigger of the session's earlier tests
        "CANDLE_CONSUMER_GROUP": f"candles-{suffix}",
        "ALERTS_CONSUMER_GROUP": f"alerts-{suffix}",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    }
    ports = {service: free_port() for service in SERVICES}
    topics = [t.name for t in POISONED]
    sources: list[str] = []

    async def one_each() -> bool:
        counts = await dead_letter_sources(bootstrap, topics)
        WAITING_FOR[:] = [f"no DLQ entry for {s}" for s in sources if counts.get(s, 0) < 1]
        return not WAITING_FOR

    # The gateway's new groups would read from the beginning of every topic: the whole
    # session's candles and triggers before the poison, minutes on a slow machine. Their
    # positions start at the current ends instead.
    await commit_ends(bootstrap, suffix, ("candles", "alerts"))

    for run in (1, 2):  # the second run is the restart: nothing is dead-lettered again
        with contextlib.ExitStack() as services:
            for service in SERVICES:
                services.enter_context(
                    service_process(
                        service,
                        env,
                        ports[service],
                        log_path=tmp_path / f"{service}-{run}.log",
                        timeout_s=120,
                    )
                )
            if run == 1:  # the new groups read from the end of each topic: position them first
                await wait_until_async(
                    lambda: notifier_positioned(bootstrap, suffix),
                    90,
                    what="the notifier's group positioned on the poison's partition",
                )
                sources.extend(await publish_poison(bootstrap, suffix))
                await wait_until_async(one_each, 120, what="a DLQ entry for every poison")
            # Every consumer has moved past its poison: each /ready (consumer progress
            # included) answers 200, and every consumer group reports no lag.
            await wait_until(
                lambda: all(ready_status(p) == 200 for p in ports.values()),
                60,
                what=f"every /ready 200 after the poison (run {run})",
            )
            await wait_until_async(
                lambda: all_past_their_poison(bootstrap, fresh_database, suffix, sources),
                90,
                what=f"every consumer's position past its poison (run {run})",
            )
        counts = await dead_letter_sources(bootstrap, topics)
        assert {source: counts.get(source, 0) for source in sources} == dict.fromkeys(sources, 1), (
            f"run {run}"
        )


async def commit_ends(bootstrap: str, suffix: str, groups: tuple[str, ...]) -> None:
    """Commit, for each of ``groups`` (before its first member joins), every partition of the
    topics it reads at that partition's current end."""
    for group in groups:
        tps = [TopicPartition(t.name, p) for t in GROUPS[group] for p in range(t.partitions)]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=f"{group}-{suffix}", enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: end for tp, end in ends.items()})
        finally:
            await consumer.stop()


async def notifier_positioned(bootstrap: str, suffix: str) -> bool:
    """A trigger with no channel on the poison's partition of alerts.triggered.v1, and whether
    the notifier's new group (offset reset ``latest``) has committed past it: from then on it
    reads every record published there, the poison included."""
    key = f"poison-{suffix}"
    partition = partition_for(key, ALERTS_TRIGGERED.partitions)
    now = int(time.time() * 1000)
    probe = Trigger(
        event_id=f"probe-{suffix}-{now}",
        alert_id=f"probe-{suffix}",
        user_id=f"u-{suffix}",
        sequence=1,
        symbol="BTC-USDT",
        condition="above",
        threshold="1",  # type: ignore[arg-type]
        price="2",  # type: ignore[arg-type]
        ts_event=now,
        triggered_at=now,
        channels=[],
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            ALERTS_TRIGGERED.name, probe.to_bytes(), key=key.encode(), partition=partition
        )
    finally:
        await producer.stop()
    tp = TopicPartition(ALERTS_TRIGGERED.name, partition)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def committed_past() -> bool:
            committed = await admin.list_consumer_group_offsets(
                f"notifier-{suffix}", partitions=[tp]
            )
            return (found := committed.get(tp)) is not None and found.offset > meta.offset

        try:
            await wait_until(committed_past, 5, "the probe committed", interval_s=0.2)
        except TimeoutError:
            return False
        return True
    finally:
        await admin.close()


async def publish_poison(bootstrap: str, suffix: str) -> list[str]:
    """One malformed record of ``POISON_BYTES`` on each topic; their ``topic/partition/offset``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=2 * 1024 * 1024, linger_ms=0
    )
    await producer.start()
    try:
        sources = []
        for topic in POISONED:
            value = b"{" + b"x" * (POISON_BYTES - 2) + b"}"  # not JSON: malformed
            key = f"poison-{suffix}"
            meta = await producer.send_and_wait(
                topic.name, value, key=key.encode(), partition=partition_for(key, topic.partitions)
            )
            sources.append(f"{topic.name}/{meta.partition}/{meta.offset}")
        return sources
    finally:
        await producer.stop()


# The consumer groups of this test that keep their positions in Kafka, and the poisoned topics
# each reads. The alert engine keeps its tick positions in PostgreSQL (checked there) and reads
# alerts.changes.v1 from its beginning at every rebuild (its commits there only show lag).
WAITING_FOR: list[str] = []  # what the last look found short, for the timeout's message
GROUPS = {
    "notifier": (ALERTS_TRIGGERED,),
    "candles": (CANDLES,),
    "alerts": (ALERTS_TRIGGERED, NOTIFICATIONS_STATUS),
}


async def all_past_their_poison(
    bootstrap: str, database_url: str, suffix: str, sources: list[str]
) -> bool:
    """Whether every group has committed past the poison of each topic it reads, and the alert
    engine has recorded its tick position past the tick poison."""
    poison = {topic: (int(p), int(o)) for topic, p, o in (s.split("/") for s in sources)}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for group, topics in GROUPS.items():
            committed = await admin.list_consumer_group_offsets(
                f"{group}-{suffix}",
                partitions=[TopicPartition(t.name, poison[t.name][0]) for t in topics],
            )
            for topic in topics:
                partition, offset = poison[topic.name]
                meta = committed.get(TopicPartition(topic.name, partition))
                if meta is None or meta.offset <= offset:
                    WAITING_FOR[:] = [f"{group} on {topic.name}[{partition}]: {meta} <= {offset}"]
                    return False
    finally:
        await admin.close()
    partition, offset = poison[TICKS.name]
    conn = await asyncpg.connect(database_url)
    try:
        recorded = await conn.fetchval(
            "SELECT next_offset FROM alert_engine.tick_offset WHERE topic = $1 AND partition = $2",
            TICKS.name,
            partition,
        )
    finally:
        await conn.close()
    WAITING_FOR[:] = [f"alert-engine on {TICKS.name}[{partition}]: {recorded} <= {offset}"]
    return recorded is not None and recorded > offset


async def wait_until_async(probe, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """``wait_until`` for a query, naming at the deadline what the probes last saw."""
    try:
        await wait_until(probe, timeout_s, what, interval_s=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {WAITING_FOR}") from None
