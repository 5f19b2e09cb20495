"""Feeds the :class:`~tickwatch_portfolio.market.book.PriceBook` from the broker.

One group-less consumer (every replica holds every price), assigned every partition of both
topics: ``market.instruments.v1`` from its beginning (compacted: the latest rules per symbol),
``market.ticks.v1`` from ``PORTFOLIO_MAX_PRICE_AGE_S`` ago (an older tick could not price a
market order anyway), or its end where nothing is that recent. Nothing is committed; a
malformed record is counted and logged, not dead-lettered (the ingestor's groups do that once,
not once per replica), as every group-less reader does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_common.events import Tick
from tickwatch_common.kafka import Delivered, consume, stop_consuming
from tickwatch_common.ops import Check, CheckResult
from tickwatch_common.topics import INSTRUMENTS, TICKS

from tickwatch_portfolio.market.book import PriceBook


async def position(consumer: AIOKafkaConsumer, max_price_age_ms: int) -> None:
    """Assign every partition and set the starting positions described above."""
    instruments = [TopicPartition(INSTRUMENTS.name, p) for p in range(INSTRUMENTS.partitions)]
    ticks = [TopicPartition(TICKS.name, p) for p in range(TICKS.partitions)]
    consumer.assign(instruments + ticks)
    await consumer.seek_to_beginning(*instruments)
    since = int(time.time() * 1000) - max_price_age_ms
    found = await consumer.offsets_for_times({tp: since for tp in ticks})
    ends = await consumer.end_offsets(ticks)
    for tp in ticks:
        at = found.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])


OnTicks = Callable[[list[Tick]], Awaitable[None]]
"""Called with each batch's ticks once the book holds them (the resting limit orders' fills)."""


class MarketFeed:
    """The consume loop into ``book``, then ``on_ticks``; ``task`` while it runs."""

    def __init__(
        self, consumer: AIOKafkaConsumer, book: PriceBook, on_ticks: OnTicks | None = None
    ) -> None:
        self.consumer = consumer
        self.book = book
        self.on_ticks = on_ticks
        self.task: asyncio.Task[None] | None = None
        self.records = 0

    async def handle(self, batch: list[Delivered]) -> None:
        self.book.on_events(item.event for item in batch)
        self.records += len(batch)
        if self.on_ticks is not None:
            ticks = [item.event for item in batch if isinstance(item.event, Tick)]
            if ticks:
                await self.on_ticks(ticks)

    def check(self) -> Check:
        async def running() -> CheckResult:
            ok = self.task is not None and not self.task.done()
            return CheckResult(
                ok,
                f"{len(self.book.rules)} instruments, {len(self.book.quotes)} prices"
                if ok
                else "not consuming",
            )

        return Check("market_feed", running)


@asynccontextmanager
async def feeding(
    consumer: AIOKafkaConsumer,
    book: PriceBook,
    max_price_age_ms: int,
    on_ticks: OnTicks | None = None,
) -> AsyncIterator[MarketFeed]:
    """The feed, positioned and running; stopped on the way out."""
    await position(consumer, max_price_age_ms)
    feed = MarketFeed(consumer, book, on_ticks)
    stop = asyncio.Event()
    feed.task = asyncio.create_task(
        consume(consumer, feed.handle, dlq=None, commit=False, stop=stop)
    )
    try:
        yield feed
    finally:
        await stop_consuming(feed.task, stop)
