"""Market data: the symbol directory, the live price book (a group-less Kafka consumer), the
Redis write-through copy, candles stored and rolled up, indicators, the response cache, and the
WebSocket hub that fans ticks, candles and private events out to subscribers."""

from tickwatch_gateway.market.fanout import Hub, Outgoing
from tickwatch_gateway.market.keys import HUB, SYMBOLS
from tickwatch_gateway.market.price_routes import resolve_symbol
from tickwatch_gateway.market.symbols import SymbolDirectory
from tickwatch_gateway.market.wiring import PRODUCED, install_market, register_market

__all__ = [
    "HUB",
    "PRODUCED",
    "SYMBOLS",
    "Hub",
    "Outgoing",
    "SymbolDirectory",
    "install_market",
    "register_market",
    "resolve_symbol",
]
