"""Shared settings pieces.

Each service composes its own ``Settings`` from these mixins; every field maps to the
environment variable of the same name in upper case (``kafka_bootstrap_servers`` ->
``KAFKA_BOOTSTRAP_SERVERS``), and a ``.env`` file is read when present.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
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
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="PLAINTEXT",
        description="How every client talks to the brokers: PLAINTEXT (make run, the tests, the"
        " dev overlay), SASL_SSL in production (SCRAM over TLS), SASL_PLAINTEXT or SSL.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512",
        description="The SASL mechanism of SASL_PLAINTEXT and SASL_SSL.",
    )
    kafka_sasl_username: str = Field(
        default="",
        description="This service's own principal (User:<name> in the broker's ACLs); required"
        " with SASL_*.",
    )
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""),
        description="The principal's SCRAM password (a secret, never logged); required with"
        " SASL_*.",
    )
    kafka_ssl_cafile: str = Field(
        default="",
        description="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL;"
        " the system's CAs when empty). The broker's host name is always checked.",
    )
    kafka_ssl_certfile: str = Field(
        default="",
        description="PEM client certificate for mutual TLS (SSL, SASL_SSL); empty: none.",
    )
    kafka_ssl_keyfile: str = Field(
        default="",
        description="PEM private key of KAFKA_SSL_CERTFILE; empty: the key is in the cert file.",
    )

    @model_validator(mode="after")
    def _credentials_for_sasl(self) -> KafkaSettings:
        """A SASL protocol without its principal would only fail later, at the first connect."""
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password.get_secret_value()),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    + " and ".join(missing)
                )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE")
        return self


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
            elif err["type"] == "value_error" and not err["loc"]:  # a rule over several settings
                lines.append(f"invalid settings: {err['ctx']['error']}")
            elif err["type"] == "value_error":  # a validator's own words, without pydantic's prefix
                lines.append(f"invalid setting {name}: {err['ctx']['error']}")
            else:
                lines.append(f"invalid setting {name}: {err['msg']}")
        print(f"{cls.__module__}: cannot start: " + "; ".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
