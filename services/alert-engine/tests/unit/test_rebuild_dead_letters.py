"""A rebuild reads alerts.changes.v1 from its beginning and then positions the live consumer at
its end, so a malformed change the live consumer had not fetched yet (it arrived just before a
rebalance) is seen only by the rebuild: the rebuild dead-letters it, once, however many
rebuilds read it again. Plain fakes of the group-less reader and the publisher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from tickwatch_alert_engine.consumer import AlertEngineWorker
from tickwatch_alert_engine.engine import Engine
from tickwatch_common.dead_letters import DeadLetters
from tickwatch_common.events import AlertState
from tickwatch_common.topics import ALERT_CHANGES


def change(partition: int, offset: int, key: bytes, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=ALERT_CHANGES.name,
        partition=partition,
        offset=offset,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=(),
    )


class ChangeLog:
    """The calls a rebuild's replay makes on its reader, over a fixed list of records."""

    def __init__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.records = records
        self.positions: dict[TopicPartition, int] = {}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: sum(1 for r in self.records if r.partition == tp.partition) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        out = {}
        for tp in tps:
            batch = [
                r
                for r in self.records
                if r.partition == tp.partition and r.offset >= self.positions[tp]
            ]
            if batch:
                out[tp] = batch
                self.positions[tp] = batch[-1].offset + 1
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


class NothingInTheDLQYet(DeadLetters):
    def __init__(self) -> None:
        super().__init__(cast(Any, None), {})

    async def _catch_up(self, dlq: str) -> None:
        await asyncio.sleep(0)


class DLQPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def send_raw(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, value, dict(headers)))


def alert_change() -> bytes:
    return AlertState.model_validate(
        {
            "alert_id": "a1",
            "user_id": "u1",
            "version": 1,
            "symbol": "BTC-USDT",
            "condition": "above",
            "target_price": "100",
            "email": "u@example.com",
            "updated_at": 1,
        }
    ).to_bytes()


async def test_a_malformed_change_the_rebuild_reads_is_dead_lettered_once() -> None:
    log = ChangeLog([change(2, 0, b"a1", alert_change()), change(2, 1, b"p", b"{not json")])

    @asynccontextmanager
    async def reader() -> AsyncIterator[AIOKafkaConsumer]:
        yield cast(AIOKafkaConsumer, log)

    publisher = DLQPublisher()
    worker = AlertEngineWorker(
        cast(Any, None), cast(Any, publisher), cast(Any, None), reader, NothingInTheDLQYet()
    )
    for _ in range(2):  # a second rebuild (a rebalance, a restart's) reads both again
        engine = Engine()
        ends = await worker._replay_changes(engine, {2})
        assert ends == {TopicPartition(ALERT_CHANGES.name, 2): 2}
        assert engine.index.state("a1") is not None  # the good change is indexed
    ((topic, value, headers),) = publisher.sent
    assert (topic, value) == (f"{ALERT_CHANGES.name}.dlq", b"{not json")
    assert headers["dlq_source"] == f"{ALERT_CHANGES.name}/2/1".encode()
