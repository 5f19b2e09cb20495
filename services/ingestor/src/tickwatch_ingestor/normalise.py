"""Pure normalisation: exchange payloads in, contract events out. No I/O, no clocks.

Decimal values keep the exact string the exchange sent (Binance sends strings; CoinGecko's JSON
numbers are parsed with ``parse_float=Decimal`` from the raw text, never through a float).
Anything malformed raises :class:`Rejected` with a short reason that becomes a metric label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, get_args

import orjson
from pydantic import ValidationError
from tickwatch_common.events import Candle, Instrument, InstrumentStatus, Tick
from tickwatch_common.events.base import INTERVAL_MS, Interval, Source

PCT_QUANTUM = Decimal("0.0001")


class Rejected(ValueError):
    """A payload we cannot use; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Market:
    """One traded pair under its canonical name and the exchange's."""

    symbol: str  # BTC-USDT
    base: str
    quote: str
    exchange_symbol: str  # BTCUSDT


def canonical(base: str, quote: str) -> str:
    return f"{base.upper()}-{quote.upper()}"


def split_symbol(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.upper().partition("-")
    if not sep or not base or not quote:
        raise ValueError(f"symbol {symbol!r} is not BASE-QUOTE")
    return base, quote


def markets_from_exchange_info(
    info: Mapping[str, Any], wanted: Iterable[str]
) -> tuple[dict[str, Market], list[str]]:
    """Map wanted canonical symbols to Binance markets; also return those Binance does not trade."""
    by_canonical: dict[str, Market] = {}
    for item in info.get("symbols", ()):
        try:
            base, quote, name = item["baseAsset"], item["quoteAsset"], item["symbol"]
        except (KeyError, TypeError):
            continue
        if item.get("status", "TRADING") != "TRADING":
            continue
        sym = canonical(base, quote)
        by_canonical[sym] = Market(sym, base.upper(), quote.upper(), name.upper())
    found: dict[str, Market] = {}
    missing: list[str] = []
    for sym in wanted:
        if sym in by_canonical:
            found[sym] = by_canonical[sym]
        else:
            missing.append(sym)
    return found, missing


def exchange_symbol_guess(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTCUSDT`` (what Binance calls it, to ask exchangeInfo)."""
    base, quote = split_symbol(symbol)
    return base + quote


def streams_for(market: Market) -> list[str]:
    s = market.exchange_symbol.lower()
    return [f"{s}@aggTrade", f"{s}@kline_1m", f"{s}@miniTicker"]


def json_frame(raw: str | bytes) -> dict[str, Any]:
    """A WebSocket frame that must be a JSON object. orjson: ~5x faster than json on this path;
    the exchanges send decimals as strings, and a bare JSON number comes out a float, which
    :func:`decimal_field` and Tick refuse rather than round."""
    try:
        frame = orjson.loads(raw)
    except (ValueError, TypeError):
        raise Rejected("malformed_json") from None
    if not isinstance(frame, dict):
        raise Rejected("not_an_object")
    return frame


def decimal_field(value: Any, field: str) -> Decimal:
    """An exchange's decimal string (or int) as a finite Decimal; anything else is Rejected."""
    return _dec(value, field)


def _dec(value: Any, field: str) -> Decimal:
    if isinstance(value, str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise Rejected("bad_decimal", f"{field}={value!r}") from None
        if not d.is_finite():
            raise Rejected("bad_decimal", f"{field}={value!r}")
        return d
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Decimal(value)
    raise Rejected("bad_decimal", f"{field}={value!r}")


# ---------------------------------------------------------------- Binance


@dataclass(frozen=True, slots=True)
class Stats24h:
    volume_24h: Decimal | None  # quote-currency volume, like CoinGecko's usd_24h_vol
    change_24h_pct: Decimal | None


def change_pct(open_: Decimal, close: Decimal) -> Decimal | None:
    if open_ == 0:
        return None
    return ((close - open_) / open_ * 100).quantize(PCT_QUANTUM)


def agg_trade_tick(
    data: Mapping[str, Any], market: Market, stats: Stats24h | None, ts_ingest: int
) -> Tick:
    """A Binance ``aggTrade`` payload (the ``data`` of a combined frame) -> Tick."""
    try:
        return Tick(
            symbol=market.symbol,
            base=market.base,
            quote=market.quote,
            source="binance",
            price=data["p"],
            volume_24h=stats.volume_24h if stats else None,
            change_24h_pct=stats.change_24h_pct if stats else None,
            ts_event=data["T"],
            ts_ingest=ts_ingest,
            trade_id=data["a"],
        )
    except KeyError as exc:
        raise Rejected("missing_field", str(exc)) from None
    except ValidationError as exc:
        raise Rejected("invalid", exc.errors()[0]["msg"]) from None


_PLAIN_DECIMAL = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?\Z")


class TickFactory:
    """Binance aggTrade -> Tick on the hot path, equal to :func:`agg_trade_tick` but cheaper.

    The market's constant fields are validated once (a template Tick). Per trade only what
    varies is checked — the price string (digits and at most one dot, as Binance writes
    prices), the trade time and the aggregate id (plain non-negative ints) — and the Tick is
    assembled from the template's validated values the way pydantic's own ``model_copy`` does
    (``__dict__`` plus the fields-set, extra and private slots), without its deep-copy
    overhead. Anything unusual goes through the validating constructor. The property test
    ``test_the_fast_tick_path_equals_the_validating_constructor`` checks both give the same
    Tick (and the same bytes), or reject the same input for the same reason.
    """

    __slots__ = ("_base", "market")

    def __init__(self, market: Market) -> None:
        self.market = market
        template = Tick(
            symbol=market.symbol,
            base=market.base,
            quote=market.quote,
            source="binance",
            price=Decimal(0),
            ts_event=0,
            ts_ingest=0,
        )
        self._base = dict(template.__dict__)

    def make(self, data: Mapping[str, Any], stats: Stats24h | None, ts_ingest: int) -> Tick:
        price, ts_event, agg_id = data.get("p"), data.get("T"), data.get("a")
        if (
            type(price) is not str
            or _PLAIN_DECIMAL.match(price) is None
            or type(ts_event) is not int
            or type(agg_id) is not int
            or ts_event < 0
        ):
            return agg_trade_tick(data, self.market, stats, ts_ingest)
        values = dict(self._base)
        values["price"] = Decimal(price)
        values["ts_event"] = ts_event
        values["ts_ingest"] = ts_ingest
        values["trade_id"] = agg_id
        if stats is not None:
            values["volume_24h"] = stats.volume_24h
            values["change_24h_pct"] = stats.change_24h_pct
        tick: Tick = _new(Tick)
        _setattr(tick, "__dict__", values)
        _setattr(tick, "__pydantic_fields_set__", set(_TICK_FIELDS_SET))
        _setattr(tick, "__pydantic_extra__", None)
        _setattr(tick, "__pydantic_private__", None)
        return tick


_new = object.__new__
_setattr = object.__setattr__
# The fields agg_trade_tick passes explicitly (so exclude_unset dumps agree as well).
_TICK_FIELDS_SET = frozenset(
    {
        "symbol",
        "base",
        "quote",
        "source",
        "price",
        "volume_24h",
        "change_24h_pct",
        "ts_event",
        "ts_ingest",
        "trade_id",
    }
)


def mini_ticker_stats(data: Mapping[str, Any]) -> Stats24h:
    try:
        open_, close = _dec(data["o"], "o"), _dec(data["c"], "c")
        volume = _dec(data["q"], "q")
    except KeyError as exc:
        raise Rejected("missing_field", str(exc)) from None
    return Stats24h(volume, change_pct(open_, close))


def kline_candle(k: Mapping[str, Any], market: Market, source: Source = "binance") -> Candle:
    """The ``k`` object of a Binance kline stream event -> Candle (``closed`` from ``x``)."""
    try:
        return Candle(
            symbol=market.symbol,
            source=source,
            interval=k["i"],
            open_time=k["t"],
            close_time=k["T"],
            open=k["o"],
            high=k["h"],
            low=k["l"],
            close=k["c"],
            volume=k["v"],
            trades=k.get("n"),
            closed=bool(k["x"]),
        )
    except KeyError as exc:
        raise Rejected("missing_field", str(exc)) from None
    except ValidationError as exc:
        raise Rejected("invalid", exc.errors()[0]["msg"]) from None


def rest_kline_candle(row: Any, market: Market, interval: Interval, now_ms: int) -> Candle:
    """One row of ``GET /api/v3/klines`` -> Candle; closed when its close time has passed."""
    try:
        open_time, o, h, low, c, v, close_time, _qv, trades = row[:9]
        return Candle(
            symbol=market.symbol,
            source="binance",
            interval=interval,
            open_time=open_time,
            close_time=close_time,
            open=o,
            high=h,
            low=low,
            close=c,
            volume=v,
            trades=trades,
            closed=close_time < now_ms,
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            raise Rejected("invalid", exc.errors()[0]["msg"]) from None
        raise Rejected("bad_row", repr(row)[:200]) from None


@dataclass(frozen=True)
class InstrumentsFound:
    """What an exchangeInfo answer says about the wanted symbols."""

    instruments: list[Instrument]
    missing: list[str]  # wanted, not in the answer
    rejected: list[tuple[str, str]]  # (symbol, reason): in the answer, but unusable


_STATUSES: frozenset[str] = frozenset(get_args(InstrumentStatus))
ZERO = Decimal(0)


def _filter_value(filters: Mapping[str, Mapping[str, Any]], kind: str, field: str) -> Decimal:
    """A filter's value; ``0`` (Binance's "rule disabled") when the filter or field is absent."""
    value = filters.get(kind, {}).get(field)
    if value is None:
        return ZERO
    d = _dec(value, field)
    if d < 0:
        raise Rejected("bad_decimal", f"{field}={value!r}")
    return d


def instrument_from_symbol_info(item: Mapping[str, Any], source: Source = "binance") -> Instrument:
    """One ``symbols[]`` item of ``GET /api/v3/exchangeInfo`` -> Instrument.

    Step size from LOT_SIZE, tick size from PRICE_FILTER, minimum notional from NOTIONAL or,
    where a symbol still has it, the older MIN_NOTIONAL; a filter that is absent gives ``0``
    (no such rule), as a ``0`` in a Binance filter does."""
    try:
        base, quote, status = item["baseAsset"], item["quoteAsset"], item["status"]
        raw_filters = item.get("filters") or []
        if not isinstance(base, str) or not isinstance(quote, str) or not base or not quote:
            raise Rejected("bad_symbol", repr((base, quote)))
        if status not in _STATUSES:
            raise Rejected("unknown_status", repr(status))
        filters: dict[str, Mapping[str, Any]] = {}
        for f in raw_filters:
            kind = f.get("filterType") if isinstance(f, Mapping) else None
            if isinstance(kind, str):
                filters.setdefault(kind, f)
        notional = "NOTIONAL" if "NOTIONAL" in filters else "MIN_NOTIONAL"
        return Instrument(
            symbol=canonical(base, quote),
            base=base.upper(),
            quote=quote.upper(),
            source=source,
            step_size=_filter_value(filters, "LOT_SIZE", "stepSize"),
            tick_size=_filter_value(filters, "PRICE_FILTER", "tickSize"),
            min_notional=_filter_value(filters, notional, "minNotional"),
            status=status,
        )
    except KeyError as exc:
        raise Rejected("missing_field", str(exc)) from None
    except (TypeError, AttributeError) as exc:
        raise Rejected("bad_entry", str(exc)) from None
    except ValidationError as exc:
        raise Rejected("invalid", exc.errors()[0]["msg"]) from None


def instruments_from_exchange_info(
    info: Mapping[str, Any], wanted: Iterable[str]
) -> InstrumentsFound:
    """The trading rules of the wanted canonical symbols from an exchangeInfo answer (filtered
    or the full list), whatever their status: a halted market's rules say it is halted."""
    want = list(dict.fromkeys(wanted))
    wanted_set = set(want)
    found: dict[str, Instrument] = {}
    rejected: list[tuple[str, str]] = []
    items = info.get("symbols")
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            continue
        base, quote = item.get("baseAsset"), item.get("quoteAsset")
        if not isinstance(base, str) or not isinstance(quote, str):
            continue
        symbol = canonical(base, quote)
        if symbol not in wanted_set or symbol in found:
            continue
        try:
            found[symbol] = instrument_from_symbol_info(item)
        except Rejected as exc:
            rejected.append((symbol, exc.reason))
    bad = {s for s, _ in rejected}
    return InstrumentsFound(
        [found[s] for s in want if s in found],
        [s for s in want if s not in found and s not in bad],
        rejected,
    )


# ---------------------------------------------------------------- CoinGecko


def coingecko_tick(base: str, entry: Mapping[str, Any], ts_ingest: int) -> Tick:
    """One ``/simple/price`` entry (parsed with Decimal for floats) -> a ``BASE-USD`` tick."""
    try:
        price = _dec(entry["usd"], "usd")
        updated = entry["last_updated_at"]
        if not isinstance(updated, int) or isinstance(updated, bool):
            raise Rejected("bad_timestamp", repr(updated))
        vol = entry.get("usd_24h_vol")
        chg = entry.get("usd_24h_change")
        return Tick(
            symbol=canonical(base, "USD"),
            base=base.upper(),
            quote="USD",
            source="coingecko",
            price=price,
            volume_24h=_dec(vol, "usd_24h_vol") if vol is not None else None,
            change_24h_pct=_dec(chg, "usd_24h_change").quantize(PCT_QUANTUM)
            if chg is not None
            else None,
            ts_event=updated * 1000,
            ts_ingest=ts_ingest,
        )
    except KeyError as exc:
        raise Rejected("missing_field", str(exc)) from None
    except TypeError as exc:
        raise Rejected("bad_entry", str(exc)) from None
    except ValidationError as exc:
        raise Rejected("invalid", exc.errors()[0]["msg"]) from None


def coingecko_ohlc_candle(row: Any, base: str, interval: Interval, now_ms: int) -> Candle:
    """One ``/coins/{id}/ohlc`` row ``[close_time_ms, o, h, l, c]`` -> a ``BASE-USD`` candle.

    CoinGecko gives no volume for OHLC; it is published as ``0``.
    """
    step = INTERVAL_MS[interval]
    try:
        close_ms, o, h, low, c = row
        if not isinstance(close_ms, int):
            raise Rejected("bad_row", repr(row)[:200])
        return Candle(
            symbol=canonical(base, "USD"),
            source="coingecko",
            interval=interval,
            open_time=close_ms - step,
            close_time=close_ms - 1,
            open=_dec(o, "open"),
            high=_dec(h, "high"),
            low=_dec(low, "low"),
            close=_dec(c, "close"),
            volume=Decimal(0),
            closed=close_ms <= now_ms,
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, Rejected):
            raise
        if isinstance(exc, ValidationError):
            raise Rejected("invalid", exc.errors()[0]["msg"]) from None
        raise Rejected("bad_row", repr(row)[:200]) from None


# ---------------------------------------------------------------- Coinbase


def coinbase_rest_candle(row: Any, symbol: str, interval: Interval, now_ms: int) -> Candle:
    """One ``candles[]`` item of ``GET /api/v3/brokerage/market/products/{id}/candles``
    (``start`` in UNIX seconds, decimals as strings) -> Candle; closed once its end has passed.
    Coinbase gives no trade count."""
    step = INTERVAL_MS[interval]
    if not isinstance(row, Mapping):
        raise Rejected("bad_row", repr(row)[:200])
    start = row.get("start")
    if not isinstance(start, str) or not start.isdigit():
        raise Rejected("bad_row", f"start={start!r}")
    open_time = int(start) * 1000
    try:
        return Candle(
            symbol=symbol,
            source="coinbase",
            interval=interval,
            open_time=open_time,
            close_time=open_time + step - 1,
            open=_dec(row.get("open"), "open"),
            high=_dec(row.get("high"), "high"),
            low=_dec(row.get("low"), "low"),
            close=_dec(row.get("close"), "close"),
            volume=_dec(row.get("volume"), "volume"),
            closed=open_time + step <= now_ms,
        )
    except ValidationError as exc:
        raise Rejected("invalid", exc.errors()[0]["msg"]) from None
