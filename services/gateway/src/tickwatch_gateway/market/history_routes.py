"""``/prices/{symbol}/history``: candles rolled up from the stored 1-minute ones, cached briefly."""

from __future__ import annotations

import json
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field, model_validator
from tickwatch_common.events.base import Interval, Source

from tickwatch_gateway.http.api_types import DecimalString, QueryDateTime, Timestamp, decimal_str
from tickwatch_gateway.http.conditional import cached_json
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import ProblemError, parse_query
from tickwatch_gateway.market.candle_store import load_history
from tickwatch_gateway.market.keys import CACHE, CANDLES, SYMBOLS
from tickwatch_gateway.market.price_routes import SYMBOL_PARAM, resolve_symbol
from tickwatch_gateway.market.rollup import Bar
from tickwatch_gateway.runtime.clock import iso_from_ms, ms_from_datetime

MAX_AGE_S = 5


class HistoryQuery(BaseModel):
    interval: Interval = "1m"
    start: QueryDateTime | None = Field(default=None, description="ISO-8601; UTC when no offset")
    end: QueryDateTime | None = Field(default=None, description="ISO-8601; UTC when no offset")
    limit: int = Field(default=500, ge=1, le=1000)
    source: Source | None = None

    @model_validator(mode="after")
    def _ordered(self) -> HistoryQuery:
        if self.start and self.end and ms_from_datetime(self.start) > ms_from_datetime(self.end):
            raise ValueError("start must not be after end")
        return self


class CandleOut(BaseModel):
    open_time: Timestamp
    close_time: Timestamp
    open: DecimalString
    high: DecimalString
    low: DecimalString
    close: DecimalString
    volume: DecimalString
    closed: bool


class History(BaseModel):
    symbol: str
    interval: Interval
    source: str | None
    items: list[CandleOut]


def bar_json(bar: Bar) -> dict[str, object]:
    return {
        "open_time": iso_from_ms(bar.open_time),
        "close_time": iso_from_ms(bar.close_time),
        "open": decimal_str(bar.open),
        "high": decimal_str(bar.high),
        "low": decimal_str(bar.low),
        "close": decimal_str(bar.close),
        "volume": decimal_str(bar.volume),
        "closed": bar.closed,
    }


async def bars_for(
    request: web.Request,
    symbol: str,
    source: str | None,
    interval: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> tuple[str | None, list[Bar]]:
    store = request.app[CANDLES]
    source = source or await store.default_source(symbol)
    if source is None:
        return None, []
    start_ms = None if start is None else ms_from_datetime(start)
    end_ms = None if end is None else ms_from_datetime(end)
    if not (-(2**62) < (start_ms or 0) < 2**62 and -(2**62) < (end_ms or 0) < 2**62):
        raise ProblemError(422, "start or end out of range")
    bars = await load_history(
        store, symbol, source, interval, start_ms=start_ms, end_ms=end_ms, limit=limit
    )
    return source, bars


async def get_history(request: web.Request) -> web.Response:
    query = parse_query(request, HistoryQuery)
    symbol = resolve_symbol(request.app[SYMBOLS], request.match_info["symbol"])

    async def compute() -> bytes:
        source, bars = await bars_for(
            request, symbol, query.source, query.interval, query.start, query.end, query.limit
        )
        body = json.dumps(
            {
                "symbol": symbol,
                "interval": query.interval,
                "source": source,
                "items": [bar_json(b) for b in bars],
            }
        ).encode()
        return body

    body = await request.app[CACHE].read_through(
        "history", symbol, query.model_dump_json(), compute
    )
    return cached_json(request, body, max_age=MAX_AGE_S)


def register(api: Api) -> None:
    api.add(
        "GET",
        "/prices/{symbol}/history",
        get_history,
        summary="Candles, oldest first",
        tag="market",
        query=HistoryQuery,
        response=History,
        path_params=SYMBOL_PARAM,
        cached=True,
    )
