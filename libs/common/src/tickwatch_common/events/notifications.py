"""Delivery outcomes of alert notifications."""

from __future__ import annotations

from typing import Literal

from tickwatch_common.events.alerts import ChannelName, Trigger
from tickwatch_common.events.base import EpochMs, Event

DeliveryStatus = Literal["sent", "retrying", "failed"]


class NotificationStatus(Event):
    event_id: str
    alert_id: str
    user_id: str
    channel: ChannelName
    status: DeliveryStatus
    attempts: int
    detail: str = ""
    ts: EpochMs


class NotificationDeadLetter(Event):
    event_id: str
    alert_id: str
    user_id: str
    channel: ChannelName
    reason: str
    attempts: int
    ts: EpochMs
    trigger: Trigger
