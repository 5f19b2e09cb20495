"""Market routes: ``/markets``, ``/prices``, ``/prices/{symbol}`` from the in-memory price book."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import BaseModel, Field
from tickwatch_common.events.base import Source, now_ms

from tickwatch_gateway.http.api_types import DecimalString, Timestamp, decimal_str
from tickwatch_gateway.http.conditional import cached_json
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import ProblemError, parse_query
from tickwatch_gateway.market.keys import BOOK, MARKET_SETTINGS, SYMBOLS
from tickwatch_gateway.market.pricebook import price_json
from tickwatch_gateway.market.spread import source_rows, spread_json
from tickwatch_gateway.market.symbols import SymbolDirectory

MAX_AGE_S = 1


class Price(BaseModel):
    symbol: str
    price: DecimalString
    source: str
    ts: Timestamp
    change_24h_pct: DecimalString | None
    volume_24h: DecimalString | None


class PriceList(BaseModel):
    items: list[Price]


class SourcePrice(BaseModel):
    source: str
    price: DecimalString
    ts: Timestamp
    age_s: float = Field(description="Seconds since the tick's event time (0 if in the future)")
    fresh: bool = Field(description="At most SPREAD_MAX_AGE_S old: counted in the spread")


class MarketSpread(BaseModel):
    """Over the sources with a fresh price; null with fewer than two."""

    absolute: DecimalString = Field(description="Highest fresh price minus the lowest")
    pct: DecimalString | None = Field(
        description="`absolute` in % of the lowest, rounded half-even to 6 places"
    )
    low_source: str
    high_source: str
    sources: int = Field(description="How many fresh prices were compared")


class Market(BaseModel):
    symbol: str
    base: str
    quote: str
    sources: list[str] = Field(description="The sources that sent a price, by name")
    price: DecimalString | None = Field(description="The freshest source's price")
    ts: Timestamp | None
    source_prices: list[SourcePrice] = Field(description="Each source's latest, by name")
    spread: MarketSpread | None


class MarketList(BaseModel):
    items: list[Market]


class PriceQuery(BaseModel):
    source: Source | None = Field(
        default=None,
        description="That source's latest; without it the freshest (latest event time; a tie"
        " goes to the source whose name sorts first)",
    )


class PricesQuery(BaseModel):
    symbols: str | None = None
    """Comma-separated symbols; all known ones when absent."""


def resolve_symbol(symbols: SymbolDirectory, raw: str) -> str:
    """The canonical symbol, or a 404 problem that hints at the known ones."""
    symbol = symbols.resolve(raw)
    if symbol is None:
        known = symbols.known()
        raise ProblemError(
            404,
            f"unknown symbol {raw[:40]!r}; known symbols: {', '.join(known)}",
            known_symbols=known,
        )
    return symbol


async def get_price(request: web.Request) -> web.Response:
    query = parse_query(request, PriceQuery)
    symbol = resolve_symbol(request.app[SYMBOLS], request.match_info["symbol"])
    view = request.app[BOOK].latest(symbol, query.source)
    if view is None:
        where = f" from source {query.source!r}" if query.source else ""
        raise ProblemError(404, f"no price received yet for {symbol}{where}")
    return cached_json(request, view.body, max_age=MAX_AGE_S, etag=view.etag)


async def list_prices(request: web.Request) -> web.Response:
    query = parse_query(request, PricesQuery)
    book, symbols = request.app[BOOK], request.app[SYMBOLS]
    if query.symbols:
        wanted = [resolve_symbol(symbols, s) for s in query.symbols.split(",") if s.strip()]
    else:
        wanted = symbols.known()
    items = [price_json(v.tick) for s in wanted if (v := book.latest(s)) is not None]
    return cached_json(request, json.dumps({"items": items}).encode(), max_age=MAX_AGE_S)


async def list_markets(request: web.Request) -> web.Response:
    book = request.app[BOOK]
    max_age_ms = int(request.app[MARKET_SETTINGS].spread_max_age_s * 1000)
    now = now_ms()
    items = []
    for symbol in request.app[SYMBOLS].known():
        base, _, quote = symbol.partition("-")
        view = book.latest(symbol)
        views = book.by_source(symbol)
        items.append(
            {
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "sources": book.sources(symbol),
                "price": None if view is None else decimal_str(view.tick.price),
                "ts": None if view is None else price_json(view.tick)["ts"],
                "source_prices": source_rows(views, now, max_age_ms),
                "spread": spread_json(views, now, max_age_ms),
            }
        )
    return cached_json(request, json.dumps({"items": items}).encode(), max_age=MAX_AGE_S)


SYMBOL_PARAM = {"symbol": "BTC-USDT, btc-usdt or BTCUSDT"}


def register(api: Api) -> None:
    api.add(
        "GET",
        "/markets",
        list_markets,
        summary="Known markets, each source's price and the spread between sources",
        tag="market",
        response=MarketList,
        cached=True,
    )
    api.add(
        "GET",
        "/prices",
        list_prices,
        summary="Latest prices",
        tag="market",
        response=PriceList,
        query=PricesQuery,
        cached=True,
    )
    api.add(
        "GET",
        "/prices/{symbol}",
        get_price,
        summary="Latest price of one symbol",
        tag="market",
        response=Price,
        query=PriceQuery,
        path_params=SYMBOL_PARAM,
        cached=True,
    )
