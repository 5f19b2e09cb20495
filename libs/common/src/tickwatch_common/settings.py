"""Shared settings pieces.

Each service composes its own ``Settings`` from these mixins; every field maps to the
environment variable of the same name in upper case (``kafka_bootstrap_servers`` ->
``KAFKA_BOOTSTRAP_SERVERS``), and a ``.env`` file is read when present.
"""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYMBOLS = "BTC-USDT,ETH-USDT,SOL-USDT,BNB-USDT,XRP-USDT"


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    log_level: str = "INFO"
    ops_host: str = "127.0.0.1"


class KafkaSettings(BaseServiceSettings):
    kafka_bootstrap_servers: str
    kafka_enable_idempotence: bool = Field(
        default=True,
        description="The idempotent producer: no duplicate or reordered record on a retry"
        " (off only for a broker that lacks InitProducerId).",
    )
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    kafka_request_timeout_ms: int = 15000
    kafka_fetch_max_wait_ms: int = Field(
        default=2000,
        description="How long the broker may hold a fetch with no data. Apache Kafka answers a"
        " waiting fetch as soon as data arrives, so this costs no latency; it sets how often an"
        " idle consumer asks (bench/bench_idle.py).",
    )
    consumer_stall_s: float = Field(
        default=30.0,
        description="A consumer whose input grows while its handled position stays put for"
        " longer than this fails /ready (ConsumerProgress).",
    )


class PostgresSettings(BaseServiceSettings):
    database_url: str
    database_pool_min: int = 1
    database_pool_max: int = 10
    database_command_timeout_s: float = 10.0


class RedisSettings(BaseServiceSettings):
    redis_url: str
    redis_timeout_s: float = 2.0


class SymbolsSettings(BaseServiceSettings):
    symbols: str = DEFAULT_SYMBOLS

    @property
    def symbol_list(self) -> list[str]:
        return [s.strip().upper() for s in self.symbols.split(",") if s.strip()]


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Build settings, or stop the process naming every missing or invalid variable."""
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "?"
            if err["type"] == "missing":
                lines.append(f"missing required setting {name}")
            elif err["type"] == "value_error":  # a validator's own words, without pydantic's prefix
                lines.append(f"invalid setting {name}: {err['ctx']['error']}")
            else:
                lines.append(f"invalid setting {name}: {err['msg']}")
        print(f"{cls.__module__}: cannot start: " + "; ".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
