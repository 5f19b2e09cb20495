"""The consume loop against the real broker: valid events reach the handler, malformed ones the
DLQ, and a failed batch makes no partition of its fetch skip a record."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata
from tickwatch_common.events import Tick
from tickwatch_common.kafka import (
    Delivered,
    consume,
    kafka_consumer,
    kafka_producer,
    partition_for,
)
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import wait_until


def tick(symbol: str, price: str) -> Tick:
    base, quote = symbol.split("-")
    return Tick(
        symbol=symbol, base=base, quote=quote, source="replay", price=price, ts_event=1, ts_ingest=2
    )


async def test_malformed_tick_goes_to_dlq_and_consumer_keeps_going(stack) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    symbol = f"T{uuid.uuid4().hex[:6].upper()}-USDT"
    seen: list[Delivered] = []
    done = asyncio.Event()

    async def handle(batch: list[Delivered]) -> None:
        seen.extend(d for d in batch if d.key == symbol)
        if any(d.event.price == 2 for d in seen if d.event is not None):
            done.set()

    async with kafka_producer(settings) as publisher:
        await publisher.publish(TICKS, tick(symbol, "1.50"), key=symbol)
        await publisher.send_raw(
            TICKS.name, b'{"symbol": "oops", "price": 1.5}', symbol.encode(), []
        )
        await publisher.send_raw(TICKS.name, b"not json", symbol.encode(), [])
        await publisher.publish(TICKS, tick(symbol, "2"), key=symbol)
        async with kafka_consumer(
            settings, group=f"g-{uuid.uuid4().hex}", topics=[TICKS]
        ) as consumer:
            task = asyncio.create_task(consume(consumer, handle, dlq=publisher))
            await asyncio.wait_for(done.wait(), 30)
            task.cancel()

    assert [str(d.event.price) for d in seen if d.event is not None] == ["1.50", "2"]
    dlq = AIOKafkaConsumer(
        TICKS.dlq, bootstrap_servers=stack.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await dlq.start()
    try:
        found: list[bytes] = []

        async def collect() -> None:
            async for record in dlq:
                if record.key == symbol.encode():
                    found.append(record.value)
                    headers = dict(record.headers)
                    assert headers["dlq_reason"] in (b"validation", b"decode")
                    if len(found) == 2:
                        return

        await asyncio.wait_for(collect(), 30)
    finally:
        await dlq.stop()
    assert found == [b'{"symbol": "oops", "price": 1.5}', b"not json"]


class Ledger:
    """What a test's handler was handed and finished, per partition, and the invariant that
    the group's committed offsets never pass a record that was not finished."""

    def __init__(self, consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int]) -> None:
        self.consumer = consumer
        self.starts = starts
        self.done: set[tuple[int, int]] = set()
        self.violations: list[str] = []
        self.progress: dict[int, int] = {}

    def unfinished_below(self, tp: TopicPartition, offset: int) -> list[int]:
        start = self.starts[tp]
        return [o for o in range(start, offset) if (tp.partition, o) not in self.done]

    async def check_commits(self) -> None:
        for tp in self.starts:
            committed = await self.consumer.committed(tp)
            if committed is not None and (missing := self.unfinished_below(tp, committed)):
                self.violations.append(
                    f"{tp.partition}: committed {committed}, unhandled {missing}"
                )

    def handled(self, topic: str, partition: int, next_offset: int) -> None:
        """As ``ConsumerProgress`` is told: never past a record that was not finished."""
        tp = TopicPartition(topic, partition)
        if tp in self.starts and (missing := self.unfinished_below(tp, next_offset)):
            self.violations.append(f"{partition}: progress {next_offset}, unhandled {missing}")
        self.progress[partition] = max(next_offset, self.progress.get(partition, 0))


