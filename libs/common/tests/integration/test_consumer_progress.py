"""ConsumerProgress against the real broker: a consumer that stops handling while records keep
arriving turns its check false within stall_s, and true again once it handles again."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tickwatch_common.consumer_progress import ConsumerProgress
from tickwatch_common.ops import CheckResult
from tickwatch_devstack.infra import Stack

pytestmark = pytest.mark.integration
STALL_S = 2.0


@pytest.fixture
async def topic(stack: Stack) -> AsyncIterator[str]:
    name = f"test.progress.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def probe_until(progress: ConsumerProgress, ok: bool, timeout_s: float) -> CheckResult:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await progress.probe()
        if result.ok is ok:
            return result
        assert time.monotonic() < deadline, f"check stayed {result} for {timeout_s} s"
        await asyncio.sleep(0.1)


async def test_a_consumer_that_stops_handling_while_input_grows_fails_then_recovers(
    stack: Stack, topic: str
) -> None:
    bootstrap = stack.kafka_bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        fetch_max_wait_ms=50,
    )
    await producer.start()
    await consumer.start()
    progress = ConsumerProgress("test", consumer, stall_s=STALL_S)
    handling = asyncio.Event()
    handling.set()

    async def handle() -> None:
        while True:
            await handling.wait()
            for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                progress.handled(tp.topic, tp.partition, records[-1].offset + 1)

    async def feed() -> None:
        for i in range(100_000):
            await producer.send_and_wait(topic, f"{i}".encode(), partition=i % 2)
            await asyncio.sleep(0.05)  # the input's rate, not a wait for a condition

    tasks = [asyncio.create_task(handle()), asyncio.create_task(feed())]
    try:
        await probe_until(progress, ok=True, timeout_s=30)
        assert progress.check().name == "consumer:test"
        handling.clear()
        stopped = time.monotonic()
        failed = await probe_until(progress, ok=False, timeout_s=STALL_S + 15)
        print(f"stall seen after {time.monotonic() - stopped:.1f} s: {failed.detail}")
        assert "test stalled" in failed.detail and f"{topic}[" in failed.detail
        assert "lag" in failed.detail
        handling.set()
        await probe_until(progress, ok=True, timeout_s=15)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
        await producer.stop()
