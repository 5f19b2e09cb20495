"""The market feature's settings: the markets served, the candle store's group, cache lifetime,
the spread's freshness bound, WebSocket limits."""

from __future__ import annotations

from pydantic import Field
from tickwatch_common.settings import SymbolsSettings

from tickwatch_gateway.runtime.settings import RuntimeSettings


class MarketSettings(SymbolsSettings, RuntimeSettings):
    market_sources: str = Field(
        default="binance,coingecko",
        description="The ingestor's MARKET_SOURCES: when it names `coinbase`, COINBASE_SYMBOLS"
        " are markets here too.",
    )
    coinbase_symbols: str = Field(
        default="BTC-USD,BTC-USDC",
        description="The ingestor's COINBASE_SYMBOLS (the markets Coinbase streams).",
    )
    spread_max_age_s: float = Field(
        default=120.0,
        gt=0,
        description="`/markets` compares only prices at most this old (CoinGecko's are its"
        " `last_updated_at`, often a minute old).",
    )
    candle_consumer_group: str = "gateway-candle-store"
    history_cache_ttl_s: int = 10
    ws_max_subscriptions: int = 100
    ws_max_message_bytes: int = 4096
    ws_heartbeat_s: float = 20.0

    @property
    def market_list(self) -> list[str]:
        """The markets served from the start: SYMBOLS, plus COINBASE_SYMBOLS when
        MARKET_SOURCES names ``coinbase`` (the ingestor's rule for what it streams)."""
        names = {s.strip().lower() for s in self.market_sources.split(",")}
        coinbase = [s.strip().upper() for s in self.coinbase_symbols.split(",") if s.strip()]
        extra = [s for s in coinbase if "coinbase" in names and s not in self.symbol_list]
        return self.symbol_list + extra
