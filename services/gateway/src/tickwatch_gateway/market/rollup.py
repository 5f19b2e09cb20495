"""Roll 1-minute candles up into 5m, 15m, 1h, 4h and 1d buckets: the pure core of history.

Buckets are aligned on UTC epoch multiples (so 1d starts at midnight UTC and 4h at 00, 04, …),
as exchanges do. A bucket's open is its first candle's open, close its last one's close, high and
low the extremes, volume the sum; it is closed when every candle in it is closed and its last
minute has been seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from tickwatch_common.events.base import INTERVAL_MS, MINUTE_MS

__all__ = ["INTERVAL_MS", "MINUTE_MS", "Bar", "bucket_start", "roll_up"]


@dataclass(frozen=True)
class Bar:
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool


def bucket_start(open_time: int, interval: str) -> int:
    step = INTERVAL_MS[interval]
    return open_time - open_time % step


def roll_up(minutes: Iterable[Bar], interval: str) -> list[Bar]:
    """``minutes`` oldest first (1m bars) → bars of ``interval``, oldest first."""
    step = INTERVAL_MS[interval]
    out: list[Bar] = []
    current: Bar | None = None
    last_minute_seen = False
    for bar in minutes:
        start = bar.open_time - bar.open_time % step
        if current is not None and current.open_time != start:
            out.append(_finish(current, last_minute_seen))
            current = None
        if current is None:
            current = Bar(
                start,
                start + step - 1,
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                bar.volume,
                bar.closed,
            )
        else:
            current = Bar(
                start,
                start + step - 1,
                current.open,
                max(current.high, bar.high),
                min(current.low, bar.low),
                bar.close,
                current.volume + bar.volume,
                current.closed and bar.closed,
            )
        last_minute_seen = bar.open_time + MINUTE_MS >= start + step
    if current is not None:
        out.append(_finish(current, last_minute_seen))
    return out


def _finish(bar: Bar, last_minute_seen: bool) -> Bar:
    if bar.closed and not last_minute_seen:
        return Bar(
            bar.open_time, bar.close_time, bar.open, bar.high, bar.low, bar.close, bar.volume, False
        )
    return bar
