"""What the gateway does with alert events: record them, push them live, and cache alert lists.

- :class:`AlertRecorder` (a consumer group, so one replica records each message) keeps the
  trigger history and delivery outcomes behind ``GET /alerts/{id}/events``; both writes are
  idempotent, so a redelivered message changes nothing.
- :class:`AlertPush` (group-less, so every replica sees every trigger) pushes each trigger on
  the WebSocket ``alerts`` channel to its owner's connections on this replica.
- Recording a trigger bumps its owner's list version (:mod:`.list_cache`).
"""

from __future__ import annotations

import json

import structlog
from tickwatch_common.events import NotificationStatus, Trigger
from tickwatch_common.kafka import Delivered

from tickwatch_gateway.alerts.list_cache import AlertListCache
from tickwatch_gateway.alerts.store import AlertStore
from tickwatch_gateway.http.api_types import decimal_str
from tickwatch_gateway.market import Hub, Outgoing
from tickwatch_gateway.runtime.clock import iso_from_ms

log = structlog.get_logger(__name__)

ALERTS_CHANNEL = "alerts"


class AlertRecorder:
    def __init__(self, store: AlertStore, cache: AlertListCache) -> None:
        self.store = store
        self.cache = cache

    async def handle(self, batch: list[Delivered]) -> None:
        owners: set[str] = set()
        for item in batch:
            event = item.event
            if isinstance(event, Trigger):
                owner = await self.store.record_trigger(event)
                if owner is not None:
                    owners.add(owner)
            elif isinstance(event, NotificationStatus):
                await self.store.record_status(event)
        for owner in owners:
            await self.cache.invalidate(owner)


def trigger_json(trigger: Trigger) -> dict[str, object]:
    """A trigger as the owner sees it live: no addresses or secrets."""
    return {
        "event_id": trigger.event_id,
        "alert_id": trigger.alert_id,
        "sequence": trigger.sequence,
        "symbol": trigger.symbol,
        "condition": trigger.condition,
        "threshold": decimal_str(trigger.threshold),
        "price": decimal_str(trigger.price),
        "ts_event": iso_from_ms(trigger.ts_event),
        "triggered_at": iso_from_ms(trigger.triggered_at),
        "note": trigger.note,
    }


class AlertPush:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def push(self, trigger: Trigger) -> int:
        subscribers = self.hub.subscribers(ALERTS_CHANNEL)
        owners = [s for s in subscribers if s.user_id == trigger.user_id]
        if not owners:
            return 0
        message = Outgoing(json.dumps({"channel": ALERTS_CHANNEL, "data": trigger_json(trigger)}))
        for sub in owners:
            # One pending slot per trigger: distinct triggers are never conflated away.
            sub.offer(f"{ALERTS_CHANNEL}:{trigger.event_id}", message)
        return len(owners)

    async def handle(self, batch: list[Delivered]) -> None:
        for item in batch:
            if isinstance(item.event, Trigger):
                self.push(item.event)
