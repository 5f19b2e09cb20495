"""History roll-ups against candles computed by hand."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from tickwatch_gateway.market.rollup import INTERVAL_MS, MINUTE_MS, Bar, bucket_start, roll_up

T0 = 1_700_000_400_000  # 2023-11-14T22:20:00Z, a 5-minute (and 1h: no) boundary


def minute(i: int, o: str, h: str, lo: str, c: str, v: str, closed: bool = True) -> Bar:
    t = T0 + i * MINUTE_MS
    return Bar(t, t + MINUTE_MS - 1, D(o), D(h), D(lo), D(c), D(v), closed)


def test_five_minutes_roll_into_one_bar() -> None:
    bars = [
        minute(0, "10", "12", "9", "11", "1.5"),
        minute(1, "11", "15", "10", "14", "2"),
        minute(2, "14", "14", "8", "9", "0.25"),
        minute(3, "9", "10", "9", "10", "1"),
        minute(4, "10", "11", "9.5", "10.5", "3"),
        minute(5, "10.5", "11", "10", "10.75", "1", closed=False),
    ]
    first, second = roll_up(bars, "5m")
    assert first == Bar(
        T0, T0 + 5 * MINUTE_MS - 1, D("10"), D("15"), D("8"), D("10.5"), D("7.75"), True
    )
    assert second.open_time == T0 + 5 * MINUTE_MS
    assert (second.open, second.close, second.closed) == (D("10.5"), D("10.75"), False)


def test_a_bucket_without_its_last_minute_is_not_closed() -> None:
    bars = [minute(0, "1", "1", "1", "1", "1"), minute(1, "1", "2", "1", "2", "1")]
    [bar] = roll_up(bars, "5m")
    assert bar.closed is False
    assert bar.high == D("2")


def test_gaps_start_new_buckets_aligned_to_utc() -> None:
    bars = [minute(0, "1", "1", "1", "1", "1"), minute(61, "2", "2", "2", "2", "1")]
    out = roll_up(bars, "15m")
    assert [b.open_time for b in out] == [
        T0 - T0 % INTERVAL_MS["15m"],
        bucket_start(T0 + 61 * MINUTE_MS, "15m"),
    ]


@pytest.mark.parametrize("interval", ["1h", "4h", "1d"])
def test_large_buckets_start_on_utc_boundaries(interval: str) -> None:
    [bar] = roll_up([minute(0, "1", "1", "1", "1", "1")], interval)
    assert bar.open_time % INTERVAL_MS[interval] == 0
    assert bar.close_time == bar.open_time + INTERVAL_MS[interval] - 1


def test_one_minute_is_its_own_roll_up() -> None:
    bars = [minute(i, "1", "2", "0.5", "1.5", "1") for i in range(3)]
    assert roll_up(bars, "1m") == bars
