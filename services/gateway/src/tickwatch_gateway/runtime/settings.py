"""Settings every part of the gateway shares: the servers it runs on, how long a stop may take,
where its Redis keys live."""

from __future__ import annotations

from pydantic import Field
from tickwatch_common.settings import KafkaSettings, PostgresSettings, RedisSettings


class RuntimeSettings(KafkaSettings, PostgresSettings, RedisSettings):
    redis_prefix: str = "tickwatch:gateway:"
    shutdown_timeout_s: float = Field(
        default=5.0,
        description="Longest wait for each consumer, task or connection to stop at shutdown",
    )
