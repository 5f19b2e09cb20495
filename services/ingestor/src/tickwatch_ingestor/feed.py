"""The Binance feed as a pure state machine: combined-stream frames in, events and gaps out.

It holds, per symbol, what it needs to drop duplicates and see gaps: the last aggregate-trade
id (plus a bounded set of ids still missing, which a second connection may yet deliver during a
switch-over), the last closed 1-minute kline, the newest open-kline event time and the latest
24 h statistics. No I/O and no clock: the caller passes ``ts_ingest``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tickwatch_common.events import Candle, Tick
from tickwatch_common.events.base import MINUTE_MS

from tickwatch_ingestor.normalise import (
    Market,
    Rejected,
    Stats24h,
    TickFactory,
    json_frame,
    kline_candle,
    mini_ticker_stats,
)

MAX_TRACKED_MISSING = 10_000


@dataclass(frozen=True, slots=True)
class KlineGap:
    """Closed 1-minute klines missing for ``symbol``, open times in ``[start_ms, end_ms]``."""

    market: Market
    start_ms: int
    end_ms: int

    @property
    def minutes(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS + 1


@dataclass(slots=True)
class Outcome:
    tick: Tick | None = None
    candle: Candle | None = None
    kline_gap: KlineGap | None = None
    agg_gap: int = 0  # how many aggregate-trade ids were skipped
    agg_filled: int = 0  # a previously missing id arrived after all
    duplicate: bool = False
    stats_updated: bool = False


@dataclass(slots=True)
class _SymbolState:
    last_agg: int | None = None
    missing: set[int] = field(default_factory=set)
    last_closed_open: int | None = None
    last_open_event: int = -1
    stats: Stats24h | None = None


class BinanceFeed:
    def __init__(self, markets: Mapping[str, Market], *, publish_open_candles: bool = True) -> None:
        # Keyed by the lower-case exchange symbol, as it appears in stream names.
        self._markets = {m.exchange_symbol: m for m in markets.values()}
        self._state = {m.exchange_symbol: _SymbolState() for m in markets.values()}
        self._ticks = {m.exchange_symbol: TickFactory(m) for m in markets.values()}
        self.publish_open_candles = publish_open_candles

    @property
    def markets(self) -> list[Market]:
        return list(self._markets.values())

    def handle(self, raw: str | bytes, ts_ingest: int) -> Outcome:
        """One combined-stream frame. Raises :class:`Rejected` for anything malformed."""
        frame = json_frame(raw)
        data = frame.get("data")
        if not isinstance(data, dict):
            if "result" in frame and "id" in frame:
                return Outcome()  # the reply to a SUBSCRIBE request
            raise Rejected("no_data")
        kind = data.get("e")
        symbol = data.get("s")
        market = self._markets.get(symbol) if isinstance(symbol, str) else None
        if market is None:
            raise Rejected("unknown_symbol", repr(symbol))
        state = self._state[market.exchange_symbol]
        if kind == "aggTrade":
            return self._agg_trade(data, market, state, ts_ingest)
        if kind == "kline":
            return self._kline(data, market, state)
        if kind == "24hrMiniTicker":
            state.stats = mini_ticker_stats(data)
            return Outcome(stats_updated=True)
        raise Rejected("unknown_event", repr(kind))

    def _agg_trade(
        self, data: Mapping[str, Any], market: Market, state: _SymbolState, ts_ingest: int
    ) -> Outcome:
        agg_id = data.get("a")
        if not isinstance(agg_id, int) or isinstance(agg_id, bool):
            raise Rejected("missing_field", "a")
        out = Outcome()
        last = state.last_agg
        if last is not None and agg_id <= last:
            if agg_id not in state.missing:
                return Outcome(duplicate=True)
            state.missing.discard(agg_id)
            out.agg_filled = 1
        tick = self._ticks[market.exchange_symbol].make(data, state.stats, ts_ingest)
        if last is None or agg_id > last:
            if last is not None and agg_id > last + 1:
                out.agg_gap = agg_id - last - 1
                if len(state.missing) + out.agg_gap <= MAX_TRACKED_MISSING:
                    state.missing.update(range(last + 1, agg_id))
            state.last_agg = agg_id
        out.tick = tick
        return out

    def _kline(self, data: Mapping[str, Any], market: Market, state: _SymbolState) -> Outcome:
        k = data.get("k")
        if not isinstance(k, dict):
            raise Rejected("missing_field", "k")
        candle = kline_candle(k, market)
        if candle.interval != "1m":
            raise Rejected("unexpected_interval", candle.interval)
        if not candle.closed:
            event_time = data.get("E")
            if not isinstance(event_time, int) or event_time <= state.last_open_event:
                return Outcome(duplicate=True)
            if state.last_closed_open is not None and candle.open_time <= state.last_closed_open:
                return Outcome(duplicate=True)
            state.last_open_event = event_time
            return Outcome(candle=candle if self.publish_open_candles else None)
        last = state.last_closed_open
        if last is not None and candle.open_time <= last:
            return Outcome(duplicate=True)
        out = Outcome(candle=candle)
        if last is not None and candle.open_time > last + MINUTE_MS:
            out.kline_gap = KlineGap(market, last + MINUTE_MS, candle.open_time - MINUTE_MS)
        state.last_closed_open = candle.open_time
        return out

    def missing_klines(self, market: Market, now_ms: int) -> KlineGap | None:
        """Closed minutes after the last one seen up to ``now_ms`` (after a reconnect)."""
        last = self._state[market.exchange_symbol].last_closed_open
        if last is None:
            return None
        end = now_ms - now_ms % MINUTE_MS - MINUTE_MS  # the last minute that has closed
        if end < last + MINUTE_MS:
            return None
        return KlineGap(market, last + MINUTE_MS, end)

    def note_closed_kline(self, market: Market, open_time: int) -> None:
        """Tell the feed a closed kline was published by backfill (so it is not seen as a gap)."""
        state = self._state[market.exchange_symbol]
        if state.last_closed_open is None or open_time > state.last_closed_open:
            state.last_closed_open = open_time
