"""Fixtures for the notifier against the real broker, database and mail catcher."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_common.events import NotificationDeadLetter, NotificationStatus
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import NOTIFICATIONS_DLQ, NOTIFICATIONS_STATUS
from tickwatch_notifier.settings import Settings


class Outcomes:
    """Everything on notifications.status.v1 and notifications.dlq.v1, from the beginning."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.statuses: list[NotificationStatus] = []
        self.dead: list[NotificationDeadLetter] = []
        self._task: asyncio.Task[None] | None = None

    def status_of(self, event_id: str) -> list[str]:
        return [s.status for s in self.statuses if s.event_id == event_id]

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await consumer.start()
        tps = [
            TopicPartition(t.name, p)
            for t in (NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ)
            for p in range(t.partitions)
        ]
        consumer.assign(tps)
        for tp in tps:  # offset 0 rather than seek_to_beginning(), which Tansu has answered wrongly
            consumer.seek(tp, 0)

        async def collect() -> None:
            try:
                async for record in consumer:
                    if record.value is None:
                        continue
                    if record.topic == NOTIFICATIONS_STATUS.name:
                        self.statuses.append(NotificationStatus.model_validate_json(record.value))
                    else:
                        self.dead.append(NotificationDeadLetter.model_validate_json(record.value))
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(collect())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def outcomes(stack: Any) -> AsyncIterator[Outcomes]:
    o = Outcomes(stack.kafka_bootstrap_servers)
    await o.start()
    try:
        yield o
    finally:
        await o.stop()


@pytest.fixture
async def publisher(stack: Any) -> AsyncIterator[Publisher]:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings, linger_ms=0) as p:
        yield p


@pytest.fixture
def notifier_settings(stack: Any, fresh_database: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=fresh_database,
        notifier_group=f"notifier-{uuid.uuid4().hex[:8]}",
        notifier_offset_reset="latest",
        smtp_host=stack.smtp_host,
        smtp_port=stack.smtp_port,
        mail_from="Tickwatch <alerts@tickwatch.test>",
        public_base_url="https://tickwatch.test",
        notifier_allow_private_webhooks=True,  # the test receivers listen on loopback
        notifier_retry_base_s=0.05,
        notifier_retry_cap_s=0.2,
        notifier_sweep_interval_s=0.5,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
    )
