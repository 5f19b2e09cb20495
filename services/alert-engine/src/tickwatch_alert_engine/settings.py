"""The alert engine's settings: every field is the environment variable of the same name."""

from __future__ import annotations

from pydantic import Field
from tickwatch_common.settings import KafkaSettings, PostgresSettings


class Settings(KafkaSettings, PostgresSettings):
    alert_engine_port: int = 8082
    alert_engine_group: str = "alert-engine"
    alert_engine_max_batch: int = 500
    alert_engine_fetch_max_wait_ms: int = Field(
        default=2000,
        description="Longest time the broker may hold a fetch with no data; Apache Kafka answers"
        " a waiting fetch as soon as a tick arrives, so this sets the idle fetch rate, not latency",
    )
    alert_engine_checkpoint_ms: int = Field(
        default=1000,
        description="Longest time between two records of a partition's position and prices"
        " when nothing fires (a batch that fires is always recorded before it is committed)",
    )
