"""Binance live market data over the combined-stream WebSocket endpoint.

One :class:`BinanceSource` resolves the configured symbols through exchangeInfo, then runs one
:class:`Shard` per group of at most ``max_streams_per_connection`` streams (aggTrade, kline_1m
and miniTicker per symbol). A shard keeps one connection open, and:

- answers the server's pings with pongs that echo the payload (aiohttp's ``autoping`` does this
  inside ``receive()``, which the reader is always in);
- names up to ``url_streams_max`` streams in the URL and SUBSCRIBEs the rest, sending no more
  than ``max_messages_per_s`` messages per second;
- replaces a connection that has delivered nothing for ``silence_timeout_s`` (watchdog);
- reconnects after any loss with capped exponential backoff and jitter, forever;
- before the 24-hour cut (``connection_lifetime_s``) opens a replacement, lets both run until the
  new one delivers data plus ``switch_overlap_s``, then closes the old one. The shared
  :class:`~tickwatch_ingestor.feed.BinanceFeed` drops what both delivered (aggregate-trade ids,
  kline times), so the switch-over has neither gap nor duplicate.

Gaps in closed 1-minute klines are repaired from REST by a single gap-filler task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog
from tickwatch_common.backoff import Backoff
from tickwatch_common.cancellation import raise_if_cancelling
from tickwatch_common.events.base import now_ms

from tickwatch_ingestor.binance_rest import BinanceRest, BinanceRestError
from tickwatch_ingestor.feed import BinanceFeed, KlineGap
from tickwatch_ingestor.metrics import (
    DUPLICATES_DROPPED,
    GAPS_DETECTED,
    GAPS_FILLED,
    MESSAGES_REJECTED,
    RECONNECTS,
)
from tickwatch_ingestor.normalise import (
    Market,
    Rejected,
    exchange_symbol_guess,
    markets_from_exchange_info,
    rest_kline_candle,
    streams_for,
)
from tickwatch_ingestor.pacing import RateLimiter
from tickwatch_ingestor.settings import Settings
from tickwatch_ingestor.sink import EventSink
from tickwatch_ingestor.ws_connection import (
    FeedConnection,
    LossBackoff,
    open_with_backoff,
    record_loss,
)

log = structlog.get_logger(__name__)


class Shard:
    def __init__(self, source: BinanceSource, index: int, markets: Sequence[Market]) -> None:
        self.source = source
        self.index = index
        self.markets = list(markets)
        self.streams = [st for m in self.markets for st in streams_for(m)]
        s = source.settings
        self.silence_timeout_s = s.binance_silence_timeout_s
        self.lifetime_s = s.binance_connection_lifetime_s
        self.limiter = RateLimiter(s.binance_max_messages_per_s)
        self.current: FeedConnection | None = None
        self.connected = False
        self.switchovers = 0
        self.reconnects = 0

    def url(self) -> str:
        named = self.streams[: self.source.settings.binance_url_streams_max]
        return f"{self.source.settings.binance_ws_url.rstrip('/')}/stream?streams={'/'.join(named)}"

    async def _open(self) -> FeedConnection:
        s = self.source.settings
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that lands
        # as the connect completes, and the reconnect loop would then never stop.
        async with asyncio.timeout(s.binance_connect_timeout_s):
            ws = await self.source.http.ws_connect(
                self.url(),
                autoping=True,  # pongs echo the ping payload, as Binance requires
                heartbeat=None,  # Binance pings us; we send nothing unasked (5 msg/s limit)
                max_msg_size=4 * 1024 * 1024,
            )
        try:
            await self._subscribe_rest(ws)
        except BaseException:
            await ws.close()
            raise
        return FeedConnection(
            ws,
            source="binance",
            silence_timeout_s=self.silence_timeout_s,
            on_frame=self.source.on_frame,
        )

    async def _subscribe_rest(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """SUBSCRIBE the streams the URL did not name, within the outgoing message limit."""
        per_message = self.source.settings.binance_url_streams_max
        rest = self.streams[per_message:]
        for request_id, i in enumerate(range(0, len(rest), per_message), start=1):
            await self.limiter.acquire()
            await ws.send_str(
                json.dumps(
                    {"method": "SUBSCRIBE", "params": rest[i : i + per_message], "id": request_id}
                )
            )

    async def _open_with_backoff(self, why: str) -> FeedConnection:
        s = self.source.settings
        conn = await open_with_backoff(
            self._open,
            source="binance",
            initial_s=s.binance_reconnect_initial_s,
            cap_s=s.binance_reconnect_cap_s,
            shard=self.index,
        )
        log.info(
            "binance_connected", shard=self.index, conn=conn.id, streams=len(self.streams), why=why
        )
        return conn

    async def run(self) -> None:
        why = "start"
        failures = LossBackoff(
            self.source.settings.binance_reconnect_initial_s,
            self.source.settings.binance_reconnect_cap_s,
        )
        try:
            while True:
                raise_if_cancelling()
                if self.current is None:
                    self.current = await self._open_with_backoff(why)
                    self.connected = True
                    if why != "start":
                        self.source.check_missed_klines(self.markets)
                conn = self.current
                remaining = self.lifetime_s - (time.monotonic() - conn.opened)
                done, _ = await asyncio.wait({conn.task}, timeout=max(0.0, remaining))
                if done:
                    # Lost: reconnect at once the first time, backing off if it keeps happening.
                    self.connected = False
                    self.current = None
                    self.reconnects += 1
                    cause = record_loss(conn, shard=self.index)
                    await failures.pause(conn.lived_s)
                    why = cause
                    continue
                await self._switch_over(conn)
        finally:
            if self.current is not None:
                await self.current.stop("shutdown")

    async def _switch_over(self, old: FeedConnection) -> None:
        """Open the replacement while the old connection still runs; close the old one after."""
        new = await self._open_with_backoff("lifetime")
        first = asyncio.ensure_future(new.first_data.wait())
        try:
            await asyncio.wait(
                {first, new.task}, timeout=self.silence_timeout_s, return_when="FIRST_COMPLETED"
            )
        finally:
            first.cancel()
        if new.first_data.is_set():
            await asyncio.sleep(self.source.settings.binance_switch_overlap_s)
        await old.stop("lifetime")
        self.current = new
        self.switchovers += 1
        RECONNECTS.labels("binance", "lifetime").inc()
        log.info("binance_switched_over", shard=self.index, old=old.id, new=new.id)


class BinanceSource:
    name = "binance"

    def __init__(
        self,
        settings: Settings,
        http: aiohttp.ClientSession,
        rest: BinanceRest,
        sink: EventSink,
        symbols: Sequence[str],
        *,
        exchange_info: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.rest = rest
        self.sink = sink
        self.symbols = list(symbols)
        self._exchange_info = exchange_info
        self.feed: BinanceFeed | None = None
        self.markets: dict[str, Market] = {}
        self.shards: list[Shard] = []
        self.gaps: asyncio.Queue[KlineGap] = asyncio.Queue(maxsize=10_000)
        self.rejected = 0
        self.resolved = asyncio.Event()

    @property
    def healthy(self) -> bool:
        return bool(self.shards) and all(s.connected for s in self.shards)

    def describe(self) -> str:
        if not self.resolved.is_set():
            return "binance (resolving symbols)"
        up = sum(1 for s in self.shards if s.connected)
        return f"binance ({up}/{len(self.shards)} connections, {len(self.markets)} symbols)"

    async def resolve_markets(self) -> dict[str, Market]:
        """exchangeInfo until it answers (backing off), then map BTCUSDT <-> BTC-USDT."""
        backoff = Backoff(initial_s=1.0, cap_s=60.0)
        info = self._exchange_info
        while info is None:
            try:
                info = await self.rest.exchange_info(
                    [exchange_symbol_guess(s) for s in self.symbols]
                )
            except BinanceRestError as exc:
                delay = backoff.next_delay()
                log.warning(
                    "binance_exchange_info_failed", error=str(exc), retry_in_s=round(delay, 1)
                )
                await asyncio.sleep(delay)
        markets, missing = markets_from_exchange_info(info, self.symbols)
        if missing:
            log.warning("binance_symbols_not_traded", symbols=missing)
        self.markets = markets
        return markets

    async def run(self) -> None:
        markets = await self.resolve_markets()
        if not markets:
            log.error("binance_no_symbols", configured=self.symbols)
            self.resolved.set()
            return
        self.feed = BinanceFeed(
            markets, publish_open_candles=self.settings.binance_publish_open_candles
        )
        per_conn = max(1, self.settings.binance_max_streams_per_connection // 3)
        ordered = list(markets.values())
        self.shards = [
            Shard(self, i, ordered[j : j + per_conn])
            for i, j in enumerate(range(0, len(ordered), per_conn))
        ]
        self.resolved.set()
        async with asyncio.TaskGroup() as tasks:
            for shard in self.shards:
                tasks.create_task(shard.run())
            tasks.create_task(self.fill_gaps())

    async def on_frame(self, raw: str) -> None:
        """One frame of any shard's connection (never ends the connection: answers ``None``)."""
        assert self.feed is not None
        try:
            out = self.feed.handle(raw, now_ms())
        except Rejected as exc:
            self.rejected += 1
            MESSAGES_REJECTED.labels("binance", exc.reason).inc()
            return
        sink = self.sink
        if out.tick is not None:
            sink.add_tick(out.tick)
        if out.candle is not None:
            sink.add_candle(out.candle)
        if sink.full:
            await sink.pause()
        if out.duplicate:
            DUPLICATES_DROPPED.labels("binance").inc()
        if out.agg_gap:
            GAPS_DETECTED.labels("binance", "agg_trade").inc()
        if out.agg_filled:
            GAPS_FILLED.labels("binance", "agg_trade").inc()
        if out.kline_gap is not None:
            GAPS_DETECTED.labels("binance", "kline").inc()
            try:
                self.gaps.put_nowait(out.kline_gap)
            except asyncio.QueueFull:
                MESSAGES_REJECTED.labels("binance", "gap_queue_full").inc()

    def check_missed_klines(self, markets: Sequence[Market]) -> None:
        """After a reconnect: queue the closed minutes missed while away, not waiting for the
        next closed kline to reveal them."""
        if self.feed is None:
            return
        now = now_ms()
        for market in markets:
            gap = self.feed.missing_klines(market, now)
            if gap is not None:
                GAPS_DETECTED.labels("binance", "kline").inc()
                with contextlib.suppress(asyncio.QueueFull):
                    self.gaps.put_nowait(gap)

    async def fill_gaps(self) -> None:
        """Fetch the missing closed 1-minute klines by REST and publish them."""
        while True:
            gap = await self.gaps.get()
            log.info(
                "binance_kline_gap",
                symbol=gap.market.symbol,
                start_ms=gap.start_ms,
                end_ms=gap.end_ms,
                minutes=gap.minutes,
            )
            try:
                filled = await fill_kline_gap(self.rest, self.sink, gap, self.feed)
            except BinanceRestError as exc:
                log.warning("binance_kline_gap_unfilled", symbol=gap.market.symbol, error=str(exc))
                continue
            if filled:
                GAPS_FILLED.labels("binance", "kline").inc()


async def fill_kline_gap(
    rest: BinanceRest, sink: EventSink, gap: KlineGap, feed: BinanceFeed | None = None
) -> int:
    published = 0
    now = now_ms()
    async for page in rest.klines(gap.market.exchange_symbol, "1m", gap.start_ms, gap.end_ms):
        for row in page:
            try:
                candle = rest_kline_candle(row, gap.market, "1m", now)
            except Rejected as exc:
                MESSAGES_REJECTED.labels("binance", exc.reason).inc()
                continue
            if candle.closed and gap.start_ms <= candle.open_time <= gap.end_ms:
                await sink.put_candle(candle)
                published += 1
                if feed is not None:
                    feed.note_closed_kline(gap.market, candle.open_time)
    await sink.flush()
    return published
