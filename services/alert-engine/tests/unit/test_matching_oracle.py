"""The index against a brute-force oracle: random alerts, random tick paths, pauses and resumes.

The oracle evaluates every alert on every tick straight from the definitions in DESIGN.md §4
(no index, no heaps, the whole price history kept); both must fire the same alerts on the same
ticks with the same sequence numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tickwatch_alert_engine.matching import AlertIndex, Rule

SYMBOLS = ["AAA-USDT", "BBB-USDT"]
PRICES = [Decimal(p) for p in ("95", "97.5", "98", "99", "100", "101", "102", "103", "105")]


@dataclass
class OracleAlert:
    rule: Rule
    sequence: int = 0
    last_fired: int | None = None
    armed: bool = True
    history: list[tuple[int, Decimal]] = field(default_factory=list)


class Oracle:
    def __init__(self, rules: list[Rule]) -> None:
        self.alerts = {r.alert_id: OracleAlert(r) for r in rules}
        self.last: dict[str, Decimal] = {}
        self.clock: dict[str, int] = {}

    def set_paused(self, alert_id: str, paused: bool) -> None:
        a = self.alerts[alert_id]
        a.rule = Rule(**{**_fields(a.rule), "paused": paused})

    def tick(self, symbol: str, price: Decimal, ts: int) -> list[tuple[str, int]]:
        now = max(self.clock.get(symbol, 0), ts)
        self.clock[symbol] = now
        prev = self.last.get(symbol)
        self.last[symbol] = price
        sec = now // 1000
        out = []
        for a in self.alerts.values():
            r = a.rule
            if r.symbol != symbol:
                continue
            a.history.append((sec, price))
            if r.paused or not a.armed:
                continue
            if r.expires_at is not None and now >= r.expires_at:
                continue
            if (
                r.recurring
                and a.last_fired is not None
                and now < a.last_fired + r.cooldown_s * 1000
            ):
                continue
            t = r.target
            if r.condition == "above":
                hit = t is not None and price >= t
            elif r.condition == "below":
                hit = t is not None and price <= t
            elif r.condition == "crosses_up":
                hit = t is not None and prev is not None and prev < t <= price
            elif r.condition == "crosses_down":
                hit = t is not None and prev is not None and price <= t < prev
            else:
                window = [p for s, p in a.history if s >= sec - r.window_s]
                lo, hi = min(window), max(window)
                pct = r.pct
                assert pct is not None
                # A move of at least pct percent up from the window's low or down from its high.
                hit = price - lo >= lo * pct / 100 or hi - price >= hi * pct / 100
            if hit:
                a.sequence += 1
                a.last_fired = now
                if not r.recurring:
                    a.armed = False
                out.append((r.alert_id, a.sequence))
        return sorted(out)


def _fields(r: Rule) -> dict[str, object]:
    return {name: getattr(r, name) for name in Rule.__slots__}


@st.composite
def rules(draw: st.DrawFn, alert_id: str) -> Rule:
    condition = draw(
        st.sampled_from(["above", "below", "crosses_up", "crosses_down", "pct_change"])
    )
    recurring = draw(st.booleans())
    common = {
        "alert_id": alert_id,
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "recurring": recurring,
        "cooldown_s": draw(st.sampled_from([0, 1, 5])) if recurring else 0,
        "expires_at": draw(st.one_of(st.none(), st.integers(0, 20_000))),
        "paused": draw(st.booleans()) and draw(st.booleans()),
    }
    if condition == "pct_change":
        return Rule(
            condition="pct_change",
            pct=draw(st.sampled_from([Decimal("1"), Decimal("2.5"), Decimal("5")])),
            window_s=draw(st.sampled_from([0, 1, 3, 10])),
            **common,  # type: ignore[arg-type]
        )
    return Rule(condition=condition, target=draw(st.sampled_from(PRICES)), **common)  # type: ignore[arg-type]


tick_op = st.tuples(
    st.just("tick"),
    st.sampled_from(SYMBOLS),
    st.sampled_from(PRICES),
    st.sampled_from([0, 250, 1000, 3000]),
)
# "bounce" pauses and resumes at once (an edit of the alert): the state must survive it.
pause_op = st.tuples(st.sampled_from(["pause", "resume", "bounce"]), st.integers(0, 3))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Rule], list[tuple[object, ...]]]:
    n = draw(st.integers(1, 20))
    alerts = [draw(rules(f"a{i:02d}")) for i in range(n)]
    ops = draw(st.lists(st.one_of(tick_op, tick_op, tick_op, pause_op), max_size=60))
    return alerts, ops


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_index_matches_brute_force_oracle(
    scenario: tuple[list[Rule], list[tuple[object, ...]]],
) -> None:
    alerts, ops = scenario
    index = AlertIndex()
    for r in alerts:
        index.upsert(r)
    oracle = Oracle(alerts)
    ts = 0
    for op in ops:
        if op[0] == "tick":
            _, symbol, price, dt = op
            ts += dt  # type: ignore[operator]
            got = sorted((f.alert_id, f.sequence) for f in index.on_tick(symbol, price, ts))  # type: ignore[arg-type]
            assert got == oracle.tick(symbol, price, ts), (op, ts)  # type: ignore[arg-type]
        else:
            kind, i = op
            if i >= len(alerts):  # type: ignore[operator]
                continue
            alert_id = alerts[i].alert_id  # type: ignore[index]
            for paused in {"pause": [True], "resume": [False], "bounce": [True, False]}[kind]:  # type: ignore[index]
                oracle.set_paused(alert_id, paused)
                current = index.rule(alert_id)
                assert current is not None
                index.upsert(Rule(**{**_fields(current), "paused": paused}))  # type: ignore[arg-type]
    for alert_id, a in oracle.alerts.items():
        state = index.state(alert_id)
        assert state is not None
        assert (state.sequence, state.last_fired_ms, state.armed) == (
            a.sequence,
            a.last_fired,
            a.armed,
        )
