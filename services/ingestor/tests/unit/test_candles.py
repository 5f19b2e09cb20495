"""Candles built from trades agree with a brute-force oracle."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from tickwatch_ingestor.candles import CandleBuilder

trades = st.lists(
    st.tuples(
        st.integers(0, 5 * 60_000),
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2),
        st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10), places=3),
    ),
    max_size=60,
)


@given(trades)
def test_closed_candles_match_a_brute_force_grouping(
    rows: list[tuple[int, Decimal, Decimal]],
) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    builder = CandleBuilder("replay", "1m")
    out = []
    for ts, price, qty in rows:
        out.extend(builder.add("BTC-USDT", price, qty, ts))
    out.extend(builder.close_until(10 * 60_000))
    groups: dict[int, list[tuple[int, Decimal, Decimal]]] = {}
    for r in rows:
        groups.setdefault(r[0] - r[0] % 60_000, []).append(r)
    assert [c.open_time for c in out] == sorted(groups)
    for c in out:
        g = groups[c.open_time]
        assert c.closed and c.close_time == c.open_time + 59_999
        assert (c.open, c.close) == (g[0][1], g[-1][1])
        assert c.high == max(p for _, p, _ in g) and c.low == min(p for _, p, _ in g)
        assert c.volume == sum(q for _, _, q in g) and c.trades == len(g)


def test_a_candle_closes_when_its_minute_ends_even_without_a_later_trade() -> None:
    builder = CandleBuilder("replay", "1m")
    assert builder.add("ETH-USDT", Decimal("10"), Decimal("1"), 61_000) == []
    assert builder.close_until(119_999) == []
    [closed] = builder.close_until(120_000)
    assert closed.open_time == 60_000 and closed.closed


def test_a_late_trade_for_a_closed_minute_is_ignored() -> None:
    builder = CandleBuilder("replay", "1m")
    builder.add("ETH-USDT", Decimal("10"), Decimal("1"), 61_000)
    builder.add("ETH-USDT", Decimal("11"), Decimal("1"), 121_000)
    assert builder.add("ETH-USDT", Decimal("99"), Decimal("1"), 62_000) == []
    current = builder.current("ETH-USDT")
    assert current is not None and current.high == Decimal("11")
