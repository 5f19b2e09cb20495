"""Alerts: the state the gateway publishes and the trigger the engine fires."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tickwatch_common.events.base import DecimalStr, EpochMs, Event, Source, Symbol

Condition = Literal["above", "below", "crosses_up", "crosses_down", "pct_change"]
Frequency = Literal["once", "recurring"]
AlertStatus = Literal["active", "paused", "triggered", "expired"]
ChannelName = Literal["email", "webhook"]


class AlertState(Event):
    """The full state of one alert on ``alerts.changes.v1`` (a delete is a ``null`` value)."""

    alert_id: str
    user_id: str
    version: int
    symbol: Symbol
    condition: Condition
    target_price: DecimalStr | None = None
    pct: DecimalStr | None = None
    window_seconds: int | None = None
    frequency: Frequency = "once"
    cooldown_seconds: int = 0
    expires_at: EpochMs | None = None
    status: AlertStatus = "active"
    channels: list[ChannelName] = ["email"]
    email: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    note: str | None = None
    trigger_count: int = 0
    updated_at: EpochMs


class TriggerChannel(BaseModel):
    """Where one trigger is delivered: an address, or a URL and its signing secret."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: ChannelName
    to: str | None = None
    url: str | None = None
    secret: str | None = None


class Trigger(Event):
    """One firing of one alert; ``event_id`` is derived from ``alert_id`` and ``sequence``."""

    event_id: str
    alert_id: str
    user_id: str
    sequence: int
    symbol: Symbol
    condition: Condition
    threshold: DecimalStr
    price: DecimalStr
    ts_event: EpochMs
    triggered_at: EpochMs
    channels: list[TriggerChannel]
    note: str | None = None
    window_seconds: int | None = None
    """For ``pct_change``: the window the move of ``threshold`` percent happened within."""
    source: Source | None = None
    """The source of the tick that fired it (``None`` from an engine older than the field)."""
