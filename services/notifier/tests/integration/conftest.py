"""Fixtures for the notifier against the real broker, database and mail catcher."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tickwatch_common.events import NotificationDeadLetter, NotificationStatus
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import NOTIFICATIONS_DLQ, NOTIFICATIONS_STATUS
from tickwatch_devstack.testing import TopicCollector
from tickwatch_notifier.settings import Settings


class Outcomes:
    """Everything on notifications.status.v1 and notifications.dlq.v1, from the beginning."""

    def __init__(self, collector: TopicCollector) -> None:
        self._collector = collector

    @property
    def statuses(self) -> list[NotificationStatus]:
        return self._collector.received(NotificationStatus)

    @property
    def dead(self) -> list[NotificationDeadLetter]:
        return self._collector.received(NotificationDeadLetter)

    def status_of(self, event_id: str) -> list[str]:
        return [s.status for s in self.statuses if s.event_id == event_id]


@pytest.fixture
async def outcomes(stack: Any) -> AsyncIterator[Outcomes]:
    topics = [NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ]
    async with TopicCollector(stack.kafka_bootstrap_servers, topics) as collector:
        yield Outcomes(collector)


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
