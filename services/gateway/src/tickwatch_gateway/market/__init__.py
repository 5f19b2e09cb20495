"""Market data: the symbol directory, the live price book (a group-less Kafka consumer), the
Redis write-through copy, candles stored and rolled up, indicators, the response cache, and the
WebSocket hub that fans ticks, candles and private events out to subscribers."""

from tickwatch_gateway.market.candle_store import CandleStore, load_history
from tickwatch_gateway.market.fanout import Hub, Outgoing
from tickwatch_gateway.market.keys import CACHE, CANDLES, HUB, SYMBOLS
from tickwatch_gateway.market.price_routes import SYMBOL_PARAM, resolve_symbol
from tickwatch_gateway.market.rollup import Bar
from tickwatch_gateway.market.symbols import SymbolDirectory
from tickwatch_gateway.market.wiring import PRODUCED, install_market, register_market

__all__ = [
    "CACHE",
    "CANDLES",
    "HUB",
    "PRODUCED",
    "SYMBOLS",
    "SYMBOL_PARAM",
    "Bar",
    "CandleStore",
    "Hub",
    "Outgoing",
    "SymbolDirectory",
    "install_market",
    "load_history",
    "register_market",
    "resolve_symbol",
]