async def produce_on_every_partition(
    bootstrap: str, symbol: str, per_partition: int
) -> set[tuple[int, int]]:
    """``per_partition`` valid ticks of ``symbol`` on each partition of the ticks topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = [
            await producer.send(
                TICKS.name,
                tick(symbol, f"{p}.{i + 1}").to_bytes(),
                key=symbol.encode(),
                partition=p,
            )
            for p in range(TICKS.partitions)
            for i in range(per_partition)
        ]
        return {(md.partition, md.offset) for md in await asyncio.gather(*sent)}
    finally:
        await producer.stop()


@pytest.mark.parametrize("failing", ["handler", "after_round"])
async def test_a_failure_in_one_partition_skips_no_record_of_the_fetch(
    stack: Stack, failing: str
) -> None:
    """Records on every partition arrive in one fetch; handling fails once on the first
    partition's batch (or at the end of the round): every record of every partition is still
    handled, and no commit ever passes a record that was not."""
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    tps = [TopicPartition(TICKS.name, p) for p in range(TICKS.partitions)]
    symbol = f"S{uuid.uuid4().hex[:6].upper()}-USDT"
    async with kafka_consumer(settings, group=f"g-{uuid.uuid4().hex}") as consumer:
        starts: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        ours = await produce_on_every_partition(stack.kafka_bootstrap_servers, symbol, 5)
        # Assigned only now that every record is in: the first fetch brings all partitions.
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        ledger = Ledger(consumer, starts)
        pending: list[Delivered] = []
        fetched_with_the_failure: list[int] = []

        async def handle(batch: list[Delivered]) -> None:
            await ledger.check_commits()
            if failing == "handler" and not fetched_with_the_failure:
                tp = TopicPartition(batch[0].topic, batch[0].partition)
                for other in tps:  # fetched with this batch: its position moved on
                    if other != tp and await consumer.position(other) > starts[other]:
                        fetched_with_the_failure.append(other.partition)
                fetched_with_the_failure.append(-1)  # failed once
                raise RuntimeError("the first batch fails once")
            pending.extend(batch)
            if failing == "handler":
                ledger.done.update((d.partition, d.offset) for d in pending)
                pending.clear()

        async def after_round() -> None:
            if failing != "after_round":
                return
            if not fetched_with_the_failure:
                fetched_with_the_failure.extend(sorted({d.partition for d in pending}))
                pending.clear()
                raise RuntimeError("the first round fails once")
            ledger.done.update((d.partition, d.offset) for d in pending)
            pending.clear()

        task = asyncio.create_task(
            consume(
                consumer, handle, dlq=None, commit=True, after_round=after_round, progress=ledger
            )
        )
        try:
            await wait_until(lambda: ours <= ledger.done or task.done(), 20, "every record handled")
            await ledger.check_commits()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}

    # The scenario happened: other partitions were in the fetch whose handling failed.
    assert len([p for p in fetched_with_the_failure if p >= 0]) >= 2 - (failing == "handler")
    assert sorted(ours - ledger.done) == []
    assert ledger.violations == []
    last = {p: max(o for q, o in ours if q == p) for p in range(TICKS.partitions)}
    assert all((committed[p] or 0) > last[p] for p in last), committed
    assert all(ledger.progress.get(p, 0) > last[p] for p in last), ledger.progress


def malformed_of(size: int) -> bytes:
    """A JSON object of ``size`` bytes that is no tick (one long field)."""
    head, tail = b'{"symbol": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def dead_letters_of(bootstrap: str, sources: set[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every entry of the ticks DLQ whose ``dlq_source`` is one of ``sources``, read to its end."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(TICKS.dlq, 0)]  # one partition, as the contract makes it
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        found: list[ConsumerRecord[bytes, bytes]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            assert asyncio.get_running_loop().time() < deadline, "the DLQ could not be read"
            for records in (await reader.getmany(timeout_ms=200)).values():
                found += [
                    r for r in records if dict(r.headers).get("dlq_source", b"").decode() in sources
                ]
        return found
    finally:
        await reader.stop()


async def produce_raw(bootstrap: str, symbol: str, values: list[bytes]) -> list[RecordMetadata]:
    """``values`` keyed by ``symbol``, in order on its partition, by a producer that may send
    up to 2 MiB (the broker's own limit then decides)."""
    raw = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2 * 1024 * 1024)
    await raw.start()
    partition = partition_for(symbol, TICKS.partitions)
    try:
        return [
            await (await raw.send(TICKS.name, v, key=symbol.encode(), partition=partition))
            for v in values
        ]
    finally:
        await raw.stop()


