"""The market feature's settings: the candle store's group, cache lifetime, WebSocket limits."""

from __future__ import annotations

from tickwatch_common.settings import SymbolsSettings

from tickwatch_gateway.runtime.settings import RuntimeSettings


class MarketSettings(SymbolsSettings, RuntimeSettings):
    candle_consumer_group: str = "gateway-candle-store"
    history_cache_ttl_s: int = 10
    ws_max_subscriptions: int = 100
    ws_max_message_bytes: int = 4096
    ws_heartbeat_s: float = 20.0
