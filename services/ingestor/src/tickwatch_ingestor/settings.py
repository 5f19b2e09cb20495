"""The ingestor's settings: every field is the environment variable of the same name, upper-cased."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from tickwatch_common.events.base import SYMBOL_PATTERN
from tickwatch_common.settings import KafkaSettings, SymbolsSettings

KNOWN_SOURCES = ("binance", "coingecko", "coinbase", "replay")


class Settings(KafkaSettings, SymbolsSettings):
    ingestor_port: int = 8081

    market_sources: str = Field(
        default="binance,coingecko",
        description="Comma-separated live sources, or `replay` to force the bundled session.",
    )
    market_fallback: Literal["replay", "none"] = Field(
        default="replay",
        description="What to do when no live source answers at start-up (`none` in production).",
    )
    market_probe_timeout_s: float = Field(
        default=2.5, description="Bound on the start-up reachability probe of each live source."
    )

    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_rest_url: str = "https://api.binance.com"
    binance_connection_lifetime_s: float = Field(
        default=23 * 3600 + 30 * 60,
        description="Open a replacement connection and switch over after this long (Binance cuts at 24 h).",
    )
    binance_switch_overlap_s: float = Field(
        default=1.0,
        description="How long old and new connections overlap once the new one delivers data.",
    )
    binance_silence_timeout_s: float = Field(
        default=20.0, description="Replace a connection that delivered nothing for this long."
    )
    binance_connect_timeout_s: float = 10.0
    binance_reconnect_initial_s: float = 0.2
    binance_reconnect_cap_s: float = 30.0
    binance_max_streams_per_connection: int = Field(default=1024, ge=1, le=1024)
    binance_url_streams_max: int = Field(
        default=200, ge=1, description="Streams named in the URL; the rest are SUBSCRIBEd."
    )
    binance_max_messages_per_s: float = Field(default=5.0, gt=0, le=5.0)
    binance_rest_timeout_s: float = 10.0
    binance_weight_limit_1m: int = Field(
        default=6000, description="The IP's request-weight budget per minute."
    )
    binance_publish_open_candles: bool = True

    coingecko_api_url: str = "https://api.coingecko.com/api/v3"
    coingecko_api_key: str | None = None
    coingecko_poll_interval_s: float = Field(
        default=10.0, ge=0.05, description="Default 10 s = 6 calls/min, well within 30/min."
    )
    coingecko_calls_per_min: float = Field(
        default=30.0, gt=0, description="The plan's rate limit; the poll interval never beats it."
    )
    coingecko_ids: str = Field(
        default="", description="Extra BASE=coingecko-id pairs, e.g. `PEPE=pepe,WIF=dogwifcoin`."
    )
    coingecko_timeout_s: float = 10.0

    coinbase_ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    coinbase_rest_url: str = Field(
        default="https://api.coinbase.com",
        description="Coinbase Advanced Trade REST, for candle history (public, no key).",
    )
    coinbase_rest_timeout_s: float = 10.0
    coinbase_symbols: str = Field(
        default="BTC-USD,BTC-USDC",
        description="Markets streamed from Coinbase when MARKET_SOURCES names `coinbase`, as"
        " Coinbase's product ids (BASE-QUOTE, the same as Tickwatch symbols).",
    )
    coinbase_ticker: bool = Field(
        default=True,
        description="Also subscribe to `ticker`: best bid, ask and 24 h change on the ticks.",
    )
    coinbase_silence_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Replace a connection that delivered nothing for this long (heartbeats: 1/s).",
    )
    coinbase_connect_timeout_s: float = 10.0
    coinbase_reconnect_initial_s: float = 0.2
    coinbase_reconnect_cap_s: float = 30.0

    instruments_refresh_s: float = Field(
        default=3600.0,
        gt=0,
        description="Publish every market's trading rules (market.instruments.v1) this often.",
    )

    replay_speed: float = Field(
        default=1.0, gt=0, description="1 = real time, 10 = ten times faster."
    )
    replay_history_hours: float = Field(
        default=48.0,
        ge=0,
        description="Hours of 1 m replay candles published at start where the topic lacks them.",
    )

    backfill_on_start: bool = True
    backfill_days_1m: int = 7
    backfill_days_1h: int = 90
    backfill_days_1d: int = 730

    @property
    def source_list(self) -> list[str]:
        names = [s.strip().lower() for s in self.market_sources.split(",") if s.strip()]
        unknown = [n for n in names if n not in KNOWN_SOURCES]
        if unknown:
            raise ValueError(f"MARKET_SOURCES: unknown source(s) {unknown}; known: {KNOWN_SOURCES}")
        return names

    @field_validator("coinbase_symbols")
    @classmethod
    def _coinbase_products(cls, value: str) -> str:
        bad = [s for s in value.split(",") if s.strip() and not re.match(SYMBOL_PATTERN, s.strip())]
        if bad:
            raise ValueError(f"not BASE-QUOTE product ids: {bad}")
        return value

    @property
    def coinbase_symbol_list(self) -> list[str]:
        return [s.strip() for s in self.coinbase_symbols.split(",") if s.strip()]

    @property
    def coingecko_id_overrides(self) -> dict[str, str]:
        pairs = [p.split("=", 1) for p in self.coingecko_ids.split(",") if "=" in p]
        return {k.strip().upper(): v.strip() for k, v in pairs}
