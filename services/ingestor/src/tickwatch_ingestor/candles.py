"""Candle aggregation from ticks, as a pure class: trades in, closed candles out.

Used by the replay source (Binance and CoinGecko deliver their own candles). A candle closes
when a trade of a later interval arrives or when :meth:`CandleBuilder.close_until` is told the
interval has ended; trades older than the open candle are ignored (returned as ``False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tickwatch_common.events import Candle
from tickwatch_common.events.base import INTERVAL_MS, Interval, Source


@dataclass(slots=True)
class _Open:
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int


class CandleBuilder:
    def __init__(self, source: Source, interval: Interval = "1m") -> None:
        self.source = source
        self.interval = interval
        self.step = INTERVAL_MS[interval]
        self._open: dict[str, _Open] = {}

    def add(self, symbol: str, price: Decimal, quantity: Decimal, ts_ms: int) -> list[Candle]:
        """Add a trade; return the candle it closed (at most one), oldest first."""
        start = ts_ms - ts_ms % self.step
        cur = self._open.get(symbol)
        closed: list[Candle] = []
        if cur is not None and start < cur.open_time:
            return closed  # late trade for an interval already closed: ignored
        if cur is not None and start > cur.open_time:
            closed.append(self._candle(symbol, cur, closed=True))
            cur = None
        if cur is None:
            self._open[symbol] = _Open(start, price, price, price, price, quantity, 1)
        else:
            cur.high = max(cur.high, price)
            cur.low = min(cur.low, price)
            cur.close = price
            cur.volume += quantity
            cur.trades += 1
        return closed

    def close_until(self, now_ms: int) -> list[Candle]:
        """Close every open candle whose interval ended at or before ``now_ms``."""
        done = [s for s, c in self._open.items() if c.open_time + self.step <= now_ms]
        return [self._candle(s, self._open.pop(s), closed=True) for s in done]

    def current(self, symbol: str) -> Candle | None:
        cur = self._open.get(symbol)
        return self._candle(symbol, cur, closed=False) if cur else None

    def _candle(self, symbol: str, c: _Open, *, closed: bool) -> Candle:
        return Candle(
            symbol=symbol,
            source=self.source,
            interval=self.interval,
            open_time=c.open_time,
            close_time=c.open_time + self.step - 1,
            open=c.open,
            high=c.high,
            low=c.low,
            close=c.close,
            volume=c.volume,
            trades=c.trades,
            closed=closed,
        )
