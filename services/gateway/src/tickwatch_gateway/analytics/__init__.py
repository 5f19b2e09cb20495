"""Analytics over the candle stream: movers, volume spikes and per-symbol figures (change %,
high/low, VWAP, realised volatility) from the stored candles, cached briefly, and the
``analytics:movers`` WebSocket channel."""

from tickwatch_gateway.analytics.wiring import install_analytics, register_analytics

__all__ = ["install_analytics", "register_analytics"]
