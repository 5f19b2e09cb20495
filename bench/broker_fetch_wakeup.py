"""How soon Apache Kafka hands a consumer a record that arrives while its fetch is waiting.

    .venv/bin/python bench/broker_fetch_wakeup.py

Through the embedded broker ``start_stack`` starts (or the one named by
``KAFKA_BOOTSTRAP_SERVERS``), a group-less aiokafka consumer reads a 12-partition topic with
``fetch_max_wait_ms=1000``. Each round times produce -> consumed of one record, in three cases:

- ``other partition``: 300 ms after the last read (a fetch over every partition is waiting at
  the broker), to a partition other than the one just read. Apache Kafka answers the waiting
  fetch as soon as the record arrives: milliseconds, whatever the wait. This is why long fetch
  waits cost no latency in themselves (Tansu, the earlier development broker, answered about
  300 ms into a 1 s wait, which forced short waits).
- ``same partition, read at once`` and ``same partition, read late``: to the partition just read,
  10 ms after its previous record was consumed; that record was consumed at once, or left in
  aiokafka's buffer for 150 ms first. This checks a behaviour this project had taken for
  granted: aiokafka leaves a partition out of the fetch it sends while that partition's records
  are still buffered (past its 100 ms prefetch backoff) and keeps one fetch in flight per
  broker, so a record arriving there could wait for that fetch, up to ``fetch_max_wait_ms``.
  With aiokafka 0.14 both cases measured a few milliseconds here, like the first (2026-12-02).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tickwatch_devstack.infra import start_stack

PARTITIONS = 12
MAX_WAIT_MS = 1000
ROUNDS = 6


async def wakeups(bootstrap: str, case: str) -> list[float]:
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
            if case == "other partition":
                await asyncio.sleep(0.3)  # the next fetch is now waiting at the broker
                partition = 1 + n % (PARTITIONS - 1)
            else:
                partition = 0
                await producer.send_and_wait(topic, b"before", partition=partition)
                await asyncio.sleep(0.15 if case == "same partition, read late" else 0)
                await asyncio.wait_for(consumer.getone(), 30)
                await asyncio.sleep(0.01)
            sent = time.perf_counter()
            await producer.send_and_wait(topic, b"x", partition=partition)
            await asyncio.wait_for(consumer.getone(), 30)
            waits.append((time.perf_counter() - sent) * 1000)
        return waits
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-wakeup-"))
    stack = start_stack(data_dir, environ=dict(os.environ))
    try:
        for case in (
            "other partition",
            "same partition, read at once",
            "same partition, read late",
        ):
            waits = asyncio.run(wakeups(stack.kafka_bootstrap_servers, case))
            print(
                f"fetch wake-up ({case}): record produced -> consumed while a "
                f"{MAX_WAIT_MS} ms fetch waits: median {statistics.median(waits):.0f} ms, "
                f"each {[round(w) for w in waits]}"
            )
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
