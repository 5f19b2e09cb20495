"""Applies alert changes and ticks to the index and turns fires into Trigger events. No I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from tickwatch_common.events import AlertState, Tick, Trigger, TriggerChannel
from tickwatch_common.events.base import now_ms

from tickwatch_alert_engine.matching import AlertIndex, Fire, Rule, TriggerState

TRIGGER_NAMESPACE = uuid.UUID("5b0f6a52-8f3e-4d0c-9d7e-2f7a4c1e6b10")


def trigger_event_id(alert_id: str, sequence: int) -> str:
    """Deterministic: the same firing of the same alert always has the same id."""
    return str(uuid.uuid5(TRIGGER_NAMESPACE, f"{alert_id}:{sequence}"))


def to_rule(alert: AlertState) -> Rule:
    return Rule(
        alert_id=alert.alert_id,
        symbol=alert.symbol,
        condition=alert.condition,
        target=alert.target_price,
        pct=alert.pct,
        window_s=alert.window_seconds or 0,
        recurring=alert.frequency == "recurring",
        cooldown_s=alert.cooldown_seconds,
        expires_at=alert.expires_at,
        paused=alert.status != "active",
    )


def channels_of(alert: AlertState) -> list[TriggerChannel]:
    out = []
    for name in dict.fromkeys(alert.channels):
        if name == "email":
            out.append(TriggerChannel(type="email", to=alert.email))
        else:
            out.append(
                TriggerChannel(type="webhook", url=alert.webhook_url, secret=alert.webhook_secret)
            )
    return out


@dataclass(frozen=True)
class StateRow:
    """One alert's trigger state as the store keeps it."""

    alert_id: str
    symbol: str
    state: TriggerState


class Engine:
    """The alerts of the partitions this replica owns, and what a tick does to them."""

    def __init__(self) -> None:
        self.index = AlertIndex()
        self.alerts: dict[str, AlertState] = {}
        self.versions: dict[str, int] = {}
        self._saved: dict[str, TriggerState] = {}

    def preload(self, rows: list[StateRow]) -> None:
        """Trigger states from the store, used when their alerts arrive from the change log."""
        for row in rows:
            self._saved[row.alert_id] = row.state

    def apply_change(self, alert_id: str, alert: AlertState | None) -> bool:
        """Apply one change; older or equal versions are ignored. True when it changed anything."""
        if alert is None:  # tombstone: the alert was deleted
            self.alerts.pop(alert_id, None)
            self.index.remove(alert_id)
            return True
        if alert.version <= self.versions.get(alert_id, -1):
            return False
        self.versions[alert_id] = alert.version
        self.alerts[alert_id] = alert
        state = self.index.state(alert_id) or self._saved.pop(alert_id, None)
        if state is None:
            # No state of ours (new alert, or a lost store): never reuse a sequence the
            # gateway has already counted.
            state = TriggerState(sequence=alert.trigger_count)
        elif not state.armed and alert.status == "active" and alert.trigger_count >= state.sequence:
            # The gateway has seen every firing and still says active: the user re-armed it.
            state = replace(state, armed=True)
        self.index.upsert(to_rule(alert), state)
        return True

    def on_tick(self, tick: Tick) -> list[Trigger]:
        fires = self.index.on_tick(tick.symbol, tick.price, tick.ts_event)
        return [self._trigger(fire, tick) for fire in fires]

    def _trigger(self, fire: Fire, tick: Tick) -> Trigger:
        alert = self.alerts[fire.alert_id]
        return Trigger(
            event_id=trigger_event_id(fire.alert_id, fire.sequence),
            alert_id=fire.alert_id,
            user_id=alert.user_id,
            sequence=fire.sequence,
            symbol=fire.symbol,
            condition=alert.condition,
            threshold=fire.threshold,
            price=fire.price,
            ts_event=tick.ts_event,
            triggered_at=now_ms(),
            channels=channels_of(alert),
            note=alert.note,
            window_seconds=alert.window_seconds,
            source=tick.source,
        )
