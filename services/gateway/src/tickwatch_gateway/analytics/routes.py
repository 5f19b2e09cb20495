"""``/analytics/movers``, ``/analytics/volume-spikes`` and ``/analytics/{symbol}``: figures over
the stored candles (which the candle stream fills), computed on request and cached briefly."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from tickwatch_gateway.analytics import domain
from tickwatch_gateway.analytics.store import window_of, window_volumes
from tickwatch_gateway.http.api_types import DecimalString, PositiveDecimal, Timestamp
from tickwatch_gateway.http.conditional import cached_json
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import parse_query
from tickwatch_gateway.market import (
    CACHE,
    CANDLES,
    SYMBOL_PARAM,
    SYMBOLS,
    CandleStore,
    resolve_symbol,
)
from tickwatch_gateway.runtime.clock import iso_from_ms

Window = Literal["1h", "24h"]
MAX_AGE_S = 5
FIGURES = (
    "start",
    "end",
    "open",
    "close",
    "change_pct",
    "high",
    "low",
    "volume",
    "vwap",
    "volatility",
)
WINDOW_DOC = "The window ends at each symbol's newest stored 1-minute candle"


class MoversQuery(BaseModel):
    window: Window = Field(default="1h", description=WINDOW_DOC)
    limit: int = Field(default=5, ge=1, le=50, description="Gainers and losers, each")


class SpikesQuery(BaseModel):
    window: Window = Field(default="1h", description=WINDOW_DOC)
    threshold: PositiveDecimal = Field(
        default="2", description="List the symbols whose ratio is at least this"
    )
    lookback: int = Field(
        default=24, ge=1, le=48, description="Previous windows the average is over"
    )


class SymbolQuery(BaseModel):
    window: Window = Field(default="1h", description=WINDOW_DOC)


class MoveOut(BaseModel):
    symbol: str
    change_pct: DecimalString
    open: DecimalString
    close: DecimalString
    as_of: Timestamp


class Movers(BaseModel):
    window: Window
    gainers: list[MoveOut]
    losers: list[MoveOut]


class SpikeOut(BaseModel):
    symbol: str
    volume: DecimalString
    average: DecimalString
    ratio: DecimalString
    windows: int


class Spikes(BaseModel):
    window: Window
    threshold: DecimalString
    lookback: int
    items: list[SpikeOut]


class SymbolAnalytics(BaseModel):
    symbol: str
    window: Window
    source: str | None
    candles: int
    start: Timestamp | None
    end: Timestamp | None
    open: DecimalString | None
    close: DecimalString | None
    change_pct: DecimalString | None
    high: DecimalString | None
    low: DecimalString | None
    volume: DecimalString | None
    vwap: DecimalString | None
    volatility: DecimalString | None


def move_json(move: domain.Move) -> dict[str, object]:
    return {
        "symbol": move.symbol,
        "change_pct": domain.figure(move.change_pct),
        "open": domain.figure(move.open),
        "close": domain.figure(move.close),
        "as_of": iso_from_ms(move.as_of),
    }


async def movers_answer(
    store: CandleStore, symbols: Sequence[str], window: str, limit: int
) -> dict[str, object]:
    """The movers answer (also what ``analytics:movers`` pushes)."""
    moves = []
    for symbol in symbols:
        summary = domain.summarise((await window_of(store, symbol, window)).bars)
        move = None if summary is None else domain.move_of(symbol, summary)
        if move is not None:
            moves.append(move)
    gainers, losers = domain.rank_movers(moves, limit)
    return {
        "window": window,
        "gainers": [move_json(m) for m in gainers],
        "losers": [move_json(m) for m in losers],
    }


async def _cached(
    request: web.Request,
    kind: str,
    symbols: str | Sequence[str],
    query: BaseModel,
    compute: Callable[[], Awaitable[bytes]],
) -> web.Response:
    """The answer cached until a candle of ``symbols`` is stored (or the TTL ends)."""
    body = await request.app[CACHE].read_through(kind, symbols, query.model_dump_json(), compute)
    return cached_json(request, body, max_age=MAX_AGE_S)


async def get_movers(request: web.Request) -> web.Response:
    query = parse_query(request, MoversQuery)
    symbols = request.app[SYMBOLS].known()

    async def compute() -> bytes:
        answer = await movers_answer(request.app[CANDLES], symbols, query.window, query.limit)
        return json.dumps(answer).encode()

    return await _cached(request, "movers", symbols, query, compute)


async def get_volume_spikes(request: web.Request) -> web.Response:
    query = parse_query(request, SpikesQuery)
    symbols = request.app[SYMBOLS].known()
    threshold = Decimal(query.threshold)

    async def compute() -> bytes:
        store = request.app[CANDLES]
        found = []
        for symbol in symbols:
            volumes = await window_volumes(store, symbol, query.window, query.lookback + 1)
            spike = domain.volume_spike(symbol, volumes, query.lookback)
            if spike is not None:
                found.append(spike)
        items = [
            {
                "symbol": s.symbol,
                "volume": domain.figure(s.volume),
                "average": domain.figure(s.average),
                "ratio": domain.figure(s.ratio),
                "windows": s.windows,
            }
            for s in domain.spikes_over(found, threshold)
        ]
        answer = {
            "window": query.window,
            "threshold": domain.figure(threshold),
            "lookback": query.lookback,
            "items": items,
        }
        return json.dumps(answer).encode()

    return await _cached(request, "volume-spikes", symbols, query, compute)


async def get_symbol_analytics(request: web.Request) -> web.Response:
    query = parse_query(request, SymbolQuery)
    symbol = resolve_symbol(request.app[SYMBOLS], request.match_info["symbol"])

    async def compute() -> bytes:
        window = await window_of(request.app[CANDLES], symbol, query.window)
        summary = domain.summarise(window.bars)
        answer: dict[str, object] = {
            "symbol": symbol,
            "window": query.window,
            "source": window.source,
            "candles": len(window.bars),
        }
        if summary is None:
            answer |= dict.fromkeys(FIGURES)
        else:
            answer |= {
                "start": iso_from_ms(summary.first_open_time),
                "end": iso_from_ms(summary.last_open_time),
                "open": domain.figure(summary.open),
                "close": domain.figure(summary.close),
                "change_pct": domain.figure(summary.change_pct),
                "high": domain.figure(summary.high),
                "low": domain.figure(summary.low),
                "volume": domain.figure(summary.volume),
                "vwap": domain.figure(summary.vwap),
                "volatility": domain.figure(summary.volatility),
            }
        return json.dumps(answer).encode()

    return await _cached(request, "analytics", symbol, query, compute)


def register(api: Api) -> None:
    """The fixed paths first: ``/analytics/{symbol}`` would match them too."""
    api.add(
        "GET",
        "/analytics/movers",
        get_movers,
        summary="Top gainers and losers by change % over the window",
        tag="analytics",
        query=MoversQuery,
        response=Movers,
        cached=True,
    )
    api.add(
        "GET",
        "/analytics/volume-spikes",
        get_volume_spikes,
        summary="Window volume against the trailing average, at or over a threshold",
        tag="analytics",
        query=SpikesQuery,
        response=Spikes,
        cached=True,
    )
    api.add(
        "GET",
        "/analytics/{symbol}",
        get_symbol_analytics,
        summary="Change %, high, low, VWAP and realised volatility over the window",
        tag="analytics",
        query=SymbolQuery,
        response=SymbolAnalytics,
        path_params=SYMBOL_PARAM,
        cached=True,
    )
