"""``/indicators/{symbol}``: SMA, EMA, RSI, MACD and Bollinger Bands over stored candles."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, field_validator
from tickwatch_common.events.base import Interval, Source
from tickwatch_common.text import CleanText

from tickwatch_gateway.http.api_types import DecimalString, Timestamp
from tickwatch_gateway.http.conditional import cached_json
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import parse_query
from tickwatch_gateway.market import indicators
from tickwatch_gateway.market.history_routes import bars_for
from tickwatch_gateway.market.keys import CACHE, SYMBOLS
from tickwatch_gateway.market.price_routes import SYMBOL_PARAM, resolve_symbol
from tickwatch_gateway.runtime.clock import iso_from_ms

MAX_AGE_S = 5
DIGITS = 12
_P = "[1-9][0-9]{0,2}"
_K = r"(10|[1-9](\.[0-9]{1,2})?|0\.[0-9]?[1-9])"
_ONE = f"(sma(:{_P})?|ema(:{_P})?|rsi(:{_P})?|macd(:{_P}(:{_P}(:{_P})?)?)?|bbands(:{_P}(:{_K})?)?)"
SPEC_PATTERN = f"{_ONE}(,{_ONE}){{0,9}}"


class IndicatorQuery(BaseModel):
    interval: Interval = "1m"
    indicators: Annotated[str, CleanText(pattern=SPEC_PATTERN)] = Field(
        default="sma:20",
        description="Comma-separated: sma:N, ema:N, rsi:N, macd:FAST:SLOW:SIGNAL, bbands:N:K",
        examples=["sma:20,ema:50,rsi:14,macd:12:26:9,bbands:20:2"],
    )
    series: bool = Field(default=False, description="Also answer the whole series")
    limit: int = Field(default=500, ge=1, le=1000, description="Candles to compute over")
    source: Source | None = None

    @field_validator("indicators")
    @classmethod
    def _parse(cls, value: str) -> str:
        indicators.parse_specs(value)
        return value


class Point(BaseModel):
    time: Timestamp
    values: dict[str, DecimalString]


class IndicatorOut(BaseModel):
    name: str
    latest: Point | None
    series: list[Point] | None = None


class IndicatorAnswer(BaseModel):
    symbol: str
    interval: Interval
    source: str | None
    candles: int
    indicators: list[IndicatorOut]


def _fmt(value: Decimal | None) -> str:
    assert value is not None
    return format(round(value, DIGITS).normalize(), "f")


async def get_indicators(request: web.Request) -> web.Response:
    query = parse_query(request, IndicatorQuery)
    specs = indicators.parse_specs(query.indicators)
    symbol = resolve_symbol(request.app[SYMBOLS], request.match_info["symbol"])

    async def compute() -> bytes:
        source, bars = await bars_for(
            request, symbol, query.source, query.interval, None, None, query.limit
        )
        closes = [b.close for b in bars]
        times = [iso_from_ms(b.open_time) for b in bars]
        out = []
        for spec in specs:
            outputs = indicators.compute(spec, closes)
            points = [
                {"time": times[i], "values": {k: _fmt(v[i]) for k, v in outputs.items()}}
                for i in range(len(bars))
                if all(v[i] is not None for v in outputs.values())
            ]
            item: dict[str, object] = {"name": spec.label, "latest": points[-1] if points else None}
            if query.series:
                item["series"] = points
            out.append(item)
        body = json.dumps(
            {
                "symbol": symbol,
                "interval": query.interval,
                "source": source,
                "candles": len(bars),
                "indicators": out,
            }
        ).encode()
        return body

    body = await request.app[CACHE].read_through(
        "indicators", symbol, query.model_dump_json(), compute
    )
    return cached_json(request, body, max_age=MAX_AGE_S)


def register(api: Api) -> None:
    api.add(
        "GET",
        "/indicators/{symbol}",
        get_indicators,
        summary="Technical indicators",
        tag="market",
        query=IndicatorQuery,
        response=IndicatorAnswer,
        path_params=SYMBOL_PARAM,
        cached=True,
    )
