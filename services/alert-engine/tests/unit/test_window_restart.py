"""``pct_change`` windows carried over a restart: recorded samples, restored into a new index."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tickwatch_alert_engine.matching import AlertIndex, Rule, TriggerState

SYM = "BTC-USDT"
PRICES = [Decimal(p) for p in ("95", "97.5", "99", "100", "100.5", "101", "103", "105")]


def restarted(before: AlertIndex, rules: list[Rule]) -> AlertIndex:
    """A new index built as the engine rebuilds one: last price, alerts with their state, then
    the window samples (only what the store records)."""
    after = AlertIndex()
    last = before.last_price(SYM)
    if last is not None:
        after.restore_price(SYM, *last)
    for rule in rules:
        state = before.state(rule.alert_id)
        assert state is not None
        after.upsert(rule, TriggerState(state.sequence, state.last_fired_ms, state.armed))
    after.restore_windows(SYM, before.window_samples(SYM))
    return after


def fires(index: AlertIndex, price: str | Decimal, ts: int) -> list[tuple[str, int]]:
    return sorted((f.alert_id, f.sequence) for f in index.on_tick(SYM, Decimal(price), ts))


def test_a_move_that_starts_before_a_restart_and_ends_after_it_fires_once() -> None:
    rule = Rule("p", SYM, "pct_change", pct=Decimal("5"), window_s=3600)
    before = AlertIndex()
    before.upsert(rule)
    assert fires(before, "100", 0) == []
    assert fires(before, "103", 600_000) == []
    after = restarted(before, [rule])
    assert fires(after, "104", 1_200_000) == []
    assert fires(after, "105", 1_800_000) == [("p", 1)]  # 100 -> 105 across the restart
    assert fires(after, "106", 1_900_000) == []  # once
    forgetful = AlertIndex()  # what a restart did before the samples were recorded
    forgetful.upsert(rule)
    assert fires(forgetful, "104", 1_200_000) == []
    assert fires(forgetful, "105", 1_800_000) == []


def test_samples_are_only_the_prices_that_can_still_decide_a_move() -> None:
    index = AlertIndex()
    assert index.window_samples(SYM) == []
    index.upsert(Rule("p", SYM, "pct_change", pct=Decimal("50"), window_s=10))
    for i, price in enumerate(["100", "99", "101", "100.5", "98", "100"]):
        fires(index, price, i * 1000)
    # min chain 98 (s4), 100 (s5); max chain 101 (s2), 100.5 (s3), 100 (s5)
    assert index.window_samples(SYM) == [
        (2, Decimal("101")),
        (3, Decimal("100.5")),
        (4, Decimal("98")),
        (5, Decimal("100")),
    ]
    fires(index, "100", 20_000)  # everything older than 10 s has left the window
    assert index.window_samples(SYM) == [(20, Decimal("100"))]


pct_rules = st.builds(
    lambda i, pct, window_s, recurring, cooldown_s: Rule(
        f"a{i}",
        SYM,
        "pct_change",
        pct=pct,
        window_s=window_s,
        recurring=recurring,
        cooldown_s=cooldown_s if recurring else 0,
    ),
    st.integers(0, 10**6),
    st.sampled_from([Decimal("1"), Decimal("2.5"), Decimal("5")]),
    st.sampled_from([0, 1, 3, 10, 60]),
    st.booleans(),
    st.sampled_from([0, 1, 5]),
)
steps = st.tuples(st.sampled_from(PRICES), st.sampled_from([0, 250, 1000, 3000, 20_000, -2000]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(pct_rules, min_size=1, max_size=8, unique_by=lambda r: r.alert_id),
    st.lists(steps, max_size=50),
    st.integers(0, 50),
)
def test_windows_restored_from_samples_fire_as_if_there_had_been_no_restart(
    rules: list[Rule], path: list[tuple[Decimal, int]], split: int
) -> None:
    whole, before = AlertIndex(), AlertIndex()
    for rule in rules:
        whole.upsert(rule)
        before.upsert(rule)
    ts = 1_000_000
    ticks = []
    for price, dt in path:
        ts += dt
        ticks.append((price, ts))
    for price, ts in ticks[:split]:
        assert fires(before, price, ts) == fires(whole, price, ts)
    after = restarted(before, rules)
    for price, ts in ticks[split:]:
        assert fires(after, price, ts) == fires(whole, price, ts), (price, ts)
