"""Read what reached a real Kafka topic since a point in time, for assertions in tests.

The reader pins every partition's end offset when it starts, so only records produced after
that are seen, and keeps those whose key is one of ``keys``: tests that share a broker (and
use their own symbols) do not see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_common.kafka import client_options
from tickwatch_common.topics import Topic
from tickwatch_devstack.testing import wait_until


class TopicReader:
    def __init__(self, bootstrap_servers: str, topic: Topic, keys: set[str] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.keys = {k.encode() for k in keys} if keys is not None else None
        self.records: list[dict[str, Any]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.bootstrap_servers),
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,
        )
        await consumer.start()
        parts = [TopicPartition(self.topic.name, p) for p in range(self.topic.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)  # resolve now, before the test produces anything
        self._consumer = consumer
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    if self.keys is None or r.key in self.keys:
                        value = json.loads(r.value) if r.value is not None else None
                        self.records.append(
                            {"key": r.key.decode() if r.key else None, **(value or {})}
                        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until ``condition(records)`` holds; fail with what was seen at the deadline."""
        try:
            await wait_until(lambda: condition(self.records), timeout_s, self.topic.name)
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {timeout_s}s on {self.topic.name}; "
                f"{len(self.records)} records seen, last: {self.records[-3:]}"
            ) from None
        return self.records


@contextlib.asynccontextmanager
async def reading(
    bootstrap_servers: str, topic: Topic, keys: set[str] | None = None
) -> AsyncIterator[TopicReader]:
    reader = TopicReader(bootstrap_servers, topic, keys)
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()
