"""The markets the gateway serves from the start follow the ingestor's rule for what it streams."""

from __future__ import annotations

from tickwatch_gateway.market.settings import MarketSettings

SERVERS = {
    "kafka_bootstrap_servers": "127.0.0.1:9",
    "database_url": "postgresql://127.0.0.1:9/x",
    "redis_url": "redis://127.0.0.1:9",
}


def test_coinbase_markets_are_served_only_when_coinbase_is_a_source() -> None:
    plain = MarketSettings(
        symbols="BTC-USDT,ETH-USDT",
        market_sources="binance,coingecko",
        coinbase_symbols="BTC-USD,BTC-USDC",
        **SERVERS,
    )
    assert plain.market_list == ["BTC-USDT", "ETH-USDT"]
    with_coinbase = MarketSettings(
        symbols="BTC-USDT,BTC-USD",
        market_sources="binance, Coinbase",
        coinbase_symbols=" btc-usd ,BTC-USDC,",
        **SERVERS,
    )
    assert with_coinbase.market_list == ["BTC-USDT", "BTC-USD", "BTC-USDC"]
