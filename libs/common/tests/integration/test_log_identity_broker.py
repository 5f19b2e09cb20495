"""Log identities read from the real broker: stable for a topic, new when it is recreated."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from tickwatch_common.log_identity import LogIdentityError, read_log_identities
from tickwatch_devstack.testing import recreate_topic


async def test_a_recreated_topic_has_a_new_id_on_the_same_cluster(stack) -> None:
    bootstrap = stack.kafka_bootstrap_servers
    name, other = f"log-identity-{uuid.uuid4().hex[:8]}", f"log-identity-{uuid.uuid4().hex[:8]}"
    await recreate_topic(bootstrap, name, 2)
    await recreate_topic(bootstrap, other, 1)

    first = await read_log_identities(bootstrap, [name, other])
    assert first[name].cluster_id == first[other].cluster_id
    assert first[name].topic_id != first[other].topic_id
    assert (await read_log_identities(bootstrap, [name]))[name] == first[name]  # stable

    await recreate_topic(bootstrap, name, 2)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)  # an existing client is reused
    await consumer.start()
    try:
        second = await read_log_identities(consumer._client, [name, other])
    finally:
        await consumer.stop()
    assert second[name].cluster_id == first[name].cluster_id
    assert second[name].topic_id != first[name].topic_id
    assert second[other] == first[other]


async def test_an_unknown_topic_is_an_error_not_a_guess(stack) -> None:
    with pytest.raises(LogIdentityError):
        await read_log_identities(stack.kafka_bootstrap_servers, [f"absent-{uuid.uuid4().hex}"])