async def consume_until(
    settings: KafkaSettings,
    tp: TopicPartition,
    start: int,
    done: Callable[[set[int]], bool],
    **producer: Any,
) -> set[int]:
    """A new consumer and DLQ producer (a service's start) reading ``tp`` from ``start`` without
    committing, as the alert engine does, until ``done`` holds for the offsets handled."""
    handled: set[int] = set()

    async def handle(batch: list[Delivered]) -> None:
        handled.update(d.offset for d in batch if d.partition == tp.partition)

    async with (
        kafka_producer(settings, **producer) as publisher,
        kafka_consumer(settings, group=f"g-{uuid.uuid4().hex}") as consumer,
    ):
        consumer.assign([tp])
        consumer.seek(tp, start)
        task = asyncio.create_task(consume(consumer, handle, dlq=publisher, commit=False))
        try:
            await wait_until(lambda: done(handled) or task.done(), 30, "the good tick handled")
        finally:
            task.cancel()
            outcome = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(outcome[0], asyncio.CancelledError), outcome  # it never died
    return handled


async def test_a_record_too_big_to_copy_is_dead_lettered_once_as_a_reference(stack: Stack) -> None:
    """A malformed record just under Apache Kafka's 1 MB default fits the broker, not a DLQ
    copy: it becomes one bounded reference, the loop goes on to the next record, and a
    restart that reads the same records again adds no second entry."""
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    symbol = f"P{uuid.uuid4().hex[:6].upper()}-USDT"
    bad, good = await produce_raw(
        stack.kafka_bootstrap_servers,
        symbol,
        [malformed_of(1_048_400), tick(symbol, "3").to_bytes()],
    )
    tp = TopicPartition(TICKS.name, bad.partition)
    source = f"{TICKS.name}/{bad.partition}/{bad.offset}"

    for run in ("first start", "restart"):
        handled = await consume_until(settings, tp, bad.offset, lambda h: good.offset in h)
        assert bad.offset not in handled
        entries = await dead_letters_of(stack.kafka_bootstrap_servers, {source})
        assert len(entries) == 1, (run, len(entries))

    [entry] = entries
    headers = dict(entry.headers)
    assert headers["dlq_form"] == b"reference"
    assert headers["dlq_reason"] == b"validation"
    assert entry.key == symbol.encode()
    assert entry.value is not None and len(entry.value) < 8 * 1024
    body = json.loads(entry.value)
    assert (body["topic"], body["partition"], body["offset"]) == (
        TICKS.name,
        bad.partition,
        bad.offset,
    )
    assert body["size_bytes"] == 1_048_400 + len(symbol)
    assert body["reason"] == "validation" and body["error"]
    assert body["value_prefix"].startswith('{"symbol": "xxxx') and len(body["value_prefix"]) == 512


async def test_a_copy_the_producer_refuses_is_sent_as_a_reference(stack: Stack) -> None:
    """The size decided up front is a guess at the producer's limit: a copy it still refuses
    (here a producer limited to 64 KiB, a 100 KB record) goes as a reference instead."""
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    symbol = f"R{uuid.uuid4().hex[:6].upper()}-USDT"
    bad, good = await produce_raw(
        stack.kafka_bootstrap_servers, symbol, [malformed_of(100_000), tick(symbol, "4").to_bytes()]
    )
    tp, bad_offset, good_offset = TopicPartition(TICKS.name, bad.partition), bad.offset, good.offset
    handled = await consume_until(
        settings, tp, bad_offset, lambda h: good_offset in h, max_request_size=64 * 1024
    )
    assert bad_offset not in handled
    [entry] = await dead_letters_of(
        stack.kafka_bootstrap_servers, {f"{TICKS.name}/{bad.partition}/{bad_offset}"}
    )
    assert dict(entry.headers)["dlq_form"] == b"reference"
    assert json.loads(entry.value or b"")["size_bytes"] == 100_000 + len(symbol)
