"""The analytics figures on candle lists small enough to check by hand (worked in comments)."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_gateway.analytics import domain
from tickwatch_gateway.analytics.domain import Move, Spike
from tickwatch_gateway.market import Bar

MIN = 60_000
D = Decimal


def bar(i: int, o: str, h: str, lo: str, c: str, v: str) -> Bar:
    return Bar(i * MIN, i * MIN + MIN - 1, D(o), D(h), D(lo), D(c), D(v), True)


BARS = [
    bar(0, "100", "103", "99", "101", "2"),
    bar(1, "101", "106", "100", "105", "1"),
    bar(2, "105", "105", "96", "99", "3"),
]


def test_change_is_first_open_to_last_close() -> None:
    # (99 - 100) / 100 * 100 = -1
    assert domain.change_pct(D("100"), D("99")) == D("-1")
    assert domain.change_pct(D("80"), D("100")) == D("25")
    assert domain.change_pct(D("0"), D("5")) is None


def test_vwap_weights_the_typical_price_by_volume() -> None:
    # typical prices: (103+99+101)/3 = 101, (106+100+105)/3 = 103.666…, (105+96+99)/3 = 100
    # Σ tp*v = 202 + 103.666… + 300 = 605.666…; Σ v = 6; VWAP = 100.9444…
    assert round(domain.vwap(BARS) or 0, 10) == D("100.9444444444")
    assert domain.vwap([bar(0, "1", "1", "1", "1", "0")]) is None


def test_volatility_is_the_sample_deviation_of_log_returns() -> None:
    # closes 100, 110, 121: both returns ln(1.1), so no spread at all (ln at 28 digits leaves
    # a residue near 1E-29, which the answer's 12 places drop)
    assert domain.figure(domain.realised_volatility([D(100), D(110), D(121)])) == "0"
    # closes e⁰, e¹, e³ would give returns 1 and 2: mean 1.5, Σ(r-mean)² = 0.5, / (n-1 = 1),
    # √0.5 = 0.70710678…; with closes 1, 2, 8: returns ln 2 and ln 4 = 2 ln 2, so the
    # deviation is ln 2 * √0.5 = 0.693147… * 0.707106… = 0.49012907…
    vol = domain.realised_volatility([D(1), D(2), D(8)])
    assert vol is not None and round(vol, 8) == D("0.49012907")
    assert domain.realised_volatility([D(1), D(2)]) is None  # one return: no deviation
    assert domain.log_returns([D(1), D(0), D(3), D(3)]) == [D(0)]


def test_summary_over_a_window() -> None:
    s = domain.summarise(BARS)
    assert s is not None
    assert (s.candles, s.open, s.close, s.high, s.low, s.volume) == (3, 100, 99, 106, 96, 6)
    assert s.change_pct == D("-1")
    assert (s.first_open_time, s.last_open_time) == (0, 2 * MIN)
    assert domain.summarise([]) is None


def test_the_window_ends_at_the_newest_candle() -> None:
    bars = [bar(i, "1", "1", "1", "1", "1") for i in (0, 59, 60, 119)]
    # 1h ending at minute 119 holds minutes 60..119: minute 59 is exactly an hour earlier
    assert [b.open_time // MIN for b in domain.window_bars(bars, "1h")] == [60, 119]
    assert len(domain.window_bars(bars, "24h")) == 4
    assert domain.window_bars([], "1h") == []


def move(symbol: str, pct: str) -> Move:
    return Move(symbol, D(pct), D(1), D(1), 0)


def test_movers_rank_by_change_and_ties_by_symbol() -> None:
    moves = [move("A", "2"), move("B", "-3"), move("C", "5"), move("D", "2"), move("E", "0")]
    moves += [move("F", "-1")]
    gainers, losers = domain.rank_movers(moves, 2)
    assert [m.symbol for m in gainers] == ["C", "A"]  # 5, then A before D at 2
    assert [m.symbol for m in losers] == ["B", "F"]  # E did not move: in neither
    gainers, losers = domain.rank_movers(moves, 10)
    assert [m.symbol for m in gainers] == ["C", "A", "D"]


def test_volume_spike_against_the_trailing_average() -> None:
    # current window 30; previous ones 10 and 20 (window 3 had no candle): average 15, ratio 2
    spike = domain.volume_spike("A", {0: D(30), 1: D(10), 2: D(20)}, lookback=3)
    assert spike == Spike("A", D(30), D(15), D(2), 2)
    # a lookback of 1 compares with the previous window only: 30 / 10
    assert domain.volume_spike("A", {0: D(30), 1: D(10), 2: D(20)}, lookback=1) == Spike(
        "A", D(30), D(10), D(3), 1
    )
    # nothing stored in the current window: ratio 0
    assert domain.volume_spike("A", {1: D(4)}, lookback=2) == Spike("A", D(0), D(4), D(0), 1)
    assert domain.volume_spike("A", {0: D(5)}, lookback=24) is None  # nothing to compare with
    assert domain.volume_spike("A", {0: D(5), 1: D(0)}, lookback=24) is None


def test_spikes_over_the_threshold_biggest_first() -> None:
    spikes = [Spike("A", D(2), D(1), D(2), 1), Spike("B", D(3), D(1), D(3), 1)]
    spikes += [Spike("C", D(1), D(1), D(1), 1), Spike("0", D(2), D(1), D(2), 1)]
    assert [s.symbol for s in domain.spikes_over(spikes, D(2))] == ["B", "0", "A"]
    assert domain.spikes_over(spikes, D(4)) == []


def test_figures_round_to_twelve_places_in_plain_digits() -> None:
    assert domain.figure(D(1) / D(3)) == "0.333333333333"
    assert domain.figure(D("100.0000")) == "100"
    assert domain.figure(D("-0.0000000000001")) == "0"
    assert domain.figure(None) is None
