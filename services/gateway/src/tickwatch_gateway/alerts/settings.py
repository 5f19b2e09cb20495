"""The alerts' settings: cap, history consumer group, list cache, outbox relay, reconcile."""

from __future__ import annotations

from pydantic import Field

from tickwatch_gateway.runtime.settings import RuntimeSettings


class AlertSettings(RuntimeSettings):
    alerts_allow_private_webhooks: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback/private/link-local addresses (dev and tests)",
    )
    alerts_max_active_per_user: int = Field(default=100, ge=1)
    alerts_consumer_group: str = Field(
        default="gateway-alerts",
        description="Consumer group recording alerts.triggered.v1 and notifications.status.v1",
    )
    alerts_list_cache_ttl_s: int = Field(default=30, ge=1)
    outbox_batch_size: int = Field(default=200, ge=1)
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    changes_log_check_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the relay compares alerts.changes.v1's log identity with the one"
        " last reconciled (a new log is rebuilt from the tables)",
    )
    reconcile_timeout_s: float = Field(
        default=60.0, gt=0, description="Bound on reading alerts.changes.v1 for a reconcile"
    )
