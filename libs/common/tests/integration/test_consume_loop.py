"""The consume loop against the real broker: valid events reach the handler, malformed ones the DLQ."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from tickwatch_common.events import Tick
from tickwatch_common.kafka import Delivered, consume, kafka_consumer, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS


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
