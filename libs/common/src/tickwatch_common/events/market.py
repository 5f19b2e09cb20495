"""Market data: the live tick and the OHLCV candle."""

from __future__ import annotations

from tickwatch_common.events.base import DecimalStr, EpochMs, Event, Interval, Source, Symbol


class Tick(Event):
    symbol: Symbol
    base: str
    quote: str
    source: Source
    price: DecimalStr
    bid: DecimalStr | None = None
    ask: DecimalStr | None = None
    volume_24h: DecimalStr | None = None
    change_24h_pct: DecimalStr | None = None
    ts_event: EpochMs
    ts_ingest: EpochMs
    trade_id: int | None = None


class Candle(Event):
    symbol: Symbol
    source: Source
    interval: Interval
    open_time: EpochMs
    close_time: EpochMs
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    close: DecimalStr
    volume: DecimalStr
    trades: int | None = None
    closed: bool
