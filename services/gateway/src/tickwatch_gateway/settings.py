"""The gateway's settings: the shared pieces plus its own (port, JWT, limits, CORS)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from tickwatch_common.settings import (
    KafkaSettings,
    PostgresSettings,
    RedisSettings,
    SymbolsSettings,
)

from tickwatch_gateway.alerts_settings import AlertSettings


class Settings(KafkaSettings, PostgresSettings, RedisSettings, SymbolsSettings, AlertSettings):
    gateway_host: str = Field(default="0.0.0.0", description="Listen address of the public API")
    gateway_port: int = 8080
    gateway_reuse_port: bool = Field(
        default=False,
        description="Let several gateway processes share the port (SO_REUSEPORT), the kernel "
        "spreading connections over them: how one host uses all its cores for WebSocket fan-out",
    )

    jwt_secret: SecretStr = Field(min_length=32, description="HS256 signing key, 32+ bytes")
    jwt_issuer: str = "tickwatch"
    jwt_audience: str = "tickwatch-api"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    api_key_touch_interval_s: float = Field(
        default=60, description="An API key's last_used_at is written at most this often"
    )

    max_body_bytes: int = 64 * 1024
    cors_origins: str = Field(default="", description="Comma-separated origins, or *")

    rate_limit_default: str = "600/minute"
    rate_limit_auth: str = "10/minute"
    redis_prefix: str = "tickwatch:gateway:"

    candle_consumer_group: str = "gateway-candle-store"
    history_cache_ttl_s: int = 10
    ws_max_subscriptions: int = 100
    ws_max_message_bytes: int = 4096
    ws_heartbeat_s: float = 20.0
    shutdown_timeout_s: float = Field(
        default=5.0,
        description="Longest wait for each consumer, task or connection to stop at shutdown",
    )

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
