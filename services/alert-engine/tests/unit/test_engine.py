"""The engine: version gating, tombstones, re-arming through the gateway, Trigger events."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tickwatch_alert_engine.engine import Engine, StateRow, trigger_event_id
from tickwatch_alert_engine.matching import TriggerState
from tickwatch_common.events import AlertState, Tick

SYM = "BTC-USDT"


def alert(version: int = 1, **kw: Any) -> AlertState:
    fields: dict[str, Any] = {
        "alert_id": "a1",
        "user_id": "u1",
        "version": version,
        "symbol": SYM,
        "condition": "above",
        "target_price": "100",
        "channels": ["email", "webhook"],
        "email": "u@example.com",
        "webhook_url": "https://hooks.example.com/x",
        "webhook_secret": "s3cret",
        "note": "n",
        "updated_at": 1,
    }
    fields.update(kw)
    return AlertState.model_validate(fields)


def tick(price: str, ts: int = 1_000) -> Tick:
    return Tick(
        symbol=SYM,
        base="BTC",
        quote="USDT",
        source="replay",
        price=Decimal(price),
        ts_event=ts,
        ts_ingest=ts,
    )


def test_trigger_carries_channels_note_and_a_deterministic_id() -> None:
    engine = Engine()
    engine.apply_change("a1", alert())
    [t] = engine.on_tick(tick("101"))
    assert t.event_id == trigger_event_id("a1", 1) == trigger_event_id("a1", 1)
    assert t.event_id != trigger_event_id("a1", 2)
    assert (t.sequence, str(t.threshold), str(t.price), t.note) == (1, "100", "101", "n")
    assert t.source == "replay"  # the tick's, for the note's {{source}}
    assert [(c.type, c.to, c.url, c.secret) for c in t.channels] == [
        ("email", "u@example.com", None, None),
        ("webhook", None, "https://hooks.example.com/x", "s3cret"),
    ]


def test_older_versions_are_ignored_and_tombstones_delete() -> None:
    engine = Engine()
    assert engine.apply_change("a1", alert(version=2, target_price="200"))
    assert not engine.apply_change("a1", alert(version=1, target_price="50"))
    assert engine.on_tick(tick("150")) == []
    engine.apply_change("a1", None)
    assert engine.on_tick(tick("250")) == []
    assert "a1" not in engine.alerts


def test_paused_and_triggered_alerts_do_not_fire() -> None:
    engine = Engine()
    engine.apply_change("a1", alert(status="paused"))
    assert engine.on_tick(tick("150")) == []
    engine.apply_change("a1", alert(version=2, status="triggered"))
    assert engine.on_tick(tick("151")) == []
    engine.apply_change("a1", alert(version=3, status="active"))
    assert [t.alert_id for t in engine.on_tick(tick("152"))] == ["a1"]


def test_a_fired_once_alert_rearms_only_when_the_gateway_has_counted_the_firing() -> None:
    engine = Engine()
    engine.apply_change("a1", alert())
    assert len(engine.on_tick(tick("101"))) == 1
    engine.apply_change("a1", alert(version=2, note="edited", trigger_count=0))  # stale view
    assert engine.on_tick(tick("102")) == []
    engine.apply_change("a1", alert(version=3, status="triggered", trigger_count=1))
    engine.apply_change("a1", alert(version=4, status="active", trigger_count=1))  # re-armed
    [t] = engine.on_tick(tick("103"))
    assert t.sequence == 2


def test_saved_state_is_used_and_sequences_never_go_back() -> None:
    engine = Engine()
    engine.preload([StateRow("a1", SYM, TriggerState(sequence=4, last_fired_ms=5, armed=False))])
    engine.apply_change("a1", alert(trigger_count=4))  # active, counted: re-armed
    [t] = engine.on_tick(tick("101"))
    assert t.sequence == 5
    fresh = Engine()  # a lost store: the gateway's count still moves the sequence on
    fresh.apply_change("a1", alert(trigger_count=7))
    [t] = fresh.on_tick(tick("101"))
    assert t.sequence == 8
