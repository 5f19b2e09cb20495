"""The notifier's settings: every field is the environment variable of the same name."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from tickwatch_common.settings import KafkaSettings, PostgresSettings


class Settings(KafkaSettings, PostgresSettings):
    notifier_port: int = 8083
    notifier_group: str = "notifier"
    notifier_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new consumer group starts on alerts.triggered.v1"
    )
    notifier_fetch_max_wait_ms: int = Field(
        default=2000,
        description="Longest time the broker may hold a fetch with no data (Apache Kafka answers"
        " a waiting fetch as soon as a trigger arrives: this sets the idle fetch rate)",
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_s: float = 10.0
    smtp_pool_size: int = Field(
        default=10, ge=1, description="SMTP connections open at most (each reused across e-mails)"
    )
    smtp_pool_max_messages: int = Field(
        default=100, ge=1, description="Messages on one SMTP connection before it is replaced"
    )
    smtp_pool_idle_s: float = Field(
        default=30.0, gt=0, description="How long an unused SMTP connection stays open"
    )
    mail_from: str = "Tickwatch <alerts@tickwatch.local>"

    sendgrid_api_key: str | None = None
    sendgrid_api_url: str = "https://api.sendgrid.com"
    sendgrid_timeout_s: float = 10.0

    webhook_timeout_s: float = 5.0
    notifier_allow_private_webhooks: bool = Field(
        default=False,
        description="Let webhooks reach loopback/private addresses (development only). Off, every"
        " address a webhook host resolves to at connect time must be public (SSRF, DNS rebinding)",
    )
    public_base_url: str = "http://localhost:8080"

    notifier_max_concurrent: int = Field(default=50, description="Sends in flight at once")
    notifier_max_per_destination: int = Field(
        default=20, description="Sends in flight to one mail server or webhook host"
    )
    notifier_max_pending: int = Field(
        default=1000, description="Deliveries accepted but not finished before consuming pauses"
    )
    notifier_outcome_connections: int = Field(
        default=10,
        ge=1,
        description="PostgreSQL connections kept for recording outcomes only, so a send's outcome"
        " never waits behind other sends' claims (each accepted, unrecorded send is a duplicate"
        " after a crash)",
    )
    notifier_max_attempts: int = 8
    notifier_retry_base_s: float = 2.0
    notifier_retry_cap_s: float = 600.0
    notifier_lease_s: float = Field(
        default=60.0, description="How long a claimed send may run before another may retry it"
    )
    notifier_sweep_interval_s: float = Field(
        default=5.0, description="How often due retries and unpublished outcomes are swept up"
    )
