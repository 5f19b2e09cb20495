"""Topics made as the contract says, against a private Apache Kafka broker (auto-creation off):
a topic deleted under a running producer is recreated by its next publish; a send to a partition
a short topic lacks grows it; a wrong cleanup policy is set right."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from tickwatch_common.kafka import ensure_topics, kafka_producer, partition_for
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES
from tickwatch_devstack.infra import free_port, start_kafka
from tickwatch_devstack.testing import recreate_topic, wait_until

pytestmark = pytest.mark.integration
TOPIC = ALERT_CHANGES  # 6 partitions, compacted, tombstones: a record needs no event


@pytest.fixture(scope="module")
def private_broker() -> Iterator[str]:
    """Its own broker: these tests delete and shrink contract topics."""
    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-topic-repair-"))
    server = start_kafka(data_dir, free_port())
    try:
        yield f"localhost:{server.port}"
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def admin(private_broker: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=private_broker)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def partitions(admin: AIOKafkaAdminClient, topic: str) -> int:
    [described] = await admin.describe_topics([topic])
    return len(described["partitions"])


async def cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [(_, _, _, _, entries)] = response.resources
    return str({e[0]: e[1] for e in entries}["cleanup.policy"])


def key_on_last_partition() -> str:
    """A key the contract sends to the last partition, which a 4-partition topic lacks."""
    while True:
        key = uuid.uuid4().hex
        if partition_for(key, TOPIC.partitions) == TOPIC.partitions - 1:
            return key


async def test_a_topic_deleted_under_a_running_producer_is_recreated_by_its_next_publish(
    private_broker: str, admin: AIOKafkaAdminClient
) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=private_broker)
    async with kafka_producer(settings, topics=[TOPIC]) as publisher:
        key = key_on_last_partition()
        await publisher.publish(TOPIC, None, key=key)
        await admin.delete_topics([TOPIC.name])
        topics: list[str] = [TOPIC.name]

        async def refresh() -> None:
            topics[:] = await admin.list_topics()

        deadline = time.monotonic() + 30
        while TOPIC.name in topics:
            assert time.monotonic() < deadline, "the broker did not delete the topic"
            await refresh()
            await wait_until(lambda: True, 0)

        started = time.monotonic()
        await publisher.publish(TOPIC, None, key=key)
        print(f"publish to the deleted topic recreated it in {time.monotonic() - started:.1f} s")
        assert await partitions(admin, TOPIC.name) == TOPIC.partitions
        assert await cleanup_policy(admin, TOPIC.name) == "compact"
        assert publisher.outcomes.failing() == {}


async def test_a_send_to_a_partition_the_topic_lacks_grows_the_topic_and_succeeds(
    private_broker: str, admin: AIOKafkaAdminClient
) -> None:
    await recreate_topic(private_broker, TOPIC.name, 4, {"cleanup.policy": "compact"})
    settings = KafkaSettings(kafka_bootstrap_servers=private_broker)
    async with kafka_producer(settings) as publisher:
        started = time.monotonic()
        await publisher.publish(TOPIC, None, key=key_on_last_partition())
        print(f"send to partition 5 of a 4-partition topic: {time.monotonic() - started:.1f} s")
        assert publisher.repairer is not None and publisher.repairer.runs >= 1
        assert await partitions(admin, TOPIC.name) == TOPIC.partitions
        assert publisher.outcomes.failing() == {}


async def test_ensure_topics_grows_a_short_topic_and_sets_its_cleanup_policy(
    private_broker: str, admin: AIOKafkaAdminClient
) -> None:
    await recreate_topic(private_broker, TOPIC.name, 4, {"cleanup.policy": "delete"})
    assert TOPIC.name not in await ensure_topics(private_broker, names={TOPIC.name, TOPIC.dlq})
    assert await partitions(admin, TOPIC.name) == TOPIC.partitions
    assert await cleanup_policy(admin, TOPIC.name) == "compact"
    assert await ensure_topics(private_broker, names={TOPIC.name}) == []  # nothing left to do
