"""The candle history store: persisted from ``market.candles.v1`` by a consumer group.

The upsert is idempotent on (symbol, source, interval, open_time), so a redelivered batch or two
replicas racing write the same rows; a closed candle is final and an open one never overwrites
it. After a batch is stored the cached answers about its symbols are invalidated.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from tickwatch_common.events import Candle
from tickwatch_common.kafka import Delivered

from tickwatch_gateway.market.response_cache import ResponseCache
from tickwatch_gateway.market.rollup import INTERVAL_MS, Bar, bucket_start, roll_up

UPSERT = """
INSERT INTO candles (symbol, source, interval, open_time, close_time, open, high, low, close,
                     volume, trades, closed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (symbol, source, interval, open_time) DO UPDATE SET
    close_time = EXCLUDED.close_time, open = EXCLUDED.open, high = EXCLUDED.high,
    low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume,
    trades = EXCLUDED.trades, closed = EXCLUDED.closed
WHERE NOT candles.closed OR EXCLUDED.closed
"""


class CandleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def upsert(self, candles: Sequence[Candle]) -> None:
        # Within one batch keep the last version of each candle, unless an earlier one is
        # closed: the same rule the statement applies against what is stored.
        latest: dict[tuple[str, str, str, int], Candle] = {}
        for c in candles:
            key = (c.symbol, c.source, c.interval, c.open_time)
            held = latest.get(key)
            if held is None or c.closed or not held.closed:
                latest[key] = c
        await self.pool.executemany(
            UPSERT,
            [
                (
                    c.symbol,
                    c.source,
                    c.interval,
                    c.open_time,
                    c.close_time,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.trades,
                    c.closed,
                )
                for c in latest.values()
            ],
        )

    async def default_source(self, symbol: str, interval: str = "1m") -> str | None:
        """The source with the most recent candle of ``symbol``."""
        row = await self.pool.fetchrow(
            "SELECT source FROM candles WHERE symbol = $1 AND interval = $2"
            " ORDER BY open_time DESC LIMIT 1",
            symbol,
            interval,
        )
        return None if row is None else str(row["source"])

    async def latest_open_time(self, symbol: str, source: str, interval: str = "1m") -> int | None:
        value = await self.pool.fetchval(
            "SELECT max(open_time) FROM candles WHERE symbol = $1 AND source = $2 AND interval = $3",
            symbol,
            source,
            interval,
        )
        return None if value is None else int(value)

    async def bars(
        self, symbol: str, source: str, start_ms: int, end_ms: int, interval: str = "1m"
    ) -> list[Bar]:
        """Stored candles with ``start_ms <= open_time < end_ms``, oldest first."""
        rows = await self.pool.fetch(
            "SELECT open_time, close_time, open, high, low, close, volume, closed FROM candles"
            " WHERE symbol = $1 AND source = $2 AND interval = $3"
            " AND open_time >= $4 AND open_time < $5 ORDER BY open_time",
            symbol,
            source,
            interval,
            start_ms,
            end_ms,
        )
        return [
            Bar(
                r["open_time"],
                r["close_time"],
                r["open"],
                r["high"],
                r["low"],
                r["close"],
                r["volume"],
                r["closed"],
            )
            for r in rows
        ]


class CandlePersister:
    def __init__(self, store: CandleStore, cache: ResponseCache) -> None:
        self.store = store
        self.cache = cache

    async def handle(self, batch: list[Delivered]) -> None:
        candles = [d.event for d in batch if isinstance(d.event, Candle)]
        if candles:
            await self.store.upsert(candles)
            await self.cache.bump({c.symbol for c in candles})


async def load_history(
    store: CandleStore,
    symbol: str,
    source: str,
    interval: str,
    *,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[Bar]:
    """Bars of ``interval`` with ``start <= open_time <= end``, oldest first, at most ``limit``:
    the first ``limit`` from ``start`` when it is given, else the last ``limit`` up to ``end``
    (or the newest candle). Rolled up from the stored 1-minute candles."""
    step = INTERVAL_MS[interval]
    if start_ms is not None:
        lo = bucket_start(start_ms, interval)
        hi = lo + limit * step
        if end_ms is not None:
            hi = min(hi, bucket_start(end_ms, interval) + step)
    else:
        if end_ms is None:
            end_ms = await store.latest_open_time(symbol, source)
            if end_ms is None:
                return []
        hi = bucket_start(end_ms, interval) + step
        lo = hi - limit * step
    if hi <= lo:
        return []
    minutes = await store.bars(symbol, source, lo, hi)
    bars = minutes if interval == "1m" else roll_up(minutes, interval)
    bars = [b for b in bars if end_ms is None or b.open_time <= end_ms]
    return bars[:limit] if start_ms is not None else bars[-limit:]
