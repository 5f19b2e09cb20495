"""The publishing end: ticks and candles to their topics, keyed by symbol, in batches.

The hot path never awaits the broker per message. Events are serialised (``Event.to_bytes``),
grouped by (topic, partition) — the partition the contract's key picks, as
:func:`tickwatch_common.kafka.partition_for` computes it — and handed to aiokafka as whole
batches (``create_batch`` / ``send_batch``) by a flusher that runs every ``linger_s``, or at once
when ``max_pending`` events wait. ``send_batch`` blocks when aiokafka's buffer is full, which
is the back-pressure. Acknowledgements are checked in callbacks: a failed batch is counted and
logged (at most once every 10 s), never raised into the feed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from tickwatch_common.events import Candle, Tick
from tickwatch_common.kafka import partition_for
from tickwatch_common.metrics import MESSAGES_PUBLISHED
from tickwatch_common.topics import CANDLES, TICKS, Topic

from tickwatch_ingestor.metrics import (
    CANDLES_PUBLISHED,
    LAG_SECONDS,
    PUBLISH_FAILURES,
    TICKS_PUBLISHED,
)

log = structlog.get_logger(__name__)

LAG_SAMPLES = 64
_TICK_JSON = Tick.__pydantic_serializer__.to_json


class EventSink:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        linger_s: float = 0.003,
        max_pending: int = 4096,
    ) -> None:
        self._producer = producer
        self.linger_s = linger_s
        self.max_pending = max_pending
        self._pending: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        self._count = 0
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._partitions: dict[tuple[str, str], tuple[bytes, tuple[str, int]]] = {}
        self._tick_tally: Tally[tuple[str, str]] = Tally()
        self._candle_tally: Tally[tuple[str, str]] = Tally()
        self._lag = {s: LAG_SECONDS.labels(s) for s in ("binance", "coingecko", "replay")}
        self._lags: list[tuple[str, int]] = []
        self._last_failure_log = 0.0
        self._flush_lock = asyncio.Lock()
        self.published = 0

    # -------------------------------------------------------------- enqueue

    def _key(self, topic: Topic, symbol: str) -> tuple[bytes, tuple[str, int]]:
        """The record key and the (topic, partition) it goes to, computed once per symbol."""
        cached = self._partitions.get((topic.name, symbol))
        if cached is None:
            partition = partition_for(symbol, topic.partitions)
            cached = (symbol.encode(), (topic.name, partition))
            self._partitions[(topic.name, symbol)] = cached
        return cached

    def add_tick(self, tick: Tick) -> None:
        """Queue a tick without waiting (call :meth:`put_tick` for back-pressure)."""
        key, lane = self._key(TICKS, tick.symbol)
        bucket = self._pending.get(lane)
        if bucket is None:
            bucket = self._pending[lane] = []
        # Event.to_bytes() without pydantic's wrapper: the same serializer, the same bytes.
        bucket.append((key, _TICK_JSON(tick)))
        self._count += 1
        tally = self._tick_tally
        k = (tick.source, tick.symbol)
        tally[k] = tally.get(k, 0) + 1
        self._lags.append((tick.source, tick.ts_ingest - tick.ts_event))
        if self._count == 1:
            self._wake.set()

    @property
    def full(self) -> bool:
        return self._count >= self.max_pending

    def add_candle(self, candle: Candle) -> None:
        key, lane = self._key(CANDLES, candle.symbol)
        bucket = self._pending.setdefault(lane, [])
        bucket.append((key, candle.to_bytes()))
        self._count += 1
        self._candle_tally[(candle.source, candle.interval)] += 1
        self._wake.set()

    async def put_tick(self, tick: Tick) -> None:
        self.add_tick(tick)
        if self._count >= self.max_pending:
            await self.flush()

    async def put_candle(self, candle: Candle) -> None:
        self.add_candle(candle)
        if self._count >= self.max_pending:
            await self.flush()

    # -------------------------------------------------------------- send

    async def flush(self) -> None:
        """Hand everything queued to the producer (not waiting for acknowledgements)."""
        async with self._flush_lock:
            pending, self._pending, self._count = self._pending, {}, 0
            self._wake.clear()
            for (topic, partition), items in pending.items():
                batch = self._producer.create_batch()
                n = 0
                for key, value in items:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        await self._send(batch, topic, partition, n)
                        batch = self._producer.create_batch()
                        n = 0
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise ValueError(f"one {topic} event exceeds the batch size")
                    n += 1
                if n:
                    await self._send(batch, topic, partition, n)
            self._count_published()

    async def _send(self, batch: Any, topic: str, partition: int, n: int) -> None:
        batch.close()
        fut = await self._producer.send_batch(batch, topic, partition=partition)
        self._inflight.add(fut)
        fut.add_done_callback(lambda f: self._acked(f, topic, n))
        self.published += n

    def _acked(self, fut: asyncio.Future[Any], topic: str, n: int) -> None:
        self._inflight.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            MESSAGES_PUBLISHED.labels(topic).inc(n)
            return
        PUBLISH_FAILURES.labels(topic).inc()
        now = time.monotonic()
        if now - self._last_failure_log > 10:
            self._last_failure_log = now
            log.error("publish_failed", topic=topic, events=n, error=repr(exc))

    def _count_published(self) -> None:
        # The lag histogram sees every tick at live rates; past LAG_SAMPLES ticks per flush
        # (thousands per second) an evenly spaced sample, to keep the hot path cheap.
        lags, self._lags = self._lags, []
        step = max(1, len(lags) // LAG_SAMPLES)
        for source, lag_ms in lags[::step]:
            self._lag[source].observe(max(0, lag_ms) / 1000)
        for (source, symbol), n in self._tick_tally.items():
            TICKS_PUBLISHED.labels(source, symbol).inc(n)
        for (source, interval), n in self._candle_tally.items():
            CANDLES_PUBLISHED.labels(source, interval).inc(n)
        self._tick_tally.clear()
        self._candle_tally.clear()

    async def drain(self) -> None:
        """Flush and wait until the broker acknowledged (or refused) everything sent."""
        await self.flush()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def run(self) -> None:
        """The flusher: wakes when something is queued, lingers briefly, sends. Drains on exit."""
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self.linger_s)
                await self.flush()
        finally:
            # Cancelled at shutdown: give what is queued a bounded chance to reach the broker.
            try:
                await asyncio.wait_for(asyncio.shield(self.drain()), 5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                log.warning("sink_drain_incomplete", queued=self._count)
