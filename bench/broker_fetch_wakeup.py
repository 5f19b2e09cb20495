"""How soon each broker hands a consumer a record that arrives while its fetch is waiting.

    uv run python bench/broker_fetch_wakeup.py [--brokers tansu,apache-kafka]

A group-less consumer reads a 12-partition topic with ``fetch_max_wait_ms=1000``. Each round
waits 300 ms (so a fetch over every partition is waiting at the broker), produces one record to
a partition that fetch covers, and times produce -> consumed. A broker that wakes a waiting
fetch when data arrives answers in milliseconds; one that does not answers late, and then every
consumer hop through it costs up to its ``fetch_max_wait_ms``, which is why the services' fetch
waits are short (``KAFKA_FETCH_MAX_WAIT_MS``, ``ALERT_ENGINE_FETCH_MAX_WAIT_MS``).

The record goes to a partition other than the one just read: aiokafka leaves a partition out of
the fetch it sends while that partition's records are still buffered, so a record on the
partition just read would wait for the next fetch on any broker.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bench_alerts import apache_kafka
from tickwatch_devstack.infra import start_stack

PARTITIONS = 12
MAX_WAIT_MS = 1000
ROUNDS = 6


async def wakeups(bootstrap: str) -> list[float]:
    topic = f"fetch-wakeup-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=MAX_WAIT_MS
    )
    await producer.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        await producer.send_and_wait(topic, b"first", partition=0)
        await asyncio.wait_for(consumer.getone(), 30)
        waits = []
        for n in range(ROUNDS):
            await asyncio.sleep(0.3)  # the next fetch is now waiting at the broker
            sent = time.perf_counter()
            await producer.send_and_wait(topic, b"x", partition=1 + n % 2)
            await asyncio.wait_for(consumer.getone(), 30)
            waits.append((time.perf_counter() - sent) * 1000)
        return waits
    finally:
        await consumer.stop()
        await producer.stop()


def report(broker: str, waits: list[float]) -> None:
    print(
        f"fetch wake-up ({broker}): record produced -> consumed while a "
        f"{MAX_WAIT_MS} ms fetch waits: median {statistics.median(waits):.0f} ms, "
        f"each {[round(w) for w in waits]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="tansu,apache-kafka")
    args = parser.parse_args()
    for broker in args.brokers.split(","):
        if broker == "tansu":
            data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-wakeup-"))
            stack = start_stack(data_dir, environ={})
            try:
                report(broker, asyncio.run(wakeups(stack.kafka_bootstrap_servers)))
            finally:
                stack.stop()
                shutil.rmtree(data_dir, ignore_errors=True)
        elif broker == "apache-kafka":
            with apache_kafka() as bootstrap:
                if bootstrap is not None:
                    report(broker, asyncio.run(wakeups(bootstrap)))
        else:
            parser.error(f"unknown broker {broker!r}: tansu or apache-kafka")


if __name__ == "__main__":
    main()
