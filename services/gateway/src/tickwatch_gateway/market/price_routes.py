"""Market routes: ``/markets``, ``/prices``, ``/prices/{symbol}`` from the in-memory price book."""

from __future__ import annotations

import json
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from tickwatch_gateway.http.api_types import DecimalString, Timestamp, decimal_str
from tickwatch_gateway.http.conditional import cached_json
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import ProblemError, parse_query
from tickwatch_gateway.market.keys import BOOK, SYMBOLS
from tickwatch_gateway.market.pricebook import price_json
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


class Market(BaseModel):
    symbol: str
    base: str
    quote: str
    sources: list[str]
    price: DecimalString | None
    ts: Timestamp | None


class MarketList(BaseModel):
    items: list[Market]


class PriceQuery(BaseModel):
    source: Literal["binance", "coingecko", "replay"] | None = None


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
        where = f" from {query.source}" if query.source else ""
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
    items = []
    for symbol in request.app[SYMBOLS].known():
        base, _, quote = symbol.partition("-")
        view = book.latest(symbol)
        items.append(
            {
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "sources": book.sources(symbol),
                "price": None if view is None else decimal_str(view.tick.price),
                "ts": None if view is None else price_json(view.tick)["ts"],
            }
        )
    return cached_json(request, json.dumps({"items": items}).encode(), max_age=MAX_AGE_S)


SYMBOL_PARAM = {"symbol": "BTC-USDT, btc-usdt or BTCUSDT"}


def register(api: Api) -> None:
    api.add(
        "GET",
        "/markets",
        list_markets,
        summary="Known markets",
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
