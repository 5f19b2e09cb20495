"""The typed keys of the market feature."""

from __future__ import annotations

from aiohttp import web

from tickwatch_gateway.market.candle_store import CandleStore
from tickwatch_gateway.market.fanout import Hub
from tickwatch_gateway.market.pricebook import PriceBook
from tickwatch_gateway.market.response_cache import ResponseCache
from tickwatch_gateway.market.settings import MarketSettings
from tickwatch_gateway.market.symbols import SymbolDirectory
from tickwatch_gateway.market.tick_consumer import MarketFeed

MARKET_SETTINGS = web.AppKey("market_settings", MarketSettings)
SYMBOLS = web.AppKey("symbols", SymbolDirectory)
BOOK = web.AppKey("book", PriceBook)
HUB = web.AppKey("hub", Hub)
CACHE = web.AppKey("cache", ResponseCache)
CANDLES = web.AppKey("candles", CandleStore)
FEED = web.AppKey("feed", MarketFeed)
