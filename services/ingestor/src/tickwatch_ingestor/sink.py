"""The publishing end: ticks and candles to their topics, keyed by symbol, in batches.

The hot path never awaits the broker per message. Each event is serialised (``Event.to_bytes``)
and appended straight into an aiokafka batch (``create_batch``) for its (topic, partition) — the
partition the contract's key picks, as :func:`tickwatch_common.kafka.partition_for` computes it —
with the ``correlation_id`` header :meth:`tickwatch_common.kafka.Publisher.send` puts on every
record (unique per record: a random 64-bit prefix per sink and a counter, 32 hex digits like
``uuid4().hex``, for a fraction of its cost). A batch that fills is closed and queued for its partition.

One short-lived sender task per partition (a *lane*) hands the lane's batches to the producer
in order (``send_batch``), then whatever the lane's open batch holds, and ends when the lane is
empty. A lane's sender is started by the first event queued to it, so it runs the next time the
event loop turns: a lone tick goes out at once, without lingering for company. While aiokafka
still holds the lane's previous batch (``send_batch`` waits for it to drain), later events pile
up in the lane's open batch, so batches grow with the load by themselves.

Feeds call :meth:`EventSink.pause` when :attr:`EventSink.full` says so (a batch filled): it
yields to the event loop, so senders and the producer's I/O overlap the feed's parsing, and
waits while more than ``max_pending`` events are queued, which is the back-pressure. Per
partition there are at most a queued and an in-flight batch in aiokafka at any time, so the
acknowledgement futures are bounded. Acknowledgements are checked in callbacks: an event counts
as published once the broker acknowledged it; a failed batch is counted and logged (at most
once every 10 s), never raised into the feed.

Every batch's outcome goes into the publisher's record (``Publisher.watch``), which the
``publishing`` readiness check reads; a batch refused because its topic or partition is unknown
(a topic lost with a broker, or remade with fewer partitions than the contract: aiokafka then
asserts "Unrecognized partition" for every batch of the missing partitions, for ever) has the
topic repaired in the background (``Publisher.repair``, rate-limited), after which the lanes'
next batches go through. The producer is read from the publisher at each use.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter as Tally
from collections import deque
from typing import Any

import structlog
from tickwatch_common.events import Candle, Tick
from tickwatch_common.kafka import CORRELATION_HEADER, REPAIRABLE, Publisher, partition_for
from tickwatch_common.metrics import MESSAGES_PUBLISHED
from tickwatch_common.topics import CANDLES, TICKS, Topic

from tickwatch_ingestor.metrics import (
    CANDLES_PUBLISHED,
    LAG_SECONDS,
    LAST_TICK_SECONDS,
    PUBLISH_FAILURES,
    TICKS_PUBLISHED,
)

log = structlog.get_logger(__name__)

LAG_SAMPLES = 64
# Tally and lag metrics are folded in at most this often (and always once the sink goes idle).
METRICS_EVERY_S = 0.05
_TICK_JSON = Tick.__pydantic_serializer__.to_json
_urandom = os.urandom


class _Lane:
    """One (topic, partition): the open batch, the closed ones waiting, and its sender task."""

    __slots__ = ("batch", "n", "partition", "ready", "task", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batch: Any = None
        self.n = 0
        self.ready: deque[tuple[Any, int]] = deque()
        self.task: asyncio.Task[None] | None = None


class EventSink:
    def __init__(
        self,
        publisher: Publisher,
        *,
        linger_s: float = 0.0,
        max_pending: int = 4096,
    ) -> None:
        # linger_s is accepted for compatibility and unused: lanes send on the next loop turn.
        self._publisher = publisher
        self._repairs: dict[str, asyncio.Task[None]] = {}
        self.linger_s = linger_s
        self.max_pending = max_pending
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._keys: dict[tuple[str, str], tuple[bytes, _Lane]] = {}
        self._tick_keys: dict[str, tuple[bytes, _Lane]] = {}
        self._count = 0  # events queued, not yet handed to the producer
        self._due = False  # a batch filled since the feed last paused
        self._room = asyncio.Event()
        self._room.set()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._tick_tally: Tally[tuple[str, str]] = Tally()
        self._candle_tally: Tally[tuple[str, str]] = Tally()
        self._lag = {
            s: LAG_SECONDS.labels(s) for s in ("binance", "coingecko", "coinbase", "replay")
        }
        self._lags: list[tuple[str, int]] = []
        self._metrics_at = 0.0
        self._metrics_timer: asyncio.TimerHandle | None = None
        self._last_failure_log = 0.0
        self.published = 0
        # Correlation ids as Publisher.send gives them without a caller's id: 32 hex digits,
        # unique per record (a random 64-bit prefix per sink and a counter, cheaper than uuid4).
        self._cid_prefix = _urandom(8).hex().encode()
        self._cid = 0

    def _correlation(self) -> list[tuple[str, bytes]]:
        self._cid += 1
        return [(CORRELATION_HEADER, b"%s%016x" % (self._cid_prefix, self._cid))]

    # -------------------------------------------------------------- enqueue

    def _key(self, topic: Topic, symbol: str) -> tuple[bytes, _Lane]:
        """The record key and the lane it goes to, computed once per symbol."""
        cached = self._keys.get((topic.name, symbol))
        if cached is None:
            partition = partition_for(symbol, topic.partitions)
            lane = self._lanes.get((topic.name, partition))
            if lane is None:
                lane = self._lanes[(topic.name, partition)] = _Lane(topic.name, partition)
            cached = self._keys[(topic.name, symbol)] = (symbol.encode(), lane)
        return cached

    def _append(
        self, lane: _Lane, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Into the lane's open batch; a full batch is closed and queued, a new one opened."""
        batch = lane.batch
        if batch is None:
            batch = lane.batch = self._publisher.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            if lane.n == 0:
                raise ValueError(f"one {lane.topic} event exceeds the batch size")
            batch.close()
            lane.ready.append((batch, lane.n))
            self._due = True
            batch = lane.batch = self._publisher.producer.create_batch()
            lane.n = 0
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"one {lane.topic} event exceeds the batch size")
        self._appended(lane)

    def _appended(self, lane: _Lane) -> None:
        lane.n += 1
        self._count += 1
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._send_lane(lane))

    def add_tick(self, tick: Tick) -> None:
        """Queue a tick without waiting (call :meth:`put_tick` for back-pressure)."""
        symbol = tick.symbol
        cached = self._tick_keys.get(symbol)
        if cached is None:
            cached = self._tick_keys[symbol] = self._key(TICKS, symbol)
        key, lane = cached
        # Event.to_bytes() without pydantic's wrapper: the same serializer, the same bytes.
        value = _TICK_JSON(tick)
        self._cid += 1
        headers = [(CORRELATION_HEADER, b"%s%016x" % (self._cid_prefix, self._cid))]
        batch = lane.batch
        # The common case inline: room in the lane's open batch.
        if (
            batch is not None
            and batch.append(key=key, value=value, timestamp=None, headers=headers) is not None
        ):
            lane.n += 1
            self._count += 1
            if lane.task is None:
                lane.task = asyncio.get_running_loop().create_task(self._send_lane(lane))
        else:
            self._append(lane, key, value, headers)
        tally = self._tick_tally
        k = (tick.source, symbol)
        tally[k] = tally.get(k, 0) + 1
        self._lags.append((tick.source, tick.ts_ingest - tick.ts_event))

    @property
    def full(self) -> bool:
        """Time for the feed to :meth:`pause`: a batch filled, or too much is queued."""
        return self._due or self._count >= self.max_pending

    def add_candle(self, candle: Candle) -> None:
        key, lane = self._key(CANDLES, candle.symbol)
        self._append(lane, key, candle.to_bytes(), self._correlation())
        self._candle_tally[(candle.source, candle.interval)] += 1

    async def pause(self) -> None:
        """Let the senders run (one turn of the event loop), and wait while the queue is over
        ``max_pending``."""
        self._due = False
        await asyncio.sleep(0)
        while self._count >= self.max_pending:
            self._room.clear()
            await self._room.wait()

    async def put_tick(self, tick: Tick) -> None:
        self.add_tick(tick)
        if self.full:
            await self.pause()

    async def put_candle(self, candle: Candle) -> None:
        self.add_candle(candle)
        if self.full:
            await self.pause()

    # -------------------------------------------------------------- send

    async def _send_lane(self, lane: _Lane) -> None:
        """Hand the lane's batches to the producer, in order, until the lane is empty."""
        publisher = self._publisher
        topic, partition, ready = lane.topic, lane.partition, lane.ready
        try:
            while True:
                if ready:
                    batch, n = ready.popleft()
                elif lane.n:
                    batch, n = lane.batch, lane.n
                    lane.batch, lane.n = None, 0
                    batch.close()
                else:
                    break
                self._count -= n
                if self._count < self.max_pending:
                    self._room.set()
                try:
                    fut = await publisher.producer.send_batch(batch, topic, partition=partition)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    publisher.outcomes.record(topic, exc)
                    self._failed(topic, n, exc)
                    continue
                publisher.watch(topic, fut)
                self._inflight.add(fut)
                fut.add_done_callback(lambda f, n=n: self._acked(f, topic, n))
        finally:
            lane.task = None
            self._metrics_soon()

    async def flush(self) -> None:
        """Hand everything queued to the producer (not waiting for acknowledgements)."""
        while True:
            tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
            if not tasks:
                break
            await asyncio.gather(*tasks, return_exceptions=True)
        self._count_published()

    def _acked(self, fut: asyncio.Future[Any], topic: str, n: int) -> None:
        self._inflight.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self.published += n
            MESSAGES_PUBLISHED.labels(topic).inc(n)
            return
        self._failed(topic, n, exc)

    def _failed(self, topic: str, n: int, exc: BaseException) -> None:
        PUBLISH_FAILURES.labels(topic).inc()
        if isinstance(exc, REPAIRABLE) and topic not in self._repairs:
            task = asyncio.get_running_loop().create_task(self._publisher.repair(topic))
            self._repairs[topic] = task
            task.add_done_callback(lambda _: self._repairs.pop(topic, None))
        now = time.monotonic()
        if now - self._last_failure_log > 10:
            self._last_failure_log = now
            log.error("publish_failed", topic=topic, events=n, error=repr(exc))

    def _metrics_soon(self) -> None:
        """Fold the tallies into the metrics now, or (at high rates) a little later."""
        if self._metrics_timer is not None:
            return
        wait = self._metrics_at + METRICS_EVERY_S - time.monotonic()
        if wait <= 0:
            self._count_published()
        else:
            self._metrics_timer = asyncio.get_running_loop().call_later(wait, self._count_published)

    def _count_published(self) -> None:
        # The lag histogram sees every tick at live rates; past LAG_SAMPLES ticks per fold
        # (thousands per second) an evenly spaced sample, to keep the hot path cheap.
        if self._metrics_timer is not None:
            self._metrics_timer.cancel()
            self._metrics_timer = None
        self._metrics_at = time.monotonic()
        lags, self._lags = self._lags, []
        step = max(1, len(lags) // LAG_SAMPLES)
        for source, lag_ms in lags[::step]:
            self._lag[source].observe(max(0, lag_ms) / 1000)
        now = time.time()
        for (source, symbol), n in self._tick_tally.items():
            TICKS_PUBLISHED.labels(source, symbol).inc(n)
            LAST_TICK_SECONDS.labels(source, symbol).set(now)
        for (source, interval), n in self._candle_tally.items():
            CANDLES_PUBLISHED.labels(source, interval).inc(n)
        self._tick_tally.clear()
        self._candle_tally.clear()

    async def drain(self) -> None:
        """Flush and wait until the broker acknowledged (or refused) everything sent."""
        await self.flush()
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def run(self) -> None:
        """Lanes send by themselves; this only drains on the way out (cancelled at shutdown)."""
        try:
            await asyncio.Event().wait()
        finally:
            # Cancelled at shutdown: give what is queued a bounded chance to reach the broker.
            try:
                await asyncio.wait_for(asyncio.shield(self.drain()), 5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                log.warning("sink_drain_incomplete", queued=self._count)
