"""A malformed record is dead-lettered once, by the consumer group, however many replicas run;
the group-less live feed of each replica only counts and logs it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES, TICKS, Topic, all_topic_specs
from tickwatch_devstack.infra import Stack
from tickwatch_gateway.app import build_ops_app

from .conftest import MakeClient

SKIPPED = "tickwatch_messages_malformed_skipped_total"


def skipped(topic: Topic) -> float:
    return REGISTRY.get_sample_value(SKIPPED, {"topic": topic.name, "reason": "validation"}) or 0.0


async def ready(client: TestClient[Any, Any], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (await client.get("/ready")).status != 200:
        assert time.monotonic() < deadline, "the gateway never became ready"
        await asyncio.sleep(0.05)


async def dead_letters(stack: Stack, topic: Topic, key: bytes) -> list[dict[str, bytes]]:
    """Headers of every record of ``topic``'s DLQ with ``key``, read up to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [  # as created (aiokafka's topics() does not fill the client's metadata)
            TopicPartition(name, p)
            for name, count, _ in all_topic_specs()
            if name == topic.dlq
            for p in range(count)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[dict[str, bytes]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += [dict(r.headers) for r in records if r.key == key]
        return found
    finally:
        await consumer.stop()


async def test_only_the_candle_group_dead_letters_and_the_feed_counts(
    stack: Stack, make_client: MakeClient
) -> None:
    group = f"t-candles-{uuid.uuid4().hex[:10]}"
    replicas = [await make_client(candle_consumer_group=group) for _ in range(2)]
    for replica in replicas:
        await ready(replica)
    key = f"bad-{uuid.uuid4().hex[:8]}".encode()
    ticks_before, candles_before = skipped(TICKS), skipped(CANDLES)

    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        await publisher.send_raw(TICKS.name, b"not json", key, [])
        await publisher.send_raw(CANDLES.name, b"not json", key, [])

    deadline = time.monotonic() + 30
    while not await dead_letters(stack, CANDLES, key):  # the group's one dead letter
        assert time.monotonic() < deadline, "the candle store never dead-lettered the candle"
        await asyncio.sleep(0.1)
    while skipped(TICKS) < ticks_before + 2 or skipped(CANDLES) < candles_before + 2:
        assert time.monotonic() < deadline, "the replicas' feeds never saw the bad records"
        await asyncio.sleep(0.05)
    # Every consumer has now handled both records: one dead letter in all.
    [letter] = await dead_letters(stack, CANDLES, key)
    assert letter["dlq_reason"] == b"validation"
    assert await dead_letters(stack, TICKS, key) == []
    async with TestClient(TestServer(build_ops_app(replicas[0].server.app))) as ops:
        metrics = await (await ops.get("/metrics")).text()
    assert f'{SKIPPED}{{reason="validation",topic="{TICKS.name}"}}' in metrics
