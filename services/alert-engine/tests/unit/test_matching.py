"""The matching core with plain data: each condition, each frequency, expiry and pause."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_alert_engine.matching import AlertIndex, Rule, TriggerState

SYM = "BTC-USDT"


def rule(alert_id: str, condition: str, target: str | None = None, **kw: object) -> Rule:
    return Rule(
        alert_id=alert_id,
        symbol=kw.pop("symbol", SYM),  # type: ignore[arg-type]
        condition=condition,  # type: ignore[arg-type]
        target=Decimal(target) if target is not None else None,
        **kw,  # type: ignore[arg-type]
    )


def fired(index: AlertIndex, price: str, ts: int = 0, symbol: str = SYM) -> list[str]:
    return sorted(f.alert_id for f in index.on_tick(symbol, Decimal(price), ts))


def test_crossing_up_fires_once_between_two_ticks() -> None:
    index = AlertIndex()
    index.upsert(rule("a1", "crosses_up", "70000"))
    assert fired(index, "69990") == []
    assert fired(index, "70010") == ["a1"]
    assert fired(index, "70020") == []
    assert fired(index, "69000") == []
    assert fired(index, "71000") == []  # once: disarmed


def test_crossing_needs_a_previous_tick_below() -> None:
    index = AlertIndex()
    index.upsert(rule("a1", "crosses_up", "100"))
    assert fired(index, "105") == []  # no previous price: not a crossing
    assert fired(index, "106") == []


def test_crossing_down_includes_landing_on_the_target() -> None:
    index = AlertIndex()
    index.upsert(rule("d", "crosses_down", "100"))
    fired(index, "101")
    assert fired(index, "100") == ["d"]


def test_above_and_below_fire_on_first_tick_at_or_past_target() -> None:
    index = AlertIndex()
    index.upsert(rule("up", "above", "100"))
    index.upsert(rule("down", "below", "90"))
    assert fired(index, "95") == []
    assert fired(index, "100") == ["up"]
    assert fired(index, "90") == ["down"]
    assert fired(index, "200") == []


def test_only_alerts_past_the_price_fire() -> None:
    index = AlertIndex()
    for i, target in enumerate(["10", "20", "30", "40"]):
        index.upsert(rule(f"a{i}", "above", target))
    assert fired(index, "25") == ["a0", "a1"]
    assert fired(index, "35") == ["a2"]


def test_recurring_above_waits_for_cooldown() -> None:
    index = AlertIndex()
    index.upsert(rule("r", "above", "100", recurring=True, cooldown_s=60))
    assert fired(index, "101", ts=1_000) == ["r"]
    assert fired(index, "102", ts=30_000) == []
    assert fired(index, "103", ts=61_000) == ["r"]
    state = index.state("r")
    assert state is not None and state.sequence == 2 and state.last_fired_ms == 61_000


def test_recurring_crossing_rearms_only_after_going_back_across() -> None:
    index = AlertIndex()
    index.upsert(rule("x", "crosses_up", "100", recurring=True, cooldown_s=10))
    fired(index, "99", ts=0)
    assert fired(index, "101", ts=1_000) == ["x"]
    assert fired(index, "102", ts=20_000) == []  # cooldown over but never went back below
    assert fired(index, "99", ts=21_000) == []
    assert fired(index, "100", ts=22_000) == ["x"]


def test_crossing_during_cooldown_is_not_fired() -> None:
    index = AlertIndex()
    index.upsert(rule("x", "crosses_up", "100", recurring=True, cooldown_s=10))
    fired(index, "99", ts=0)
    assert fired(index, "101", ts=1_000) == ["x"]
    fired(index, "99", ts=2_000)
    assert fired(index, "101", ts=3_000) == []


def test_pct_change_fires_on_a_move_within_the_window() -> None:
    index = AlertIndex()
    index.upsert(Rule("p", SYM, "pct_change", pct=Decimal("5"), window_s=60, recurring=False))
    assert fired(index, "100", ts=0) == []
    assert fired(index, "104", ts=30_000) == []
    assert fired(index, "105", ts=59_000) == ["p"]


def test_pct_change_ignores_moves_older_than_the_window() -> None:
    index = AlertIndex()
    index.upsert(Rule("p", SYM, "pct_change", pct=Decimal("5"), window_s=60))
    fired(index, "100", ts=0)
    fired(index, "103", ts=30_000)
    assert fired(index, "106", ts=121_000) == []  # 100 and 103 have left the window
    assert fired(index, "100", ts=122_000) == ["p"]  # 106 -> 100 is a 5.66 % drop


def test_expired_alert_never_fires() -> None:
    index = AlertIndex()
    index.upsert(rule("e", "above", "100", expires_at=10_000))
    assert fired(index, "50", ts=5_000) == []
    assert fired(index, "150", ts=10_000) == []


def test_paused_alert_keeps_state_and_resumes() -> None:
    index = AlertIndex()
    index.upsert(rule("p", "above", "100", paused=True))
    assert fired(index, "150") == []
    index.upsert(rule("p", "above", "100"))
    assert fired(index, "151") == ["p"]


def test_restored_state_does_not_fire_a_once_alert_again() -> None:
    index = AlertIndex()
    index.upsert(rule("o", "above", "100"), TriggerState(sequence=1, last_fired_ms=5, armed=False))
    assert fired(index, "150") == []


def test_restored_last_price_detects_a_crossing_after_restart() -> None:
    index = AlertIndex()
    index.restore_price(SYM, Decimal("99"), 1_000)
    index.upsert(rule("x", "crosses_up", "100"))
    assert fired(index, "101", ts=2_000) == ["x"]


def test_fire_carries_sequence_threshold_and_price() -> None:
    index = AlertIndex()
    index.upsert(rule("a", "below", "10.50"))
    [fire] = index.on_tick(SYM, Decimal("10.25"), 7)
    assert (fire.alert_id, fire.sequence, fire.threshold, fire.price, fire.ts) == (
        "a",
        1,
        Decimal("10.50"),
        Decimal("10.25"),
        7,
    )


def test_removed_alert_and_other_symbols_are_untouched() -> None:
    index = AlertIndex()
    index.upsert(rule("a", "above", "1"))
    index.upsert(rule("b", "above", "1", symbol="ETH-USDT"))
    index.remove("a")
    assert fired(index, "5") == []
    assert fired(index, "5", symbol="ETH-USDT") == ["b"]


def test_resuming_during_cooldown_waits_for_the_cooldown() -> None:
    index = AlertIndex()
    index.upsert(rule("r", "above", "100", recurring=True, cooldown_s=10))
    assert fired(index, "101", ts=1_000) == ["r"]
    index.upsert(rule("r", "above", "100", recurring=True, cooldown_s=10, paused=True))
    index.upsert(rule("r", "above", "100", recurring=True, cooldown_s=10))
    assert fired(index, "102", ts=2_000) == []
    assert fired(index, "102", ts=11_000) == ["r"]


def test_pct_change_fires_on_exactly_the_percentage_up_and_down() -> None:
    index = AlertIndex()
    index.upsert(Rule("up", SYM, "pct_change", pct=Decimal("5"), window_s=60))
    fired(index, "100", ts=0)
    assert fired(index, "105", ts=1_000) == ["up"]
    other = AlertIndex()
    other.upsert(Rule("down", SYM, "pct_change", pct=Decimal("5"), window_s=60))
    fired(other, "100", ts=0)
    assert fired(other, "95.01", ts=1_000) == []
    assert fired(other, "95", ts=2_000) == ["down"]
