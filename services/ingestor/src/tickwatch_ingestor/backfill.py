"""Candle history: Binance klines (1m/1h/1d), CoinGecko OHLC (4h, USD pairs) and Coinbase candles
(1m/1h/1d) onto the candle topic.

Idempotent by construction: a candle's key is (symbol, source, interval, open_time), the same on
every run, and the gateway upserts on it; running twice re-publishes, it never duplicates. Only
closed candles are published (the open one comes from the live stream).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import structlog
from tickwatch_common.events.base import INTERVAL_MS, Interval, now_ms

from tickwatch_ingestor.binance_rest import BinanceRest
from tickwatch_ingestor.coinbase_rest import CoinbaseRest
from tickwatch_ingestor.coingecko import CoinGeckoClient, CoinGeckoError
from tickwatch_ingestor.metrics import CANDLES_BACKFILLED, MESSAGES_REJECTED
from tickwatch_ingestor.normalise import (
    Market,
    Rejected,
    coingecko_ohlc_candle,
    rest_kline_candle,
)
from tickwatch_ingestor.sink import EventSink

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000
COINGECKO_OHLC_DAYS = 30  # CoinGecko answers 4-hour candles for 3..30 days
COINGECKO_OHLC_INTERVAL: Final = "4h"


def window(interval: str, days: int, now: int) -> tuple[int, int]:
    """Open times ``[start, end]`` of the closed candles of the last ``days`` days."""
    step = INTERVAL_MS[interval]
    end = now - now % step - step  # the last candle that has closed
    start = now - days * DAY_MS
    start -= start % step
    return start, end


def expected_rows(interval: str, days: int) -> int:
    return days * DAY_MS // INTERVAL_MS[interval]


async def backfill_binance(
    rest: BinanceRest,
    sink: EventSink,
    markets: Sequence[Market],
    interval: Interval,
    days: int,
    *,
    now: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_closed: Callable[[Market, int], None] | None = None,
) -> int:
    """Publish the closed ``interval`` candles of the last ``days`` days for each market."""
    now = now_ms() if now is None else now
    start, end = window(interval, days, now)
    total = 0
    for market in markets:
        last_open: int | None = None
        async for page in rest.klines(market.exchange_symbol, interval, start, end):
            for row in page:
                try:
                    candle = rest_kline_candle(row, market, interval, now)
                except Rejected as exc:
                    MESSAGES_REJECTED.labels("binance", exc.reason).inc()
                    continue
                if candle.closed:
                    await sink.put_candle(candle)
                    last_open = candle.open_time
                    total += 1
            if progress is not None:
                progress(len(page))
        if on_closed is not None and last_open is not None:
            on_closed(market, last_open)
    await sink.flush()
    CANDLES_BACKFILLED.labels("binance").inc(total)
    return total


async def backfill_coingecko(
    client: CoinGeckoClient,
    sink: EventSink,
    ids: Mapping[str, str],
    *,
    days: int = COINGECKO_OHLC_DAYS,
    now: int | None = None,
) -> int:
    """4-hour ``BASE-USD`` candles from ``/coins/{id}/ohlc``; an id that fails is skipped."""
    now = now_ms() if now is None else now
    total = 0
    for cg_id, base in ids.items():
        try:
            rows = await client.ohlc(cg_id, days)
        except CoinGeckoError as exc:
            log.warning("coingecko_ohlc_failed", id=cg_id, error=str(exc))
            continue
        if not isinstance(rows, list):
            MESSAGES_REJECTED.labels("coingecko", "ohlc_not_a_list").inc()
            continue
        for row in rows:
            try:
                candle = coingecko_ohlc_candle(row, base, COINGECKO_OHLC_INTERVAL, now)
            except Rejected as exc:
                MESSAGES_REJECTED.labels("coingecko", exc.reason).inc()
                continue
            if candle.closed:
                await sink.put_candle(candle)
                total += 1
    await sink.flush()
    CANDLES_BACKFILLED.labels("coingecko").inc(total)
    return total


async def backfill_coinbase(
    rest: CoinbaseRest,
    sink: EventSink,
    products: Sequence[str],
    interval: Interval,
    days: int,
    *,
    now: int | None = None,
) -> int:
    """Publish the closed ``interval`` candles of the last ``days`` days for each product."""
    now = now_ms() if now is None else now
    start, end = window(interval, days, now)
    total = 0
    for product in products:
        async for page in rest.candles(product, interval, start, end, now):
            for candle in page:
                if candle.closed:
                    await sink.put_candle(candle)
                    total += 1
    await sink.flush()
    CANDLES_BACKFILLED.labels("coinbase").inc(total)
    return total
