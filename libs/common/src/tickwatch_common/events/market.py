"""Market data: the live tick, the OHLCV candle and the instrument's trading rules."""

from __future__ import annotations

from typing import Literal

from tickwatch_common.events.base import DecimalStr, EpochMs, Event, Interval, Source, Symbol

InstrumentStatus = Literal[
    "TRADING", "END_OF_DAY", "HALT", "BREAK", "PRE_TRADING", "POST_TRADING", "AUCTION_MATCH"
]
"""A symbol's trading status as Binance's exchangeInfo says it (spot ``SymbolStatus``: TRADING,
END_OF_DAY, HALT, BREAK; and the older PRE_TRADING, POST_TRADING, AUCTION_MATCH). Only
``TRADING`` accepts orders."""


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


class Instrument(Event):
    """One market's trading rules, as the exchange sets them (Binance exchangeInfo: LOT_SIZE
    ``stepSize``, PRICE_FILTER ``tickSize``, NOTIONAL or the older MIN_NOTIONAL ``minNotional``).

    Latest wins per symbol (a compacted topic). As in Binance's filters, ``0`` disables a rule:
    a zero ``step_size``/``tick_size`` means any quantity/price, a zero ``min_notional`` no
    minimum (the exchange sent no such filter)."""

    symbol: Symbol
    base: str
    quote: str
    source: Source
    step_size: DecimalStr
    tick_size: DecimalStr
    min_notional: DecimalStr
    status: InstrumentStatus
